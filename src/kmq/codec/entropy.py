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
    "MOTION_RANGE",
    "motion_vector_shape",
    "motion_reference",
    "predict_rows",
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

MOTION_SAME = 0  # + [predicted vector == above vector]: "the vector is the predicted one"
MOTION_ABOVE = 2  # "the vector is the above block's"
MOTION_X = 4  # + node 1..31: the bits of dx + 16
MOTION_Y = 36  # + node 1..31: the bits of dy + 16
MOTION_CONTEXTS = 68  # after the tree's, in mode 2 only
MOTION_BITS = 5

MODE_INTRA = 0
MODE_INTER = 1
MODE_MOTION = 2
MOTION_RANGE = (-(1 << (MOTION_BITS - 1)), (1 << (MOTION_BITS - 1)) - 1)
"""Smallest and largest motion vector component a motion-compensated map may carry: -16, 15."""
STRIPE_PIXELS = 1 << 18
MAX_STRIPES = 64

_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
_PAD_LEFT = 2
_NO_VECTORS = np.zeros((1, 1, 2), np.int8)  # the kernels' vectors argument in modes 0 and 1
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
        # A row at a time, without a branch per pixel (a vector comparison); unsigned positions
        # spare numba's negative-index handling.
        now = frame[np.uint64(row)]
        before = previous[np.uint64(row)]
        differ = False
        for col in range(x0, x1):
            differ |= now[np.uint64(col)] != before[np.uint64(col)]
        if differ:
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
def _code_vector_part(buf, pos, code, range_, p0s, rates, base, value, decoding):
    """One component of a motion vector: its 5 bits plus 16, most significant first, on a tree."""
    node = 1
    for level in range(MOTION_BITS - 1, -1, -1):
        bit, pos, code, range_ = _code_flag(
            buf, pos, code, range_, p0s, rates, base + node, ((value + 16) >> level) & 1, TREE_RATE_LIMIT, decoding
        )
        node = (node << 1) | bit
    return node - (1 << MOTION_BITS) - 16, pos, code, range_


@numba.njit(cache=True, nogil=True)
def predict_rows(previous, vectors, block_row, reference, y0, y1, top, bottom):
    """Rows ``y0``..``y1``-1 (block row ``block_row`` of ``vectors``) of mode 2's moved reference.

    A numba kernel, callable from other kernels: each block's pixels are ``previous`` (a padded
    map) at the block's vector from them, positions clamped to the stripe's rows ``top``..
    ``bottom``-1 and to the frame's columns, written into the padded map ``reference``.
    """
    width = previous.shape[1] - 3
    blocks = (width + BLOCK_SIZE - 1) // BLOCK_SIZE
    b = 0
    while b < blocks:
        # A run of blocks with the same vector is one copy per row: long loops, clamped at the ends only.
        dx = int(vectors[block_row, b, 0])
        dy = int(vectors[block_row, b, 1])
        end = b + 1
        while end < blocks and vectors[block_row, end, 0] == dx and vectors[block_row, end, 1] == dy:
            end += 1
        x0 = b * BLOCK_SIZE
        x1 = min(end * BLOCK_SIZE, width)
        inner0 = min(max(x0, -dx), x1)
        inner1 = max(min(x1, width - dx), inner0)
        for y in range(y0, y1):
            source = previous[min(max(y + dy, top), bottom - 1)]
            target = reference[y]
            for x in range(x0, inner0):
                target[x + _PAD_LEFT] = source[_PAD_LEFT]
            # Unsigned positions: numba then needs no negative-index handling, and the loop becomes
            # a vector copy (some 30 times faster).
            start = inner0 + _PAD_LEFT
            for i in range(inner1 - inner0):
                target[np.uint64(start + i)] = source[np.uint64(start + dx + i)]
            for x in range(inner1, x1):
                target[x + _PAD_LEFT] = source[width - 1 + _PAD_LEFT]
        b = end


