"""Pixels -> palette indices: the exact nearest entry per pixel, or dithered (Floyd–Steinberg, ordered).

Most pixels never search the palette. A histogram bin is a small box of colours; when one entry
is nearest to every colour the box can hold (checked exactly, against every other entry), all the
bin's pixels take that entry. Pixels of the remaining bins, and every dithered colour, search by
sort-means: starting from a likely entry, they visit the other entries in order of distance from
it and stop as soon as the triangle inequality rules out the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from kmq.errors import InputError
from kmq.quant.colorspace import srgb_pixel_to_oklab, to_space
from kmq.quant._vectors import WIDTH, padded, squared_distances_to_all, two_smallest
from kmq.quant.histogram import DEFAULT_BITS, Histogram, as_pixel_rows, histogram_of_rows
from kmq.quant._checks import MAX_COLORS, check_dither, check_space

__all__ = ["remap", "indices_for_histogram", "BinAssignment", "assign_bins", "palette_neighbours"]

_SPACE_CODES = {"rgb": 0, "oklab": 1}

# 8×8 Bayer threshold matrix: entry (y, x) is the rank 0..63 of that cell in the dither pattern.
_BAYER_8 = np.array(
    [
        [0, 32, 8, 40, 2, 34, 10, 42],
        [48, 16, 56, 24, 50, 18, 58, 26],
        [12, 44, 4, 36, 14, 46, 6, 38],
        [60, 28, 52, 20, 62, 30, 54, 22],
        [3, 35, 11, 43, 1, 33, 9, 41],
        [51, 19, 59, 27, 49, 17, 57, 25],
        [15, 47, 7, 39, 13, 45, 5, 37],
        [63, 31, 55, 23, 61, 29, 53, 21],
    ],
    dtype=np.float64,
)
#: Ordered-dither offsets in [-0.5, 0.5), to be scaled by the palette's spacing.
_BAYER_OFFSETS = (_BAYER_8 + 0.5) / 64.0 - 0.5


def remap(pixels: np.ndarray, palette: np.ndarray, *, dither: str = "none", space: str = "rgb") -> np.ndarray:
    """Map each pixel to a palette entry.

    Parameters
    ----------
    pixels : ndarray
        H×W×C uint8, C = 3 (RGB) or 4 (RGBA), any memory layout.
    palette : ndarray
        n×C colours on the 0..255 scale (uint8, or numbers that round into 0..255), 1 <= n <= 256.
    dither : {"none", "fs", "ordered"}
        "none" gives every pixel its nearest entry exactly; "fs" diffuses each pixel's error
        to its neighbours (Floyd–Steinberg, serpentine); "ordered" adds an 8×8 Bayer pattern
        scaled to the palette's spacing. Alpha is never dithered.
    space : {"rgb", "oklab"}
        Where "nearest" is measured.

    Returns
    -------
    ndarray
        H×W uint8 indices into ``palette``.

    Examples
    --------
    >>> image = np.array([[[10, 10, 10], [200, 190, 180]]], dtype=np.uint8)
    >>> palette = np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8)
    >>> remap(image, palette).tolist()
    [[0, 1]]
    """
    check_dither(dither)
    check_space(space)
    rows = as_pixel_rows(pixels)
    palette = _checked_palette(palette, rows.shape[1])
    histogram = histogram_of_rows(rows, DEFAULT_BITS, tuple(np.shape(pixels)))
    return indices_for_histogram(rows, histogram, palette, dither=dither, space=space)


@dataclass(frozen=True)
class BinAssignment:
    """Which palette entries the pixels of each histogram bin can be nearest to (RGB).

    Attributes
    ----------
    nearest : ndarray, shape (bins,), int32
        The entry nearest to the bin's reference colour.
    candidate_start : ndarray, shape (bins + 1,), int32
        Bin b's candidates are ``candidates[candidate_start[b]:candidate_start[b + 1]]``; none
        means ``nearest`` serves every colour the bin can hold.
    candidates : ndarray, int32
        For an uncertain bin, its nearest entry followed by every entry that is nearer than it
        for some colour of the bin's box.
    """

    nearest: np.ndarray
    candidate_start: np.ndarray
    candidates: np.ndarray

    def certain(self) -> np.ndarray:
        """Per bin, whether all its pixels take ``nearest`` without a search."""
        return self.candidate_start[1:] == self.candidate_start[:-1]


def assign_bins(histogram: Histogram, palette_points: np.ndarray) -> BinAssignment:
    """Find each bin's nearest palette entry (RGB), and the few rivals where the box is split.

    A large histogram is first assigned at its coarse level: a fine bin inside a coarse bin
    that one entry serves entirely is served by that entry too, and otherwise its rivals are
    among the coarse bin's, so only those are measured.

    Parameters
    ----------
    histogram : Histogram
    palette_points : ndarray, shape (n, 4)
        Palette colours, padded by :func:`kmq.quant._vectors.padded`.
    """
    l1_distances = np.abs(palette_points[:, None, :] - palette_points[None, :, :]).sum(axis=2)
    palette_by_channel = np.ascontiguousarray(palette_points.T)
    diagonal = np.sqrt(histogram.channels)
    bin_points, half_width = _bin_boxes(histogram)
    two_level = histogram.coarse_level()
    if two_level is None:
        return BinAssignment(*_bins_candidates(bin_points, half_width, diagonal, palette_by_channel, l1_distances))
    coarse, parent = two_level
    coarse_points, coarse_half_width = _bin_boxes(coarse)
    coarse_nearest, coarse_start, coarse_candidates = _bins_candidates(
        coarse_points, coarse_half_width, diagonal, palette_by_channel, l1_distances
    )
    return BinAssignment(
        *_bins_candidates_within(
            bin_points, half_width, parent, coarse_nearest, coarse_start, coarse_candidates, palette_points, l1_distances
        )
    )


def _bin_boxes(histogram: Histogram) -> tuple[np.ndarray, np.ndarray]:
    """Each bin's box of possible colours as a padded centre and a half-width; a bin whose
    pixels all share one colour is a box of size zero around that colour."""
    if "boxes" not in histogram.derived:
        centres = padded(np.where(histogram.pure[:, None], histogram.colors, histogram.bin_box_centers()))
        histogram.derived["boxes"] = centres, np.where(histogram.pure, 0.0, (histogram.bin_width - 1) / 2.0)
    return histogram.derived["boxes"]


def indices_for_histogram(
    rows: np.ndarray, histogram: Histogram, palette: np.ndarray, *, dither: str = "none", space: str = "rgb"
) -> np.ndarray:
    """:func:`remap` for pixel rows whose histogram is already built.

    Parameters
    ----------
    rows : ndarray
        (H*W)×C uint8 from :func:`kmq.quant.histogram.as_pixel_rows`.
    histogram : Histogram
        Built from ``rows``.
    palette : ndarray
        n×C colours on the 0..255 scale, float64.

    Returns
    -------
    ndarray
        H×W uint8.
    """
    height, width = histogram.shape[:2]
    palette = np.ascontiguousarray(palette, dtype=np.float64)
    if dither == "none" and space == "rgb":
        assignment = assign_bins(histogram, padded(palette))
        indices, _, _ = pixels_nearest(rows, histogram, padded(palette), assignment, totals=False)
        return indices.reshape(height, width)
    palette_points = padded(to_space(palette, space))
    order, sorted_distances = palette_neighbours(palette_points)
    bin_points = padded(to_space(histogram.colors, space))
    # The entry nearest to a pixel's bin is where its search starts: usually the answer.
    hints = _nearest_of_points(bin_points, np.ascontiguousarray(palette_points.T))[histogram.bin_of_pixel]
    spread = {"fs": -1.0, "ordered": _ordered_spread(palette), "none": 0.0}[dither]
    indices = _dither(
        rows, height, width, padded(palette), palette_points, order, sorted_distances, hints, spread, _SPACE_CODES[space]
    )
    return indices.reshape(height, width)


def pixels_nearest(
    rows: np.ndarray, histogram: Histogram, palette_points: np.ndarray, assignment: BinAssignment, *, totals: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact nearest entry (RGB) of every pixel, searching only the candidates of uncertain bins.

    Returns
    -------
    indices : ndarray, shape (H*W,), uint8
    sums, counts : ndarray
        With ``totals``, the colour sum (n×4) and count (n), per entry, of the pixels of
        uncertain bins (the only ones visited one by one); otherwise empty.
    """
    entries = len(palette_points) if totals else 0
    return _pixels_by_candidates(
        rows,
        histogram.bin_of_pixel,
        assignment.nearest,
        assignment.candidate_start,
        assignment.candidates,
        palette_points,
        entries,
    )


