"""Face tracks under frame drops: ids per real person, id switches and lost frames, for the service's tracker (and
the same without its distance pass, "iou-only") and ByteTrack (supervision), on real faces moved along paths and
occluded, with 0-90% of the frames dropped.

    .venv/bin/python bench/bench_tracking.py [--drops 0 0.5 0.7 0.8 0.9] [--seeds 5] [--trackers service bytetrack]

ByteTrack needs `pip install "supervision>=0.26,<0.31"` (0.31 removed it); it is left out when missing.

Each scene is rendered at 30 frames/s (real photographs pasted on a backdrop: scikit-image's astronaut, matplotlib's
Grace Hopper, LFW faces), MTCNN runs once on every frame and its detections are cached; a dropped-frame run then
replays a tracker on the kept frames only, with their real timestamps, the way an overloaded live stream feeds the
face pipeline. Frames are dropped independently (seeded), so gaps vary as they do under load.

A reported track belongs to the person whose face box it overlaps most (IoU >= 0.3). Counted over the kept frames in
which a person is visible (at least half the face in the frame, not behind a bar or another person): ids per person
(ideal 1), id switches (the person's id changes from one kept frame to the next it is tracked in) and lost frames
(no track on the person; "detector" is the floor every tracker shares: frames in which MTCNN found no face there);
"ids on 2 people" counts pairs of people that were given the same id at some point (a swap or a wrong merge).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from s2d.harness.measure import machine, write_report
from s2d.harness.scenes import astronaut_face, backdrop, lfw_patches, paste, reference_photos
from s2d.service.faces import Detection, Tracker, TrackerConfig, create_detector
from s2d.service.faces.boxes import iou_matrix

FPS = 30.0
SIZE = (640, 360)  # width, height
HEIGHT = 150  # pixels of a pasted photo
MATCH_IOU = 0.3  # a reported box belongs to a person's face from this overlap
VISIBLE = 0.5  # a person counts as visible with this share of the face box unhidden
COAST_S = TrackerConfig().max_age_s  # ByteTrack's lost-track buffer is sized to the service tracker's coasting time
DROPS = (0.0, 0.5, 0.7, 0.8, 0.9)

Point = tuple[float, float, float]  # t (seconds), x, y of the photo's top-left corner


@dataclass(frozen=True)
class Person:
    photo: str  # a key of `photos()`
    route: tuple[Point, ...]  # positions in between are interpolated linearly; speed changes are uneven spacing

    def at(self, t: float) -> tuple[int, int]:
        ts, xs, ys = zip(*self.route, strict=True)
        return round(float(np.interp(t, ts, xs))), round(float(np.interp(t, ts, ys)))


@dataclass(frozen=True)
class Scene:
    name: str
    people: tuple[Person, ...]  # pasted in this order: later ones are in front
    bars: tuple[tuple[int, int], ...] = ()  # x0, x1 of full-height bars in front of everyone
    seconds: float = 3.0

    @property
    def times(self) -> np.ndarray:
        return np.arange(round(self.seconds * FPS)) / FPS


def zigzag(t0: float, t1: float, period: float, a: tuple[float, float], b: tuple[float, float]) -> tuple[Point, ...]:
    """A route going back and forth between points a and b, one leg per half `period`."""
    legs = np.arange(t0, t1 + 1e-9, period / 2)
    return tuple((float(t), *(a if i % 2 == 0 else b)) for i, t in enumerate(legs))


ACROSS = ((0, 20, 100), (3, 470, 100))  # left to right at a steady pace
BACK = ((0, 470, 110), (3, 20, 110))  # right to left
SCENES = (
    Scene("linear", (Person("astronaut", ACROSS),)),
    Scene("speed-change", (Person("grace_hopper", ((0, 20, 100), (1.0, 100, 110), (1.6, 450, 120), (3, 480, 100))),)),
    Scene("zig-zag", (Person("lfw", zigzag(0, 3, 1.0, (120, 60), (330, 140))),)),
    Scene("crossing", (Person("astronaut", ((0, 20, 40), (3, 470, 40))),
                       Person("grace_hopper", ((0, 470, 170), (3, 20, 170))))),
    Scene("bar", (Person("astronaut", ((0, 20, 100), (3, 500, 100))),), bars=((280, 340),)),
    Scene("leave-return", (Person("lfw", ((0, 250, 100), (1.0, 560, 100), (1.3, 630, 100), (1.6, 630, 100),
                                          (2.4, 300, 120), (3, 300, 120))),)),
    Scene("crossing-occluded", (Person("astronaut", ACROSS), Person("lfw", BACK))),  # the face in front hides the other
    Scene("three", (
        Person("lfw", zigzag(0, 3, 1.2, (250, 30), (250, 190))),
        Person("astronaut", ((0, 0, 10), (3, 460, 10))),
        Person("grace_hopper", ((0, 470, 200), (0.8, 400, 200), (2.2, 60, 190), (3, 20, 200))),
    )),
)  # fmt: skip


@cache
def photos() -> dict[str, np.ndarray]:
    """The pasted photos, head and shoulders, as uint8 RGB."""
    hopper = reference_photos()["grace_hopper"]
    return {"astronaut": astronaut_face(), "grace_hopper": hopper[40:440, 110:410], "lfw": lfw_patches()[0][5]}


def pasted_width(photo: str) -> int:
    patch = photos()[photo]
    return round(patch.shape[1] * HEIGHT / patch.shape[0])


@cache
def face_box(photo: str) -> np.ndarray:
    """The face inside a pasted photo, as fractions of the photo's width and height (found by the detector once)."""
    (found,) = create_detector("mtcnn").detect(paste(backdrop(*SIZE), photos()[photo], 100, 100, HEIGHT))
    return (found.box - 100) / np.float32([pasted_width(photo), HEIGHT] * 2)


