"""The benchmark suite: every benchmark script with small default sizes, one combined JSON report, and the issue's
targets with PASS/FAIL.

    s2d bench [--quick | --full] [--only NAME ...] [--out DIR] [--model NAME] [--store DIR] [--lock FILE]
    python -m bench.suite ...                                               # the same without the `s2d` command

Steps (`--only` picks some): model (PyTorch fp32/bf16 + MFU), cpu-inference (ONNX Runtime variants vs PyTorch fp32),
faces (decode / detect / track+align), augment, rest (REST end-to-end on the store's default model), face-share
(the face pipeline's share of end-to-end time with `s2d_base`), streams (live WebSocket streams), train, and on a
CUDA machine gpu-model (bf16 clips/s and MFU, batch 1..64), gpu-onnx (ONNX Runtime CUDA fp16) and gpu-train.

Each step runs its script in a subprocess (its own threads and memory; its command is recorded as run), which
writes its JSON report under `<out>/runs-<time>/`; the suite collects them into `<out>/suite-<time>.json` and prints
a summary. Steps that need a server start one on a free loopback port and stop it. With `--lock FILE` each step holds
an exclusive flock on FILE while it runs, so timings on a shared machine are not mixed with other heavy jobs.
Sizes: `--quick` is a smoke run (seconds per step); the default finishes in a few minutes on 2 cores; `--full` gives
the issue's sizes (`s2d_base`, batch 1/4/8): tens of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from s2d.harness.measure import OUT_ENV, command, machine

REPO = Path(__file__).resolve().parents[1]

BASE_STORE = REPO / "artifacts" / "bench" / "cache" / "s2d_base_store"  # random-weight s2d_base, exported once
BASE_MODEL = "s2d_base-random"
SIZES = ("quick", "default", "full")


@dataclass
class Context:
    size: str  # one of SIZES
    runs: Path  # where the scripts write their reports
    store: Path | None  # model store for the server steps (None: the default store)
    model: str | None  # model for the server steps (None: the store's default)
    variant: str | None  # overrides the model variant of model / cpu-inference / train
    python: str = sys.executable

    def pick(self, quick, default, full):
        return {"quick": quick, "default": default, "full": full}[self.size]


@dataclass
class StepResult:
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    commands: list[str] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the summary's figures
    seconds: float = 0.0  # running, not counting the wait for --lock
    lock_wait_s: float = 0.0


class Skip(Exception):
    """A step that cannot run here (no GPU, no model): skipped with this reason, not failed."""


def run_script(
    ctx: Context, result: StepResult, args: list[str], timeout: float = 600, report: Path | None = None
) -> dict:
    """Run `python args...` in the repository, echo its output, and return its JSON report: the file it names on a
    `report: PATH` line (scripts using `s2d.harness.measure.write_report`), or `report` (scripts with an --out
    option)."""
    cmd = [ctx.python, *args]
    result.commands.append(" ".join(cmd))
    env = {**os.environ, OUT_ENV: str(ctx.runs), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(proc.stdout)
    named = re.findall(r"^report: (.+)$", proc.stdout, re.M)
    report = report if report is not None else (REPO / named[-1].strip() if named else None)
    if report is None or not Path(report).exists():
        raise RuntimeError(f"{' '.join(args[:2])} exited with {proc.returncode} and wrote no report: "
                           f"{proc.stderr.strip()[-2000:]}")  # fmt: skip
    if proc.returncode != 0:  # a script's own verdict (e.g. a memory check) failed; its figures still count
        result.lines.append(f"{' '.join(args[:2])} exited with {proc.returncode} (its own checks; see its report)")
    data = json.loads(Path(report).read_text())
    data.setdefault("command", " ".join(cmd))
    result.reports.append(data)
    return data


@contextlib.contextmanager
def server(ctx: Context, store: Path | None = None, model: str | None = None, **settings) -> Iterator[tuple[str, str]]:
    """A real service process on a free loopback port serving one model (torch blocked in it); yields (url, model)."""
    from s2d.harness.server import running_server
    from s2d.store import ModelStore

    store = ModelStore(store or ctx.store)
    if not store.list():
        raise Skip(f"the model store {store.root} is empty (s2d demo build, or --store DIR)")
    name = model or ctx.model or store.default().name
    with running_server(store.root, models=[name], default_model=name, **settings) as srv:
        yield srv.url, name


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def need_cuda() -> None:
    if not cuda_available():
        raise Skip("no CUDA device (GPU rows are measured by the same scripts on a GPU machine)")


# ---------------------------------------------------------------------------------------------------------------------
# Steps


def step_model(ctx: Context, result: StepResult) -> None:
    every = ["s2d_tiny", "s2d_small", "s2d_base"]
    variants = [ctx.variant] if ctx.variant else ctx.pick(["s2d_tiny"], ["s2d_tiny"], every)
    repeats = ctx.pick("1", "3", "3")
    # fp32 and bf16 side by side at batch 1 (with their agreement), then fp32 at the larger batches: bf16 runs far
    # slower than fp32 on a CPU without bf16 instructions, so its larger batches would take minutes for little news.
    runs = [(["fp32"], ["1"])] if ctx.size == "quick" else [(["fp32", "bf16"], ["1"]), (["fp32"], ["4"])]
    if ctx.size == "full":
        runs = [(["fp32", "bf16"], ["1", "4"]), (["fp32"], ["8"])]
    for precisions, batches in runs:
        report = run_script(ctx, result, [
            "bench/bench_model.py", "--devices", "cpu", "--variants", *variants, "--batches", *batches,
            "--repeats", repeats, "--precisions", *precisions,
        ], timeout=ctx.pick(300, 900, 3600))  # fmt: skip
        _model_lines(result, report)


def _model_lines(result: StepResult, report: dict) -> None:
    for p in report.get("matmul_peaks", []):
        result.lines.append(f"matmul peak {p['device']} {p['dtype']}: {p['gflops']:.1f} GFLOP/s (n={p['n']})")
    for r in report["results"]:
        result.lines.append(
            f"{r['variant']} {r['device']} {r['precision']} batch {r['batch']}: {r['clips_per_s']:.2f} clips/s "
            f"(s/call {r['median_s']:.3f} [{r['min_s']:.3f}..{r['max_s']:.3f}] x{r['repeats']}), "
            f"{r['achieved_gflops']:.1f} GFLOP/s = MFU {100 * r['mfu']:.1f}%"
        )


def cpu_inference_script() -> str:
    """The CPU-inference benchmark of the speed work when it exists, else the ONNX variants benchmark."""
    return "bench/bench_cpu_inference.py" if (REPO / "bench/bench_cpu_inference.py").exists() else "bench/bench_onnx.py"


def step_cpu_inference(ctx: Context, result: StepResult) -> None:
    variant = ctx.variant or ctx.pick("s2d_tiny", "s2d_tiny", "s2d_base")
    script = cpu_inference_script()
    if script.endswith("bench_cpu_inference.py"):  # batch 1 interleaved per clip (+ agreement), extra batches timed
        clips = "8" if variant == "s2d_base" and ctx.size != "quick" else ctx.pick("2", "4", "8")  # the script's own
        args = [script, "--variant", variant, "--eval-clips", clips, "--fit-clips", clips,
                "--repeats", ctx.pick("1", "2", "3")]  # fmt: skip
        args += ctx.pick(["--frames", "4", "--int8", "int8"], [], ["--batches", "4", "8"])
    else:
        args = [script, "--variant", variant, "--batches", *ctx.pick(["1"], ["1", "4"], ["1", "4", "8"]),
                "--repeats", ctx.pick("1", "2", "3")]  # fmt: skip
        args += ctx.pick(["--frames", "4", "--clips", "2", "--precisions", "fp32"], [], [])
    report = run_script(ctx, result, args, timeout=ctx.pick(300, 900, 3600))
    for r in report["results"]:
        agree = _agreement(r)
        result.lines.append(
            f"{r.get('model', variant)} {_engine(r)} batch {r['batch']}: {r['clips_per_s']:.2f} clips/s "
            f"(x{r.get('speedup_vs_pytorch_fp32', float('nan')):.2f} PyTorch fp32"
            + (f", top-1 {100 * agree:.1f}%" if agree is not None else "")
            + ")"
        )


def _agreement(row: dict) -> float | None:
    """Top-1 agreement with PyTorch fp32 under either script's key (bench_onnx, bench_cpu_inference)."""
    return row.get("top1_agreement_vs_pytorch_fp32", row.get("top1_agreement"))


