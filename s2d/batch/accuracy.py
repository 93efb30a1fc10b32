"""Accuracy on the user's labelled videos, as the paper reports DFEW: WAR (weighted average recall: the share of
samples right) and UAR (unweighted average recall: the mean of the per-class recalls, so rare classes count as much
as common ones), with the confusion matrix they come from, per model.

A sample is a labelled span (a manifest's `label`: the whole video). Its prediction is the argmax of the mean
probabilities of the windows (every person track) whose centre lies in the span; a span without any window (no face,
a failed video) is counted as unscored, not as wrong.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from s2d.batch.inputs import Span
from s2d.batch.tables import PROB_PREFIX

log = logging.getLogger(__name__)

# Names datasets use for the card's classes (DFEW, FERV39k, AFEW, FER2013 spell them differently).
ALIASES = {"happiness": "happy", "sadness": "sad", "anger": "angry", "surprised": "surprise", "fearful": "fear",
           "disgusted": "disgust", "neutrality": "neutral"}  # fmt: skip


def match_label(label: str, classes: list[str], model: str) -> str:
    """The card class a label names (case-insensitive, with ALIASES); a ValueError naming the classes otherwise."""
    by_lower = {c.lower(): c for c in classes}
    name = label.strip().lower()
    found = by_lower.get(name) or by_lower.get(ALIASES.get(name, ""))
    if found is None:
        raise ValueError(f"the label {label!r} is not a class of model {model!r}; its classes: {', '.join(classes)}")
    return found


def span_predictions(rows: pd.DataFrame, spans: list[Span], model: str, classes: list[str]) -> list[tuple]:
    """(true class, predicted class or None) per span, from the windows of one model (and one set of options)."""
    centres = (rows["t_start"] + rows["t_end"]) / 2
    probs = rows[[PROB_PREFIX + c for c in classes]].to_numpy(float)
    out = []
    for span in spans:
        inside = ((rows["path"] == str(span.path)) & (centres >= span.start) & (centres < span.end)).to_numpy()
        predicted = classes[int(np.argmax(probs[inside].mean(axis=0)))] if inside.any() else None
        out.append((match_label(span.label, classes, model), predicted))
    return out


def scores(pairs: list[tuple], classes: list[str]) -> dict:
    """WAR, UAR, per-class recall and the confusion matrix (rows: true class, columns: predicted), card order."""
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), int)
    for true, predicted in pairs:
        if predicted is not None:
            confusion[index[true], index[predicted]] += 1
    support = confusion.sum(axis=1)
    recall = {c: (float(confusion[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    scored = int(support.sum())
    present = [r for r in recall.values() if r is not None]
    return {
        "samples": scored, "unscored": len(pairs) - scored, "classes": classes,
        "war": float(np.trace(confusion) / scored) if scored else None,
        "uar": float(np.mean(present)) if present else None,
        "recall": recall, "confusion": confusion.tolist(),
    }  # fmt: skip


def write_metrics(out: Path, windows: pd.DataFrame, spans: list[Span], runs: dict[str, tuple[str, list[str]]]) -> dict:
    """metrics.json and confusion.png (one panel per model, side by side) for `runs`: model -> (its run key, its
    classes); returns the metrics."""
    metrics = {}
    for model, (run_key, classes) in runs.items():  # this run's options only: the folder may hold others
        rows = windows[windows["run_key"] == run_key]
        metrics[model] = scores(span_predictions(rows, spans, model, classes), classes)
    (out / "metrics.json").write_text(json.dumps({"models": metrics}, indent=2))
    try:
        plot_confusions(metrics, out / "confusion.png")
    except ImportError:  # matplotlib comes with the [train] extra; the figures are in metrics.json either way
        log.warning("confusion.png needs matplotlib (pip install matplotlib); metrics.json is written")
    return metrics


def plot_confusions(metrics: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.8), squeeze=False)
    for ax, (model, m) in zip(axes[0], metrics.items(), strict=True):
        confusion = np.array(m["confusion"])
        ax.imshow(confusion, cmap="Blues")
        for (i, j), n in np.ndenumerate(confusion):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8)
        ticks = range(len(m["classes"]))
        ax.set_xticks(ticks, m["classes"], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, m["classes"], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        war, uar = (f"{100 * m[k]:.1f}%" if m[k] is not None else "-" for k in ("war", "uar"))
        ax.set_title(f"{model}\nWAR {war}  UAR {uar}  (n={m['samples']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
