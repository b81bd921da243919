"""Containers' common ground: signature, version, checksummed chunks, size limits; every read is validated here."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from kmq.errors import FormatError, LimitError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMAT_VERSION",
    "CHUNK_HEAD",
    "CHUNK_OVERHEAD",
    "MAX_CHUNK_PAYLOAD",
    "Chunk",
    "ByteReader",
    "as_bytes_view",
    "check_pixel_count",
    "pack_chunk",
    "chunk_head",
    "split_chunk",
    "write_container",
    "read_chunks",
]

DEFAULT_MAX_PIXELS = 1 << 28
"""Largest width × height a decoder accepts unless told otherwise (268 megapixels: 256 MiB of indices)."""

FORMAT_VERSION = 1
CHUNK_HEAD = 8
"""Bytes before a chunk's payload: type (4) and payload length (4)."""
CHUNK_OVERHEAD = 12
"""Bytes a chunk adds around its payload: type (4), length (4) and CRC-32 (4)."""
MAX_CHUNK_PAYLOAD = 0xFFFFFFFF
"""The largest payload the length field can declare; readers pass a tighter limit where they know one."""

TAIL = b"TAIL"
_CHUNK_HEAD = struct.Struct("<4sI")
_CRC = struct.Struct("<I")


def as_bytes_view(data: bytes | bytearray | memoryview) -> memoryview:
    """Return ``data`` as a flat, read-only memoryview of bytes.

    Raises
    ------
    FormatError
        If ``data`` is not a bytes-like object.
    """
    try:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
    except (TypeError, ValueError):
        raise FormatError(f"expected contiguous bytes, got {type(data).__name__}") from None
    return view.toreadonly()


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    """Refuse a declared size before anything of that size is allocated.

    Raises
    ------
    FormatError
        If a side is zero.
    LimitError
        If ``width * height`` exceeds ``max_pixels``.
    """
    if width < 1 or height < 1:
        raise FormatError(f"image size {width}x{height}: both sides must be at least 1")
    if width * height > max_pixels:
        raise LimitError(
            f"image size {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} pixels"
        )


@dataclass(frozen=True)
class Chunk:
    """One chunk of a container: its 4-byte type and its payload (a view into the input)."""

    kind: bytes
    payload: memoryview

    @property
    def optional(self) -> bool:
        """Whether a decoder that does not know this type may skip it (first letter lower case)."""
        return 0x61 <= self.kind[0] <= 0x7A


