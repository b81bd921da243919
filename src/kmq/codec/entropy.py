"""Index map <-> bytes: context-modelled binary range coding of palette indices, intra and inter.

docs/FORMAT.md ("Index data") specifies every step; the JavaScript decoder implements the same.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from kmq.codec.framing import DEFAULT_MAX_PIXELS, ByteReader, as_bytes_view, check_pixel_count
from kmq.errors import FormatError, InputError

__all__ = [
    "encode_index_map",
    "decode_index_map",
    "encode_padded_map",
    "decode_padded_map",
    "padded_map",
    "map_view",
    "index_bits",
    "default_stripe_rows",
    "block_row_tops",
    "BLOCK_SIZE",
]

BLOCK_SIZE = 16
"""Side of the square blocks whose "unchanged since the previous frame" flag inter coding sends."""

# The model. Changing any of these changes the format: docs/FORMAT.md gives the same numbers.
PROBABILITY_ONE = 1 << 16
FLAG_RATE_LIMIT = 6
TREE_RATE_LIMIT = 4
FLAG_W = 0
FLAG_N = 128
FLAG_P = 256
FLAG_BLOCK = 288
TREE = 296

MODE_INTRA = 0
MODE_INTER = 1
STRIPE_PIXELS = 1 << 18
MAX_STRIPES = 64

_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
_PAD_LEFT = 2
_BYTES_PER_PIXEL_BOUND = 24  # 11 decisions at most, each at most 16 bits, plus slack


# --- the range coder ------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _adapt(p0s, rates, ctx, bit, limit):
    # Written without a branch on ``bit``: the decoded bit is unpredictable and a mispredicted
    # branch costs more than the arithmetic.
    p0 = int(p0s[ctx])
    rate = int(rates[ctx])
    up = (PROBABILITY_ONE - p0) >> rate
    down = p0 >> rate
    p0s[ctx] = p0 + up - ((up + down) & -bit)
    rates[ctx] = rate + (rate < limit)


@numba.njit(cache=True, nogil=True)
def _code_bit(buf, pos, code, range_, p0, bit, decoding):
    """Encode ``bit`` or decode one; return the bit and the new state.

    ``code`` is the low end of the interval when encoding and the code value when decoding.
    """
    bound = (range_ >> 16) * p0
    if decoding:
        bit = int(code >= bound)
    mask = -bit
    range_ = bound + ((range_ - 2 * bound) & mask)
    if decoding:
        code -= bound & mask
    else:
        code += bound & mask
        if code > _MASK32:
            # A carry into bytes already written; the interval never reaches 1.0, so it stops.
            code &= _MASK32
            i = pos - 1
            while buf[i] == 255:
                buf[i] = 0
                i -= 1
            buf[i] += 1
    while range_ < _TOP:
        if decoding:
            # Past the end the decoder reads zeros and keeps counting; the caller then sees that
            # more bytes were read than the stream holds and reports corrupt data.
            code = ((code << 8) | (buf[pos] if pos < buf.size else 0)) & _MASK32
        else:
            buf[pos] = code >> 24
            code = (code << 8) & _MASK32
        pos += 1
        range_ <<= 8
    return bit, pos, code, range_


@numba.njit(cache=True, nogil=True)
def _code_flag(buf, pos, code, range_, p0s, rates, ctx, bit, limit, decoding):
    bit, pos, code, range_ = _code_bit(buf, pos, code, range_, int(p0s[ctx]), bit, decoding)
    _adapt(p0s, rates, ctx, bit, limit)
    return bit, pos, code, range_


# --- the model ------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _spatial_context(w, n, nw, ne, ww, nn):
    return (
        (w == n)
        | ((w == nw) << 1)
        | ((w == ne) << 2)
        | ((n == ne) << 3)
        | ((n == nw) << 4)
        | ((w == ww) << 5)
        | ((n == nn) << 6)
    )


@numba.njit(cache=True, nogil=True)
def _temporal_context(w, n, ne, p, pw, pn, pne):
    return (w == pw) | ((n == pn) << 1) | ((ne == pne) << 2) | ((p == w) << 3) | ((p == n) << 4)


@numba.njit(cache=True, nogil=True)
def _block_changed(frame, previous, y, bottom, x0, x1):
    for row in range(y, min(y + BLOCK_SIZE, bottom)):
        for col in range(x0, x1):
            if frame[row, col] != previous[row, col]:
                return 1
    return 0


@numba.njit(cache=True, nogil=True)
def _reserve(buf, pos, needed):
    if buf.size - pos >= needed:
        return buf
    grown = np.empty(2 * buf.size + needed, np.uint8)
    # Element loops instead of slice assignment: numba compiles slice assignment with its
    # shape-mismatch error path, which takes seconds on a cold cache.
    for i in range(pos):
        grown[i] = buf[i]
    return grown


@numba.njit(cache=True, nogil=True)
def _code_stripe(buf, frame, previous, inter, k, bits, top, bottom, decoding):
    """Encode rows ``top``..``bottom``-1 of ``frame`` into ``buf`` (grown as needed), or decode into them.

    ``frame`` and ``previous`` are padded: pixel (y, x) lives at [y, x + 2], columns 0, 1 and the
    last are zero, and the extra last row is zero; it stands for the rows above a stripe. To decode
    inter data, ``frame`` starts as a copy of ``previous``, so unchanged blocks need no work.
    Returns the buffer and the number of bytes written or read.
    """
    height = frame.shape[0] - 1
    width = frame.shape[1] - 3
    p0s = np.full(TREE + (k << bits), PROBABILITY_ONE // 2, np.uint16)
    rates = np.ones(TREE + (k << bits), np.uint8)
    span = BLOCK_SIZE if inter else width
    blocks = (width + span - 1) // span
    changed_above = np.zeros(blocks + 1, np.uint8)
    changed = np.zeros(blocks + 1, np.uint8) if inter else np.ones(blocks + 1, np.uint8)
    pos = 0
    code = 0
    range_ = _MASK32
    if decoding:
        for _ in range(4):
            code = (code << 8) | (buf[pos] if pos < buf.size else 0)
            pos += 1
    for y in range(top, bottom):
        up = y - 1 if y > top else height
        up2 = y - 2 if y - 1 > top else height
        if inter and (y - top) % BLOCK_SIZE == 0:
            changed_above, changed = changed, changed_above
            if not decoding:
                buf = _reserve(buf, pos, 4 * blocks + 16)
            for b in range(blocks):
                left = changed[b - 1] if b > 0 else 0
                ctx = FLAG_BLOCK + (left | (changed_above[b] << 1) | (changed_above[b + 1] << 2))
                x0 = b * span + _PAD_LEFT
                x1 = min(x0 + span, width + _PAD_LEFT)
                truth = 0 if decoding else _block_changed(frame, previous, y, bottom, x0, x1)
                bit, pos, code, range_ = _code_flag(
                    buf, pos, code, range_, p0s, rates, ctx, truth, FLAG_RATE_LIMIT, decoding
                )
                changed[b] = bit
        for b in range(blocks):
            x0 = b * span + _PAD_LEFT
            x1 = min(x0 + span, width + _PAD_LEFT)
            if not changed[b]:
                continue
            if not decoding:
                buf = _reserve(buf, pos, _BYTES_PER_PIXEL_BOUND * span + 16)
            # The pixel loop stays in this function: moving it into a helper that takes the arrays
            # costs reference counting or a call per pixel, several times the work of coding it.
            for col in range(x0, x1):
                v = frame[y, col]
                w = frame[y, col - 1]
                n = frame[up, col]
                p = -1
                if inter:
                    p = previous[y, col]
                    ctx = FLAG_P + _temporal_context(
                        w, n, frame[up, col + 1], p, previous[y, col - 1], previous[up, col], previous[up, col + 1]
                    )
                    bit, pos, code, range_ = _code_flag(
                        buf, pos, code, range_, p0s, rates, ctx, int(v == p), FLAG_RATE_LIMIT, decoding
                    )
                    if bit:
                        frame[y, col] = p
                        continue
                context = _spatial_context(
                    w, n, frame[up, col - 1], frame[up, col + 1], frame[y, col - 2], frame[up2, col]
                )
                if w != p:
                    ctx = FLAG_W + context
                    bit, pos, code, range_ = _code_flag(
                        buf, pos, code, range_, p0s, rates, ctx, int(v == w), FLAG_RATE_LIMIT, decoding
                    )
                    if bit:
                        frame[y, col] = w
                        continue
                if n != w and n != p:
                    ctx = FLAG_N + context
                    bit, pos, code, range_ = _code_flag(
                        buf, pos, code, range_, p0s, rates, ctx, int(v == n), FLAG_RATE_LIMIT, decoding
                    )
                    if bit:
                        frame[y, col] = n
                        continue
                # Binary tree over the index bits, most significant first, probabilities conditioned
                # on W. A bit that would make the index >= k is known to be 0 and is not coded.
                base = TREE + (int(w) << bits)
                node = 1
                value = 0
                for level in range(bits - 1, -1, -1):
                    if value | (1 << level) >= k:
                        node <<= 1
                        continue
                    bit, pos, code, range_ = _code_flag(
                        buf, pos, code, range_, p0s, rates, base + node, (v >> level) & 1, TREE_RATE_LIMIT, decoding
                    )
                    node = (node << 1) | bit
                    value |= bit << level
                frame[y, col] = value
    if not decoding:
        buf = _reserve(buf, pos, 4)
        for _ in range(4):
            buf[pos] = code >> 24
            code = (code << 8) & _MASK32
            pos += 1
    return buf, pos


@numba.njit(cache=True, nogil=True)
def _encode_stripe(buf, frame, previous, inter, k, bits, top, bottom):
    return _code_stripe(buf, frame, previous, inter, k, bits, top, bottom, False)


@numba.njit(cache=True, nogil=True)
def _decode_stripe(data, frame, previous, inter, k, bits, top, bottom):
    return _code_stripe(data, frame, previous, inter, k, bits, top, bottom, True)[1]


# --- the public functions -------------------------------------------------------------------------


def index_bits(k: int) -> int:
    """Bits needed to store one index of a palette of ``k`` entries: ceil(log2 k), 0 for k = 1.

    Examples
    --------
    >>> [index_bits(k) for k in (1, 2, 3, 16, 17, 256)]
    [0, 1, 2, 4, 5, 8]
    """
    return max(0, (k - 1).bit_length())


def default_stripe_rows(width: int, height: int, stripe_pixels: int = STRIPE_PIXELS) -> int:
    """Rows per independently coded stripe: one stripe per ``stripe_pixels`` (2**18) or so, at most 64, whole blocks.

    The rows are a multiple of :data:`BLOCK_SIZE` (or the whole height), so the 16×16 blocks of
    inter coding, which restart at each stripe's top, fall on the same rows as blocks counted from
    the top of the frame; only the last stripe may end with a short block row. A function of the
    size only, so the same map always gives the same bytes on any machine.

    Examples
    --------
    >>> default_stripe_rows(768, 512), default_stripe_rows(1280, 720), default_stripe_rows(1920, 1080)
    (512, 240, 160)
    >>> default_stripe_rows(1280, 720, stripe_pixels=1 << 17)  # the video encoder's: 7 stripes
    112
    """
    stripes = min(MAX_STRIPES, height, max(1, (width * height) // stripe_pixels))
    rows = -(-height // stripes)
    return min(height, -(-rows // BLOCK_SIZE) * BLOCK_SIZE)


def block_row_tops(height: int, stripe_rows: int) -> np.ndarray:
    """First row of each row of inter coding's blocks, counted from each stripe's top, then ``height``.

    The rows an encoder must decide block by block to match the coder's "unchanged" flags.

    Examples
    --------
    >>> block_row_tops(40, 24).tolist()
    [0, 16, 24, 40]
    """
    tops = [
        block_top
        for stripe_top in range(0, height, stripe_rows)
        for block_top in range(stripe_top, min(stripe_top + stripe_rows, height), BLOCK_SIZE)
    ]
    return np.array([*tops, height], np.int64)


@functools.cache
def _thread_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="kmq-codec")


def _map_stripes(function, stripes):
    if len(stripes) == 1 or (os.cpu_count() or 1) == 1:
        return [function(*stripe) for stripe in stripes]
    return list(_thread_pool().map(lambda stripe: function(*stripe), stripes))


def padded_map(height: int, width: int) -> np.ndarray:
    """Zeros in the shape the coder works on: a height × width map (:func:`map_view`) and its margins.

    The margins (two columns on the left, one on the right, one row below) stay zero: they stand
    for the pixels outside the map. A caller that writes its map straight into one of these (as
    the video encoder does) hands it to :func:`encode_padded_map` without a copy.

    Examples
    --------
    >>> padded = padded_map(2, 3)
    >>> map_view(padded)[:] = [[1, 2, 3], [4, 5, 6]]
    >>> padded
    array([[0, 0, 1, 2, 3, 0],
           [0, 0, 4, 5, 6, 0],
           [0, 0, 0, 0, 0, 0]], dtype=uint8)
    """
    return np.zeros((height + 1, width + _PAD_LEFT + 1), np.uint8)


def map_view(padded: np.ndarray) -> np.ndarray:
    """The height × width map inside a :func:`padded_map` (a view: writing one writes the other)."""
    return padded[:-1, _PAD_LEFT:-1]


def _padded(indices: np.ndarray) -> np.ndarray:
    frame = padded_map(*indices.shape)
    map_view(frame)[...] = indices
    return frame


def _check_map(indices: object, k: int, name: str) -> np.ndarray:
    array = np.asarray(indices)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InputError(f"{name} must be a non-empty 2-D array (height × width), got shape {array.shape}")
    if array.dtype.kind not in "ui":
        raise InputError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= k:
        raise InputError(f"{name} must lie in 0..{k - 1} for a palette of {k}, got {array.min()}..{array.max()}")
    return array


def _check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= 256:
        raise InputError(f"k must be an integer in 1..256, got {k!r}")
    return int(k)


def encode_index_map(
    indices: np.ndarray,
    k: int,
    previous: np.ndarray | None = None,
    *,
    stripe_rows: int | None = None,
) -> bytes:
    """Entropy-code an index map ("cm" method), intra or against the previous frame.

    Parameters
    ----------
    indices : ndarray of int, shape (height, width)
        Palette indices, each in ``0..k-1``.
    k : int
        Palette size, 1..256.
    previous : ndarray, shape (height, width), optional
        The previous frame's index map (same palette numbering). Given, the map is inter coded:
        16×16 blocks equal to ``previous`` cost almost nothing, and ``previous`` predicts the rest.
    stripe_rows : int, optional
        Rows per stripe; stripes are coded independently, so they can be coded in parallel.
        Default: :func:`default_stripe_rows`.

    Returns
    -------
    bytes
        The coded map, to be decoded by :func:`decode_index_map` with the same size, ``k`` and
        ``previous``.

    Raises
    ------
    InputError
        If ``k`` or an index is out of range, or the shapes do not match.

    Examples
    --------
    >>> import numpy as np
    >>> indices = np.zeros((64, 64), np.uint8)
    >>> data = encode_index_map(indices, k=4)
    >>> len(data) < 16
    True
    >>> np.array_equal(decode_index_map(data, 64, 64, k=4), indices)
    True
    """
    k = _check_k(k)
    indices = _check_map(indices, k, "indices")
    height, width = indices.shape
    inter = previous is not None
    if inter:
        previous = _check_map(previous, k, "previous")
        if previous.shape != indices.shape:
            raise InputError(f"previous has shape {previous.shape}, indices {indices.shape}: they must match")
    if stripe_rows is None:
        stripe_rows = default_stripe_rows(width, height)
    if not isinstance(stripe_rows, (int, np.integer)) or not 1 <= stripe_rows <= height:
        raise InputError(f"stripe_rows must be an integer in 1..{height}, got {stripe_rows!r}")
    return encode_padded_map(_padded(indices), k, _padded(previous) if inter else None, stripe_rows=int(stripe_rows))


def encode_padded_map(
    frame: np.ndarray,
    k: int,
    reference: np.ndarray | None = None,
    *,
    stripe_rows: int,
    buffers: list[np.ndarray] | None = None,
) -> bytes:
    """:func:`encode_index_map` of a map already in a :func:`padded_map`, trusting it: nothing is scanned or copied.

    For callers that check their maps once and write each one straight into a padded map, as the
    video encoder does; frame t's padded map is then frame t+1's ``reference`` as it is.

    Parameters
    ----------
    frame : ndarray of uint8
        A :func:`padded_map` holding the map: every index below ``k``, the margins zero.
    k : int
        Palette size, 1..256.
    reference : ndarray of uint8, optional
        The previous frame's padded map, same shape; given, the map is inter coded.
    stripe_rows : int
        Rows per stripe, 1..height.
    buffers : list of ndarray, optional
        The coder's output buffers, kept by the caller between calls: one per stripe, replaced
        by a larger one when a stripe needs more, so that a sequence of frames reuses them.

    Returns
    -------
    bytes
        The same bytes :func:`encode_index_map` gives for the map inside ``frame``.
    """
    height = frame.shape[0] - 1
    width = frame.shape[1] - _PAD_LEFT - 1
    inter = reference is not None
    bits = index_bits(k)
    tops = range(0, height, stripe_rows)
    if buffers is None:
        buffers = []
    while len(buffers) < len(tops):
        buffers.append(np.empty(max(64, stripe_rows * width // 4), np.uint8))

    def encode(stripe: int) -> int:
        top = tops[stripe]
        bottom = min(top + stripe_rows, height)
        buffers[stripe], size = _encode_stripe(
            buffers[stripe], frame, reference if inter else frame, inter, k, bits, top, bottom
        )
        return size

    sizes = _map_stripes(encode, [(stripe,) for stripe in range(len(tops))])
    header = bytes([MODE_INTER if inter else MODE_INTRA]) + stripe_rows.to_bytes(4, "little")
    lengths = b"".join(int(size).to_bytes(4, "little") for size in sizes[:-1])
    return b"".join((header, lengths, *(buffers[stripe][:size] for stripe, size in enumerate(sizes))))


def decode_index_map(
    data: bytes | bytearray | memoryview,
    width: int,
    height: int,
    k: int,
    previous: np.ndarray | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode an index map written by :func:`encode_index_map`.

    Parameters
    ----------
    data : bytes-like
        The coded map, exactly (no bytes before or after).
    width, height : int
        Size of the map.
    k : int
        Palette size, 1..256.
    previous : ndarray, shape (height, width), optional
        The previous frame's index map; required when the data is inter coded, ignored otherwise.
    max_pixels : int
        Refuse maps larger than this before allocating anything.

    Returns
    -------
    ndarray of uint8, shape (height, width)
        The index map; every index is below ``k``.

    Raises
    ------
    FormatError
        Corrupt or truncated data, or inter-coded data without ``previous``.
    LimitError
        If ``width * height`` exceeds ``max_pixels``.
    """
    k = _check_k(k)
    check_pixel_count(width, height, max_pixels)
    inter, stripe_rows, streams = _split_stripes(data, height, have_previous=previous is not None)
    reference = None
    if inter:
        previous = _check_map(previous, k, "previous")
        if previous.shape != (height, width):
            raise InputError(f"previous has shape {previous.shape}, expected {(height, width)}")
        reference = _padded(previous)
    return np.ascontiguousarray(map_view(_decode_stripes(streams, stripe_rows, width, height, k, reference)))


