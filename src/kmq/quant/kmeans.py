"""Weighted k-means on a colour histogram: seeding, iterations, empty-cluster repair, warm start.

Each histogram bin is one weighted point, so a photo's hundreds of thousands of pixels become a
few thousand points with the same objective. Iterations are Lloyd's, with Hamerly's two bounds
per point so that a point whose nearest centre cannot have changed costs two comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from kmq.errors import InputError
from kmq.quant._checks import check_colors, check_space
from kmq.quant._vectors import WIDTH, padded, squared_distances_to_all, three_smallest
from kmq.quant.colorspace import from_space, to_space
from kmq.quant.histogram import Histogram
from kmq.quant.remap import assign_bins, pixels_nearest

__all__ = [
    "PaletteFit",
    "fit_palette",
    "kmeans_plus_plus",
    "replace_empty_clusters",
    "relocate_centres",
    "refine_on_pixels",
    "palette_distortion",
]

#: Iteration cap of a fresh fit; Hamerly's bounds make the late, nearly still iterations cheap.
FRESH_MAX_ITER = 300
#: Iteration cap when continuing from a previous palette (the next frame of a video).
WARM_MAX_ITER = 8
#: Stop once centres move less than this, as a fraction of the data's variance per point.
RELATIVE_TOLERANCE = 1e-6
#: Candidates drawn for each k-means++ centre; the one that lowers the potential most is kept.
SEEDING_TRIALS = 6
#: Independent seedings tried by a fresh fit; the one with the least distortion wins.
DEFAULT_RESTARTS = 1
#: Centre relocations tried by a fresh fit (see :func:`relocate_centres`).
DEFAULT_RELOCATIONS = 6
#: Iteration cap of the Lloyd run that settles each tried relocation.
RELOCATION_MAX_ITER = 4
#: Relocations tried again on the full histogram, after the coarse fit has been carried over.
FINE_RELOCATIONS = 1
#: Iteration cap of the run that finishes on the full histogram, starting from the coarse fit.
FINISH_MAX_ITER = 5


# Columns of the per-point bounds: distance to the own centre (upper bound), to the runner-up
# centre (lower bound), and to every other centre (lower bound).
_UPPER, _RUNNER_UP, _OTHERS = 0, 1, 2


@dataclass(frozen=True)
class PaletteFit:
    """A palette fitted to a histogram.

    Attributes
    ----------
    palette : ndarray, shape (n, C), float64
        Centroids as RGB(A) on the 0..255 scale (also when fitted in OKLab). ``n == k`` except
        when a fresh fit meets a histogram with fewer than ``k`` bins.
    counts : ndarray, shape (n,), float64
        Pixels served by each entry.
    distortion : float
        Mean squared error per channel value over all pixels, in 0..255 units, when each bin is
        served by its entry (so ``10 * log10(255**2 / distortion)`` is the PSNR).
    iterations : int
        Lloyd iterations run (of the winning restart for a fresh fit).
    labels : ndarray, shape (bins,), int32
        The entry serving each histogram bin.
    """

    palette: np.ndarray
    counts: np.ndarray
    distortion: float
    iterations: int
    labels: np.ndarray


def fit_palette(
    histogram: Histogram,
    k: int,
    *,
    seed: int = 0,
    init: np.ndarray | None = None,
    max_iter: int | None = None,
    space: str = "rgb",
    restarts: int | None = None,
    relocations: int | None = None,
) -> PaletteFit:
    """Fit ``k`` colours to a histogram by weighted k-means.

    Parameters
    ----------
    histogram : Histogram
        From :func:`kmq.quant.build_histogram`.
    k : int
        Palette size, 2..256.
    seed : int
        Seed of the k-means++ draws; the same seed gives the same palette.
    init : ndarray, shape (m, C), optional
        A previous palette (RGB(A), 0..255) to continue from, m <= k. Entry j stays entry j;
        entries left empty are re-seeded in place, and rows m..k-1 are seeded by k-means++.
    max_iter : int, optional
        Lloyd iteration cap per run: 300 for a fresh fit, 8 when continuing from ``init``.
    space : {"rgb", "oklab"}
        Where distances are measured.
    restarts : int, optional
        k-means++ seedings tried by a fresh fit (default 1; ignored with ``init``).
    relocations : int, optional
        Centre relocations tried by a fresh fit after Lloyd converges (see
        :func:`relocate_centres`; default 6; ignored with ``init``).

    Returns
    -------
    PaletteFit
        A fresh fit lists entries from the most to the least used.

    Examples
    --------
    >>> from kmq.quant import build_histogram
    >>> image = np.array([[[0, 0, 0], [10, 10, 10], [250, 250, 250]]], dtype=np.uint8)
    >>> fit = fit_palette(build_histogram(image), 2)
    >>> fit.palette.tolist()
    [[5.0, 5.0, 5.0], [250.0, 250.0, 250.0]]
    """
    check_colors(k)
    check_space(space)
    data = _WeightedPoints.of(histogram, space)
    if init is not None:
        clustering = _Clustering.start(_warm_centres(init, k, histogram, data, seed, space), len(data.weights))
        iterations = clustering.run_lloyd(data, WARM_MAX_ITER if max_iter is None else max_iter)
    elif len(data.weights) <= k:
        clustering = _Clustering.start(data.points.copy(), len(data.weights))
        clustering.labels[:] = np.arange(len(data.weights))
        iterations = 0
    else:
        restarts = DEFAULT_RESTARTS if restarts is None else restarts
        relocations = DEFAULT_RELOCATIONS if relocations is None else relocations
        clustering, iterations = _fresh_fit(histogram, data, k, seed, space, restarts, relocations, max_iter)
    palette = from_space(clustering.centres[:, : histogram.channels], space)
    labels = clustering.labels
    counts = np.bincount(labels, weights=data.weights, minlength=len(palette))
    if init is None:
        palette, counts, labels = _most_used_first(palette, counts, labels)
    return PaletteFit(
        palette=palette,
        counts=counts,
        distortion=palette_distortion(histogram, palette, labels),
        iterations=iterations,
        labels=labels,
    )


def palette_distortion(histogram: Histogram, palette: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error per channel value when bin i is served by ``palette[labels[i]]``.

    Exact over pixels: each bin's squared error follows from its pixel count, colour sum and
    sum of squared norms, whatever the spread of colours inside it.
    """
    served = palette[labels]
    squared_error = (
        histogram.squared_norm_sums
        - 2.0 * np.einsum("ij,ij->i", served, histogram.color_sums)
        + histogram.counts * np.einsum("ij,ij->i", served, served)
    )
    return max(float(squared_error.sum()), 0.0) / (histogram.counts.sum() * histogram.channels)


