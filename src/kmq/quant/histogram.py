"""Pixels -> weighted colour histogram: the input of k-means and the map that lets remap skip work.

Colours are grouped into bins after an optional bit-depth reduction per channel, but every bin
keeps the exact sum of its pixels' colours, so a cluster's centroid computed from bins is the
exact mean of its pixels. Each pixel's bin is kept too, for remapping without another pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from kmq.errors import InputError

__all__ = ["Histogram", "build_histogram", "coarsen", "coarsen_with_parents", "default_bits", "histogram_of_rows", "as_pixel_rows", "EXACT_BITS", "DEFAULT_BITS"]

#: Bits per channel that keep every distinct colour apart (no reduction).
EXACT_BITS = 8
#: Bits per channel for photos: 64 levels per channel (bins 4 values wide) turn a photo into
#: some tens of thousands of bins, narrow enough that few bins straddle two palette entries.
DEFAULT_BITS = 6
#: Large histograms are worked on in two levels: k-means seeds, restarts and relocations on
#: the bins merged to this many bits per channel, and remap's bounds are found there first.
COARSE_BITS = 5
#: ...when the histogram has more bins than this.
COARSE_MIN_BINS = 8192
#: Images with at most this many pixels are binned exactly: reduction would save nothing.
_EXACT_PIXEL_LIMIT = 1 << 14
#: Key widths up to this many bits index a flat table directly instead of hashing.
_DIRECT_TABLE_BITS = 18


@dataclass(frozen=True)
class Histogram:
    """The distinct (binned) colours of an image and how many pixels fall into each.

    Attributes
    ----------
    colors : ndarray, shape (n, C), float64
        Exact mean colour of the pixels in each bin, RGB(A) on the 0..255 scale.
    counts : ndarray, shape (n,), float64
        Number of pixels in each bin (the k-means weights).
    color_sums : ndarray, shape (n, C), float64
        Exact sum of the colours in each bin (integers held in float64).
    squared_norm_sums : ndarray, shape (n,), float64
        Sum over the bin's pixels of their squared colour norm; with ``color_sums`` it gives the
        exact squared error of serving a whole bin with any one colour.
    pure : ndarray, shape (n,), bool
        Whether every pixel of the bin has the same colour.
    bin_of_pixel : ndarray, shape (H*W,), int32
        The bin of each pixel in row-major order.
    bits : int
        Bits per channel kept for binning (8 = exact colours).
    shape : tuple of int
        (H, W, C) of the image.
    """

    colors: np.ndarray
    counts: np.ndarray
    color_sums: np.ndarray
    squared_norm_sums: np.ndarray
    pure: np.ndarray
    bin_of_pixel: np.ndarray
    bits: int
    shape: tuple[int, int, int]
    #: Things derived from the bins once and reused (coarser levels, remap's bin boxes).
    derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def channels(self) -> int:
        """Colour channels: 3 (RGB) or 4 (RGBA)."""
        return self.shape[2]

    @property
    def is_exact(self) -> bool:
        """True when every bin holds a single colour, so bins are the image's distinct colours."""
        return bool(self.pure.all())

    @property
    def bin_width(self) -> int:
        """Width of a bin along each channel, in 0..255 units."""
        return 1 << (EXACT_BITS - self.bits)

    def coarser(self, bits: int) -> tuple["Histogram", np.ndarray]:
        """This histogram merged to ``bits`` per channel, and the coarse bin of each bin.

        Computed once per histogram and kept: k-means and remap both start from it.
        """
        key = ("coarser", bits)
        if key not in self.derived:
            self.derived[key] = coarsen_with_parents(self, bits)
        return self.derived[key]

    def coarse_level(self) -> tuple["Histogram", np.ndarray] | None:
        """:meth:`coarser` at :data:`COARSE_BITS` when this histogram is large enough to be
        worked on in two levels, else None."""
        if self.bits > COARSE_BITS and len(self.counts) > COARSE_MIN_BINS:
            return self.coarser(COARSE_BITS)
        return None

    def bin_box_centers(self) -> np.ndarray:
        """Centre of each bin's box of possible colours (n×C float64), for remap's bounds."""
        low = np.floor(self.colors / self.bin_width) * self.bin_width
        return low + (self.bin_width - 1) / 2.0