def _engine(row: dict) -> str:
    return " ".join(str(row[k]) for k in ("engine", "precision", "provider") if row.get(k))


def step_faces(ctx: Context, result: StepResult) -> None:
    report = run_script(ctx, result, [
        "bench/bench_faces.py", "--frames", ctx.pick("20", "90", "90"), "--repeats", ctx.pick("1", "3", "5"),
        "--sizes", *ctx.pick(["640x360"], ["640x360", "1280x720"], ["640x360", "1280x720"]),
    ])  # fmt: skip
    for r in report["results"]:
        result.lines.append(
            f"{r['resolution']}: decode {r['decode_fps']:.0f} f/s, detect {r['detect_fps']:.1f} f/s, track+align "
            f"{r['track_align_fps']:.0f} f/s, pipeline {r['pipeline_fps']:.0f} f/s "
            f"[{r['pipeline_fps_min']:.0f}..{r['pipeline_fps_max']:.0f}] x{r['pipeline_timing']['repeats']}"
        )


def step_augment(ctx: Context, result: StepResult) -> None:
    report = run_script(ctx, result, [
        "bench/bench_augment.py", "--repeats", ctx.pick("5", "50", "200"), "--clips", ctx.pick("2", "8", "8"),
    ])  # fmt: skip
    for r in report["results"]:
        result.lines.append(f"{r['case']}: {r['median_ms']:.1f} ms/clip median (p90 {r['p90_ms']:.1f}) x{r['repeats']}")


