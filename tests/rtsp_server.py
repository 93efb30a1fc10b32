"""A real RTSP server for the source tests: GStreamer's RTSP server (Debian packages) serving H.264 mp4 files.

    /usr/bin/python3 tests/rtsp_server.py PORT GOP NAME=VIDEO.mp4 [NAME=VIDEO.mp4 ...]
    /usr/bin/python3 tests/rtsp_server.py --check

serves each file as rtsp://127.0.0.1:PORT/NAME in real time, re-encoded with a key frame every GOP frames, and prints
"ready" once it listens; `--check` exits 0 when everything it needs is installed, else prints what is missing. It
runs under Debian's own python3 (PyGObject and the GStreamer typelibs are Debian packages, not in the venv), so it
imports nothing from the project. The tests (tests/test_sources.py) start and stop it as a subprocess: stopping it is
a camera going away.
"""

import sys

# Re-encoded as a camera does: a key frame every GOP frames, no B-frames, one slice per frame (threads=1: with
# zerolatency's sliced threads x264 writes several, which FFmpeg here decodes one slice at a time, broken), so a
# client that joins mid-stream decodes from the next key frame (the stored file's single long GOP would leave it with
# broken frames for its whole length); config-interval=-1 sends SPS/PPS with every key frame.
LAUNCH = (
    "( filesrc location={video} ! qtdemux ! avdec_h264 ! videoconvert ! x264enc tune=zerolatency "
    "speed-preset=ultrafast threads=1 key-int-max={gop} ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)
ELEMENTS = ("filesrc", "qtdemux", "avdec_h264", "videoconvert", "x264enc", "rtph264pay")


def _gstreamer():
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    return GLib, Gst, GstRtspServer


def check() -> int:
    try:
        _, gst, _ = _gstreamer()
    except (ImportError, ValueError) as err:
        print(f"PyGObject with the Gst and GstRtspServer typelibs: {err}")
        return 1
    missing = [name for name in ELEMENTS if gst.ElementFactory.find(name) is None]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}")
    return 1 if missing else 0


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        return check()
    port, gop, mounts = argv[0], int(argv[1]), dict(arg.split("=", 1) for arg in argv[2:])
    glib, _, rtsp = _gstreamer()
    server = rtsp.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    for name, video in mounts.items():
        factory = rtsp.RTSPMediaFactory()
        factory.set_launch(LAUNCH.format(video=video, gop=gop))
        factory.set_shared(False)  # every client plays the file from its start
        server.get_mount_points().add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", flush=True)
        return 1
    print("ready", flush=True)
    glib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
