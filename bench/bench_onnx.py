"""ONNX Runtime vs PyTorch: clips/s of every exported variant (fp32, fp16, int8) next to PyTorch fp32 (bf16
autocast with --torch-bf16) on the same uint8 clips in one run, at batch 1/4/8, with each variant's top-1 agreement
against PyTorch fp32.

    python bench/bench_onnx.py [--variant s2d_small] [--frames 16] [--batches 1 4 8] [--repeats 3]
    python bench/bench_onnx.py --checkpoint runs/demo/best.safetensors   # trained weights
    python bench/bench_onnx.py --model-dir ~/.cache/s2d/models/demo   # an exported folder (its checkpoint is not
                                                                       # needed: PyTorch rows are then left out)

Without --model-dir the script builds the model with random weights (seed 0), exports it and its variants into a
temp folder (minutes for s2d_base), and times them. Clips are synthetic faces. ONNX Runtime runs on the CPU, and
on CUDA too when onnxruntime-gpu and a GPU are present (fp16 is only timed there).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from s2d.harness.measure import machine, time_call, write_report

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def torch_rows(
    model, clips: np.ndarray, batches: list[int], repeats: int, precisions: tuple[str, ...] = ("fp32",)
) -> tuple[list[dict], np.ndarray]:
    import torch

    from s2d.training.export import UInt8ClipClassifier

    wrapper = UInt8ClipClassifier(model).eval()
    rows = []
    reference = None
    for precision in precisions:
        for batch in batches:
            x = torch.from_numpy(clips[:batch])

            def infer(x=x, precision=precision):
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                    return wrapper(x)[0].float()

            timing = time_call(infer, repeats)
            rows.append({"engine": "pytorch", "precision": precision, "provider": "cpu", "batch": batch, **timing})
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            logits = torch.cat(
                [wrapper(torch.from_numpy(clips[i : i + 4]))[0].float() for i in range(0, len(clips), 4)]
            )
        if precision == "fp32":
            reference = logits.numpy()
        else:
            for row in rows[-len(batches) :]:
                row["top1_agreement_vs_pytorch_fp32"] = float(
                    (logits.numpy().argmax(-1) == reference.argmax(-1)).mean()
                )
    return rows, reference


def onnx_rows(folder: Path, card, clips: np.ndarray, batches: list[int], repeats: int, reference) -> list[dict]:
    import onnxruntime as ort

    from s2d.training.export import agreement, run_onnx

    providers = [p for p in (CUDA, CPU) if p in ort.get_available_providers()]
    rows = []
    for variant, spec in card.variants.items():
        for provider in providers:
            if variant == "fp16" and provider != CUDA:
                continue  # fp16 is the GPU variant; ORT's CPU fp16 kernels are slow fallbacks, not its use
            session = ort.InferenceSession(str(folder / spec.file), providers=[provider])
            figures = agreement(reference, run_onnx(session, clips)) if reference is not None else {}
            for batch in batches:
                feed = {"frames": clips[:batch]}
                timing = time_call(lambda feed=feed, session=session: session.run(None, feed), repeats)
                rows.append(
                    {"engine": "onnxruntime", "precision": variant, "provider": provider, "batch": batch, **timing}
                )
                rows[-1].update({f"{k}_vs_pytorch_fp32": v for k, v in figures.items()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="s2d_small", help="model config when exporting here")
    parser.add_argument("--frames", type=int, default=None, help="T (default: the config's, 16)")
    parser.add_argument("--checkpoint", help="our .safetensors checkpoint (trained weights) instead of random ones")
    parser.add_argument("--model-dir", help="an exported model folder (card.json + ONNX files) instead of exporting")
    parser.add_argument("--precisions", default="fp32,fp16,int8", help="variants to export (without --model-dir)")
    parser.add_argument("--int8-method", default="dynamic", choices=("dynamic", "static"))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--torch-bf16", action="store_true", help="also PyTorch bf16 autocast (slow through the uint8 wrapper here)"
    )
    parser.add_argument("--clips", type=int, default=8, help="clips for the agreement figures (>= largest batch)")
    args = parser.parse_args()

    from s2d.card import load_card
    from s2d.training.export import synthetic_clips

    model = None
    tmp = None
    if args.model_dir:
        folder = Path(args.model_dir)
        card = load_card(folder)
    else:
        import torch

        from s2d.card import SourceCheckpoint
        from s2d.models import create_model
        from s2d.training.export import write_model_folder

        torch.manual_seed(0)
        overrides = {"num_frames": args.frames} if args.frames else {}
        if args.checkpoint:  # trained weights: random ones give near-tied logits, so agreement means little
            from s2d.training.export import load_for_export

            model = load_for_export(args.checkpoint)[0]
        else:
            model = create_model(args.variant, **overrides).eval()
        tmp = tempfile.TemporaryDirectory(prefix="bench_onnx_")
        folder = Path(tmp.name)
        weights = args.checkpoint or "random weights"
        print(f"exporting {model.config.name} ({weights}) with {args.precisions} into {folder} ...", flush=True)
        card = write_model_folder(
            model, folder, [str(i) for i in range(model.config.num_classes)], name=model.config.name,
            source=SourceCheckpoint(path=Path(weights).name), variants=tuple(args.precisions.split(",")),
            evaluation=synthetic_clips(4, model.config.num_frames, seed=1), int8_method=args.int8_method, timing=False,
        )  # fmt: skip
    clips = synthetic_clips(max(args.clips, *args.batches), card.num_frames, card.input.height, seed=7)

    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}  (repeats {args.repeats}, 1 warm-up; time = median [min..max])")
    print(f"{'engine':12s} {'prec':5s} {'provider':21s} {'batch':>5s} {'clips/s':>8s} {'x pt-fp32':>9s} "
          f"{'s/call median [min..max]':>26s}  top-1 vs PyTorch fp32")  # fmt: skip
    base: dict[int, float] = {}

    def show(rows: list[dict]) -> list[dict]:
        for row in rows:
            row["clips_per_s"] = row["batch"] / row["median_s"]
            if row["engine"] == "pytorch" and row["precision"] == "fp32":
                base[row["batch"]] = row["clips_per_s"]
            ratio = row["clips_per_s"] / base[row["batch"]] if row["batch"] in base else float("nan")
            row["speedup_vs_pytorch_fp32"] = ratio
            spread = f"{row['median_s']:.3f} [{row['min_s']:.3f}..{row['max_s']:.3f}]"
            agree = next((f"{100 * v:.1f}%" for k, v in row.items() if k.startswith("top1_agreement")), "")
            print(
                f"{row['engine']:12s} {row['precision']:5s} {row['provider']:21s} {row['batch']:5d} "
                f"{row['clips_per_s']:8.2f} {ratio:9.2f} {spread:>26s}  {agree}",
                flush=True,
            )
        return rows

    results, reference = (
        ([], None)
        if model is None
        else torch_rows(model, clips, args.batches, args.repeats, ("fp32", "bf16") if args.torch_bf16 else ("fp32",))
    )
    results = show(results)
    results += show(onnx_rows(folder, card, clips, args.batches, args.repeats, reference))
    name = card.name if model is None else f"{model.config.name}-T{card.num_frames}"
    print(f"report: {write_report('onnx', [{'model': name, **r} for r in results])}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