def kmeans_plus_plus(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    fixed: np.ndarray | None = None,
) -> np.ndarray:
    """Choose ``k`` starting centres by greedy weighted k-means++.

    Each new centre is the best of a few candidates drawn with probability proportional to
    weight times squared distance to the nearest centre so far.

    Parameters
    ----------
    points : ndarray, shape (n, C), C <= 4
    weights : ndarray, shape (n,)
    k : int
    rng : numpy.random.Generator
    fixed : ndarray, shape (m, C), optional
        Centres already chosen (m <= k); they become the first m rows.

    Returns
    -------
    ndarray, shape (k, C)
        When every point is already a centre, the remaining rows repeat the first centre.
    """
    channels = points.shape[1]
    centres = np.empty((k, WIDTH))
    start = 0
    if fixed is not None:
        start = len(fixed)
        centres[:start] = padded(fixed)
    uniforms = rng.random((k, SEEDING_TRIALS + 1))
    _seed_centres(padded(points), np.ascontiguousarray(weights, dtype=np.float64), centres, start, uniforms)
    return centres[:, :channels]


def relocate_centres(data: "_WeightedPoints", clustering: "_Clustering", trials: int) -> "_Clustering":
    """Local search past Lloyd's local optimum: move a centre where it is needed more.

    The centre whose removal would cost least (its points are nearly as well served by their
    second-nearest centre) jumps to the worst-served point of the cluster with the most error,
    and Lloyd settles the result. The move is kept when it lowers the total error; after a kept
    move the costs are recomputed, after a rejected one the next pair is tried.

    Parameters
    ----------
    data : _WeightedPoints
    clustering : _Clustering
        A converged clustering of ``data``; not modified.
    trials : int
        Moves tried in all.

    Returns
    -------
    _Clustering
        The best clustering found (``clustering`` itself when no move helped).
    """
    tried = 0
    while tried < trials:
        removal, error, worst = _cluster_costs(
            data.points, data.weights, clustering.centres, clustering.labels, clustering.runner_up
        )
        pairs = _relocation_pairs(removal, error)
        improved = False
        for victim, target in pairs:
            if tried >= trials:
                break
            tried += 1
            candidate = clustering.copy()
            candidate.move_centre(data, victim, data.points[worst[target]])
            candidate.run_lloyd(data, RELOCATION_MAX_ITER)
            if candidate.error < clustering.error:
                clustering, improved = candidate, True
                break
        if not improved:
            break
    return clustering