class ByteReader:
    """Little-endian fixed-width fields from a byte view; reading past the end raises FormatError.

    Parameters
    ----------
    data : memoryview
        The bytes to read.
    what : str
        What the bytes are, for error messages ("header chunk", "index data", ...).
    """

    def __init__(self, data: memoryview, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        """Number of bytes not read yet."""
        return len(self._data) - self._pos

    def take(self, size: int) -> memoryview:
        """Return the next ``size`` bytes."""
        if size < 0 or size > self.remaining:
            raise FormatError(f"{self._what}: needs {size} more bytes, {self.remaining} left (truncated?)")
        view = self._data[self._pos : self._pos + size]
        self._pos += size
        return view

    def u8(self) -> int:
        """Read an unsigned 8-bit field."""
        return self.take(1)[0]

    def u16(self) -> int:
        """Read an unsigned little-endian 16-bit field."""
        return int.from_bytes(self.take(2), "little")

    def u32(self) -> int:
        """Read an unsigned little-endian 32-bit field."""
        return int.from_bytes(self.take(4), "little")

    def rest(self) -> memoryview:
        """Return every byte not read yet."""
        return self.take(self.remaining)

    def expect_end(self) -> None:
        """Raise FormatError if bytes are left over."""
        if self.remaining:
            raise FormatError(f"{self._what}: {self.remaining} unexpected bytes at the end")

    def chunk(self, limit: int = MAX_CHUNK_PAYLOAD) -> Chunk:
        """Read one chunk: its type and payload (a view), the CRC-32 verified.

        The declared length is checked against ``limit`` and against the bytes left before the
        payload is taken.

        Raises
        ------
        FormatError
            Fewer bytes left than a chunk needs, a length over ``limit`` or past the end, or a
            CRC mismatch.
        """
        if self.remaining < CHUNK_OVERHEAD:
            raise FormatError(
                f"{self._what} is truncated: {self.remaining} bytes left, a chunk needs at least {CHUNK_OVERHEAD}"
            )
        kind, size = chunk_head(self.take(CHUNK_HEAD), what=self._what, limit=limit)
        if size > self.remaining - _CRC.size:
            raise FormatError(
                f"{self._what}: {kind!r} declares {size} bytes, only {self.remaining - _CRC.size} remain (truncated?)"
            )
        payload = self.take(size)
        if zlib.crc32(payload, zlib.crc32(kind)) != self.u32():
            raise FormatError(f"{self._what}: {kind!r} fails its CRC-32 checksum (corrupt data)")
        return Chunk(kind, payload)


def pack_chunk(kind: bytes, payload: bytes | memoryview) -> bytes:
    """One chunk (a record, in a video stream): type, u32 payload length, payload, CRC-32 of type and payload.

    Parameters
    ----------
    kind : bytes
        The 4-byte type (the tag of a video record).
    payload : bytes-like
        The payload.

    Returns
    -------
    bytes
        ``CHUNK_OVERHEAD + len(payload)`` bytes.

    Examples
    --------
    >>> pack_chunk(b"TAIL", b"").hex()
    '5441494c00000000e959a24a'
    """
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return b"".join((_CHUNK_HEAD.pack(kind, len(payload)), payload, _CRC.pack(crc)))


def chunk_head(prefix: bytes | memoryview, *, what: str = "chunk", limit: int = MAX_CHUNK_PAYLOAD) -> tuple[bytes, int]:
    """The type and payload length from a chunk's first :data:`CHUNK_HEAD` bytes, the length checked against ``limit``.

    For a reader that must allocate the payload (a file read record by record), before it does.

    Raises
    ------
    FormatError
        Fewer than :data:`CHUNK_HEAD` bytes, or a length over ``limit``.
    """
    if len(prefix) < CHUNK_HEAD:
        raise FormatError(f"{what} is truncated: {len(prefix)} bytes, a chunk needs at least {CHUNK_OVERHEAD}")
    kind, size = _CHUNK_HEAD.unpack_from(prefix)
    if size > limit:
        raise FormatError(f"{what}: {kind!r} declares {size} bytes, more than the {limit} it may hold")
    return kind, size


def split_chunk(
    data: bytes | bytearray | memoryview, *, what: str = "record", limit: int = MAX_CHUNK_PAYLOAD
) -> tuple[bytes, memoryview]:
    """Check one whole chunk (a live message, or a record read from a file); return its type and payload.

    Parameters
    ----------
    data : bytes-like
        Exactly one chunk.
    what : str
        What the chunk is, for error messages.
    limit : int
        The largest payload accepted.

    Returns
    -------
    (bytes, memoryview)
        The type and a view of the payload.

    Raises
    ------
    FormatError
        When the chunk is shorter than it says, longer, over ``limit``, or its checksum does not match.
    """
    reader = ByteReader(as_bytes_view(data), what)
    chunk = reader.chunk(limit)
    reader.expect_end()
    return chunk.kind, chunk.payload


def write_container(magic: bytes, chunks: list[tuple[bytes, bytes | memoryview]]) -> bytes:
    """Assemble signature, version, the given (type, payload) chunks and the closing TAIL chunk.

    Parameters
    ----------
    magic : bytes
        The 4-byte signature of the container kind.
    chunks : list of (bytes, bytes)
        Chunk types (4 ASCII letters) and payloads, in order.

    Returns
    -------
    bytes
        The whole container.
    """
    parts = [magic, bytes([FORMAT_VERSION])]
    parts.extend(pack_chunk(kind, payload) for kind, payload in chunks)
    parts.append(pack_chunk(TAIL, b""))
    return b"".join(parts)


def read_chunks(data: memoryview, magic: bytes, what: str) -> Iterator[Chunk]:
    """Check signature and version, then yield each chunk up to (not including) TAIL, CRC verified.

    Parameters
    ----------
    data : memoryview
        The whole container.
    magic : bytes
        The 4-byte signature expected.
    what : str
        The container's name, for error messages.

    Yields
    ------
    Chunk
        Each chunk in order; the caller decides what an unknown type means (``Chunk.optional``).

    Raises
    ------
    FormatError
        Wrong signature, unknown version, a truncated chunk, a CRC mismatch, a missing TAIL chunk,
        or bytes after it.
    """
    reader = ByteReader(data, what)
    if len(data) < len(magic) + 1 or bytes(reader.take(len(magic))) != magic:
        raise FormatError(f"not a {what} (wrong signature)")
    version = reader.u8()
    if version != FORMAT_VERSION:
        raise FormatError(f"{what} version {version} is not supported (this decoder reads version {FORMAT_VERSION})")
    while True:
        if reader.remaining < CHUNK_OVERHEAD:
            raise FormatError(f"{what}: truncated (no {TAIL.decode()} chunk)")
        chunk = reader.chunk()
        if chunk.kind == TAIL:
            if chunk.payload:
                raise FormatError(f"{what}: {TAIL.decode()} chunk must be empty")
            reader.expect_end()
            return
        yield chunk