@numba.njit(cache=True, nogil=True)
def _code_stripe(buf, frame, previous, reference, vectors, first_block_row, mode, k, bits, top, bottom, decoding):
    """Encode rows ``top``..``bottom``-1 of ``frame`` into ``buf`` (grown as needed), or decode into them.

    ``frame``, ``previous`` and ``reference`` are padded: pixel (y, x) lives at [y, x + 2], columns
    0, 1 and the last are zero, and the extra last row is zero; it stands for the rows above a
    stripe. To decode inter data (mode 1), ``frame`` starts as a copy of ``previous``, so unchanged
    blocks need no work. In mode 2 (motion), ``vectors[first_block_row + i]`` holds the vectors of
    the stripe's block row i and ``reference`` the motion-compensated previous map: given when
    encoding, both filled here when decoding. Returns the buffer and the number of bytes written or read.
    """
    height = frame.shape[0] - 1
    width = frame.shape[1] - 3
    inter = mode != MODE_INTRA
    motion = mode == MODE_MOTION
    motion_base = TREE + (k << bits)
    contexts = motion_base + (MOTION_CONTEXTS if motion else 0)
    p0s = np.full(contexts, PROBABILITY_ONE // 2, np.uint16)
    rates = np.ones(contexts, np.uint8)
    span = BLOCK_SIZE if inter else width
    blocks = (width + span - 1) // span
    changed_above = np.zeros(blocks + 1, np.uint8)
    changed = np.zeros(blocks + 1, np.uint8) if inter else np.ones(blocks + 1, np.uint8)
    ref = reference if motion else previous
    block_row = first_block_row - 1
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
            block_row += 1
            if not decoding:
                # At most 16 bits per decision: a block's flag, and in mode 2 up to 12 for its vector.
                buf = _reserve(buf, pos, (2 + 24 * motion) * blocks + 16)
            if motion:
                for b in range(blocks):
                    # Predicted: the left block's vector; the first block takes the one above it.
                    above_x = above_y = 0
                    if y > top:
                        above_x = int(vectors[block_row - 1, b, 0])
                        above_y = int(vectors[block_row - 1, b, 1])
                    if b > 0:
                        predicted_x = int(vectors[block_row, b - 1, 0])
                        predicted_y = int(vectors[block_row, b - 1, 1])
                    else:
                        predicted_x = above_x
                        predicted_y = above_y
                    dx = int(vectors[block_row, b, 0])
                    dy = int(vectors[block_row, b, 1])
                    agree = int(predicted_x == above_x and predicted_y == above_y)
                    same, pos, code, range_ = _code_flag(
                        buf, pos, code, range_, p0s, rates, motion_base + MOTION_SAME + agree,
                        int(dx == predicted_x and dy == predicted_y), FLAG_RATE_LIMIT, decoding,
                    )
                    if same:
                        dx = predicted_x
                        dy = predicted_y
                    else:
                        is_above = 0
                        if not agree:
                            is_above, pos, code, range_ = _code_flag(
                                buf, pos, code, range_, p0s, rates, motion_base + MOTION_ABOVE,
                                int(dx == above_x and dy == above_y), FLAG_RATE_LIMIT, decoding,
                            )
                        if is_above:
                            dx = above_x
                            dy = above_y
                        else:
                            dx, pos, code, range_ = _code_vector_part(
                                buf, pos, code, range_, p0s, rates, motion_base + MOTION_X, dx, decoding
                            )
                            dy, pos, code, range_ = _code_vector_part(
                                buf, pos, code, range_, p0s, rates, motion_base + MOTION_Y, dy, decoding
                            )
                    if decoding:
                        vectors[block_row, b, 0] = dx
                        vectors[block_row, b, 1] = dy
                if decoding:
                    last = min(y + BLOCK_SIZE, bottom)
                    predict_rows(previous, vectors, block_row, reference, y, last, top, bottom)
                    # Unchanged blocks are the reference; changed pixels are overwritten below.
                    for row in range(y, last):
                        target = frame[row]
                        source = reference[row]
                        for i in range(width):  # unsigned positions: a vector copy (see predict_rows)
                            target[np.uint64(_PAD_LEFT + i)] = source[np.uint64(_PAD_LEFT + i)]
            for b in range(blocks):
                left = changed[b - 1] if b > 0 else 0
                ctx = FLAG_BLOCK + (left | (changed_above[b] << 1) | (changed_above[b + 1] << 2))
                x0 = b * span + _PAD_LEFT
                x1 = min(x0 + span, width + _PAD_LEFT)
                truth = 0 if decoding else _block_changed(frame, ref, y, bottom, x0, x1)
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
                    p = ref[y, col]
                    ctx = FLAG_P + _temporal_context(
                        w, n, frame[up, col + 1], p, ref[y, col - 1], ref[up, col], ref[up, col + 1]
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
def _encode_stripe(buf, frame, previous, reference, vectors, first_block_row, mode, k, bits, top, bottom):
    return _code_stripe(buf, frame, previous, reference, vectors, first_block_row, mode, k, bits, top, bottom, False)


@numba.njit(cache=True, nogil=True)
def _decode_stripe(data, frame, previous, reference, vectors, first_block_row, mode, k, bits, top, bottom):
    return _code_stripe(data, frame, previous, reference, vectors, first_block_row, mode, k, bits, top, bottom, True)[1]


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


def motion_vector_shape(height: int, width: int, stripe_rows: int) -> tuple[int, int, int]:
    """Shape of a map's motion vectors: (block rows as :func:`block_row_tops` gives them, blocks across, 2).

    Examples
    --------
    >>> motion_vector_shape(40, 33, 24)
    (3, 3, 2)
    """
    return len(block_row_tops(height, stripe_rows)) - 1, -(-width // BLOCK_SIZE), 2


def _first_block_row(top: int, stripe_rows: int) -> int:
    """Index, among the map's block rows, of the first block row of the stripe starting at ``top``."""
    return (top // stripe_rows) * -(-stripe_rows // BLOCK_SIZE)


def motion_reference(previous: np.ndarray, vectors: np.ndarray, stripe_rows: int, out: np.ndarray) -> np.ndarray:
    """The motion-compensated reference of mode 2: each block of ``previous`` moved by its vector.

    Parameters
    ----------
    previous : ndarray of uint8
        The previous frame's :func:`padded_map`.
    vectors : ndarray of int8, shape (block rows, blocks, 2)
        (dx, dy) of each block, block rows as :func:`block_row_tops` gives them, components in
        :data:`MOTION_RANGE`. Block (r, b)'s pixel (y, x) is predicted by the previous map at
        (y + dy, x + dx), clamped to the rows of its stripe and the columns of the frame.
    stripe_rows : int
        Rows per stripe.
    out : ndarray of uint8
        A :func:`padded_map` of the same shape to fill (its margins stay as they are: zero).

    Returns
    -------
    ndarray
        ``out``.
    """
    height = previous.shape[0] - 1
    tops = block_row_tops(height, stripe_rows)
    for row in range(len(tops) - 1):
        stripe_top = tops[row] - (tops[row] % stripe_rows)
        predict_rows(
            previous, vectors, row, out, int(tops[row]), int(tops[row + 1]),
            stripe_top, min(stripe_top + stripe_rows, height),
        )
    return out


def _check_vectors(vectors: object, height: int, width: int, stripe_rows: int) -> np.ndarray:
    shape = motion_vector_shape(height, width, stripe_rows)
    array = np.asarray(vectors)
    if array.shape != shape or array.dtype.kind not in "ui":
        raise InputError(f"motion vectors must be integers of shape {shape}, got {array.dtype} {array.shape}")
    low, high = MOTION_RANGE
    if array.size and (array.min() < low or array.max() > high):
        raise InputError(f"motion vector components must lie in {low}..{high}")
    return np.ascontiguousarray(array, dtype=np.int8)


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
    vectors: np.ndarray | None = None,
) -> bytes:
    """Entropy-code an index map ("cm" method), intra, against the previous frame, or against it moved.

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
    vectors : ndarray of int, shape (block rows, blocks, 2), optional
        With ``previous``: a motion vector (dx, dy) per 16×16 block (see :func:`motion_reference`),
        coded with the map; each block is then predicted by ``previous`` moved by its vector
        (mode 2) instead of ``previous`` in place.

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
    if vectors is not None:
        if not inter:
            raise InputError("motion vectors need the previous frame's map")
        vectors = _check_vectors(vectors, height, width, int(stripe_rows))
    return encode_padded_map(
        _padded(indices), k, _padded(previous) if inter else None, stripe_rows=int(stripe_rows), vectors=vectors
    )


def encode_padded_map(
    frame: np.ndarray,
    k: int,
    reference: np.ndarray | None = None,
    *,
    stripe_rows: int,
    buffers: list[np.ndarray] | None = None,
    vectors: np.ndarray | None = None,
    predicted: np.ndarray | None = None,
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
    vectors : ndarray of int8, optional
        With ``reference``: each block's motion vector, checked (mode 2).
    predicted : ndarray of uint8, optional
        ``motion_reference(reference, vectors, stripe_rows, ...)`` when the caller has it already.

    Returns
    -------
    bytes
        The same bytes :func:`encode_index_map` gives for the map inside ``frame``.
    """
    height = frame.shape[0] - 1
    width = frame.shape[1] - _PAD_LEFT - 1
    inter = reference is not None
    mode = MODE_INTRA if not inter else MODE_MOTION if vectors is not None else MODE_INTER
    if mode == MODE_MOTION:
        if predicted is None:
            predicted = motion_reference(reference, vectors, stripe_rows, padded_map(height, width))
    else:
        vectors = _NO_VECTORS
        predicted = frame
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
            buffers[stripe], frame, reference if inter else frame, predicted, vectors,
            _first_block_row(top, stripe_rows), mode, k, bits, top, bottom,
        )
        return size

    sizes = _map_stripes(encode, [(stripe,) for stripe in range(len(tops))])
    header = bytes([mode]) + stripe_rows.to_bytes(4, "little")
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
    mode, stripe_rows, streams = _split_stripes(data, height, have_previous=previous is not None)
    reference = None
    if mode != MODE_INTRA:
        previous = _check_map(previous, k, "previous")
        if previous.shape != (height, width):
            raise InputError(f"previous has shape {previous.shape}, expected {(height, width)}")
        reference = _padded(previous)
    return np.ascontiguousarray(map_view(_decode_stripes(streams, mode, stripe_rows, width, height, k, reference)))


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
    mode, stripe_rows, streams = _split_stripes(data, height, have_previous=reference is not None)
    return _decode_stripes(streams, mode, stripe_rows, width, height, k, reference if mode != MODE_INTRA else None)


def _split_stripes(
    data: bytes | bytearray | memoryview, height: int, *, have_previous: bool
) -> tuple[int, int, list[memoryview]]:
    """Mode, stripe height and each stripe's stream, every length checked against the data."""
    reader = ByteReader(as_bytes_view(data), "index data")
    mode = reader.u8()
    if mode not in (MODE_INTRA, MODE_INTER, MODE_MOTION):
        raise FormatError(f"index data: unknown coding mode {mode}")
    if mode != MODE_INTRA and not have_previous:
        raise FormatError("index data is inter coded: the previous frame is needed to decode it")
    stripe_rows = reader.u32()
    if not 1 <= stripe_rows <= height:
        raise FormatError(f"index data: stripe height {stripe_rows} outside 1..{height}")
    stripes = -(-height // stripe_rows)
    lengths = [reader.u32() for _ in range(stripes - 1)]
    streams = [reader.take(size) for size in lengths]
    streams.append(reader.rest())
    return mode, stripe_rows, streams


def _decode_stripes(
    streams: list[memoryview],
    mode: int,
    stripe_rows: int,
    width: int,
    height: int,
    k: int,
    reference: np.ndarray | None,
) -> np.ndarray:
    """Decode each stripe's stream into a new padded map (``reference``: the previous one, for modes 1 and 2)."""
    # Mode 1 starts from a copy of the previous map, so unchanged blocks need no work; mode 2
    # copies each block row of its moved reference as it goes.
    frame = reference.copy() if mode == MODE_INTER else padded_map(height, width)
    if mode == MODE_MOTION:
        predicted = padded_map(height, width)
        vectors = np.zeros(motion_vector_shape(height, width, stripe_rows), np.int8)
    else:
        predicted = frame
        vectors = _NO_VECTORS
    previous = reference if reference is not None else frame
    bits = index_bits(k)
    tops = range(0, height, stripe_rows)

    def decode(top: int, stream: memoryview) -> int:
        # A writable copy: the kernel shares its code with the encoder, which writes its buffer.
        bottom = min(top + stripe_rows, height)
        return len(stream) - _decode_stripe(
            np.array(stream, np.uint8), frame, previous, predicted, vectors, _first_block_row(top, stripe_rows),
            mode, k, bits, top, bottom,
        )

    unread = _map_stripes(decode, list(zip(tops, streams)))
    for top, left_over in zip(tops, unread):
        if left_over:
            problem = "ends early" if left_over < 0 else f"has {left_over} bytes left over"
            raise FormatError(f"index data: the stripe at row {top} {problem} (corrupt data)")
    return frame