def palette_neighbours(palette_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each entry, every entry ordered by distance from it (itself first), with the distances.

    Returns
    -------
    order : ndarray, shape (n, n), int32
    sorted_distances : ndarray, shape (n, n), float64
    """
    differences = palette_points[:, None, :] - palette_points[None, :, :]
    distances = np.sqrt((differences**2).sum(axis=2))
    # Sorting on (distance, not-self) puts entry i first in its own row even beside a duplicate.
    not_self = ~np.eye(len(palette_points), dtype=bool)
    order = np.lexsort((not_self, distances), axis=1).astype(np.int32)
    return order, np.take_along_axis(distances, order, axis=1)


def _checked_palette(palette: np.ndarray, channels: int) -> np.ndarray:
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != channels or not 1 <= len(palette) <= MAX_COLORS:
        raise InputError(f"palette must be n×{channels} with 1 <= n <= {MAX_COLORS}, got shape {palette.shape}")
    if not np.issubdtype(palette.dtype, np.number) or not np.isfinite(palette).all():
        raise InputError("palette must hold finite numbers")
    rounded = np.rint(palette.astype(np.float64))
    if rounded.min() < 0 or rounded.max() > 255:
        raise InputError("palette colours must lie in 0..255")
    return rounded


def _ordered_spread(palette: np.ndarray) -> float:
    """Amplitude of the ordered-dither pattern: the typical gap between neighbouring entries."""
    colours = palette[:, :3]
    if len(colours) < 2:
        return 0.0
    gaps = np.sqrt(((colours[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2))
    np.fill_diagonal(gaps, np.inf)
    return float(np.median(gaps.min(axis=1)))


@numba.njit(cache=True, inline="always")
def _squared_distance_to_entry(point, palette_points, entry):
    total = 0.0
    for channel in range(WIDTH):
        difference = point[channel] - palette_points[entry, channel]
        total += difference * difference
    return total


@numba.njit(cache=True)
def _nearest_of_points(points, palette_by_channel):
    distances = np.empty(palette_by_channel.shape[1])
    nearest = np.empty(points.shape[0], np.int32)
    for b in range(points.shape[0]):
        squared_distances_to_all(points[b], palette_by_channel, distances)
        nearest[b] = np.argmin(distances)
    return nearest


@numba.njit(cache=True)
def _append_rivals(candidates, used, best, rivals, distances, margin, l1_distances):
    """Append ``best`` and every rival that beats it somewhere in a box of half-width
    ``margin``/2; returns the new count, unchanged when no rival can (the bin is certain)."""
    first = used
    candidates[used] = best
    used += 1
    for j in rivals:
        if j != best and distances[j] - distances[best] < margin * l1_distances[best, j]:
            candidates[used] = j
            used += 1
    return first if used == first + 1 else used


@numba.njit(cache=True)
def _with_room(candidates, used, more):
    """``candidates`` itself, or a copy twice as large, so that ``more`` entries fit after ``used``."""
    if used + more <= candidates.shape[0]:
        return candidates
    grown = np.empty(2 * candidates.shape[0] + more, np.int32)
    for position in range(used):
        grown[position] = candidates[position]
    return grown


@numba.njit(cache=True)
def _bins_candidates(bin_points, half_width, diagonal, palette_by_channel, l1_distances):
    """Nearest entry to each bin's reference point, and the entries that can beat it in the box.

    Entry a beats entry j for every colour p of the box with centre c and half-width h exactly
    when |c-j|² - |c-a|² >= 2h·|a-j|₁ (the box's worst corner along the line from a to j).
    ``diagonal`` is the square root of the channel count: the box's radius over its half-width.
    """
    bins = bin_points.shape[0]
    entries = palette_by_channel.shape[1]
    nearest = np.empty(bins, np.int32)
    candidate_start = np.empty(bins + 1, np.int32)
    candidates = np.empty(4 * bins + entries, np.int32)
    used = 0
    distances = np.empty(entries)
    every_entry = np.arange(entries)
    for b in range(bins):
        squared_distances_to_all(bin_points[b], palette_by_channel, distances)
        best, best_distance, second_distance = two_smallest(distances)
        nearest[b] = best
        candidate_start[b] = used
        # Cheap first test: the box lies inside a ball, and a ball nearer to one entry than
        # to the second nearest by its diameter is served by that entry throughout.
        if np.sqrt(second_distance) - np.sqrt(best_distance) >= 2.0 * half_width[b] * diagonal:
            continue
        candidates = _with_room(candidates, used, entries)
        used = _append_rivals(candidates, used, best, every_entry, distances, 2.0 * half_width[b], l1_distances)
    candidate_start[bins] = used
    return nearest, candidate_start, candidates[:used].copy()


@numba.njit(cache=True)
def _bins_candidates_within(
    bin_points, half_width, parent, parent_nearest, parent_start, parent_candidates, palette_points, l1_distances
):
    """:func:`_bins_candidates` for bins nested in coarser bins whose candidates are known.

    Any entry nearest to some colour of a fine box is nearest to that colour of the enclosing
    coarse box, so it is one of the coarse bin's candidates (or its certain entry).
    """
    bins = bin_points.shape[0]
    nearest = np.empty(bins, np.int32)
    candidate_start = np.empty(bins + 1, np.int32)
    candidates = np.empty(parent_candidates.shape[0] * 4 + 16, np.int32)
    distances = np.empty(palette_points.shape[0])
    used = 0
    for b in range(bins):
        p = parent[b]
        start = parent_start[p]
        stop = parent_start[p + 1]
        candidate_start[b] = used
        if start == stop:
            nearest[b] = parent_nearest[p]
            continue
        best = -1
        best_distance = np.inf
        for position in range(start, stop):
            j = parent_candidates[position]
            distances[j] = _squared_distance_to_entry(bin_points[b], palette_points, j)
            if distances[j] < best_distance:
                best_distance = distances[j]
                best = j
        nearest[b] = best
        if half_width[b] <= 0.0:
            continue
        candidates = _with_room(candidates, used, stop - start)
        rivals = parent_candidates[start:stop]
        used = _append_rivals(candidates, used, best, rivals, distances, 2.0 * half_width[b], l1_distances)
    candidate_start[bins] = used
    return nearest, candidate_start, candidates[:used].copy()


@numba.njit(cache=True)
def _pixels_by_candidates(rows, bin_of_pixel, nearest, candidate_start, candidates, palette_points, entries):
    """Each pixel's nearest entry; with ``entries`` > 0 also the colour totals per entry of the
    pixels in uncertain bins (a certain bin's totals are already in its histogram row)."""
    pixel_count, channels = rows.shape
    indices = np.empty(pixel_count, np.uint8)
    sums = np.zeros((entries, WIDTH))
    counts = np.zeros(entries)
    colour = np.zeros(WIDTH)
    for pixel in range(pixel_count):
        b = bin_of_pixel[pixel]
        start = candidate_start[b]
        stop = candidate_start[b + 1]
        if start == stop:
            indices[pixel] = nearest[b]
            continue
        for channel in range(channels):
            colour[channel] = rows[pixel, channel]
        best = -1
        best_distance = np.inf
        for position in range(start, stop):
            j = candidates[position]
            distance = _squared_distance_to_entry(colour, palette_points, j)
            if distance < best_distance:
                best_distance = distance
                best = j
        indices[pixel] = best
        if entries > 0:
            counts[best] += 1.0
            for channel in range(channels):
                sums[best, channel] += colour[channel]
    return indices, sums, counts


@numba.njit(cache=True)
def _nearest_from_hint(point, hint, palette_points, order, sorted_distances):
    """The entry nearest to ``point`` (exact), searching outwards from entry ``hint``.

    Entries are visited by distance from the hint; once that distance reaches
    |point-hint| + |point-best|, no later entry can be nearer than the best found.
    """
    best = hint
    best_squared = _squared_distance_to_entry(point, palette_points, hint)
    hint_distance = np.sqrt(best_squared)
    best_distance = hint_distance
    for rank in range(1, order.shape[1]):
        if sorted_distances[hint, rank] >= hint_distance + best_distance:
            break
        j = order[hint, rank]
        squared = _squared_distance_to_entry(point, palette_points, j)
        if squared < best_squared:
            best_squared = squared
            best_distance = np.sqrt(squared)
            best = j
    return best


@numba.njit(cache=True)
def _dither(rows, height, width, palette, palette_points, order, sorted_distances, hints, spread, space_code):
    """Floyd–Steinberg (``spread < 0``), ordered (``spread > 0``) or no dithering (0).

    Every chosen entry is the exact nearest to the (dithered) colour in the search space.
    Floyd–Steinberg runs serpentine, alternating direction each row so errors do not drift to
    one side; the diffused colour is clamped to 0..255 so errors cannot build up without bound.
    """
    channels = rows.shape[1]
    indices = np.empty(height * width, np.uint8)
    colour = np.zeros(WIDTH)
    point = np.zeros(WIDTH)
    # Error rows padded by one pixel each side so the kernel needs no edge tests.
    error_here = np.zeros((width + 2, 3))
    error_below = np.zeros((width + 2, 3))
    diffuse = spread < 0.0
    for y in range(height):
        forward = y % 2 == 0 or not diffuse
        step = 1 if forward else -1
        for position in range(width):
            x = position if forward else width - 1 - position
            pixel = y * width + x
            for channel in range(channels):
                colour[channel] = rows[pixel, channel]
            # Alpha (channel 3) is never dithered.
            for channel in range(3):
                if diffuse:
                    value = colour[channel] + error_here[x + 1, channel]
                else:
                    value = colour[channel] + spread * _BAYER_OFFSETS[y & 7, x & 7]
                colour[channel] = min(max(value, 0.0), 255.0)
            if space_code == 1:
                srgb_pixel_to_oklab(colour[:channels], point)
            else:
                for channel in range(WIDTH):
                    point[channel] = colour[channel]
            chosen = _nearest_from_hint(point, hints[pixel], palette_points, order, sorted_distances)
            indices[pixel] = chosen
            if diffuse:
                for channel in range(3):
                    error = colour[channel] - palette[chosen, channel]
                    error_here[x + 1 + step, channel] += error * (7.0 / 16.0)
                    error_below[x + 1 - step, channel] += error * (3.0 / 16.0)
                    error_below[x + 1, channel] += error * (5.0 / 16.0)
                    error_below[x + 1 + step, channel] += error * (1.0 / 16.0)
        if diffuse:
            error_here, error_below = error_below, error_here
            error_below.fill(0.0)
    return indices