def as_pixel_rows(pixels: np.ndarray) -> np.ndarray:
    """Validate an H×W×C uint8 image and view it as (H*W)×C C-contiguous rows.

    Parameters
    ----------
    pixels : ndarray
        H×W×3 (RGB) or H×W×4 (RGBA) uint8, any memory layout.

    Returns
    -------
    ndarray
        (H*W)×C uint8, C-contiguous (a copy only when the input was not).

    Raises
    ------
    InputError
        When the array is not uint8, not 3-D, has no pixels, or has other than 3 or 4 channels.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise InputError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise InputError(f"pixels must be H×W×3 or H×W×4, got shape {pixels.shape}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise InputError(f"pixels must not be empty, got shape {pixels.shape}")
    rows = np.ascontiguousarray(pixels).reshape(-1, pixels.shape[2])
    if rows.shape[1] == 4:
        rows = _canonical_transparency(rows)
    return rows


def _canonical_transparency(rows: np.ndarray) -> np.ndarray:
    """Make every fully transparent pixel (0, 0, 0, 0): their colour is invisible, so one bin."""
    transparent = rows[:, 3] == 0
    if transparent.any() and rows[transparent, :3].any():
        rows = rows.copy()
        rows[transparent] = 0
    return rows


def build_histogram(pixels: np.ndarray, *, bits: int | None = None) -> Histogram:
    """Group an image's pixels into colour bins with exact counts and colour sums.

    Parameters
    ----------
    pixels : ndarray
        H×W×3 or H×W×4 uint8. Fully transparent RGBA pixels count as (0, 0, 0, 0).
    bits : int, optional
        Bits kept per channel when binning, 1..8. By default 8 (exact colours) for images of
        at most 16384 pixels and 6 for larger ones.

    Returns
    -------
    Histogram
        Bins in order of first appearance in the image.

    Examples
    --------
    >>> image = np.array([[[255, 0, 0], [255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    >>> histogram = build_histogram(image)
    >>> histogram.colors.tolist(), histogram.counts.tolist()
    ([[255.0, 0.0, 0.0], [0.0, 0.0, 255.0]], [2.0, 1.0])
    """
    rows = as_pixel_rows(pixels)
    if bits is None:
        bits = default_bits(rows.shape[0])
    if not 1 <= bits <= EXACT_BITS:
        raise InputError(f"bits must be 1..8, got {bits}")
    return histogram_of_rows(rows, bits, tuple(np.shape(pixels)))


def default_bits(pixel_count: int) -> int:
    """Bits per channel :func:`build_histogram` keeps for an image of ``pixel_count`` pixels."""
    return EXACT_BITS if pixel_count <= _EXACT_PIXEL_LIMIT else DEFAULT_BITS


def histogram_of_rows(rows: np.ndarray, bits: int, shape: tuple[int, int, int]) -> Histogram:
    """:func:`build_histogram` on rows already validated by :func:`as_pixel_rows`."""
    key_bits = bits * rows.shape[1]
    direct = key_bits <= _DIRECT_TABLE_BITS
    # A hash table at most half full keeps probe sequences short.
    table_bits = key_bits if direct else max(4, (2 * min(rows.shape[0], 1 << key_bits) - 1).bit_length())
    bin_of_pixel, totals = _bin_pixels(rows, bits, table_bits, direct)
    counts = totals[:, _COUNT].astype(np.float64)
    color_sums = totals[:, _SUMS : _SUMS + rows.shape[1]].astype(np.float64)
    return Histogram(
        colors=color_sums / counts[:, None],
        counts=counts,
        color_sums=color_sums,
        squared_norm_sums=totals[:, _SQUARED].astype(np.float64),
        pure=totals[:, _MIXED] == 0,
        bin_of_pixel=bin_of_pixel,
        bits=bits,
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
    )


def coarsen(histogram: Histogram, bits: int) -> Histogram:
    """Merge a histogram's bins into coarser ones, keeping counts and sums exact.

    Parameters
    ----------
    histogram : Histogram
    bits : int
        Bits per channel of the coarser bins, at most ``histogram.bits``.

    Returns
    -------
    Histogram
        Bins numbered by first appearance of their first fine bin; ``bin_of_pixel`` follows.

    Examples
    --------
    >>> image = np.array([[[0, 0, 0], [3, 3, 3], [200, 0, 0]]], dtype=np.uint8)
    >>> coarsen(build_histogram(image), 5).counts.tolist()
    [2.0, 1.0]
    """
    return coarsen_with_parents(histogram, bits)[0]


def coarsen_with_parents(histogram: Histogram, bits: int) -> tuple[Histogram, np.ndarray]:
    """:func:`coarsen`, also returning the coarse bin of each fine bin (int32)."""
    if not 1 <= bits <= histogram.bits:
        raise InputError(f"bits must be 1..{histogram.bits}, got {bits}")
    key_bits = bits * histogram.channels
    levels = np.floor(histogram.colors).astype(np.uint8)
    if key_bits <= _DIRECT_TABLE_BITS + 2:
        parent, bin_count = _parent_bins(levels, bits, key_bits)
    else:
        keys = ((levels.astype(np.int64) >> (EXACT_BITS - bits)) << (bits * np.arange(histogram.channels))).sum(axis=1)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int32)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first), dtype=np.int32)
        parent, bin_count = rank[inverse], len(first)
    counts, color_sums, squared, pure = _merge_bins(
        parent, bin_count, histogram.counts, histogram.color_sums, histogram.squared_norm_sums, histogram.pure
    )
    return Histogram(
        colors=color_sums / counts[:, None],
        counts=counts,
        color_sums=color_sums,
        squared_norm_sums=squared,
        pure=pure,
        bin_of_pixel=parent[histogram.bin_of_pixel],
        bits=bits,
        shape=histogram.shape,
    ), parent


@numba.njit(cache=True)
def _merge_bins(parent, bin_count, counts, color_sums, squared_norm_sums, pure):
    """Totals of the coarse bins; a coarse bin is pure when it holds one fine bin, itself pure."""
    merged_counts = np.zeros(bin_count)
    merged_sums = np.zeros((bin_count, color_sums.shape[1]))
    merged_squared = np.zeros(bin_count)
    children = np.zeros(bin_count, np.int64)
    merged_pure = np.ones(bin_count, np.bool_)
    for child in range(parent.shape[0]):
        into = parent[child]
        merged_counts[into] += counts[child]
        merged_squared[into] += squared_norm_sums[child]
        for channel in range(color_sums.shape[1]):
            merged_sums[into, channel] += color_sums[child, channel]
        children[into] += 1
        merged_pure[into] = merged_pure[into] and pure[child] and children[into] == 1
    return merged_counts, merged_sums, merged_squared, merged_pure


@numba.njit(cache=True)
def _parent_bins(levels, bits, key_bits):
    """Number the coarse bins holding each fine bin (given one colour level inside it)."""
    shift = 8 - bits
    table = np.full(1 << key_bits, -1, np.int32)
    parent = np.empty(levels.shape[0], np.int32)
    bin_count = 0
    for child in range(levels.shape[0]):
        key = 0
        for channel in range(levels.shape[1]):
            key |= (np.int64(levels[child, channel]) >> shift) << (bits * channel)
        if table[key] < 0:
            table[key] = bin_count
            bin_count += 1
        parent[child] = table[key]
    return parent, bin_count


# Columns of the per-bin accumulator: one 64-byte row per bin, so updating a bin touches a
# single cache line (separate arrays per total cost a cache miss each on large tables).
_COUNT, _SQUARED, _FIRST_COLOUR, _MIXED, _SUMS = 0, 1, 2, 3, 4


@numba.njit(cache=True)
def _bin_pixels(rows, bits, table_bits, direct):
    """Assign every pixel a bin (numbered by first appearance) and total each bin.

    The key packs each channel's top ``bits`` bits. Small keys index a flat table directly,
    larger ones go through open addressing with a multiplicative hash; a run of pixels with
    the same key (common in photos) skips the look-up.
    """
    pixel_count, channels = rows.shape
    shift = 8 - bits
    table_size = 1 << table_bits
    table = np.full(table_size, -1, np.int32)
    table_mask = table_size - 1
    hash_shift = np.uint64(64 - table_bits)
    capacity = min(pixel_count, table_size)
    keys = np.empty(capacity, np.int64)
    # Rows are initialised when their bin first appears: zeroing the whole capacity up front
    # would cost more than the pass itself for large tables.
    totals = np.empty((capacity, 8), np.int64)
    bin_of_pixel = np.empty(pixel_count, np.int32)
    bin_count = 0
    previous_key = -1
    found = -1
    for pixel in range(pixel_count):
        key = 0
        colour = 0
        for channel in range(channels):
            value = np.int64(rows[pixel, channel])
            key |= (value >> shift) << (bits * channel)
            colour |= value << (8 * channel)
        if key != previous_key:
            if direct:
                slot = key
            else:
                slot = np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> hash_shift)
            while True:
                found = table[slot]
                if found < 0 or keys[found] == key:
                    break
                slot = (slot + 1) & table_mask
            if found < 0:
                found = bin_count
                bin_count += 1
                table[slot] = found
                keys[found] = key
                for column in range(8):
                    totals[found, column] = 0
                totals[found, _FIRST_COLOUR] = colour
            previous_key = key
        bin_of_pixel[pixel] = found
        totals[found, _COUNT] += 1
        totals[found, _MIXED] |= colour ^ totals[found, _FIRST_COLOUR]
        norm = 0
        for channel in range(channels):
            value = np.int64(rows[pixel, channel])
            totals[found, _SUMS + channel] += value
            norm += value * value
        totals[found, _SQUARED] += norm
    return bin_of_pixel, totals[:bin_count]
