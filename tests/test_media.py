"""Decoding: container timestamps at constant and variable frame rate, rotation, streams, and typed errors."""

from __future__ import annotations

import io
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

from s2d.service.errors import (
    MediaError,
    MediaTooLargeError,
    ServiceError,
    UndecodableMediaError,
    UnsupportedMediaError,
)
from s2d.service.media import MediaLimits, decoder_message, image_size, iter_frames, probe
from tests.faces_helpers import write_video


def _frames(n: int, w: int = 96, h: int = 64) -> list[np.ndarray]:
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : w // 2] = (200, 30, 30)  # red left half: shows where "left" went after rotation
        img[0:8, :] = (i * 9) % 255
        out.append(img)
    return out


@pytest.mark.parametrize("fps", [24, 30])
def test_constant_frame_rate_timestamps(tmp_path, fps):
    path = write_video(tmp_path / f"c{fps}.mp4", _frames(2 * fps), fps=fps)
    info = probe(path)
    assert (info.width, info.height, info.codec) == (96, 64, "h264")
    assert info.fps == pytest.approx(fps)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == list(range(2 * fps))
    np.testing.assert_allclose([f.t for f in frames], np.arange(2 * fps) / fps, atol=1e-3)
    assert frames[0].image.shape == (64, 96, 3) and frames[0].image.dtype == np.uint8


def test_variable_frame_rate_timestamps_come_from_the_container(tmp_path):
    gaps = np.tile([0.020, 0.050, 0.033, 0.100], 10)  # phone-like irregular intervals
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    path = write_video(tmp_path / "vfr.mp4", _frames(len(times)), fps=30, times=times)
    got = np.array([f.t for f in iter_frames(path)])
    np.testing.assert_allclose(got, times, atol=2e-3)


def test_rotation_metadata_is_applied(tmp_path):
    path = write_video(tmp_path / "rot.mp4", _frames(3), rotation=90)
    info = probe(path)
    assert info.rotation == 90 and (info.width, info.height) == (64, 96)
    image = next(iter_frames(path)).image
    assert image.shape == (96, 64, 3)
    # 90 degrees counterclockwise: the red left half ends up at the bottom.
    assert image[-10:, :, 0].mean() > 150 and image[10:20, :, 0].mean() < 80


def test_still_image_and_file_object(tmp_path):
    img = np.full((120, 160, 3), 77, np.uint8)
    _ok, png = cv2.imencode(".png", img)
    (tmp_path / "a.png").write_bytes(png.tobytes())
    frames = list(iter_frames(tmp_path / "a.png"))
    assert len(frames) == 1 and frames[0].t == 0.0 and frames[0].image.shape == (120, 160, 3)
    video = write_video(tmp_path / "v.mp4", _frames(10))
    stream = io.BytesIO(video.read_bytes())
    assert len(list(iter_frames(stream, filename="upload.mp4"))) == 10


def test_max_fps_drops_frames_but_keeps_indices(tmp_path):
    path = write_video(tmp_path / "c.mp4", _frames(30), fps=30)
    frames = list(iter_frames(path, max_fps=10))
    assert len(frames) == 10 and frames[1].index == 3


def _expect(exc_type, reason, fn):
    with pytest.raises(exc_type) as info:
        fn()
    assert isinstance(info.value, MediaError) and isinstance(info.value, ServiceError) and info.value.reason == reason
    return info.value