def _loadtest(ctx: Context, result: StepResult, url: str, name: str, levels: list[str], requests: str) -> dict:
    out = ctx.runs / f"{name}-loadtest-{time.strftime('%H%M%S')}.json"
    report = run_script(ctx, result, ["bench/loadtest.py", "--url", url, "--concurrency", *levels,
                                      "--requests", requests, "--out", str(out)], report=out)  # fmt: skip
    for level in report["levels"]:
        t = level["server_timings_median_s"] or {}
        result.lines.append(
            f"{report['model']} concurrency {level['concurrency']}: {level['requests_per_s']:.2f} req/s, "
            f"p50 {level['p50_s']:.2f} s, p95 {level['p95_s']:.2f} s, outside the model "
            f"{100 * level['outside_model_share']:.0f}%, face pipeline {100 * level['face_pipeline_share']:.0f}% "
            f"(server medians: decode {t.get('decode', 0):.2f} s, faces {t.get('faces', 0):.2f} s, inference "
            f"{t.get('inference', 0):.2f} s, total {t.get('total', 0):.2f} s; {level['ok']}/{level['requests']} ok)"
        )
    return report


def step_rest(ctx: Context, result: StepResult) -> None:
    with server(ctx) as (url, name):
        _loadtest(ctx, result, url, name, ctx.pick(["1"], ["1", "4"], ["1", "4", "16"]), ctx.pick("2", "8", "32"))


def build_base_store(root: str | Path = BASE_STORE) -> Path:
    """Export a random-weight `s2d_base` (T=16, 7 classes, fp32 ONNX) into `root`; minutes on 2 cores."""
    import torch

    from s2d.models import create_model
    from s2d.training.data.layouts import DATASET_CLASSES
    from s2d.training.export import export_to_store, synthetic_clips

    torch.manual_seed(0)
    classes = list(DATASET_CLASSES["dfew"])
    model = create_model("s2d_base", num_classes=len(classes)).eval()
    stored = export_to_store(
        model, root, BASE_MODEL, classes, variants=("fp32",), evaluation=synthetic_clips(2, 16, seed=1),
        timing=False, licence="random weights: for benchmarks only", description="random-weight s2d_base (benchmark)",
    )  # fmt: skip
    return stored.path


