"""Evaluation metrics from a confusion matrix: UAR (mean per-class recall), WAR (accuracy), per-class recall.

In distributed runs the confusion matrices of all processes are summed first, and the metrics computed from the
sum: averaging per-process UARs would be wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C, C] counts, rows = true class, columns = predicted class."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def summarize(matrix: torch.Tensor, classes: list[str] | tuple[str, ...]) -> dict:
    """UAR / WAR in percent, per-class recall, support and the matrix itself, as plain JSON-able values."""
    matrix = matrix.double()
    support = matrix.sum(dim=1)
    recall = torch.where(support > 0, matrix.diagonal() / support.clamp_min(1), torch.nan)
    present = support > 0
    total = support.sum().item()
    return {
        "uar": 100 * recall[present].mean().item() if present.any() else float("nan"),
        "war": 100 * matrix.diagonal().sum().item() / total if total else float("nan"),
        "num_samples": int(total),
        "per_class_recall": {
            c: (100 * r.item() if s > 0 else None) for c, r, s in zip(classes, recall, support, strict=True)
        },
        "support": {c: int(s) for c, s in zip(classes, support, strict=True)},
        "classes": list(classes),
        "confusion_matrix": matrix.long().tolist(),
    }


def write_report(summary: dict, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """`<name>.json` with the summary and `<name>_confusion.png` with the row-normalised matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(summary, indent=2))
    matrix = torch.tensor(summary["confusion_matrix"], dtype=torch.float64)
    normalised = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1)
    classes = summary["classes"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 0.8 + 0.8 * len(classes)))
    ax.imshow(normalised.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            value = normalised[i, j].item()
            ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", color="white" if value > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{name}: UAR {summary['uar']:.2f}  WAR {summary['war']:.2f}")
    fig.tight_layout()
    png_path = out / f"{name}_confusion.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return json_path, png_path