def test_zero_bytes(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    err = _expect(UndecodableMediaError, "zero_bytes", lambda: probe(tmp_path / "empty.mp4"))
    assert err.code == "undecodable" and err.status == 400


def test_truncated_file(tmp_path):
    data = write_video(tmp_path / "full.mp4", _frames(30)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(UndecodableMediaError):
        list(iter_frames(tmp_path / "cut.mp4"))


def test_garbage_with_a_video_name(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"this is not a video at all\n" * 50)
    with pytest.raises(UndecodableMediaError):
        list(iter_frames(tmp_path / "clip.mp4"))


def test_wrong_extension(tmp_path):
    video = write_video(tmp_path / "v.mp4", _frames(3)).read_bytes()
    (tmp_path / "notes.txt").write_bytes(video)
    err = _expect(UnsupportedMediaError, "extension", lambda: probe(tmp_path / "notes.txt"))
    assert err.code == "unsupported_media" and err.status == 415
    # The content decides the format among media names: a real mp4 called .mov decodes.
    (tmp_path / "v.mov").write_bytes(video)
    assert len(list(iter_frames(tmp_path / "v.mov"))) == 3


def test_audio_only(tmp_path):
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        t = np.arange(16000) / 16000
        frame = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], "fltp", "mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    _expect(UnsupportedMediaError, "no_video", lambda: probe(path))
    _expect(UnsupportedMediaError, "no_video", lambda: list(iter_frames(path)))


def test_one_by_one_pixel(tmp_path):
    _ok, png = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    (tmp_path / "dot.png").write_bytes(png.tobytes())
    _expect(UnsupportedMediaError, "too_small", lambda: probe(tmp_path / "dot.png"))
    _expect(UnsupportedMediaError, "too_small", lambda: list(iter_frames(tmp_path / "dot.png")))


def test_8k_frame_is_too_large(tmp_path):
    _ok, png = cv2.imencode(".png", np.zeros((4320, 7680, 3), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    (tmp_path / "8k.png").write_bytes(png.tobytes())
    err = _expect(MediaTooLargeError, "pixels", lambda: probe(tmp_path / "8k.png"))
    assert err.code == "too_large" and err.status == 413
    # The limit is a parameter.
    assert probe(tmp_path / "8k.png", limits=MediaLimits(max_pixels=8000 * 5000)).width == 7680


def _encoded(fmt: str, size: tuple[int, int] = (53, 37), **options) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    translucent = options.pop("alpha", False)  # a WebP with alpha is written in the extended (VP8X) layout
    Image.new("RGBA" if translucent else "RGB", size, (90, 20, 200, 128)).save(buf, fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True, "exif": b"Exif\x00\x00" + b"\x00" * 30_000}),  # frame header after 30 KB
        ("WEBP", {}),  # lossy: VP8
        ("WEBP", {"lossless": True}),  # VP8L
        ("WEBP", {"alpha": True}),  # extended: VP8X
        ("GIF", {}),
    ],
    ids=["png", "jpeg", "jpeg-progressive-exif", "webp-vp8", "webp-vp8l", "webp-vp8x", "gif"],
)
def test_image_size_reads_each_format_header(fmt, options):
    assert image_size(_encoded(fmt, **options)) == (53, 37)


def test_image_size_does_not_guess():
    assert image_size(b"not an image at all") is None
    assert image_size(b"\xff\xd8" + b"\x00" * 500) is None  # a JPEG start, no frame header
    assert image_size(b"\x89PNG\r\n\x1a\n") is None  # too short to tell


def test_duration_limit(tmp_path):
    path = write_video(tmp_path / "c.mp4", _frames(30), fps=10)
    _expect(MediaTooLargeError, "duration", lambda: probe(path, limits=MediaLimits(max_duration_s=1.0)))


def test_service_does_not_import_torch():
    code = "import sys, s2d.service.media, s2d.service.faces; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_decoder_messages_never_show_a_server_path(tmp_path):
    spool = tmp_path / "s2d-upload-123-abc.mp4"
    spool.write_bytes(b"\x00" * 64)
    with pytest.raises(UndecodableMediaError) as info:
        probe(spool)
    assert str(tmp_path) not in str(info.value) and "s2d-upload" not in str(info.value), str(info.value)
    assert (
        decoder_message(OSError(2, "No such file or directory", "/srv/x/s2d-upload-1.bin"))
        == "No such file or directory"
    )