#: Relocations try the few cheapest centres against the few clusters with most error.
_RELOCATION_CHOICES = 3


def _relocation_pairs(removal: np.ndarray, error: np.ndarray) -> list[tuple[int, int]]:
    victims = np.argsort(removal, kind="stable")[: _RELOCATION_CHOICES + 1]
    targets = np.argsort(-error, kind="stable")[:_RELOCATION_CHOICES]
    pairs = [(int(victim), int(target)) for target in targets for victim in victims if victim != target]
    return pairs


@dataclass(frozen=True)
class _WeightedPoints:
    """Histogram bins as weighted points of the search space, padded to four coordinates."""

    points: np.ndarray
    sums: np.ndarray
    weights: np.ndarray
    tolerance: float

    @classmethod
    def of(cls, histogram: Histogram, space: str) -> "_WeightedPoints":
        points = padded(to_space(histogram.colors, space))
        # RGB keeps the exact integer colour sums, so centroids are exact pixel means.
        sums = padded(histogram.color_sums) if space == "rgb" else points * histogram.counts[:, None]
        weights = np.ascontiguousarray(histogram.counts, dtype=np.float64)
        total = weights.sum()
        mean = sums.sum(axis=0) / total
        if space == "rgb":
            # The pixels' own variance, from the exact totals the histogram keeps.
            variance = histogram.squared_norm_sums.sum() / total - float(mean @ mean)
        else:
            variance = float(weights @ ((points - mean) ** 2).sum(axis=1)) / total
        return cls(points, sums, weights, RELATIVE_TOLERANCE * variance)


@dataclass
class _Clustering:
    """Centres, each point's label and runner-up, and distance bounds valid from call to call.

    ``bounds[i]`` holds an upper bound on the distance from point i to its centre, a lower bound
    on the distance to its runner-up, and a lower bound on the distance to every other centre.
    """

    centres: np.ndarray
    labels: np.ndarray
    runner_up: np.ndarray
    bounds: np.ndarray
    assigned: bool = False
    #: Total weighted squared distance of the points to their centres after the last run.
    error: float = np.inf

    @classmethod
    def start(cls, centres: np.ndarray, points: int) -> "_Clustering":
        return cls(
            np.ascontiguousarray(centres, dtype=np.float64),
            np.zeros(points, np.int32),
            np.zeros(points, np.int32),
            np.zeros((points, 3)),
        )

    def copy(self) -> "_Clustering":
        return _Clustering(
            self.centres.copy(), self.labels.copy(), self.runner_up.copy(), self.bounds.copy(), self.assigned, self.error
        )

    def run_lloyd(self, data: _WeightedPoints, max_iter: int) -> int:
        """Lloyd iterations until no point changes cluster, centres settle, or ``max_iter``."""
        iterations, self.error = _weighted_lloyd(
            data.points,
            data.sums,
            data.weights,
            self.centres,
            self.labels,
            self.runner_up,
            self.bounds,
            int(max_iter),
            float(data.tolerance),
            not self.assigned,
        )
        self.assigned = True
        return iterations

    def move_centre(self, data: _WeightedPoints, entry: int, position: np.ndarray) -> None:
        """Put centre ``entry`` at ``position`` and update every bound it touches, exactly."""
        _move_centre(data.points, self.centres, self.labels, self.runner_up, self.bounds, entry, position)


