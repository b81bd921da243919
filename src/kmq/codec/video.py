"""The video stream (.kmqv files and live packets): stream header, frame packets, keyframe index."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import numpy as np

from kmq.codec import entropy
from kmq.codec.framing import (
    CHUNK_HEAD,
    CHUNK_OVERHEAD,
    DEFAULT_MAX_PIXELS,
    chunk_head,
    pack_chunk,
    split_chunk,
)
from kmq.errors import FormatError, InputError, LimitError

__all__ = [
    "VERSION",
    "TAG_HEADER",
    "TAG_FRAME",
    "TAG_INDEX",
    "TAG_END",
    "StreamHeader",
    "FramePacket",
    "DecodedFrame",
    "KeyframeEntry",
    "VideoDecoder",
    "KmqvWriter",
    "KmqvReader",
    "pack_frame",
    "parse_frame",
    "renumber_packet",
    "pack_record",
    "split_record",
]

VERSION = 1
#: Record tags. The stream header's tag doubles as the file's magic number.
TAG_HEADER = b"KMQV"
TAG_FRAME = b"KMQF"
TAG_INDEX = b"KMQI"
TAG_END = b"KMQE"
#: A record is a chunk of framing.py: tag and payload length before the payload, CRC-32 after it.
RECORD_PREFIX = CHUNK_HEAD
RECORD_OVERHEAD = CHUNK_OVERHEAD

FLAG_KEYFRAME = 1
FLAG_PALETTE_UPDATE = 2
#: No later frame is coded against this one: a decoder keeps its reference, and a viewer that is
#: behind may skip the frame without losing anything else (the upper temporal layer).
FLAG_DISCARDABLE = 4
_KNOWN_FLAGS = FLAG_KEYFRAME | FLAG_PALETTE_UPDATE | FLAG_DISCARDABLE

_HEADER = struct.Struct("<BBHIIIIIII")
_FRAME = struct.Struct("<IqBBH")
_INDEX_COUNT = struct.Struct("<I")
_INDEX_ENTRY = struct.Struct("<Iqq")
_END = struct.Struct("<IIqqq")
#: Size in bytes of the end record that closes a .kmqv file.
END_RECORD_BYTES = RECORD_OVERHEAD + _END.size

MAX_SIDE = 1 << 16
#: An index map never needs more than this many bytes per pixel, plus a constant (checked on read).
_MAX_BYTES_PER_PIXEL = 4
_MAX_MAP_OVERHEAD = 1 << 16
#: The stream header's payload is 32 bytes; a reader allocates no more than this for it.
_MAX_HEADER_PAYLOAD = 1024


# ---------------------------------------------------------------- records

#: One record: 4-byte tag, u32 payload length, payload, CRC-32 of the tag and payload (a chunk of
#: framing.py, the same layout and checksum as the chunks of a .kmq image).
pack_record = pack_chunk
#: Check one whole record (a live message, or a record read from a file); return its tag and payload.
split_record = split_chunk


# ---------------------------------------------------------------- stream header


@dataclass(frozen=True)
class StreamHeader:
    """What a decoder needs before the first frame packet: size, channels, palette size, timing.

    Attributes
    ----------
    width, height : int
        Frame size in pixels.
    channels : int
        3 (RGB) or 4 (RGBA).
    k : int
        The largest palette any frame uses, 2..256.
    time_base : fractions.Fraction
        Seconds per unit of a frame's ``pts``.
    frame_rate : fractions.Fraction or None
        Nominal frames per second, when the source has one (timestamps are authoritative).
    """

    width: int
    height: int
    channels: int = 3
    k: int = 64
    time_base: Fraction = Fraction(1, 1000)
    frame_rate: Fraction | None = None

    def __post_init__(self) -> None:
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise InputError(f"frame size must be 1..{MAX_SIDE} on each side, got {self.width}×{self.height}")
        if self.channels not in (3, 4):
            raise InputError(f"channels must be 3 or 4, got {self.channels}")
        if not 2 <= self.k <= 256:
            raise InputError(f"k must be from 2 to 256, got {self.k}")
        time_base = Fraction(self.time_base)
        if time_base <= 0 or not _fits_u32(time_base):
            raise InputError(f"time base must be a positive fraction of 32-bit integers, got {self.time_base}")
        object.__setattr__(self, "time_base", time_base)
        if self.frame_rate is not None:
            rate = Fraction(self.frame_rate).limit_denominator(1 << 16)
            object.__setattr__(self, "frame_rate", rate if rate > 0 and _fits_u32(rate) else None)

    @property
    def pixels(self) -> int:
        """Pixels per frame."""
        return self.width * self.height

    @property
    def max_payload(self) -> int:
        """The largest frame payload a valid stream with this header can hold."""
        return _FRAME.size + 256 // 8 + 256 * self.channels + _MAX_BYTES_PER_PIXEL * self.pixels + _MAX_MAP_OVERHEAD

    def to_bytes(self) -> bytes:
        """The header record: the first bytes of a .kmqv file and the first message of a live stream."""
        rate = self.frame_rate or Fraction(0)
        payload = _HEADER.pack(
            VERSION,
            self.channels,
            self.k,
            self.width,
            self.height,
            self.time_base.numerator,
            self.time_base.denominator,
            rate.numerator,
            rate.denominator,
            0,
        )
        return pack_record(TAG_HEADER, payload)

    @classmethod
    def from_bytes(cls, record: bytes | memoryview, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> StreamHeader:
        """Parse and validate a header record.

        Raises
        ------
        FormatError
            Not a kmq video stream, an unknown version, or impossible values.
        LimitError
            More pixels per frame than ``max_pixels``.
        """
        if bytes(record[:4]) != TAG_HEADER:
            raise FormatError("not a kmq video stream (no KMQV header)")
        _, payload = split_record(record, what="stream header")
        if len(payload) < 1:
            raise FormatError("stream header is empty")
        if payload[0] != VERSION:
            raise FormatError(f"kmq video version {payload[0]} is not supported (this reader knows {VERSION})")
        if len(payload) != _HEADER.size:
            raise FormatError(f"stream header payload is {len(payload)} bytes, expected {_HEADER.size}")
        _, channels, k, width, height, tb_num, tb_den, rate_num, rate_den, reserved = _HEADER.unpack(payload)
        if reserved:
            raise FormatError("stream header has reserved bits set")
        if tb_num == 0 or tb_den == 0 or (rate_num and not rate_den):
            raise FormatError(f"stream header has an invalid time base {tb_num}/{tb_den} or rate {rate_num}/{rate_den}")
        if width * height > max_pixels:
            raise LimitError(f"video frames of {width}×{height} exceed the limit of {max_pixels} pixels")
        try:
            return cls(
                width=width,
                height=height,
                channels=channels,
                k=k,
                time_base=Fraction(tb_num, tb_den),
                frame_rate=Fraction(rate_num, rate_den) if rate_num else None,
            )
        except InputError as exc:
            raise FormatError(f"stream header is invalid: {exc}") from None


def _fits_u32(value: Fraction) -> bool:
    return 0 < value.numerator < (1 << 32) and 0 < value.denominator < (1 << 32)


# ---------------------------------------------------------------- frame packets


@dataclass(frozen=True)
class FramePacket:
    """A parsed frame packet (before its index map is decoded).

    Attributes
    ----------
    number : int
        Frame number, counting from 0 at the start of the stream.
    pts : int
        Presentation time in units of the header's time base.
    keyframe : bool
        Decodable on its own: full palette, index map coded without reference.
    palette_size : int
        Entries in this frame's palette.
    palette_entries : numpy.ndarray
        Which entries this packet sets (all of them for a keyframe), int64.
    palette_colors : numpy.ndarray
        Their colours, len(palette_entries)×C uint8.
    index_data : memoryview
        The coded index map.
    discardable : bool
        No later frame is coded against this one.
    skipped : int
        For a delta frame, how many (discardable) frames stand between it and the frame it is
        coded against, frame ``number - 1 - skipped``.
    """

    number: int
    pts: int
    keyframe: bool
    palette_size: int
    palette_entries: np.ndarray
    palette_colors: np.ndarray
    index_data: memoryview
    discardable: bool = False
    skipped: int = 0


def pack_frame(
    number: int,
    pts: int,
    *,
    keyframe: bool,
    palette: np.ndarray,
    changed: np.ndarray | None,
    index_data: bytes,
    discardable: bool = False,
    skipped: int = 0,
) -> bytes:
    """Build a frame record.

    Parameters
    ----------
    number : int
        Frame number.
    pts : int
        Presentation time in time-base units.
    keyframe : bool
        Whether the frame is a keyframe (the whole palette is sent).
    palette : numpy.ndarray
        The frame's palette, n×C uint8.
    changed : numpy.ndarray or None
        For a delta frame, a boolean mask of the entries that differ from the previous frame's
        palette (None or all False: no palette update).
    index_data : bytes
        The coded index map.
    discardable : bool
        No later frame will be coded against this one (never a keyframe).
    skipped : int
        For a delta frame, the discardable frames between it and its reference (0..255).
    """
    if keyframe and (discardable or skipped):
        raise InputError("a keyframe is a reference: it is neither discardable nor coded after skipped frames")
    if not 0 <= skipped <= 255:
        raise InputError(f"skipped frames must be 0..255, got {skipped}")
    palette = np.ascontiguousarray(palette, dtype=np.uint8)
    size = len(palette)
    flags = FLAG_DISCARDABLE if discardable else 0
    parts = []
    if keyframe:
        flags |= FLAG_KEYFRAME
        parts.append(palette.tobytes())
    elif changed is not None and changed.any():
        flags |= FLAG_PALETTE_UPDATE
        parts.append(np.packbits(changed[:size], bitorder="little").tobytes())
        parts.append(palette[changed[:size]].tobytes())
    head = _FRAME.pack(number, pts, flags, skipped, size)
    return pack_record(TAG_FRAME, b"".join((head, *parts, index_data)))


def renumber_packet(
    packet: FramePacket, number: int, pts: int, channels: int, *, skipped: int | None = None
) -> bytes:
    """The frame record of ``packet`` with another frame number and timestamp, all else unchanged.

    For joining streams (chunks of one encode) and for keeping what a live viewer received,
    whose numbers and timestamps are the server's and may leave out discardable frames.

    Parameters
    ----------
    packet : FramePacket
        A parsed frame packet.
    number, pts : int
        Its place in the new stream.
    channels : int
        Colour channels of the stream (3 or 4).
    skipped : int, optional
        The discardable frames between it and its reference frame in the new stream (default:
        the packet's own).

    Returns
    -------
    bytes
        The record; byte for byte the original when ``number``, ``pts`` and ``skipped`` are its own.
    """
    palette = np.zeros((packet.palette_size, channels), np.uint8)
    palette[packet.palette_entries] = packet.palette_colors
    changed = None
    if not packet.keyframe and len(packet.palette_entries):
        changed = np.zeros(packet.palette_size, bool)
        changed[packet.palette_entries] = True
    return pack_frame(
        number,
        pts,
        keyframe=packet.keyframe,
        palette=palette,
        changed=changed,
        index_data=bytes(packet.index_data),
        discardable=packet.discardable,
        skipped=packet.skipped if skipped is None else skipped,
    )


def parse_frame(record: bytes | memoryview, header: StreamHeader, *, what: str = "frame packet") -> FramePacket:
    """Check a frame record and split it into its fields.

    Raises
    ------
    FormatError
        Wrong tag, bad checksum, truncated, or fields out of range.
    """
    tag = bytes(record[:4])
    if tag != TAG_FRAME:
        raise FormatError(f"{what} has tag {tag!r}, expected {TAG_FRAME!r}")
    _, payload = split_record(record, what=what, limit=header.max_payload)
    if len(payload) < _FRAME.size:
        raise FormatError(f"{what} is truncated ({len(payload)} bytes)")
    number, pts, flags, skipped, size = _FRAME.unpack_from(payload)
    if flags & ~_KNOWN_FLAGS:
        raise FormatError(f"{what} has unknown flags {flags:#x}")
    if not 1 <= size <= header.k:
        raise FormatError(f"{what} has a palette of {size} entries, the stream allows 1..{header.k}")
    keyframe = bool(flags & FLAG_KEYFRAME)
    discardable = bool(flags & FLAG_DISCARDABLE)
    if keyframe and (discardable or skipped):
        raise FormatError(f"{what} is a keyframe marked discardable or coded after skipped frames")
    if skipped and skipped >= number:
        raise FormatError(f"{what} is frame {number} and claims {skipped} skipped frames before it")
    channels = header.channels
    offset = _FRAME.size
    if keyframe and flags & FLAG_PALETTE_UPDATE:
        raise FormatError(f"{what} is a keyframe with a palette update flag")
    if keyframe:
        entries = np.arange(size)
    elif flags & FLAG_PALETTE_UPDATE:
        mask_bytes = (size + 7) // 8
        _need(payload, offset + mask_bytes, what)
        mask = np.unpackbits(np.frombuffer(payload, np.uint8, mask_bytes, offset), bitorder="little")
        if mask[size:].any():
            raise FormatError(f"{what} updates palette entries beyond its {size}")
        entries = np.flatnonzero(mask[:size])
        offset += mask_bytes
    else:
        entries = np.arange(0)
    color_bytes = len(entries) * channels
    _need(payload, offset + color_bytes, what)
    colors = np.frombuffer(payload, np.uint8, color_bytes, offset).reshape(-1, channels)
    return FramePacket(
        number=number,
        pts=pts,
        keyframe=keyframe,
        palette_size=size,
        palette_entries=entries,
        palette_colors=colors,
        index_data=payload[offset + color_bytes :],
        discardable=discardable,
        skipped=skipped,
    )


def _need(payload: memoryview, end: int, what: str) -> None:
    if len(payload) < end:
        raise FormatError(f"{what} is truncated: its palette section runs past its end")


# ---------------------------------------------------------------- decoder


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame.

    Attributes
    ----------
    number : int
        Frame number in the stream.
    pts : int
        Presentation time in time-base units.
    time : float
        Presentation time in seconds.
    keyframe : bool
        Whether the packet was a keyframe.
    palette : numpy.ndarray
        n×C uint8.
    indices : numpy.ndarray
        H×W uint8.
    discardable : bool
        Whether the packet was discardable (no later frame refers to it).
    """

    number: int
    pts: int
    time: float
    keyframe: bool
    palette: np.ndarray
    indices: np.ndarray
    discardable: bool = False

    def to_array(self) -> np.ndarray:
        """The frame's pixels, H×W×C uint8 (a palette look-up)."""
        return np.take(self.palette, self.indices, axis=0)


class VideoDecoder:
    """Turns a stream header and then frame packets into frames, one at a time.

    Parameters
    ----------
    header : StreamHeader or bytes, optional
        The stream header, parsed or as its record; else call :meth:`read_header` first.
    max_pixels : int
        Refuse streams with larger frames.

    Examples
    --------
    >>> import numpy as np
    >>> from kmq.media.video_encoder import VideoEncoder
    >>> encoder = VideoEncoder(8, 6, k=4)
    >>> frame = np.zeros((6, 8, 3), np.uint8)
    >>> packet = encoder.encode(frame).packet
    >>> decoder = VideoDecoder(encoder.header_bytes)
    >>> decoder.decode(packet).to_array().shape
    (6, 8, 3)
    """

    def __init__(self, header: StreamHeader | bytes | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.max_pixels = max_pixels
        self.header: StreamHeader | None = None
        self._palette: np.ndarray | None = None
        self._padded: np.ndarray | None = None  # the last frame's map in the coder's layout
        self._number = -1
        if header is not None:
            self.read_header(header)

    def read_header(self, header: StreamHeader | bytes | memoryview) -> StreamHeader:
        """Accept the stream header (a new one starts the stream afresh)."""
        if not isinstance(header, StreamHeader):
            header = StreamHeader.from_bytes(header, max_pixels=self.max_pixels)
        self.header = header
        self.reset()
        return header

    def reset(self) -> None:
        """Forget the previous frame; the next packet must be a keyframe (after a seek or a gap)."""
        self._palette = None
        self._padded = None
        self._number = -1

    def feed(self, record: bytes | memoryview) -> DecodedFrame | None:
        """Take one record of a live stream: a header, a frame packet, or an optional record (skipped).

        Returns
        -------
        DecodedFrame or None
            The frame, for a frame packet; None for a header or an optional record (a tag whose
            first letter is lower case, as in .kmq images).

        Raises
        ------
        FormatError
            A damaged record, or an unknown record that is not optional.
        """
        tag = bytes(record[:4])
        if tag == TAG_HEADER:
            self.read_header(record)
            return None
        if tag == TAG_FRAME:
            return self.decode(record)
        split_record(record, what=f"record {tag!r}")
        if not tag[:1].islower():
            raise FormatError(f"unknown record {tag!r} in the stream")
        return None

    @property
    def ready(self) -> bool:
        """Whether a delta frame can be decoded now (a keyframe was decoded since the last reset)."""
        return self._padded is not None

    def can_decode(self, packet: FramePacket) -> bool:
        """Whether ``packet`` is a keyframe or a delta frame coded against the reference frame held now.

        A viewer that was left without some frames (lost ones, or discardable ones skipped) asks
        this before decoding: False means it waits for the next keyframe.
        """
        if packet.keyframe:
            return True
        return self._padded is not None and packet.number - 1 - packet.skipped == self._number

    def decode(self, packet: bytes | memoryview | FramePacket, *, what: str | None = None) -> DecodedFrame:
        """Decode one frame packet.

        Raises
        ------
        FormatError
            A damaged packet, a delta frame without its predecessor, or no header yet.
        """
        header = self.header
        if header is None:
            raise FormatError("a frame packet arrived before the stream header")
        if not isinstance(packet, FramePacket):
            packet = parse_frame(packet, header, what=what or "frame packet")
        what = what or f"frame {packet.number}"
        if packet.keyframe:
            palette = packet.palette_colors.copy()
            previous = None
        else:
            if self._padded is None or self._palette is None:
                raise FormatError(f"{what} is a delta frame and needs the frame before it (start at a keyframe)")
            if not self.can_decode(packet):
                raise FormatError(
                    f"{what} is coded against frame {packet.number - 1 - packet.skipped}, but the last"
                    f" reference frame decoded is {self._number}: a frame is missing"
                )
            if packet.palette_size != len(self._palette):
                raise FormatError(f"{what} changes the palette size without a keyframe")
            palette = self._palette.copy()
            palette[packet.palette_entries] = packet.palette_colors
            previous = self._padded
        try:
            # The decoded padded map is the next frame's reference as it is: no checks or copies
            # of the previous frame (this decoder made it).
            padded = entropy.decode_padded_map(
                packet.index_data, header.width, header.height, packet.palette_size, previous
            )
        except FormatError as exc:
            raise FormatError(f"{what}: {exc}") from None
        except (ValueError, IndexError) as exc:
            raise FormatError(f"{what}: index map is damaged ({exc})") from None
        indices = entropy.map_view(padded)
        indices.flags.writeable = False  # the next frame's reference: callers read it, never change it
        if not packet.discardable:
            self._palette = palette
            self._padded = padded
            self._number = packet.number
        return DecodedFrame(
            number=packet.number,
            pts=packet.pts,
            time=float(packet.pts * header.time_base),
            keyframe=packet.keyframe,
            palette=palette,
            indices=indices,
            discardable=packet.discardable,
        )


# ---------------------------------------------------------------- .kmqv files


@dataclass(frozen=True)
class KeyframeEntry:
    """A keyframe in the index: its frame number, time stamp and the byte offset of its record."""

    number: int
    pts: int
    offset: int


@dataclass(frozen=True)
class StreamEnd:
    """The end record's facts: frames and keyframes written, end time, index position, source size."""

    frames: int
    keyframes: int
    end_pts: int
    index_offset: int
    source_bytes: int


class KmqvWriter:
    """Writes a .kmqv file record by record: the header, frame packets, then the index and end record.

    Parameters
    ----------
    stream : binary file
        Where to write; need not be seekable.
    header : StreamHeader
        Written at once.
    """

    def __init__(self, stream: BinaryIO, header: StreamHeader) -> None:
        self.stream = stream
        self.header = header
        self.offset = 0
        self.frames = 0
        self.keyframes: list[KeyframeEntry] = []
        self.end_pts = 0
        self._last_pts: int | None = None
        self._frame_step = 1
        self._write(header.to_bytes())

    @property
    def bytes_written(self) -> int:
        """Bytes written so far."""
        return self.offset

    def write_packet(self, packet: bytes, *, number: int, pts: int, keyframe: bool) -> None:
        """Append a frame packet made by the encoder."""
        if keyframe:
            self.keyframes.append(KeyframeEntry(number, pts, self.offset))
        if self._last_pts is not None and pts > self._last_pts:
            self._frame_step = pts - self._last_pts
        self._last_pts = pts
        self.frames += 1
        self._write(packet)

    def end_pts_so_far(self) -> int:
        """When the last frame written stops showing: its pts plus the step before it (0 before any frame)."""
        return 0 if self._last_pts is None else self._last_pts + self._frame_step

    def finish(self, *, end_pts: int | None = None, source_bytes: int = 0) -> int:
        """Write the keyframe index and the end record; return the file's size.

        ``end_pts`` is when the last frame ends (default: :meth:`end_pts_so_far`).
        """
        if end_pts is None:
            end_pts = self.end_pts_so_far()
        self.end_pts = end_pts
        index_offset = self.offset
        entries = b"".join(_INDEX_ENTRY.pack(e.number, e.pts, e.offset) for e in self.keyframes)
        self._write(pack_record(TAG_INDEX, _INDEX_COUNT.pack(len(self.keyframes)) + entries))
        self._write(
            pack_record(TAG_END, _END.pack(self.frames, len(self.keyframes), end_pts, index_offset, source_bytes))
        )
        return self.offset

    def _write(self, data: bytes) -> None:
        self.stream.write(data)
        self.offset += len(data)


class KmqvReader:
    """Reads a .kmqv file: the header at once, then frames in order, or from a keyframe found by time.

    Parameters
    ----------
    stream : binary file
        Open for reading; seeking (and the index) needs a seekable file.
    name : str
        How errors name the file.
    max_pixels : int
        Refuse larger frames.
    """

    def __init__(self, stream: BinaryIO, *, name: str = "input", max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.stream = stream
        self.name = name
        first = stream.read(RECORD_PREFIX)
        if len(first) < 4 or first[:4] != TAG_HEADER:
            raise FormatError(f"{name} is not a .kmqv file (no KMQV header)")
        _, length = chunk_head(first, what=f"{name}: stream header", limit=_MAX_HEADER_PAYLOAD)
        record = first + stream.read(length + 4)
        self.header = StreamHeader.from_bytes(record, max_pixels=max_pixels)
        self.data_offset = len(record)
        self._end: StreamEnd | None = None
        self._index: list[KeyframeEntry] | None = None
        self._trailer_error: str | None = None
        self.damage: str | None = None
        self._load_trailer()

    # -- the trailer (index and end record), read only when the file is seekable and complete

    @property
    def end(self) -> StreamEnd | None:
        """The end record, or None when the file was cut short (or is not seekable)."""
        return self._end

    @property
    def keyframes(self) -> list[KeyframeEntry]:
        """The keyframe index (empty when the file has none)."""
        return list(self._index or [])

    @property
    def trailer_problem(self) -> str | None:
        """Why the index and end record could not be used, when they could not."""
        return self._trailer_error

    def _load_trailer(self) -> None:
        try:
            size = self.stream.seek(0, 2)
        except (OSError, ValueError):
            self._trailer_error = "the input is not seekable"
            return
        try:
            if size < self.data_offset + END_RECORD_BYTES:
                raise FormatError("the file ends before its end record")
            self.stream.seek(size - END_RECORD_BYTES)
            tag, payload = split_record(self.stream.read(END_RECORD_BYTES), what="end record")
            if tag != TAG_END:
                raise FormatError("the file does not end with an end record (cut short?)")
            end = StreamEnd(*_END.unpack(payload))
            if not self.data_offset <= end.index_offset <= size - END_RECORD_BYTES - RECORD_OVERHEAD:
                raise FormatError("the end record points outside the file")
            self.stream.seek(end.index_offset)
            index_bytes = size - END_RECORD_BYTES - end.index_offset
            tag, payload = split_record(self.stream.read(index_bytes), what="keyframe index")
            if tag != TAG_INDEX:
                raise FormatError("the keyframe index is missing")
            self._index = _parse_index(payload, end, self.data_offset)
            self._end = end
        except FormatError as exc:
            self._trailer_error = str(exc)
        finally:
            self.stream.seek(self.data_offset)

    # -- frames

    def packets(self, *, start_offset: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield (offset, record) of each frame record from ``start_offset`` (default: the first).

        Stops at the index or the end of the data; raises :class:`FormatError` at a damaged record.
        """
        try:
            yield from self._records(start_offset)
        except _DamagedRecord as damage:
            raise FormatError(f"{self.name}: record at byte {damage.offset} {damage.reason}") from None

    def _records(self, start_offset: int | None) -> Iterator[tuple[int, bytes]]:
        offset = self.data_offset if start_offset is None else start_offset
        self.stream.seek(offset)
        limit = self.header.max_payload
        while True:
            prefix = self.stream.read(RECORD_PREFIX)
            if not prefix:
                raise _DamagedRecord(offset, "is missing: the file ends there, without its keyframe index (cut short)")
            if len(prefix) < RECORD_PREFIX:
                raise _DamagedRecord(offset, "is truncated")
            tag = prefix[:4]
            if tag in (TAG_INDEX, TAG_END):
                return
            if tag != TAG_FRAME:
                raise _DamagedRecord(offset, f"is damaged (unknown tag {tag!r})")
            try:
                _, length = chunk_head(prefix, what="frame packet", limit=limit)
            except FormatError as exc:
                raise _DamagedRecord(offset, f"is damaged ({exc})") from None
            rest = self.stream.read(length + 4)
            if len(rest) < length + 4:
                raise _DamagedRecord(offset, "is truncated")
            yield offset, prefix + rest
            offset += RECORD_PREFIX + len(rest)

    def frames(self, *, salvage: bool = False, start: KeyframeEntry | None = None) -> Iterator[DecodedFrame]:
        """Decode frames in order from the start (or from the keyframe ``start``).

        Parameters
        ----------
        salvage : bool
            Stop quietly at the first damaged frame instead of raising; :attr:`damage` says where.
        start : KeyframeEntry, optional
            Begin at this keyframe (from :attr:`keyframes` or :meth:`keyframe_at`).
        """
        decoder = VideoDecoder(self.header)
        self.damage = None
        expected = start.number if start is not None else 0
        records = self._records(None if start is None else start.offset)
        while True:
            where = f"{self.name}: frame {expected}"
            try:
                item = next(records, None)
                if item is None:
                    return
                offset, record = item
                where = f"{where} (byte {offset})"
                packet = parse_frame(record, self.header, what="the packet")
                if packet.number != expected:
                    raise FormatError(f"the packet is numbered {packet.number}: a frame is missing or out of order")
                frame = decoder.decode(packet, what="the packet")
            except _DamagedRecord as damage:
                message = f"{where} (byte {damage.offset}) {damage.reason}"
            except FormatError as exc:
                message = f"{where}: {exc}"
            else:
                expected += 1
                yield frame
                continue
            if salvage:
                self.damage = message
                return
            raise FormatError(message)

    def keyframe_at(self, seconds: float) -> KeyframeEntry:
        """The last keyframe at or before ``seconds`` (the first keyframe for earlier times).

        Raises
        ------
        FormatError
            When the file has no usable keyframe index.
        """
        if not self._index:
            reason = self._trailer_error or "no keyframes"
            raise FormatError(f"{self.name} has no keyframe index ({reason}); cannot seek")
        target = seconds / self.header.time_base
        chosen = self._index[0]
        for entry in self._index:
            if entry.pts <= target:
                chosen = entry
            else:
                break
        return chosen


class _DamagedRecord(Exception):
    """A record that cannot be read whole: where it starts and what is wrong."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def _parse_index(payload: memoryview, end: StreamEnd, data_offset: int) -> list[KeyframeEntry]:
    if len(payload) < _INDEX_COUNT.size:
        raise FormatError("the keyframe index is truncated")
    (count,) = _INDEX_COUNT.unpack_from(payload)
    if count != end.keyframes or len(payload) != _INDEX_COUNT.size + count * _INDEX_ENTRY.size:
        raise FormatError("the keyframe index does not match the end record")
    entries = [KeyframeEntry(*fields) for fields in _INDEX_ENTRY.iter_unpack(payload[_INDEX_COUNT.size :])]
    for before, after in zip(entries, entries[1:]):
        if not (before.number < after.number and before.offset < after.offset):
            raise FormatError("the keyframe index is out of order")
    if entries and not (data_offset <= entries[0].offset and entries[-1].offset < end.index_offset):
        raise FormatError("the keyframe index points outside the frame data")
    return entries
