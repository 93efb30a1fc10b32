"""The face detector's engine (issue 28): MTCNN's three networks (the ONNX graphs `service/faces/mtcnn.py` builds) on
ONNX Runtime, as the service runs them, against the same graphs compiled by OpenVINO (fp32, and bf16 where the CPU
has a bf16 unit), side by side in one run on real faces moving over a backdrop (`s2d.harness.scenes.moving_faces`).

    python bench/bench_detector_engines.py                    # 640x360 frames, 40 of them, 1 thread (the service's)
    python bench/bench_detector_engines.py --frames 60 --threads 2

Per engine: milliseconds per whole-frame detection (`detect`: the PNet pyramid, RNet, ONet) and per tracked-face
refinement (`refine`: one ONet pass per box), medians over the frames, the engines interleaved frame by frame so
load from other processes falls on all alike; and whether each engine found the same faces (box IoU with ONNX
Runtime's >= 0.9, same count per frame).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from s2d.harness.measure import machine, write_report
from s2d.harness.scenes import moving_faces
from s2d.machine import isa_summary


class OpenVinoNet:
    """One MTCNN network compiled by OpenVINO: the `_Net` call of service/faces/mtcnn.py (image -> named outputs)."""

    def __init__(self, model: bytes, precision: str, threads: int, folder: Path):
        from s2d.service.openvino_engine import compile_for_cpu

        path = folder / f"net-{id(self)}.onnx"
        path.write_bytes(model)
        self.request = compile_for_cpu(path, precision, threads).create_infer_request()

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from s2d.service.openvino_engine import outputs_by_name

        return outputs_by_name(self.request.infer({"image": x}))


def detectors(precisions: list[str], threads: int, folder: Path) -> dict:
    """name -> MTCNNDetector: ONNX Runtime's as built, and copies whose three networks run on OpenVINO."""
    from s2d.service.faces import mtcnn

    reference = mtcnn.MTCNNDetector(threads=threads)
    graphs = {
        "_pnet": mtcnn._pnet_graph(mtcnn._load("pnet")),
        "_rnet": mtcnn._rnet_graph(mtcnn._load("rnet")),
        "_onet": mtcnn._onet_graph(mtcnn._load("onet")),
    }
    out = {"onnxruntime": reference}
    for precision in precisions:
        detector = mtcnn.MTCNNDetector(threads=threads)
        for attribute, graph in graphs.items():
            setattr(detector, attribute, OpenVinoNet(graph, precision, threads, folder))
        out[f"openvino-{precision}"] = detector
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area) if area > 0 else 0.0


def same_faces(found: list, reference: list) -> bool:
    if len(found) != len(reference):
        return False
    return all(iou(np.asarray(f.box), np.asarray(r.box)) >= 0.9 for f, r in zip(found, reference, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="per network (the service's MTCNNConfig.threads: 1)")
    parser.add_argument("--openvino", default="fp32,bf16", help="OpenVINO precisions (bf16 only where native)")
    args = parser.parse_args(argv)

    from s2d.service.openvino_engine import native_bf16

    isa = isa_summary()
    print(f"machine: {machine()}, instruction sets: {isa}, load average {os.getloadavg()}", flush=True)
    precisions = [p for p in args.openvino.split(",") if p and (p != "bf16" or native_bf16())]
    frames = moving_faces(args.frames, crossing=True)
    with tempfile.TemporaryDirectory(prefix="bench_detector_") as tmp:
        engines = detectors(precisions, args.threads, Path(tmp))
        detect_ms: dict[str, list[float]] = {name: [] for name in engines}
        refine_ms: dict[str, list[float]] = {name: [] for name in engines}
        agree: dict[str, int] = dict.fromkeys(engines, 0)
        for engine in engines.values():  # warm-up: allocations, every pyramid shape of the first frame
            engine.detect(frames[0])
        for frame in frames:
            found = {}
            for name, engine in engines.items():
                start = time.perf_counter()
                found[name] = engine.detect(frame)
                detect_ms[name].append(1000 * (time.perf_counter() - start))
            boxes = np.array([d.box for d in found["onnxruntime"]]).reshape(-1, 4)
            for name, engine in engines.items():
                start = time.perf_counter()
                engine.refine(frame, boxes)
                refine_ms[name].append(1000 * (time.perf_counter() - start))
                agree[name] += same_faces(found[name], found["onnxruntime"])
    rows = []
    print(f"{'engine':18s} {'detect ms':>10s} {'refine ms':>10s} {'x ORT detect':>12s} {'same faces':>10s}")
    for name in engines:
        detect, refine = float(np.median(detect_ms[name])), float(np.median(refine_ms[name]))
        ratio = float(np.median(detect_ms["onnxruntime"])) / detect
        print(f"{name:18s} {detect:10.2f} {refine:10.2f} {ratio:12.2f} {agree[name]:6d}/{len(frames)}")
        rows.append({"engine": name, "detect_ms": detect, "refine_ms": refine, "speedup_detect_vs_ort": ratio,
                     "same_faces": agree[name], "frames": len(frames), "threads": args.threads})  # fmt: skip
    print(f"load average after {os.getloadavg()}")
    print(f"report: {write_report('detector_engines', rows, isa=isa)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