def _fresh_fit(histogram, data, k, seed, space, restarts, relocations, max_iter):
    """Seed and cluster on a coarse version of the histogram, then finish on the full one."""
    max_iter = FRESH_MAX_ITER if max_iter is None else max_iter
    coarse_data, parent = data, None
    two_level = histogram.coarse_level()
    if two_level is not None:
        coarse, parent = two_level
        coarse_data = _WeightedPoints.of(coarse, space)
    best = None
    for restart in range(max(1, restarts)):
        rng = np.random.default_rng([seed, restart])
        centres = kmeans_plus_plus(coarse_data.points, coarse_data.weights, k, rng)
        clustering = _Clustering.start(centres, len(coarse_data.weights))
        iterations = clustering.run_lloyd(coarse_data, max_iter)
        if best is None or clustering.error < best[0].error:
            best = (clustering, iterations)
    clustering, iterations = best
    clustering = relocate_centres(coarse_data, clustering, relocations)
    if parent is not None:
        fine = _Clustering.start(clustering.centres, len(data.weights))
        _inherit_assignment(data.points, coarse_data.points, parent, fine.centres, fine.labels, fine.runner_up, fine.bounds)
        fine.assigned = True
        iterations = fine.run_lloyd(data, min(max_iter, FINISH_MAX_ITER))
        clustering = relocate_centres(data, fine, FINE_RELOCATIONS)
    return clustering, iterations


def _warm_centres(init, k, histogram, data, seed, space):
    init = np.asarray(init, dtype=np.float64)
    if init.ndim != 2 or init.shape[1] != histogram.channels or not 1 <= len(init) <= k:
        raise InputError(
            f"init must be a palette of 1..{k} rows and {histogram.channels} channels, got shape {init.shape}"
        )
    fixed = padded(to_space(np.clip(init, 0.0, 255.0), space))
    if len(fixed) == k:
        return fixed
    return kmeans_plus_plus(data.points, data.weights, k, np.random.default_rng(seed), fixed=fixed)


def _most_used_first(palette, counts, labels):
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return palette[order], counts[order], rank[labels].astype(np.int32)


@numba.njit(cache=True, inline="always")
def _squared_distance(points, i, centres, j):
    total = 0.0
    for channel in range(WIDTH):
        difference = points[i, channel] - centres[j, channel]
        total += difference * difference
    return total


@numba.njit(cache=True)
def _distances_to_point(points_by_channel, centre, nearest_so_far, out):
    """Squared distance from every point (stored C×n) to ``centre``, capped by ``nearest_so_far``."""
    n = points_by_channel.shape[1]
    for i in range(n):
        total = 0.0
        for channel in range(WIDTH):
            difference = points_by_channel[channel, i] - centre[channel]
            total += difference * difference
        out[i] = min(total, nearest_so_far[i])


@numba.njit(cache=True, inline="always")
def _copy_row(source, source_row, target, target_row):
    # Explicit: numba compiles a row-to-row slice assignment very slowly.
    for channel in range(WIDTH):
        target[target_row, channel] = source[source_row, channel]


@numba.njit(cache=True, inline="always")
def _running_total(values, out):
    """Cumulative sums of ``values`` into ``out``; returns the total."""
    total = 0.0
    for i in range(values.shape[0]):
        total += values[i]
        out[i] = total
    return total


