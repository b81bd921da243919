"""The numeric core: pixels -> histogram -> palette (k-means) -> indices. Numbers only."""

from __future__ import annotations

import numpy as np

from kmq.quant._checks import check_colors, check_dither, check_space
from kmq.quant.histogram import (
    EXACT_BITS,
    Histogram,
    as_pixel_rows,
    build_histogram,
    default_bits,
    histogram_of_rows,
)
from kmq.quant.kmeans import PaletteFit, fit_palette, refine_on_pixels
from kmq.quant.remap import indices_for_histogram, remap

__all__ = ["quantize_pixels", "build_histogram", "fit_palette", "remap", "Histogram", "PaletteFit"]

#: Lloyd iterations over the pixels themselves after the histogram fit, for palettes larger
#: than :data:`REFINE_ABOVE`: the smaller the clusters, the more histogram bins straddle two of
#: them, and the more it pays to split those bins' pixels exactly. Below, the fine histogram
#: alone comes within a few hundredths of a dB.
REFINE_ITERATIONS = 2
REFINE_ABOVE = 64
#: A histogram with at most this many bins per palette entry is rebuilt exactly (8 bits):
#: so few colours are cheap to cluster one by one.
_EXACT_BINS_PER_ENTRY = 4


def quantize_pixels(
    pixels: np.ndarray, k: int, *, dither: str = "none", space: str = "rgb", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize an image to at most ``k`` colours: palette by k-means, then indices.

    Parameters
    ----------
    pixels : ndarray
        H×W×3 (RGB) or H×W×4 (RGBA) uint8, any memory layout. Alpha is clustered with the
        colour; fully transparent pixels count as (0, 0, 0, 0).
    k : int
        Most colours in the palette, 2..256.
    dither : {"none", "fs", "ordered"}
        "none" maps each pixel to its exact nearest palette entry.
    space : {"rgb", "oklab"}
        Where colour distances are measured.
    seed : int
        Seed of the k-means++ draws; the same input and seed give the same output.

    Returns
    -------
    palette : ndarray, shape (n, C), uint8
        n <= k; when the image has at most k distinct colours they are the palette (lossless).
        Every entry is used; entries come roughly from the most to the least used.
    indices : ndarray, shape (H, W), uint8

    Raises
    ------
    kmq.errors.InputError
        For a k, dither, space or image outside the ranges above.

    Examples
    --------
    >>> image = np.zeros((4, 4, 3), np.uint8)
    >>> image[:, 2:] = (250, 10, 10)
    >>> palette, indices = quantize_pixels(image, 2)
    >>> palette.tolist(), indices[0].tolist()
    ([[0, 0, 0], [250, 10, 10]], [0, 0, 1, 1])
    """
    check_colors(k)
    check_dither(dither)
    check_space(space)
    rows = as_pixel_rows(pixels)
    histogram = histogram_of_rows(rows, default_bits(rows.shape[0]), tuple(np.shape(pixels)))
    if len(histogram.counts) <= _EXACT_BINS_PER_ENTRY * k and not histogram.is_exact:
        histogram = histogram_of_rows(rows, EXACT_BITS, histogram.shape)
    fit = fit_palette(histogram, k, seed=seed, space=space)
    palette = fit.palette
    if space == "rgb" and k > REFINE_ABOVE and not histogram.is_exact:
        palette = refine_on_pixels(rows, histogram, palette, iterations=REFINE_ITERATIONS)
    palette = np.clip(np.rint(palette), 0, 255)
    indices = indices_for_histogram(rows, histogram, palette, dither=dither, space=space)
    return _used_entries_only(palette.astype(np.uint8), indices)


def _used_entries_only(palette: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the entries no pixel uses (rare: an entry can lose all its pixels to rounding or
    dithering), keeping the order of the rest."""
    used = np.bincount(indices.reshape(-1), minlength=len(palette)) > 0
    if used.all():
        return palette, indices
    renumber = (np.cumsum(used) - 1).astype(np.uint8)
    return palette[used], renumber[indices]