def decode_padded_map(
    data: bytes | bytearray | memoryview, width: int, height: int, k: int, reference: np.ndarray | None = None
) -> np.ndarray:
    """:func:`decode_index_map` into a new :func:`padded_map`, trusting ``reference`` (the previous one it returned).

    For the video decoder: the padded map it gets back is the next frame's ``reference`` as it
    is, and :func:`map_view` gives the frame's indices without a copy. The data is checked as by
    :func:`decode_index_map`; ``width``, ``height`` and ``k`` must already be checked.

    Raises
    ------
    FormatError
        Corrupt or truncated data, or inter-coded data without ``reference``.
    """
    inter, stripe_rows, streams = _split_stripes(data, height, have_previous=reference is not None)
    return _decode_stripes(streams, stripe_rows, width, height, k, reference if inter else None)


def _split_stripes(
    data: bytes | bytearray | memoryview, height: int, *, have_previous: bool
) -> tuple[bool, int, list[memoryview]]:
    """Mode, stripe height and each stripe's stream, every length checked against the data."""
    reader = ByteReader(as_bytes_view(data), "index data")
    mode = reader.u8()
    if mode not in (MODE_INTRA, MODE_INTER):
        raise FormatError(f"index data: unknown coding mode {mode}")
    inter = mode == MODE_INTER
    if inter and not have_previous:
        raise FormatError("index data is inter coded: the previous frame is needed to decode it")
    stripe_rows = reader.u32()
    if not 1 <= stripe_rows <= height:
        raise FormatError(f"index data: stripe height {stripe_rows} outside 1..{height}")
    stripes = -(-height // stripe_rows)
    lengths = [reader.u32() for _ in range(stripes - 1)]
    streams = [reader.take(size) for size in lengths]
    streams.append(reader.rest())
    return inter, stripe_rows, streams


def _decode_stripes(
    streams: list[memoryview], stripe_rows: int, width: int, height: int, k: int, reference: np.ndarray | None
) -> np.ndarray:
    """Decode each stripe's stream into a new padded map (inter when ``reference`` is given)."""
    inter = reference is not None
    # Inter decoding starts from a copy of the previous map, so unchanged blocks need no work.
    frame = reference.copy() if inter else padded_map(height, width)
    bits = index_bits(k)
    tops = range(0, height, stripe_rows)

    def decode(top: int, stream: memoryview) -> int:
        # A writable copy: the kernel shares its code with the encoder, which writes its buffer.
        bottom = min(top + stripe_rows, height)
        return len(stream) - _decode_stripe(
            np.array(stream, np.uint8), frame, reference if inter else frame, inter, k, bits, top, bottom
        )

    unread = _map_stripes(decode, list(zip(tops, streams)))
    for top, left_over in zip(tops, unread):
        if left_over:
            problem = "ends early" if left_over < 0 else f"has {left_over} bytes left over"
            raise FormatError(f"index data: the stripe at row {top} {problem} (corrupt data)")
    return frame