@numba.njit(cache=True, inline="always")
def _draw(cumulative, uniform):
    """The index whose share of the running total holds ``uniform`` (in [0, 1)) of the total."""
    target = uniform * cumulative[-1]
    low = 0
    high = cumulative.shape[0] - 1
    while low < high:
        middle = (low + high) // 2
        if cumulative[middle] > target:
            high = middle
        else:
            low = middle + 1
    return low


@numba.njit(cache=True)
def _seed_centres(points, weights, centres, start, uniforms):
    n = points.shape[0]
    k = centres.shape[0]
    trials = uniforms.shape[1] - 1
    points_by_channel = np.ascontiguousarray(points.T)
    nearest = np.full(n, np.inf)
    cumulative = np.empty(n)
    if start == 0:
        _running_total(weights, cumulative)
        _copy_row(points, _draw(cumulative, uniforms[0, 0]), centres, 0)
        start = 1
    for j in range(start):
        _distances_to_point(points_by_channel, centres[j], nearest, nearest)
    candidate_nearest = np.empty(n)
    best_nearest = np.empty(n)
    potential = np.empty(n)
    for j in range(start, k):
        for i in range(n):
            potential[i] = weights[i] * nearest[i]
        if _running_total(potential, cumulative) <= 0.0:
            # Every point is a centre already; repeat one so the palette keeps k rows.
            for rest in range(j, k):
                _copy_row(centres, 0, centres, rest)
            return
        best_cost = np.inf
        for trial in range(trials):
            candidate = _draw(cumulative, uniforms[j, trial + 1])
            _distances_to_point(points_by_channel, points[candidate], nearest, candidate_nearest)
            cost = 0.0
            for i in range(n):
                cost += weights[i] * candidate_nearest[i]
            if cost < best_cost:
                best_cost = cost
                _copy_row(points, candidate, centres, j)
                # Keep this candidate's distances by swapping buffers rather than copying.
                best_nearest, candidate_nearest = candidate_nearest, best_nearest
        nearest, best_nearest = best_nearest, nearest


@numba.njit(cache=True)
def replace_empty_clusters(points, point_sums, weights, centres, labels, runner_up, cluster_sums, cluster_weights, bounds):
    """Re-seed every empty cluster at the worst-served point that can leave its own cluster.

    The worst-served point is the one contributing most error (weight times squared distance to
    its centre); it moves to the empty cluster, taking its weight and colour sum along, so the
    cluster totals stay exact. A cluster stays empty only when every point is served exactly.

    Returns
    -------
    int
        Clusters re-seeded.
    """
    k = centres.shape[0]
    empty = 0
    for j in range(k):
        if cluster_weights[j] <= 0.0:
            empty += 1
    if empty == 0:
        return 0
    n = points.shape[0]
    error = np.empty(n)
    for i in range(n):
        error[i] = weights[i] * _squared_distance(points, i, centres, labels[i])
    reseeded = 0
    for j in range(k):
        if cluster_weights[j] > 0.0:
            continue
        # The worst-served point whose cluster keeps other points when it leaves. Clusters are
        # rarely empty, so a scan per empty cluster beats sorting every point.
        i = -1
        worst = 0.0
        for candidate in range(n):
            if error[candidate] > worst and cluster_weights[labels[candidate]] > weights[candidate]:
                worst = error[candidate]
                i = candidate
        if i < 0:
            return reseeded
        error[i] = 0.0
        old = labels[i]
        cluster_weights[old] -= weights[i]
        cluster_weights[j] = weights[i]
        for channel in range(WIDTH):
            cluster_sums[old, channel] -= point_sums[i, channel]
            cluster_sums[j, channel] = point_sums[i, channel]
        labels[i] = j
        runner_up[i] = old
        # Zero lower bounds make the point search afresh at the next assignment.
        bounds[i, _UPPER] = 0.0
        bounds[i, _RUNNER_UP] = 0.0
        bounds[i, _OTHERS] = 0.0
        reseeded += 1
    return reseeded