def step_face_share(ctx: Context, result: StepResult) -> None:
    """The face pipeline's share of end-to-end time: one 2 s 640x360 single-face upload at a time to a server
    running s2d_base (decode + detect + track + align seconds over total seconds, from the server's timings)."""
    if not (BASE_STORE / BASE_MODEL / "card.json").exists():
        if ctx.size == "quick":
            raise Skip(f"no cached s2d_base export in {BASE_STORE} (minutes to build: s2d bench --only face-share)")
        print(f"exporting a random-weight s2d_base into {BASE_STORE} (once; minutes) ...", flush=True)
        code = f"from bench.suite import build_base_store; build_base_store({str(BASE_STORE)!r})"
        run = subprocess.run([ctx.python, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=1800)
        if run.returncode != 0:
            raise RuntimeError(f"s2d_base export failed: {run.stderr.strip()[-2000:]}")
    # max_batch 2: one upload's windows (a 2 s clip, hop 1 s) fit one call; warming batches up to 8 would take minutes
    with server(ctx, BASE_STORE, BASE_MODEL, max_batch=2) as (url, name):
        _loadtest(ctx, result, url, name, ["1"], ctx.pick("2", "3", "5"))


def step_streams(ctx: Context, result: StepResult) -> None:
    with server(ctx) as (url, name):
        report = run_script(ctx, result, [
            "bench/load_streams.py", "--url", url, "--streams", ctx.pick("1", "2", "8"), "--fps", "10",
            "--seconds", ctx.pick("4", "10", "30"), "--warmup", ctx.pick("0", "2", "3"),
            "--settle", ctx.pick("3", "3", "5"),
        ])  # fmt: skip
    figures = report["results"][0]
    fmt = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
    for r in figures["rounds"]:
        lat = r["latency_ms"]
        result.lines.append(
            f"{name}: {figures['streams']} streams x {figures['fps']:g} fps x {figures['seconds']:g} s: latency p50 "
            f"{fmt(lat['p50'])} ms p95 {fmt(lat['p95'])} ms, drop rate {100 * (r['drop_rate'] or 0):.1f}%, "
            f"{r['windows_classified']} windows, server RSS peak {fmt(r['memory_mib']['peak'])} MiB"
        )


def _train_lines(result: StepResult, report: dict) -> None:
    for r in report["results"]:
        result.lines.append(
            f"{r['variant']} {r['device']} {r['precision']} batch {r['batch']} [{r['input']}]: "
            f"{r['clips_per_s']:.2f} clips/s [{r['clips_per_s_min']:.2f}..{r['clips_per_s_max']:.2f}] "
            f"x{r['repeats']}, data wait {100 * r['data_wait_share']:.0f}%, peak memory {r['peak_memory_mb']:.0f} MiB"
        )


def step_train(ctx: Context, result: StepResult) -> None:
    # fp32 on CPU: bf16 matmuls run through a slow fallback on CPUs without bf16 instructions (see matmul_peak)
    report = run_script(ctx, result, [
        "bench/bench_train.py", "--device", "cpu",
        "--variant", ctx.variant or ctx.pick("s2d_tiny", "s2d_tiny", "s2d_base"),
        "--batch", ctx.pick("2", "4", "8"), "--steps", ctx.pick("1", "2", "2"), "--repeats", ctx.pick("1", "2", "2"),
        "--workers", "1", "--precision", "fp32",
    ], timeout=ctx.pick(300, 600, 1800))  # fmt: skip
    _train_lines(result, report)


def step_gpu_model(ctx: Context, result: StepResult) -> None:
    need_cuda()
    report = run_script(ctx, result, [
        "bench/bench_model.py", "--devices", "cuda", "--variants", ctx.variant or "s2d_base", "--precisions", "bf16",
        "fp32", "--batches", *ctx.pick(["1", "8"], ["1", "2", "4", "8", "16", "32", "64"],
                                       ["1", "2", "4", "8", "16", "32", "64"]),
        "--repeats", ctx.pick("2", "5", "10"),
    ])  # fmt: skip
    _model_lines(result, report)


def step_gpu_onnx(ctx: Context, result: StepResult) -> None:
    need_cuda()
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise Skip(f"ONNX Runtime is not installed: {err}") from err
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Skip(f"this ONNX Runtime has no CUDAExecutionProvider ({ort.get_available_providers()}): onnxruntime-gpu")
    step_cpu_inference_args = ["bench/bench_onnx.py", "--variant", ctx.variant or "s2d_base", "--precisions",
                               "fp32,fp16", "--repeats", ctx.pick("2", "5", "10"), "--clips", "64", "--batches",
                               *ctx.pick(["1", "8"], ["1", "2", "4", "8", "16", "32", "64"],
                                         ["1", "2", "4", "8", "16", "32", "64"])]  # fmt: skip
    report = run_script(ctx, result, step_cpu_inference_args, timeout=3600)
    for r in report["results"]:
        result.lines.append(
            f"{r['engine']} {r['precision']} {r['provider']} batch {r['batch']}: {r['clips_per_s']:.1f} clips/s"
        )
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        result.lines.append("TensorRT: not installed (no TensorrtExecutionProvider), not measured")


def step_gpu_train(ctx: Context, result: StepResult) -> None:
    need_cuda()
    report = run_script(ctx, result, [
        "bench/bench_train.py", "--device", "cuda", "--variant", ctx.variant or "s2d_base", "--precision", "bf16",
        "--batch", ctx.pick("8", "8", "32"), "--steps", ctx.pick("2", "5", "10"), "--repeats", ctx.pick("1", "2", "3"),
        "--workers", ctx.pick("2", "4", "8"),
    ], timeout=1800)  # fmt: skip
    _train_lines(result, report)


STEPS: dict[str, tuple[Callable[[Context, StepResult], None], str]] = {
    "model": (step_model, "PyTorch clips/s fp32 / bf16 autocast per variant and batch, MFU vs measured matmul peak"),
    "cpu-inference": (step_cpu_inference, "ONNX Runtime variants vs PyTorch fp32 on the same clips (CPU)"),
    "faces": (step_faces, "face pipeline stages: decode, detect, track+align, whole (frames/s)"),
    "augment": (step_augment, "training / evaluation transforms (ms per clip)"),
    "rest": (step_rest, "REST end-to-end on the store's default model (req/s, p50/p95, shares)"),
    "face-share": (step_face_share, "face pipeline share of end-to-end time, s2d_base, single-face 640x360"),
    "streams": (step_streams, "live WebSocket streams (latency, drops, memory)"),
    "train": (step_train, "training clips/s with and without the data loader (CPU)"),
    "gpu-model": (step_gpu_model, "PyTorch bf16 / fp32 clips/s and MFU on CUDA, batch 1..64"),
    "gpu-onnx": (step_gpu_onnx, "ONNX Runtime CUDA fp16 / fp32 clips/s, batch 1..64"),
    "gpu-train": (step_gpu_train, "training clips/s with bf16 autocast on CUDA"),
}


# ---------------------------------------------------------------------------------------------------------------------
# Targets


@dataclass
class Target:
    name: str
    goal: str
    status: str  # PASS | FAIL | NOT MEASURED
    value: str
    source: str


def _results(steps: dict[str, dict], name: str) -> list[dict]:
    return [r for rep in steps.get(name, {}).get("reports", []) for r in rep.get("results", [])]


def target_cpu_speed(steps: dict[str, dict]) -> Target:
    goal = "s2d_base ONNX Runtime CPU clips/s >= 3x PyTorch fp32, top-1 agreement >= 99%"
    rows = [r for r in _results(steps, "cpu-inference") if str(r.get("model", "")).startswith("s2d_base")]
    if not rows:
        return Target("cpu-speed", goal, "NOT MEASURED", "no s2d_base cpu-inference rows in this run", "cpu-inference")
    ok = [
        r for r in rows
        if not str(r.get("engine", "")).startswith("pytorch") and "CUDA" not in str(r.get("provider", ""))
        and (_agreement(r) or 0) >= 0.99
    ]  # fmt: skip
    if not ok:
        return Target("cpu-speed", goal, "FAIL", "no ONNX Runtime variant at >= 99% agreement", "cpu-inference")
    best = max(ok, key=lambda r: r.get("speedup_vs_pytorch_fp32", 0))
    ratio = best.get("speedup_vs_pytorch_fp32", 0)
    value = f"x{ratio:.2f} ({_engine(best)}, batch {best['batch']}, {best['clips_per_s']:.2f} clips/s)"
    return Target("cpu-speed", goal, "PASS" if ratio >= 3 else "FAIL", value, "cpu-inference")


def target_face_share(steps: dict[str, dict]) -> Target:
    goal = "face pipeline (decode + detect + track + align) <= 20% of end-to-end, 640x360 upload, s2d_base"
    reports = steps.get("face-share", {}).get("reports", [])
    if not reports:
        reason = steps.get("face-share", {}).get("reason") or "face-share did not run"
        return Target("face-share", goal, "NOT MEASURED", reason, "face-share")
    level = reports[-1]["levels"][0]
    share = level["face_pipeline_share"]
    lo, hi = level["face_pipeline_share_range"]
    value = f"{100 * share:.1f}% [{100 * lo:.1f}..{100 * hi:.1f}] over {level['ok']} requests"
    return Target("face-share", goal, "PASS" if share <= 0.20 else "FAIL", value, "face-share")


def target_gpu_mfu(steps: dict[str, dict]) -> Target:
    goal = "GPU: s2d_base >= 50% of the measured bf16 matmul peak at the best batch size"
    rows = [r for r in _results(steps, "gpu-model") if r["variant"] == "s2d_base" and r["precision"] == "bf16"]
    if not rows:
        reason = steps.get("gpu-model", {}).get("reason") or "gpu-model did not run"
        return Target("gpu-mfu", goal, "NOT MEASURED", reason, "gpu-model")
    best = max(rows, key=lambda r: r["mfu"])
    value = f"MFU {100 * best['mfu']:.1f}% at batch {best['batch']} ({best['clips_per_s']:.1f} clips/s)"
    return Target("gpu-mfu", goal, "PASS" if best["mfu"] >= 0.5 else "FAIL", value, "gpu-model")


TARGETS = (target_cpu_speed, target_face_share, target_gpu_mfu)


# ---------------------------------------------------------------------------------------------------------------------
# Running


@contextlib.contextmanager
def held(lock: str | None) -> Iterator[float]:
    """An exclusive flock on `lock` (the shared CPU lock) while a step runs; yields the seconds waited for it."""
    if not lock:
        yield 0.0
        return
    with open(lock, "a") as handle:
        start = time.perf_counter()
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - start
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_step(name: str, ctx: Context, lock: str | None) -> StepResult:
    fn, what = STEPS[name]
    result = StepResult()
    print(f"\n=== {name}: {what}", flush=True)
    start = time.perf_counter()
    try:
        with held(lock) as waited:
            result.lock_wait_s = waited
            fn(ctx, result)
    except Skip as skip:
        result.status, result.reason = "skipped", str(skip)
    except Exception as err:  # one broken benchmark must not lose the others' figures
        result.status, result.reason = "failed", f"{type(err).__name__}: {err}"
    result.seconds = time.perf_counter() - start - result.lock_wait_s
    if result.status != "ok":
        print(f"{name}: {result.status}: {result.reason}", flush=True)
    return result


def summary(report: dict) -> str:
    lines = [f"machine: {report['machine'].get('cpu')} ({report['machine'].get('cores')} cores)"
             + (f", {report['machine']['cuda_device']}" if "cuda_device" in report["machine"] else ""),
             f"command: {report['command']}", ""]  # fmt: skip
    for name, step in report["steps"].items():
        head = f"[{step['status']}] {name} ({step['seconds']:.0f} s)"
        lines.append(head + (f": {step['reason']}" if step["reason"] else ""))
        lines += [f"    {line}" for line in step["lines"]]
    lines += ["", f"{'target':12s} {'status':13s} value  (goal)"]
    for t in report["targets"]:
        lines.append(f"{t['name']:12s} {t['status']:13s} {t['value']}  ({t['goal']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="s2d bench", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, seconds per step")
    size.add_argument("--full", action="store_true", help="the issue's sizes (s2d_base, batch 1/4/8): long on 2 cores")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), metavar="NAME", help=f"steps among {list(STEPS)}")
    parser.add_argument("--out", default=str(REPO / "artifacts" / "bench"), help="report folder (artifacts/bench)")
    parser.add_argument("--model", help="model for the server steps (default: the store's default)")
    parser.add_argument("--store", help="model store (default: $S2D_MODEL_STORE or ~/.cache/s2d/models)")
    parser.add_argument("--variant", help="model variant for model / cpu-inference / train / gpu steps")
    parser.add_argument("--lock", help="hold an exclusive flock on this file during each step (e.g. /tmp/s2d-cpu.lock)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ctx = Context(
        size="quick" if args.quick else "full" if args.full else "default",
        runs=out / f"runs-{stamp}",
        store=Path(args.store) if args.store else None,
        model=args.model,
        variant=args.variant,
    )
    ctx.runs.mkdir(parents=True, exist_ok=True)
    # Without --only: every step; GPU steps skip themselves without CUDA, face-share in a quick run without the cache.
    names = args.only or list(STEPS)
    started = time.time()
    steps = {name: vars(run_step(name, ctx, args.lock)) for name in names}
    report = {
        "suite": "s2d bench",
        # as the user typed it: `s2d bench ...` hands its arguments over, `python -m bench.suite` reads sys.argv
        "command": command() if argv is None else " ".join(["s2d bench", *argv]),
        "machine": machine(),
        "size": ctx.size,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": time.time() - started,
        "steps": steps,
        "targets": [vars(t(steps)) for t in TARGETS],
    }
    path = out / f"suite-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print("\n" + summary(report))
    print(f"\nreport: {path}")
    return 1 if any(s["status"] == "failed" for s in steps.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
