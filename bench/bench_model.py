"""PyTorch model throughput: clips/s of each variant in fp32 and bf16 autocast (CPU, and CUDA when present) at
each batch size, with the agreement of bf16 against fp32 on the same inputs, and MFU: achieved FLOP/s (FLOP per clip
from `models.clip_flops` x clips/s) over the matrix-multiply peak of the same precision, measured in the same run.

    python bench/bench_model.py [--variants s2d_tiny s2d_small s2d_base] [--batches 1 4] [--repeats 3]
    python bench/bench_model.py --devices cuda --variants s2d_base --precisions bf16 --batches 1 2 4 8 16 32 64
"""

from __future__ import annotations

import argparse
import sys

import torch

from s2d.harness.measure import machine, matmul_peak, mfu, spread, time_call, write_report
from s2d.models import clip_flops, create_model


def run_variant(
    name: str, device: str, batches: list[int], repeats: int, precisions: list[str], peaks: dict[str, dict]
) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(name).eval().to(device)
    cfg = model.config
    flop = clip_flops(cfg)["total"]  # FLOP per clip, S2D + landmark network
    sync = torch.cuda.synchronize if device == "cuda" else None
    rows = []
    for batch in batches:
        clip = torch.randn(batch, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device=device)
        outputs = {}
        for precision in precisions:

            def infer(precision=precision, clip=clip, outputs=outputs):
                with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=precision == "bf16"):
                    outputs[precision] = model(clip)[0].float()

            timing = time_call(infer, repeats, sync=sync)
            clips_per_s = batch / timing["median_s"]
            row = {"variant": name, "device": device, "precision": precision, "batch": batch}
            row.update(clips_per_s=clips_per_s, **timing)
            row["gflop_per_clip"] = flop / 1e9
            row.update(mfu(flop, clips_per_s, peaks[precision]["gflops"]))
            rows.append(row)
        if {"fp32", "bf16"} <= outputs.keys():
            fp32, bf16 = outputs["fp32"].softmax(-1), outputs["bf16"].softmax(-1)
            rows[-1]["top1_agreement_vs_fp32"] = (fp32.argmax(-1) == bf16.argmax(-1)).float().mean().item()
            rows[-1]["max_prob_diff_vs_fp32"] = (fp32 - bf16).abs().max().item()
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["s2d_tiny", "s2d_small", "s2d_base"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--devices", nargs="+", default=None, help="cpu, cuda (default: both if present)")
    parser.add_argument("--peak-n", type=int, default=None, help="GEMM side for the peak (default 2048 CPU, 8192 CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("error: --devices cuda but torch sees no CUDA device")
    print(f"machine: {machine()}")
    print(f"command: {' '.join(sys.argv)}  (repeats {args.repeats}, 1 warm-up; time = median [min..max])")
    results, peaks_all = [], []
    for device in devices:
        peaks = {p: matmul_peak(p, device, args.peak_n) for p in args.precisions}
        for peak in peaks.values():
            peaks_all.append(peak)
            print(f"matmul peak {device} {peak['dtype']}: {peak['gflops']:.1f} GFLOP/s (n={peak['n']}, {spread(peak)})")
        print(f"{'variant':10s} {'dev':4s} {'prec':4s} {'batch':>5s} {'clips/s':>9s} {'s/call median [min..max]':>28s} "
              f"{'GFLOP/s':>9s} {'MFU':>6s}  bf16 vs fp32")  # fmt: skip
        for name in args.variants:
            for row in run_variant(name, device, args.batches, args.repeats, args.precisions, peaks):
                results.append(row)
                agreement = ""
                if "top1_agreement_vs_fp32" in row:
                    agreement = (
                        f"top-1 {100 * row['top1_agreement_vs_fp32']:.0f}%  max |dp| {row['max_prob_diff_vs_fp32']:.4f}"
                    )
                print(
                    f"{name:10s} {device:4s} {row['precision']:4s} {row['batch']:5d} {row['clips_per_s']:9.2f} "
                    f"{spread(row):>28s} {row['achieved_gflops']:9.1f} {100 * row['mfu']:5.1f}%  {agreement}",
                    flush=True,
                )
    print(f"report: {write_report('model', results, matmul_peaks=peaks_all)}")


if __name__ == "__main__":
    main()
