"""Where the `fer` package's own face crop falls in our aligned 224x224 frame, measured on the reference photos.

For every photo of tests/fixtures/fer_baseline/reference.json with one face, the package's crop box (its Haar box,
squared, with its 10 px offsets) is mapped through the similarity transform our MTCNN keypoints give for that photo.
The medians of the mapped centre and side are what `models.frame_baseline.FrameBaselineConfig.crop_box` uses.

    .venv/bin/python tools/calibrate_baseline_crop.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from s2d.harness.scenes import reference_photos
from s2d.service.faces import create_detector
from s2d.service.faces.align import similarity_transforms

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    reference = json.loads((REPO / "tests/fixtures/fer_baseline/reference.json").read_text())
    photos, detector = reference_photos(), create_detector("mtcnn")
    rows = []
    for record in reference["photos"]:
        if "crop_box" not in record or not (detections := detector.detect(photos[record["photo"]])):
            continue
        matrix = similarity_transforms(detections[0].keypoints)[0]
        x1, y1, x2, y2 = record["crop_box"]
        centre = matrix[:, :2] @ np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + matrix[:, 2]
        rows.append([*centre, np.hypot(matrix[0, 0], matrix[1, 0]) * (x2 - x1)])
    rows = np.array(rows)
    median, spread = np.median(rows, 0), rows.std(0)
    print(f"{len(rows)} photos: centre ({median[0]:.1f}, {median[1]:.1f}), side {median[2]:.1f} px "
          f"(std {spread[0]:.1f} / {spread[1]:.1f} / {spread[2]:.1f})")  # fmt: skip
    side = round(median[2])  # a square, as the package's crop is
    x1, y1 = round(median[0] - median[2] / 2), round(median[1] - median[2] / 2)
    print(f"crop_box (x1, y1, x2, y2) = {(x1, y1, x1 + side, y1 + side)}")


if __name__ == "__main__":
    main()
