"""The stream protocol's messages: the hello, binary frames (header + image), events as JSON, close codes (the
package docstring describes the protocol)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from s2d.service.errors import MediaError, ProtocolError
from s2d.service.schemas import StreamOptions, StreamResult

MAGIC = b"S2D1"
HEADER = struct.Struct("<4sdI")  # magic, client timestamp (ms, float64), sequence number (uint32): 16 bytes
SUBPROTOCOL = "s2d.v1"

# Close codes (RFC 6455 section 7.4.1; 1013 from the IANA registry).
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL, CLOSE_POLICY = 1000, 1001, 1002, 1008
CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1009, 1011, 1013

FRAME_DROP_REASONS = ("behind", "rate", "out_of_order", "malformed", "too_large", "undecodable")
WINDOW_DROP_REASONS = ("superseded", "busy", "deadline", "failed")


class StreamHello(StreamOptions):
    """The first message of a stream: the stream options, and which model."""

    type: Literal["hello"]
    model: str | None = Field(None, description="model name; default: the service's default model")


@dataclass
class FrameMessage:
    seq: int
    ts: float  # client timestamp, milliseconds
    payload: bytes  # the encoded image (empty when `image` is given)
    arrived: float  # time.monotonic() when the message was read
    image: np.ndarray | None = None  # a frame decoded already (server-side sources): uint8 RGB [H, W, 3]


def parse_frame(data: bytes, max_bytes: int, arrived: float) -> FrameMessage:
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise ProtocolError("bad_frame", f"a frame starts with the {HEADER.size}-byte header (magic b'S2D1')")
    if len(data) - HEADER.size > max_bytes:
        raise ProtocolError("too_large", f"frame of {len(data) - HEADER.size} bytes; the limit is {max_bytes}")
    _, ts, seq = HEADER.unpack_from(data)
    if not np.isfinite(ts):
        raise ProtocolError("bad_frame", "the frame timestamp is not a finite number")
    return FrameMessage(seq=seq, ts=ts, payload=data[HEADER.size :], arrived=arrived)


def pack_frame(image: bytes, ts_ms: float, seq: int) -> bytes:
    """The binary message of one frame (clients in Python: tests, the load script)."""
    return HEADER.pack(MAGIC, ts_ms, seq) + image


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """uint8 RGB [H, W, 3]; ProtocolError for anything not a readable image within the pixel limit, which is
    checked from the image header before decoding (service.media, as for uploads)."""
    check_image(data, max_pixels)
    return decode_checked(data)


def check_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the image header, without decoding; ProtocolError where it is not a JPEG, PNG or WebP
    image within the pixel limit."""
    from s2d.service.media import MediaLimits, check_size, image_size

    size = image_size(data)
    if size is None:
        raise ProtocolError("undecodable", "a frame must be a JPEG, PNG or WebP image")
    try:
        check_size(*size, MediaLimits(max_pixels=max_pixels))
    except MediaError as err:  # the same stable codes: too_large, unsupported_media
        raise ProtocolError(err.code, str(err)) from None
    return size


def decode_checked(data: bytes) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an image `check_image` passed; ProtocolError if its data cannot be decoded."""
    import cv2

    # Straight to RGB: the same pixels as decoding to BGR and converting, without the extra pass over the frame.
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if rgb is None:
        raise ProtocolError("undecodable", "the frame image could not be decoded")
    return rgb


# What a stream sends: its results typed (the sources keep them as they are), the other events as plain dicts.
Event = dict[str, Any] | StreamResult


def event_type(event: Event) -> str:
    return event.type if isinstance(event, StreamResult) else event["type"]


def dumps(event: Event) -> str:
    if isinstance(event, StreamResult):
        return event.model_dump_json()
    return json.dumps(event, separators=(",", ":"), allow_nan=False)
