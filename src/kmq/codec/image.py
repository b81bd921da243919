"""The still-image format (.kmq): header, palette and index map in checksummed chunks."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numba
import numpy as np

from kmq.codec.entropy import decode_index_map, encode_index_map, index_bits
from kmq.codec.framing import (
    DEFAULT_MAX_PIXELS,
    ByteReader,
    as_bytes_view,
    check_pixel_count,
    read_chunks,
    write_container,
)
from kmq.errors import FormatError, InputError

__all__ = ["MAGIC", "METHODS", "DecodedImage", "ImageInfo", "encode_image", "decode_image", "image_info"]

MAGIC = b"\x8bKMQ"
"""Signature of a .kmq file: a byte with the high bit set (catches 7-bit transfers), then "KMQ"."""

METHODS = ("stored", "deflate", "cm")
"""Index-map coding methods, by their number in the header."""

HEAD = b"HEAD"
PALT = b"PALT"
DATA = b"DATA"
_HEAD_SIZE = 13


@dataclass(frozen=True)
class ImageInfo:
    """What a .kmq header says, read without decoding the index map."""

    width: int
    height: int
    channels: int
    k: int
    bits_per_index: int
    method: str
    payload_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class DecodedImage:
    """A decoded .kmq image: ``palette[indices]`` is the picture (height × width × channels)."""

    palette: np.ndarray
    indices: np.ndarray
    method: str

    @property
    def width(self) -> int:
        """Pixels per row."""
        return self.indices.shape[1]

    @property
    def height(self) -> int:
        """Rows."""
        return self.indices.shape[0]


# --- bit packing (methods "stored" and "deflate") -----------------------------------------------


@numba.njit(cache=True, nogil=True)
def _pack(indices, bits, out):
    accumulator = 0
    filled = 0
    pos = 0
    for value in indices:
        accumulator = (accumulator << bits) | value
        filled += bits
        while filled >= 8:
            filled -= 8
            out[pos] = (accumulator >> filled) & 0xFF
            pos += 1
        accumulator &= (1 << filled) - 1
    if filled:
        out[pos] = (accumulator << (8 - filled)) & 0xFF


@numba.njit(cache=True, nogil=True)
def _unpack(packed, bits, out):
    """Fill ``out`` from ``packed``; return the largest index met (the caller checks it against k)."""
    accumulator = 0
    filled = 0
    pos = 0
    largest = 0
    mask = (1 << bits) - 1
    for i in range(out.size):
        while filled < bits:
            accumulator = ((accumulator << 8) | packed[pos]) & 0xFFFF
            pos += 1
            filled += 8
        filled -= bits
        value = (accumulator >> filled) & mask
        out[i] = value
        largest = max(largest, value)
    return largest


def _packed_size(pixels: int, bits: int) -> int:
    return (pixels * bits + 7) // 8


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Pack indices at ``bits`` bits each, most significant bit first, rows back to back.

    Parameters
    ----------
    indices : ndarray of uint8
        Indices, each below ``2**bits``.
    bits : int
        Bits per index, 0..8.

    Returns
    -------
    bytes
        ``ceil(indices.size * bits / 8)`` bytes; the unused low bits of the last byte are zero.

    Examples
    --------
    >>> pack_indices(np.array([[1, 2, 3]], np.uint8), 2).hex()
    '6c'
    """
    out = np.zeros(_packed_size(indices.size, bits), np.uint8)
    if bits:
        _pack(np.require(indices, np.uint8, ['C', 'W']).ravel(), bits, out)
    return out.tobytes()


