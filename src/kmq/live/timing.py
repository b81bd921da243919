"""The live server's optional ``kmqt`` record: when a frame was captured and when it was sent."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kmq.codec.video import pack_record, split_record
from kmq.errors import FormatError

__all__ = ["TAG_TIMING", "FrameTiming", "pack_timing", "parse_timing"]

#: Lower-case first letter: an optional record, skipped by any reader that does not know it.
TAG_TIMING = b"kmqt"
_TIMING = struct.Struct("<Iqq")


@dataclass(frozen=True)
class FrameTiming:
    """The capture and send times of one frame, microseconds since the Unix epoch.

    Attributes
    ----------
    number : int
        The frame packet this record goes with (it is sent just before that packet).
    captured_us : int
        When the source produced the frame.
    sent_us : int
        When the encoded packet was handed to the viewers.
    """

    number: int
    captured_us: int
    sent_us: int


def pack_timing(number: int, captured: float, sent: float) -> bytes:
    """The ``kmqt`` record for frame ``number``; times in seconds since the Unix epoch.

    Examples
    --------
    >>> parse_timing(pack_timing(7, 1.5, 1.75))
    FrameTiming(number=7, captured_us=1500000, sent_us=1750000)
    """
    return pack_record(TAG_TIMING, _TIMING.pack(number, round(captured * 1e6), round(sent * 1e6)))


def parse_timing(record: bytes | memoryview) -> FrameTiming:
    """Check and read a ``kmqt`` record.

    Raises
    ------
    kmq.errors.FormatError
        A damaged record, another tag, or a payload of the wrong size.
    """
    tag, payload = split_record(record, what="capture-time record")
    if tag != TAG_TIMING or len(payload) != _TIMING.size:
        raise FormatError(f"not a capture-time record ({tag!r}, {len(payload)} bytes)")
    return FrameTiming(*_TIMING.unpack(payload))