@numba.njit(cache=True)
def _search(points, i, centres_by_channel, scratch, labels, runner_up, bounds):
    """Full search for point i: its nearest centre, runner-up, and exact bounds."""
    squared_distances_to_all(points[i], centres_by_channel, scratch)
    best, best_distance, second, second_distance, third_distance = three_smallest(scratch)
    labels[i] = best
    runner_up[i] = second
    bounds[i, _UPPER] = np.sqrt(best_distance)
    bounds[i, _RUNNER_UP] = np.sqrt(second_distance)
    bounds[i, _OTHERS] = np.sqrt(third_distance)


@numba.njit(cache=True)
def _weighted_lloyd(points, point_sums, weights, centres, labels, runner_up, bounds, max_iter, tolerance, fresh):
    """Lloyd iterations with per-point distance bounds, in place on centres, labels and bounds.

    Hamerly's scheme with the runner-up singled out: each point keeps an upper bound on the
    distance to its centre, a lower bound on the distance to its runner-up, and one on the
    distance to every other centre. While the upper bound stays below the lower bounds (or half
    the gap from its centre to the nearest other centre) the point is skipped; a point on the
    border of two clusters, the common case, then checks only its runner-up, and a full search
    over all centres is left to points whose far bound fails. Cluster totals follow the points
    that change cluster instead of being summed again. With ``fresh`` every point is first
    assigned by full search; otherwise labels and bounds are taken as valid.

    Returns the number of centre updates and the final error (weighted squared distances).
    """
    n = points.shape[0]
    k = centres.shape[0]
    centres_by_channel = np.ascontiguousarray(centres.T)
    scratch = np.empty(k)
    shift = np.zeros(k)
    half_gap = np.zeros(k)
    cluster_sums = np.zeros((k, WIDTH))
    cluster_weights = np.zeros(k)
    if fresh:
        for i in range(n):
            _search(points, i, centres_by_channel, scratch, labels, runner_up, bounds)
    for i in range(n):
        cluster_weights[labels[i]] += weights[i]
        for channel in range(WIDTH):
            cluster_sums[labels[i], channel] += point_sums[i, channel]
    if not fresh:
        _assign(points, point_sums, weights, centres, centres_by_channel, labels, runner_up, bounds,
                shift, half_gap, scratch, cluster_sums, cluster_weights, False)
    total_weight = weights.sum()
    iterations = 0
    while True:
        replace_empty_clusters(points, point_sums, weights, centres, labels, runner_up, cluster_sums, cluster_weights, bounds)
        movement = 0.0
        for j in range(k):
            shift[j] = 0.0
            if cluster_weights[j] <= 0.0:
                continue
            squared_shift = 0.0
            for channel in range(WIDTH):
                updated = cluster_sums[j, channel] / cluster_weights[j]
                squared_shift += (updated - centres[j, channel]) ** 2
                centres[j, channel] = updated
                centres_by_channel[channel, j] = updated
            shift[j] = np.sqrt(squared_shift)
            movement += cluster_weights[j] * squared_shift
        iterations += 1
        finishing = iterations >= max_iter or movement <= tolerance * total_weight
        for j in range(k):
            gap = np.inf
            for other in range(k):
                if other != j:
                    gap = min(gap, _squared_distance(centres, j, centres, other))
            half_gap[j] = 0.5 * np.sqrt(gap)
        # After the last update one more assignment leaves every label on its nearest centre,
        # and the bounds valid for callers that resume.
        changes = _assign(points, point_sums, weights, centres, centres_by_channel, labels, runner_up, bounds,
                          shift, half_gap, scratch, cluster_sums, cluster_weights, True)
        if finishing or changes == 0:
            break
    error = 0.0
    for i in range(n):
        error += weights[i] * _squared_distance(points, i, centres, labels[i])
    return iterations, error


