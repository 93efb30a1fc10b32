"""PyTorch model throughput: clips/s of each variant in fp32 and bf16 autocast (CPU, and CUDA when present), at
batch 1 and 4, with the agreement of bf16 against fp32 on the same inputs.

    python bench/bench_model.py [--variants s2d_tiny s2d_small s2d_base] [--batches 1 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, time_call, write_report
from models import create_model


def run_variant(name: str, device: str, batches: list[int], repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(name).eval().to(device)
    cfg = model.config
    sync = torch.cuda.synchronize if device == "cuda" else None
    low = torch.bfloat16
    rows = []
    for batch in batches:
        clip = torch.randn(batch, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device=device)
        outputs = {}
        for precision in ("fp32", "bf16"):

            def infer(precision=precision, clip=clip, outputs=outputs):
                with torch.inference_mode(), torch.autocast(device, dtype=low, enabled=precision == "bf16"):
                    outputs[precision] = model(clip)[0].float()

            timing = time_call(infer, repeats, sync=sync)
            rows.append(
                {
                    "variant": name,
                    "device": device,
                    "precision": precision,
                    "batch": batch,
                    "clips_per_s": batch / timing["median_s"],
                    **timing,
                }
            )
        fp32, bf16 = outputs["fp32"].softmax(-1), outputs["bf16"].softmax(-1)
        rows[-1]["top1_agreement_vs_fp32"] = (fp32.argmax(-1) == bf16.argmax(-1)).float().mean().item()
        rows[-1]["max_prob_diff_vs_fp32"] = (fp32 - bf16).abs().max().item()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["s2d_tiny", "s2d_small", "s2d_base"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}  (repeats {args.repeats}, 1 warm-up; time = median [min..max])")
    print(f"{'variant':10s} {'dev':4s} {'prec':4s} {'batch':>5s} {'clips/s':>9s} {'s/call':>22s}  bf16 vs fp32")
    results = []
    for device in devices:
        for name in args.variants:
            for row in run_variant(name, device, args.batches, args.repeats):
                results.append(row)
                agreement = ""
                if "top1_agreement_vs_fp32" in row:
                    agreement = (
                        f"top-1 {100 * row['top1_agreement_vs_fp32']:.0f}%  max |dp| {row['max_prob_diff_vs_fp32']:.4f}"
                    )
                spread = f"{row['median_s']:.3f} [{row['min_s']:.3f}..{row['max_s']:.3f}]"
                print(
                    f"{name:10s} {device:4s} {row['precision']:4s} {row['batch']:5d} "
                    f"{row['clips_per_s']:9.2f} {spread:>22s}  {agreement}",
                    flush=True,
                )
    print(f"report: {write_report('model', results)}")


if __name__ == "__main__":
    main()