def unpack_indices(packed: bytes | memoryview, width: int, height: int, bits: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`, checking the size and that every index is below ``k``.

    Raises
    ------
    FormatError
        If ``packed`` has the wrong length or holds an index >= ``k``.
    """
    expected = _packed_size(width * height, bits)
    if len(packed) != expected:
        raise FormatError(f"index data: {len(packed)} bytes, a {width}x{height} map at {bits} bits needs {expected}")
    out = np.zeros((height, width), np.uint8)
    if bits and _unpack(np.frombuffer(packed, np.uint8), bits, out.ravel()) >= k:
        raise FormatError(f"index data holds an index outside the palette of {k} colours")
    return out


def _inflate(payload: memoryview, size: int) -> bytes:
    # Bounded: a stream that would inflate past the expected size is refused, not expanded.
    inflater = zlib.decompressobj()
    try:
        packed = inflater.decompress(payload, size + 1)
    except zlib.error as error:
        raise FormatError(f"index data: corrupt deflate stream ({error})") from None
    if len(packed) != size or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise FormatError(f"index data: the deflate stream does not hold exactly {size} bytes")
    return packed


# --- the container --------------------------------------------------------------------------------


def _check_image(palette: object, indices: object) -> tuple[np.ndarray, np.ndarray]:
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] not in (3, 4) or not 1 <= palette.shape[0] <= 256:
        raise InputError(f"palette must be n×3 (RGB) or n×4 (RGBA) with 1 <= n <= 256, got shape {palette.shape}")
    if palette.dtype != np.uint8:
        raise InputError(f"palette must be uint8, got {palette.dtype}")
    indices = np.asarray(indices)
    if indices.ndim != 2 or 0 in indices.shape:
        raise InputError(f"indices must be a non-empty 2-D array (height × width), got shape {indices.shape}")
    if indices.dtype != np.uint8:
        raise InputError(f"indices must be uint8, got {indices.dtype}")
    if indices.max() >= palette.shape[0]:
        raise InputError(f"indices reach {indices.max()}, beyond the palette of {palette.shape[0]} colours")
    return np.ascontiguousarray(palette), np.ascontiguousarray(indices)


def encode_image(palette: np.ndarray, indices: np.ndarray, *, method: str = "cm") -> bytes:
    """Write a palette and an index map as a .kmq file.

    Parameters
    ----------
    palette : ndarray of uint8, shape (k, 3) or (k, 4)
        RGB or RGBA colours, 1 <= k <= 256.
    indices : ndarray of uint8, shape (height, width)
        One palette index per pixel, each below k.
    method : {"cm", "deflate", "stored"}
        How the index map is coded: context-model range coding (smallest), zlib on the packed map,
        or the packed map as it is.

    Returns
    -------
    bytes
        The .kmq file; :func:`decode_image` gives back the same palette and indices.

    Raises
    ------
    InputError
        If the arrays do not have the shapes and ranges above, or ``method`` is unknown.

    Examples
    --------
    >>> palette = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    >>> indices = np.eye(8, dtype=np.uint8)
    >>> data = encode_image(palette, indices)
    >>> np.array_equal(decode_image(data).indices, indices)
    True
    """
    palette, indices = _check_image(palette, indices)
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    height, width = indices.shape
    k, channels = palette.shape
    bits = index_bits(k)
    if method == "cm":
        payload = encode_index_map(indices, k)
    else:
        payload = pack_indices(indices, bits)
        if method == "deflate":
            payload = zlib.compress(payload, 9)
    head = (
        width.to_bytes(4, "little")
        + height.to_bytes(4, "little")
        + bytes([channels])
        + k.to_bytes(2, "little")
        + bytes([bits, METHODS.index(method)])
    )
    return write_container(MAGIC, [(HEAD, head), (PALT, palette.tobytes()), (DATA, payload)])


@dataclass(frozen=True)
class _Parsed:
    info: ImageInfo
    palette: memoryview
    payload: memoryview


def _parse(data: bytes | bytearray | memoryview, max_pixels: int) -> _Parsed:
    view = as_bytes_view(data)
    found: dict[bytes, memoryview] = {}
    for chunk in read_chunks(view, MAGIC, ".kmq image"):
        if chunk.kind in (HEAD, PALT, DATA):
            expected = (HEAD, PALT, DATA)[len(found)] if len(found) < 3 else None
            if chunk.kind != expected:
                raise FormatError(f".kmq image: chunk {chunk.kind!r} out of order (expected {expected!r})")
            found[chunk.kind] = chunk.payload
        elif not chunk.optional:
            raise FormatError(f".kmq image: unknown critical chunk {chunk.kind!r}")
        elif not found:
            raise FormatError(".kmq image: the first chunk must be HEAD")
    if len(found) != 3:
        missing = ", ".join(kind.decode() for kind in (HEAD, PALT, DATA) if kind not in found)
        raise FormatError(f".kmq image: missing chunk {missing}")
    head = ByteReader(found[HEAD], "HEAD chunk")
    if len(found[HEAD]) != _HEAD_SIZE:
        raise FormatError(f"HEAD chunk: {len(found[HEAD])} bytes, expected {_HEAD_SIZE}")
    width, height, channels, k, bits, method = head.u32(), head.u32(), head.u8(), head.u16(), head.u8(), head.u8()
    if channels not in (3, 4):
        raise FormatError(f"HEAD chunk: {channels} channels (3 or 4 expected)")
    if not 1 <= k <= 256:
        raise FormatError(f"HEAD chunk: palette of {k} colours (1..256 expected)")
    if bits != index_bits(k):
        raise FormatError(f"HEAD chunk: {bits} bits per index for {k} colours (expected {index_bits(k)})")
    if method >= len(METHODS):
        raise FormatError(f"HEAD chunk: unknown coding method {method}")
    check_pixel_count(width, height, max_pixels)
    if len(found[PALT]) != k * channels:
        raise FormatError(f"PALT chunk: {len(found[PALT])} bytes, expected {k * channels} ({k} × {channels})")
    info = ImageInfo(width, height, channels, k, bits, METHODS[method], len(found[DATA]), len(view))
    return _Parsed(info, found[PALT], found[DATA])


def image_info(data: bytes | bytearray | memoryview, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read a .kmq file's header and check its structure and checksums, without decoding the index map.

    Raises
    ------
    FormatError
        If the file is not a valid .kmq file.
    LimitError
        If it declares more than ``max_pixels`` pixels.
    """
    return _parse(data, max_pixels).info


def decode_image(data: bytes | bytearray | memoryview, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a .kmq file.

    Parameters
    ----------
    data : bytes-like
        The whole file.
    max_pixels : int
        Refuse images with more pixels than this, before allocating them.

    Returns
    -------
    DecodedImage
        Palette (k × channels uint8), indices (height × width uint8) and the coding method.

    Raises
    ------
    FormatError
        If the data is corrupt, truncated, or of an unknown version.
    LimitError
        If the image declares more than ``max_pixels`` pixels.
    """
    parsed = _parse(data, max_pixels)
    info = parsed.info
    if info.method == "cm":
        indices = decode_index_map(parsed.payload, info.width, info.height, info.k, max_pixels=max_pixels)
    else:
        packed = parsed.payload
        if info.method == "deflate":
            packed = _inflate(packed, _packed_size(info.width * info.height, info.bits_per_index))
        indices = unpack_indices(packed, info.width, info.height, info.bits_per_index, info.k)
    palette = np.frombuffer(parsed.palette, np.uint8).reshape(info.k, info.channels).copy()
    return DecodedImage(palette, indices, info.method)