@numba.njit(cache=True)
def _assign(points, point_sums, weights, centres, centres_by_channel, labels, runner_up, bounds,
            shift, half_gap, scratch, cluster_sums, cluster_weights, moved):
    """One assignment pass: loosen each point's bounds by the centres' shifts (when ``moved``),
    and search only where the bounds no longer prove the label. A point that changes cluster
    carries its weight and colour sum over. Returns the number of changes."""
    k = centres.shape[0]
    # The largest shift among a point's "other" centres is one of the three largest shifts; when
    # the two largest stand out (a relocated centre settling), those two are measured instead,
    # so that one far jump does not loosen every point's bound.
    negated = np.empty(k)
    for j in range(k):
        negated[j] = -shift[j]
    biggest, biggest_shift, second_biggest, second_shift, third_shift = three_smallest(negated)
    biggest_shift, second_shift = -biggest_shift, -second_shift
    third_shift = -third_shift if k > 2 else 0.0
    measure_movers = moved and k > 3 and second_shift > 2.0 * third_shift
    changes = 0
    for i in range(points.shape[0]):
        label = labels[i]
        rival = runner_up[i]
        if moved:
            bounds[i, _UPPER] += shift[label]
            bounds[i, _RUNNER_UP] -= shift[rival]
            if measure_movers:
                others = bounds[i, _OTHERS] - third_shift
                if biggest != label and biggest != rival:
                    others = min(others, np.sqrt(_squared_distance(points, i, centres, biggest)))
                if second_biggest != label and second_biggest != rival:
                    others = min(others, np.sqrt(_squared_distance(points, i, centres, second_biggest)))
                bounds[i, _OTHERS] = others
            elif biggest != label and biggest != rival:
                bounds[i, _OTHERS] -= biggest_shift
            elif second_biggest != label and second_biggest != rival:
                bounds[i, _OTHERS] -= second_shift
            else:
                bounds[i, _OTHERS] -= third_shift
        gate = max(half_gap[label], min(bounds[i, _RUNNER_UP], bounds[i, _OTHERS]))
        if bounds[i, _UPPER] <= gate:
            continue
        upper = np.sqrt(_squared_distance(points, i, centres, label))
        bounds[i, _UPPER] = upper
        if upper <= gate:
            continue
        if upper <= bounds[i, _OTHERS]:
            # Only the runner-up can be nearer.
            rival_distance = np.sqrt(_squared_distance(points, i, centres, rival))
            bounds[i, _RUNNER_UP] = rival_distance
            if rival_distance < upper:
                labels[i] = rival
                runner_up[i] = label
                bounds[i, _UPPER] = rival_distance
                bounds[i, _RUNNER_UP] = upper
        else:
            _search(points, i, centres_by_channel, scratch, labels, runner_up, bounds)
        if labels[i] != label:
            changes += 1
            new = labels[i]
            cluster_weights[label] -= weights[i]
            cluster_weights[new] += weights[i]
            for channel in range(WIDTH):
                cluster_sums[label, channel] -= point_sums[i, channel]
                cluster_sums[new, channel] += point_sums[i, channel]
    return changes


@numba.njit(cache=True)
def _move_centre(points, centres, labels, runner_up, bounds, entry, position):
    """Move one centre; its own points learn their new distance, and so do the points whose
    runner-up it is; every other point can only have gained a closer rival, now measured."""
    for channel in range(WIDTH):
        centres[entry, channel] = position[channel]
    for i in range(points.shape[0]):
        distance = np.sqrt(_squared_distance(points, i, centres, entry))
        if labels[i] == entry:
            bounds[i, _UPPER] = distance
        elif runner_up[i] == entry:
            bounds[i, _RUNNER_UP] = distance
        else:
            bounds[i, _OTHERS] = min(bounds[i, _OTHERS], distance)


