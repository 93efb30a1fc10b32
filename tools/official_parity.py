"""Full-size parity check: our S2D (models/) against the official code, same random weights, fp32, eval mode.

Run from the repository root in the scratch environment of tests/fixtures/golden/README.md, with this checkout
installed there (`pip install --no-deps -e .`, for `s2d.models`) and the official code on the import path:

    PYTHONPATH=/tmp/s2d_official /tmp/official_env/bin/python tools/official_parity.py --official /tmp/s2d_official

Builds the official `s2d_base_patch16_224(num_classes=7)` and MobileFaceNet, overwrites all their weights with
random values (see official_ref.randomize_), runs both networks on a random normalised clip, loads the same weights
into `models.create_model("s2d_base")` strictly and compares. Intermediate outputs of modules with the same name in
both networks (patch embeddings, prompt norms, prompt blocks and their parts, ViT blocks, ln_post, head) are
compared too, so a disagreement is located. Exits 1 if the logits differ by more than --tol.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict

import torch
from official_ref import build_mobilefacenet, import_official, landmark_features, randomize_
from torch import nn

# Modules compared by name (identical in both networks because the state-dict names are).
COMPARED = re.compile(
    r"(patch_embed|patch_embed_prompt|prompt_norms\.\d+|blocks\.\d+|ln_post|head|head\.fc_cls"
    r"|prompt_blocks\.\d+(\.TMA(\.T_Adapter|\.S_Adapter|\.norm)?|\.fovea|\.conv0_0|\.conv0_1|\.conv1x1)?)"
)


def tensors(output) -> list[torch.Tensor]:
    return [t for t in (output if isinstance(output, (tuple, list)) else (output,)) if isinstance(t, torch.Tensor)]


def align(ref: torch.Tensor, ours: torch.Tensor) -> torch.Tensor | None:
    """Bring an official intermediate into our layout, or None if the layouts cannot be matched.

    Official prompt blocks work on [N, C, 14, 14] maps where we may use tokens [N, 196, C]; the official prompt
    norms and ln_post see the CLS token where we may skip it; the official TMA folds (clip, position) into one axis.
    """
    if ref.dim() == 4 and ours.dim() == 3:
        ref = ref.flatten(2).transpose(1, 2)
    if ref.dim() == 3 and ours.dim() == 3 and ref.shape[1] == ours.shape[1] + 1:
        ref = ref[:, 1:]
    if ref.dim() == 3 and ours.dim() == 2 and ref.shape[0] == ours.shape[0]:
        ref = ref[:, 0]
    if ref.shape != ours.shape and ref.numel() == ours.numel() and ref.shape[-1] == ours.shape[-1]:
        ref = ref.reshape(ours.shape)
    return ref if ref.shape == ours.shape else None


def record_official(model: nn.Module, store: dict[str, list[list[torch.Tensor]]]) -> list:
    def hook(name):
        return lambda _m, _i, out: store[name].append([t.detach().clone() for t in tensors(out)])

    return [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if COMPARED.fullmatch(n)]


def compare_ours(model: nn.Module, store: dict, diffs: dict[str, list[float]]) -> list:
    """Hooks comparing each call of our module with the same-numbered call of the official one."""
    calls: dict[str, int] = defaultdict(int)

    def hook(name):
        def fn(_m, _i, out):
            refs = store[name][calls[name]] if calls[name] < len(store[name]) else []
            calls[name] += 1
            for i, ours in enumerate(tensors(out)):
                ref = align(refs[i], ours) if i < len(refs) else None
                diff = float("nan") if ref is None else (ours - ref).abs().max().item()
                scale = float("nan") if ref is None else ref.abs().max().item()
                diffs[f"{name}[call {calls[name] - 1}, out {i}]"] = [diff, scale]

        return fn

    return [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n in store]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="extracted official S2D code (commit e1b5e5d)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-4, help="max abs logits difference allowed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model_finetuning, mobilefacenet = import_official(args.official)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    official = model_finetuning.s2d_base_patch16_224(num_classes=7, num_frames=args.frames).eval()
    mfn = build_mobilefacenet(mobilefacenet)
    randomize_(official, generator)
    randomize_(mfn, generator)
    clip = torch.randn(args.batch, 3, args.frames, 224, 224, generator=generator)

    store: dict[str, list] = defaultdict(list)
    handles = record_official(official, store)
    start = time.perf_counter()
    with torch.no_grad():
        feat = landmark_features(mfn, clip)
        ref_logits, ref_features = official(clip, feat)
    print(f"official: {time.perf_counter() - start:.1f} s, logits std {ref_logits.std():.3f}")
    for h in handles:
        h.remove()
    state, mfn_state = official.state_dict(), mfn.state_dict()
    del official

    from s2d.models import create_model  # our implementation (this checkout, installed in the scratch environment)

    overrides = {} if args.frames == 16 else {"num_frames": args.frames}
    model = create_model("s2d_base", num_classes=7, **overrides)
    print(f"state dict: {len(state)} official keys, {len(model.s2d.state_dict())} ours")
    model.s2d.load_state_dict(state, strict=True)
    model.landmark.load_mobilefacenet_state_dict(mfn_state)
    model.eval()

    diffs: dict[str, list[float]] = {}
    handles = compare_ours(model.s2d, store, diffs)

    def landmark_hook(_m, _i, out):
        diffs["landmark features"] = [(out - feat).abs().max().item(), feat.abs().max().item()]

    handles.append(model.landmark.register_forward_hook(landmark_hook))
    start = time.perf_counter()
    with torch.no_grad():
        logits, features = model(clip)
    print(f"ours: {time.perf_counter() - start:.1f} s")
    for h in handles:
        h.remove()

    print(f"{'module output':56s} {'max|diff|':>10s} {'max|ref|':>10s}")
    for name, (diff, scale) in diffs.items():
        flag = "  <-- mismatch" if not diff <= args.tol * max(1.0, scale) else ""
        print(f"{name:56s} {diff:10.3e} {scale:10.3e}{flag}")
    logit_diff = (logits - ref_logits).abs().max().item()
    feature_diff = (features - ref_features).abs().max().item()
    print(f"logits   max abs diff {logit_diff:.3e} (max |logit| {ref_logits.abs().max():.3f})")
    print(f"features max abs diff {feature_diff:.3e} (max |feature| {ref_features.abs().max():.3f})")
    ok = logit_diff <= args.tol
    print("PARITY OK" if ok else f"PARITY FAILED: logits differ by more than {args.tol}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