def render(scene: Scene, t: float) -> np.ndarray:
    frame = backdrop(*SIZE, seed=1)
    for person in scene.people:
        frame = paste(frame, photos()[person.photo], *person.at(t), HEIGHT)
    for x0, x1 in scene.bars:
        frame[:, x0:x1] = 90
    return frame


def truth(scene: Scene, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Each person's face box [P, 4] at t and whether it is visible [P]."""
    w, h = SIZE
    rects, faces = [], []
    for person in scene.people:
        pw = pasted_width(person.photo)
        x, y = person.at(t)
        rects.append((x, y, x + pw, y + HEIGHT))
        faces.append(face_box(person.photo) * [pw, HEIGHT, pw, HEIGHT] + [x, y, x, y])
    visible = []
    for i, face in enumerate(faces):
        shown = np.zeros((h, w), bool)
        x0, y0, x1, y1 = (round(v) for v in face)
        shown[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
        for rx0, ry0, rx1, ry1 in rects[i + 1 :]:
            shown[max(ry0, 0) : max(ry1, 0), max(rx0, 0) : max(rx1, 0)] = False
        for bx0, bx1 in scene.bars:
            shown[:, bx0:bx1] = False
        visible.append(shown.sum() >= VISIBLE * (x1 - x0) * (y1 - y0))
    return np.float32(faces), np.array(visible)


def kept_frames(n: int, drop: float, seed: int) -> np.ndarray:
    """Indices of the frames a tracker sees when a share `drop` of n frames is dropped (independently, seeded)."""
    keep = np.random.default_rng([seed, round(drop * 100)]).random(n) >= drop
    return np.flatnonzero(keep)


# ---- trackers: each replays detections [(t, [Detection])] and returns the reported (id, box) pairs per frame -----
Frames = Sequence[tuple[float, list[Detection]]]
Reported = list[list[tuple[int, np.ndarray]]]


def service_tracker(**options) -> Callable[[Frames, float], Reported]:
    def run(frames: Frames, drop: float) -> Reported:
        tracker = Tracker(**options)
        return [[(tr.track_id, tr.box) for tr in tracker.update(dets, t)] for t, dets in frames]

    return run


def run_bytetrack(frames: Frames, drop: float) -> Reported:
    """supervision's ByteTrack counts its lost-track buffer in updates: sized to COAST_S at the kept frame rate."""
    import supervision as sv

    with warnings.catch_warnings():  # deprecated in supervision 0.28 for the `trackers` package, gone in 0.31
        warnings.simplefilter("ignore", FutureWarning)
        # max_time_lost = frame_rate / 30 * lost_track_buffer updates: COAST_S at the kept frames' rate
        tracker = sv.ByteTrack(lost_track_buffer=round(COAST_S * 30), frame_rate=FPS * (1 - drop))
    out = []
    for _, dets in frames:
        boxes = np.stack([d.box for d in dets]) if dets else np.empty((0, 4), np.float32)
        found = sv.Detections(xyxy=boxes, confidence=np.float32([d.score for d in dets]))
        tracked = tracker.update_with_detections(found)
        out.append([(int(i), box) for i, box in zip(tracked.tracker_id, tracked.xyxy, strict=True)])
    return out


TRACKERS = {
    "iou-only": service_tracker(reach=0.0, reach_per_s=0.0),  # the service's tracker without its distance pass
    "service": service_tracker(),
    "bytetrack": run_bytetrack,
}


# ---- scoring --------------------------------------------------------------------------------------------------
def owners(boxes: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """For each box, the person whose face it overlaps most, or -1 under MATCH_IOU."""
    if not len(boxes):
        return np.empty(0, int)
    iou = iou_matrix(boxes, faces)
    return np.where(iou.max(axis=1) >= MATCH_IOU, iou.argmax(axis=1), -1)


def score(scene: Scene, kept: np.ndarray, reported: Reported, detections: list[list[Detection]]) -> dict:
    """ids per person, id switches, lost and detector-missed frames over the kept frames a person is visible in."""
    ids: list[set[int]] = [set() for _ in scene.people]
    last: list[int | None] = [None] * len(scene.people)
    switches = lost = missed = visible_frames = 0
    for frame, tracks in zip(kept, reported, strict=True):
        faces, visible = truth(scene, scene.times[frame])
        seen = owners(np.float32([d.box for d in detections[frame]]).reshape(-1, 4), faces)
        owner = owners(np.float32([box for _, box in tracks]).reshape(-1, 4), faces)
        by_person = {int(p): track_id for p, (track_id, _) in zip(owner, tracks, strict=True)}
        for p in np.flatnonzero(visible):
            visible_frames += 1
            missed += p not in seen
            track_id = by_person.get(p)
            if track_id is None:
                lost += 1
                continue
            switches += last[p] is not None and last[p] != track_id
            last[p] = track_id
            ids[p].add(track_id)
    counted = [len(s) for s in ids if s]
    shared = sum(a & b != set() for i, a in enumerate(ids) for b in ids[i + 1 :])
    return {"ids": sum(counted), "people": len(counted), "max_ids": max(counted, default=0), "switches": switches,
            "shared": shared, "lost": lost, "missed": missed, "visible": visible_frames}  # fmt: skip


def detect_scene(scene: Scene, detector, frames: Collection[int] | None = None) -> list[list[Detection]]:
    """Detections on the scene's frames (all, or only `frames`; others left empty)."""
    wanted = range(len(scene.times)) if frames is None else set(frames)
    return [detector.detect(render(scene, t)) if i in wanted else [] for i, t in enumerate(scene.times)]


def replay(scene: Scene, detections: list[list[Detection]], tracker: str, drop: float, seed: int) -> dict:
    kept = kept_frames(len(scene.times), drop, seed)
    reported = TRACKERS[tracker]([(scene.times[i], detections[i]) for i in kept], drop)
    return score(scene, kept, reported, detections)


def total(rows: list[dict]) -> dict:
    keys = ("ids", "people", "switches", "shared", "lost", "missed", "visible")
    out = {k: sum(r[k] for r in rows) for k in keys}
    out["max_ids"] = max(r["max_ids"] for r in rows)
    out["ids_per_person"] = out["ids"] / max(out["people"], 1)
    return out


def bytetrack_version() -> str | None:
    """The installed supervision's version when it still has ByteTrack, else None."""
    try:
        import supervision as sv
    except ImportError:
        return None
    return sv.__version__ if hasattr(sv, "ByteTrack") else None


def measure(tracker: str, drop: float, seeds: int, cached: dict[str, list[list[Detection]]]) -> dict:
    """Totals over every scene and seed (one draw without drops), with the per-run rows."""
    draws = range(1 if drop == 0 else seeds)
    rows = [
        {"scene": s.name, "seed": seed, **replay(s, cached[s.name], tracker, drop, seed)}
        for s in SCENES
        for seed in draws
    ]
    return {"tracker": tracker, "drop": drop, "seeds": len(draws), **total(rows), "runs": rows}


def print_scenes(results: list[dict], drop: float) -> None:
    """ids per person / id switches of each scene at one drop rate, one column per tracker."""
    at = [r for r in results if r["drop"] == drop]
    print(f"\nper scene at {drop:.0%} dropped: ids per person / id switches")
    print("| scene | " + " | ".join(r["tracker"] for r in at) + " |")
    print("|---|" + "---|" * len(at))
    for scene in SCENES:
        cells = [total([x for x in r["runs"] if x["scene"] == scene.name]) for r in at]
        print(f"| {scene.name} | " + " | ".join(f"{c['ids_per_person']:.1f} / {c['switches']}" for c in cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=float, nargs="+", default=list(DROPS))
    parser.add_argument("--seeds", type=int, default=5, help="dropped-frame draws per scene and drop rate")
    parser.add_argument("--trackers", nargs="+", default=list(TRACKERS), choices=list(TRACKERS))
    parser.add_argument("--scenes-at", type=float, default=0.8, help="drop rate of the per-scene table")
    args = parser.parse_args(argv)
    trackers = [t for t in args.trackers if t != "bytetrack" or bytetrack_version()]
    if len(trackers) < len(args.trackers):
        print('bytetrack left out: needs supervision>=0.26,<0.31 (pip install "supervision>=0.26,<0.31")')
    print(f"machine: {machine()}")
    detector = create_detector("mtcnn")
    cached = {scene.name: detect_scene(scene, detector) for scene in SCENES}
    results = []
    print("| tracker | dropped | ids per person (max) | id switches | ids on 2 people | lost (detector) | visible |")
    print("|---|---|---|---|---|---|---|")
    for tracker in trackers:
        for drop in args.drops:
            results.append(t := measure(tracker, drop, args.seeds, cached))
            print(
                f"| {tracker} | {drop:.0%} | {t['ids_per_person']:.2f} ({t['max_ids']}) | {t['switches']} | "
                f"{t['shared']} | {t['lost']} ({t['missed']}) | {t['visible']} |",
                flush=True,
            )
    if args.scenes_at in args.drops:
        print_scenes(results, args.scenes_at)
    extra = {"scenes": [s.name for s in SCENES], "fps": FPS, "supervision": bytetrack_version()}
    print(f"report: {write_report('tracking', results, **extra)}")


if __name__ == "__main__":
    main()