@numba.njit(cache=True)
def _inherit_assignment(points, coarse_points, parent, centres, labels, runner_up, bounds):
    """Start each fine point from its coarse bin's nearest centre and runner-up, with valid bounds.

    The two distances are measured; for any other centre j, the triangle inequality through
    the coarse point c gives |x-j| >= |c-j| - |x-c| >= (c's third-nearest distance) - |x-c|.
    One search per coarse bin replaces one per fine bin.
    """
    k = centres.shape[0]
    centres_by_channel = np.ascontiguousarray(centres.T)
    scratch = np.empty(k)
    coarse_count = coarse_points.shape[0]
    nearest = np.empty(coarse_count, np.int32)
    second = np.empty(coarse_count, np.int32)
    third_distance = np.empty(coarse_count)
    for c in range(coarse_count):
        squared_distances_to_all(coarse_points[c], centres_by_channel, scratch)
        best, _, runner, _, third = three_smallest(scratch)
        nearest[c] = best
        second[c] = runner
        third_distance[c] = np.sqrt(third)
    for i in range(points.shape[0]):
        c = parent[i]
        labels[i] = nearest[c]
        runner_up[i] = second[c]
        bounds[i, _UPPER] = np.sqrt(_squared_distance(points, i, centres, nearest[c]))
        bounds[i, _RUNNER_UP] = np.sqrt(_squared_distance(points, i, centres, second[c]))
        bounds[i, _OTHERS] = third_distance[c] - np.sqrt(_squared_distance(points, i, coarse_points, c))


@numba.njit(cache=True)
def _cluster_costs(points, weights, centres, labels, runner_up):
    """Per cluster: the error added by removing it (its points go to their runner-up centre),
    its own error, and its worst-served point.

    The runner-up is the one found at each point's last search, so the removal cost is an
    estimate (never below the truth); it only ranks the relocations to try.
    """
    k = centres.shape[0]
    removal = np.zeros(k)
    error = np.zeros(k)
    worst = np.zeros(k, np.int64)
    worst_error = np.full(k, -1.0)
    for i in range(points.shape[0]):
        label = labels[i]
        own = weights[i] * _squared_distance(points, i, centres, label)
        removal[label] += weights[i] * _squared_distance(points, i, centres, runner_up[i]) - own
        error[label] += own
        if own > worst_error[label]:
            worst_error[label] = own
            worst[label] = i
    return removal, error, worst


def refine_on_pixels(rows: np.ndarray, histogram: Histogram, palette: np.ndarray, *, iterations: int) -> np.ndarray:
    """Lloyd iterations over the pixels themselves, each pixel assigned to its exact nearest entry.

    The histogram fit makes all pixels of a bin share one entry; here the pixels of a bin that
    straddles two entries' territories are split between them, which is the true pixel-level
    objective (RGB).

    Parameters
    ----------
    rows : ndarray
        (H*W)×C uint8 pixels.
    histogram : Histogram
        Built from ``rows``.
    palette : ndarray, shape (n, C)
        Starting palette, RGB(A) on the 0..255 scale.
    iterations : int
        At most this many updates; stops early once no entry moves.

    Returns
    -------
    ndarray, shape (n, C), float64
        The refined palette; entries that serve no pixel keep their colour.
    """
    channels = histogram.channels
    points = padded(palette)
    bin_sums = padded(histogram.color_sums)
    for _ in range(iterations):
        assignment = assign_bins(histogram, points)
        _, sums, counts = pixels_nearest(rows, histogram, points, assignment, totals=True)
        # Pixels of certain bins were not visited one by one: their bins' totals go in whole.
        certain = assignment.certain()
        entry_of_bin = assignment.nearest[certain]
        counts += np.bincount(entry_of_bin, weights=histogram.counts[certain], minlength=len(points))
        for channel in range(channels):
            sums[:, channel] += np.bincount(entry_of_bin, weights=bin_sums[certain, channel], minlength=len(points))
        used = counts > 0
        updated = points.copy()
        updated[used] = sums[used] / counts[used, None]
        if np.array_equal(updated, points):
            break
        points = updated
    return points[:, :channels]
