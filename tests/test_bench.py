"""The benchmark suite runs end to end and writes a valid combined report; the peak / MFU helpers and the targets'
PASS/FAIL rules. No timing thresholds: speed is reported by the benchmarks, not asserted here."""

from __future__ import annotations

import json

import pytest
import torch

from bench.suite import target_cpu_speed, target_face_share, target_gpu_mfu
from s2d.cli import main as cli_main
from s2d.harness.measure import matmul_peak, mfu


def test_matmul_peak_measures_a_gemm() -> None:
    peak = matmul_peak("fp32", "cpu", n=128, repeats=2)
    assert peak["n"] == 128 and peak["repeats"] == 2 and peak["dtype"] == "fp32"
    assert peak["min_s"] <= peak["median_s"] <= peak["max_s"]
    assert peak["gflops"] == pytest.approx(2 * 128**3 / peak["median_s"] / 1e9)


def test_matmul_peak_grows_n_until_a_product_is_measurable() -> None:
    peak = matmul_peak("fp32", "cpu", repeats=1)
    assert 256 <= peak["n"] <= 2048 and peak["gflops"] > 0


def test_mfu_is_achieved_over_peak() -> None:
    figures = mfu(flop_per_item=50e9, items_per_s=2.0, peak_gflops=400.0)
    assert figures["achieved_gflops"] == pytest.approx(100.0)
    assert figures["mfu"] == pytest.approx(0.25)


def _step(results: list[dict], **report) -> dict:
    return {"status": "ok", "reason": "", "reports": [{"results": results, **report}]}


def test_cpu_speed_target_needs_3x_at_99_percent_agreement() -> None:
    def row(precision: str, speedup: float, agreement: float) -> dict:
        return {"model": "s2d_base-T16", "engine": "onnxruntime", "provider": "CPUExecutionProvider", "batch": 1,
                "precision": precision, "clips_per_s": 1.0, "speedup_vs_pytorch_fp32": speedup,
                "top1_agreement_vs_pytorch_fp32": agreement}  # fmt: skip

    passing = target_cpu_speed({"cpu-inference": _step([row("fp32", 1.2, 1.0), row("int8", 3.4, 0.99)])})
    assert passing.status == "PASS" and "int8" in passing.value
    # 3.4x but only 90% agreement does not count; the 2x variant that agrees is not enough
    failing = target_cpu_speed({"cpu-inference": _step([row("fp32", 2.0, 1.0), row("int8", 3.4, 0.9)])})
    assert failing.status == "FAIL" and "x2.00" in failing.value
    # bench_cpu_inference.py's rows: engine names, `top1_agreement`
    other = {"model": "s2d_base-T16", "engine": "ort-int8", "batch": 1, "clips_per_s": 1.0,
             "speedup_vs_pytorch_fp32": 3.1, "top1_agreement": 1.0}  # fmt: skip
    pytorch = {**other, "engine": "pytorch-fp32", "speedup_vs_pytorch_fp32": 1.0}
    assert target_cpu_speed({"cpu-inference": _step([pytorch, other])}).status == "PASS"
    tiny = target_cpu_speed({"cpu-inference": _step([{**row("int8", 5.0, 1.0), "model": "s2d_tiny-T16"}])})
    assert tiny.status == "NOT MEASURED"


def test_face_share_and_gpu_targets() -> None:
    level = {"face_pipeline_share": 0.15, "face_pipeline_share_range": [0.1, 0.2], "ok": 3}
    share = {"face-share": {"status": "ok", "reason": "", "reports": [{"levels": [level]}]}}
    assert target_face_share(share).status == "PASS"
    level["face_pipeline_share"] = 0.25
    assert target_face_share(share).status == "FAIL"
    rows = [{"variant": "s2d_base", "precision": "bf16", "batch": b, "mfu": m, "clips_per_s": 1.0}
            for b, m in ((1, 0.2), (32, 0.55))]  # fmt: skip
    best = target_gpu_mfu({"gpu-model": _step(rows)})
    assert best.status == "PASS" and "batch 32" in best.value
    skipped = target_gpu_mfu({"gpu-model": {"status": "skipped", "reason": "no CUDA device", "reports": []}})
    assert skipped.status == "NOT MEASURED" and skipped.value == "no CUDA device"


def test_suite_quick_run_writes_a_combined_report(tmp_path, capsys) -> None:
    steps = ["augment", "faces", "gpu-model"]
    assert cli_main(["bench", "--quick", "--only", *steps, "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("suite-*.json")
    report = json.loads(path.read_text())
    assert report["size"] == "quick" and "bench" in report["command"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert list(report["steps"]) == steps
    for name in ("augment", "faces"):
        step = report["steps"][name]
        assert step["status"] == "ok", step["reason"]
        (script_report,) = step["reports"]
        assert script_report["machine"] and script_report["command"].endswith(step["commands"][0].split(" ", 1)[1])
        assert script_report["results"]
    augment = report["steps"]["augment"]["reports"][0]["results"]
    assert all(r["repeats"] == 5 and r["min_ms"] <= r["median_ms"] <= r["max_ms"] for r in augment)
    faces = report["steps"]["faces"]["reports"][0]["results"][0]
    assert faces["resolution"] == "640x360" and faces["pipeline_timing"]["repeats"] == 1
    assert faces["faces_found_per_frame"] == pytest.approx(1.0)
    gpu = report["steps"]["gpu-model"]
    if not torch.cuda.is_available():
        assert gpu["status"] == "skipped" and "CUDA" in gpu["reason"]
    assert {t["name"] for t in report["targets"]} == {"cpu-speed", "face-share", "gpu-mfu"}
    assert all(t["status"] in {"PASS", "FAIL", "NOT MEASURED"} for t in report["targets"])
    out = capsys.readouterr().out
    assert "target" in out and f"report: {path}" in out
