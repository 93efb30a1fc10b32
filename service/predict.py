"""`s2d predict VIDEO`: the service's pipeline without a server. Writes the JSON the REST API would return, a PNG
timeline of each person's emotion probabilities, and optionally the video annotated with boxes and labels."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from s2d.service.analysis import analyse_video
from s2d.service.registry import ModelRegistry
from s2d.service.schemas import ClassifyOptions, ClassifyResponse
from s2d.service.settings import Limits, Settings

log = logging.getLogger(__name__)


class VideoAnalyser:
    """The service's pipeline held open for many videos (`s2d predict`, `s2d analyze`'s workers): the settings' models
    loaded once, their batchers on one event loop, one pipeline thread.

        with VideoAnalyser(settings) as analyser:
            result = analyser.analyse(path, ClassifyOptions(model=name))
    """

    def __init__(self, settings: Settings):
        self.registry = ModelRegistry(settings)
        self.limits = Limits.from_settings(settings)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="s2d-predict")
        self._runner = asyncio.Runner()
        try:
            self._runner.run(self._start())
        except BaseException:
            self._runner.close()
            self._executor.shutdown()
            raise

    async def _start(self) -> None:
        self.registry.load()
        self.registry.start()
        await self.registry.warmup()  # settings.warmup=False (the CLI default) just marks it ready

    def analyse(self, source: Path, options: ClassifyOptions, fps: float = 25.0) -> ClassifyResponse:
        """Classify a video file (or, in aligned mode, a folder of aligned frames at `fps`): POST /v1/classify's
        answer for the same video and options."""
        model = self.registry.get(options.model)
        return self._runner.run(analyse_video(source, model, options, self.limits, self._executor, fps=fps))

    def close(self) -> None:
        try:
            self._runner.run(self.registry.stop())
        finally:
            self._runner.close()
            self._executor.shutdown()

    def __enter__(self) -> VideoAnalyser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def predict_video(source: Path, settings: Settings, options: ClassifyOptions, fps: float = 25.0) -> ClassifyResponse:
    """Classify a video file (or, in aligned mode, a folder of aligned frames at `fps`) with one model."""
    with VideoAnalyser(settings) as analyser:
        return analyser.analyse(source, options, fps=fps)


def plot_timeline(result: ClassifyResponse, path: Path) -> Path:
    """One panel per person: each class's probability over time (window centres), the smoothed curve when present."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "the PNG timeline needs matplotlib (pip install matplotlib, or the [train] extra); "
            "the JSON result was written without it"
        ) from err
    persons = result.persons
    rows = max(len(persons), 1)  # no persons (no face found): one empty panel that says so
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.6 * rows), squeeze=False, sharex=True)
    if not persons:
        axes[0, 0].text(0.5, 0.5, "; ".join(result.notes) or "no persons", ha="center", va="center")
        axes[0, 0].set_axis_off()
    classes = list(persons[0].windows[0].probs) if persons else []
    for ax, person in zip(axes[: len(persons), 0], persons, strict=True):
        t = [(w.t_start + w.t_end) / 2 for w in person.windows]
        for c in classes:
            key = "smoothed" if person.windows[0].smoothed is not None else "raw"
            ys = [(w.smoothed.probs if key == "smoothed" else w.probs)[c] for w in person.windows]
            ax.plot(t, ys, marker="o", markersize=3, label=c)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_title(f"person {person.track_id}: mostly {person.summary.dominant}", fontsize=10)
        ax.grid(alpha=0.3)
    if persons:
        axes[0, 0].legend(ncol=min(len(classes), 7), fontsize=8, loc="upper right")
        axes[-1, 0].set_xlabel("time (s, window centre)")
    fig.suptitle(f"{result.model.name} {result.model.version} [{result.model.family}]")  # what answered, always
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _track_at(person, t: float):
    """(box [4] interpolated between window centres, label of the window whose centre is nearest) at time t."""
    windows = person.windows
    if not windows or t < windows[0].t_start - 0.5 or t > windows[-1].t_end + 0.5:
        return None, None
    centres = np.array([(w.t_start + w.t_end) / 2 for w in windows])
    nearest = windows[int(np.abs(centres - t).argmin())]
    shown = nearest.smoothed or nearest
    if windows[0].box is None:
        return None, f"{shown.label} {shown.confidence:.2f}"
    boxes = np.array([w.box for w in windows])
    box = np.array([np.interp(t, centres, boxes[:, k]) for k in range(4)])
    return box, f"{shown.label} {shown.confidence:.2f}"


def annotate_video(source: Path, result: ClassifyResponse, path: Path) -> Path:
    """Re-decode the video and draw each person's box and current label; h264 mp4."""
    import av
    import cv2

    from s2d.service.media import iter_frames

    fps = result.video.fps or 25.0
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=round(fps))
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for frame in iter_frames(source):
            image = np.ascontiguousarray(frame.image)
            if stream.width == 0 or not stream.width:
                stream.height, stream.width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
            for person in result.persons:
                box, label = _track_at(person, frame.t)
                if label is None:
                    continue
                x1, y1, x2, y2 = (int(v) for v in box) if box is not None else (4, 4, image.shape[1] - 4, 40)
                cv2.rectangle(image, (x1, y1), (x2, y2), (40, 220, 90), 2)
                cv2.putText(image, f"#{person.track_id} {label}", (x1, max(y1 - 6, 14)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            (40, 220, 90), 1, cv2.LINE_AA)  # fmt: skip
            image = image[: stream.height, : stream.width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
