"""Clusterings kept for comparison with k-means: agglomerative Ward linkage on the weighted histogram.

Median cut and octree come from Pillow and live in :mod:`kmq.analysis.methods`; this module is
numbers only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from kmq.errors import InputError

__all__ = ["WardTree", "ward_tree", "ward_palette", "histogram_for_ward", "DEFAULT_WARD_BINS"]

#: Most histogram bins the hierarchical baseline clusters. Ward's nearest-neighbour chain costs
#: O(n²) distance evaluations, so a photo's histogram is coarsened until it fits.
DEFAULT_WARD_BINS = 8192


@dataclass(frozen=True)
class WardTree:
    """The full agglomerative Ward dendrogram of weighted colours, ready to be cut at any K.

    Attributes
    ----------
    left, right : ndarray, shape (n-1,), int64
        For merge ``i`` (in order of increasing cost), one leaf of each of the two clusters joined.
    costs : ndarray, shape (n-1,), float64
        Increase of the weighted sum of squared errors caused by each merge, ascending.
    color_sums : ndarray, shape (n, C), float64
        Weighted colour sum of each leaf, so a cluster's centroid is its exact weighted mean.
    weights : ndarray, shape (n,), float64
        Weight of each leaf (its pixel count).
    """

    left: np.ndarray
    right: np.ndarray
    costs: np.ndarray
    color_sums: np.ndarray
    weights: np.ndarray

    @property
    def leaf_count(self) -> int:
        """Number of weighted colours that were clustered."""
        return int(self.weights.shape[0])

    def labels(self, k: int) -> np.ndarray:
        """Cluster of each leaf when the dendrogram is cut into ``k`` clusters.

        Parameters
        ----------
        k : int
            Number of clusters, 1..leaf_count (larger values are clamped to leaf_count).

        Returns
        -------
        ndarray, shape (n,), int64
            Labels 0..k'-1 where k' = min(k, leaf_count), numbered by first leaf.
        """
        if k < 1:
            raise InputError(f"K must be at least 1, got {k}")
        k = min(int(k), self.leaf_count)
        return _cut(self.left, self.right, self.leaf_count - k, self.leaf_count)

    def centroids(self, k: int) -> np.ndarray:
        """Exact weighted mean colour of each of the ``k`` clusters (k×C float64)."""
        labels = self.labels(k)
        count = int(labels.max()) + 1
        sums = np.zeros((count, self.color_sums.shape[1]))
        np.add.at(sums, labels, self.color_sums)
        totals = np.bincount(labels, weights=self.weights, minlength=count)
        return sums / totals[:, None]


def ward_tree(colors: np.ndarray, weights: np.ndarray | None = None) -> WardTree:
    """Agglomerative clustering with Ward linkage of weighted points, by nearest-neighbour chains.

    Joining clusters A and B costs ``w_A w_B / (w_A + w_B) * |c_A - c_B|²``, the growth of the
    weighted sum of squared errors; each step joins the cheapest pair of reciprocal nearest
    neighbours, which for Ward gives the same dendrogram as the greedy global minimum.

    Parameters
    ----------
    colors : ndarray, shape (n, C)
        Points (colours on any scale), n >= 1.
    weights : ndarray, shape (n,), optional
        Positive weight of each point (pixel counts of histogram bins); 1 each by default.

    Returns
    -------
    WardTree
        All n-1 merges sorted by cost.

    Examples
    --------
    >>> tree = ward_tree(np.array([[0.0], [1.0], [10.0]]))
    >>> tree.labels(2).tolist(), tree.costs.round(3).tolist()
    ([0, 0, 1], [0.5, 60.167])
    """
    colors = np.ascontiguousarray(colors, dtype=np.float64)
    if colors.ndim != 2 or colors.shape[0] == 0:
        raise InputError(f"colors must be a non-empty n×C array, got shape {colors.shape}")
    if weights is None:
        weights = np.ones(colors.shape[0])
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if weights.shape != (colors.shape[0],) or not np.all(weights > 0) or not np.all(np.isfinite(colors)):
        raise InputError("weights must be one positive number per colour, and colours finite")
    left, right, costs = _nearest_neighbour_chain(colors, weights)
    order = np.argsort(costs, kind="stable")
    return WardTree(
        left=left[order],
        right=right[order],
        costs=costs[order],
        color_sums=colors * weights[:, None],
        weights=weights,
    )


def histogram_for_ward(pixels: np.ndarray, max_bins: int = DEFAULT_WARD_BINS):
    """The finest colour histogram of ``pixels`` with at most ``max_bins`` bins.

    Starts from exact colours for small images and 5 bits per channel for photos, dropping one
    bit per channel until the bin count fits; every bin keeps its exact colour sum.

    Returns
    -------
    kmq.quant.histogram.Histogram
    """
    from kmq.quant.histogram import build_histogram

    if max_bins < 1:
        raise InputError(f"max_bins must be positive, got {max_bins}")
    histogram = build_histogram(pixels)
    while histogram.colors.shape[0] > max_bins and histogram.bits > 1:
        histogram = build_histogram(pixels, bits=histogram.bits - 1)
    return histogram


def ward_palette(pixels: np.ndarray, k: int, *, max_bins: int = DEFAULT_WARD_BINS) -> np.ndarray:
    """A palette of at most ``k`` colours by Ward clustering of the image's weighted histogram.

    Parameters
    ----------
    pixels : ndarray
        H×W×3 or H×W×4 uint8.
    k : int
        Palette size, 1..256.
    max_bins : int
        Most histogram bins to cluster (see :func:`histogram_for_ward`).

    Returns
    -------
    ndarray
        k'×C uint8 palette, k' = min(k, number of bins).
    """
    histogram = histogram_for_ward(pixels, max_bins)
    tree = ward_tree(histogram.colors, histogram.counts)
    return palette_from_centroids(tree.centroids(k))


def palette_from_centroids(centroids: np.ndarray) -> np.ndarray:
    """Round centroids on the 0..255 scale to a uint8 palette."""
    return np.clip(np.rint(centroids), 0, 255).astype(np.uint8)


@numba.njit(cache=True)
def _ward_cost(centroids, weights, a, b):
    distance = 0.0
    for channel in range(centroids.shape[1]):
        step = centroids[a, channel] - centroids[b, channel]
        distance += step * step
    return weights[a] * weights[b] / (weights[a] + weights[b]) * distance


@numba.njit(cache=True)
def _nearest_neighbour_chain(colors, weights):
    """Every Ward merge as (a leaf of one side, a leaf of the other, cost), in discovery order.

    A merged cluster lives on in the slot of its smaller leaf, so a slot number is always a leaf
    of the cluster held there. Active slots sit in a dense list for O(active) scans.
    """
    count, channels = colors.shape
    centroids = colors.copy()
    mass = weights.copy()
    active = np.arange(count)
    position = np.arange(count)
    active_count = count
    chain = np.empty(count, np.int64)
    chain_length = 0
    left = np.empty(max(count - 1, 0), np.int64)
    right = np.empty(max(count - 1, 0), np.int64)
    costs = np.empty(max(count - 1, 0), np.float64)
    merges = 0
    while active_count > 1:
        if chain_length == 0:
            chain[0] = active[0]
            chain_length = 1
        current = chain[chain_length - 1]
        # Prefer the previous chain element on ties, so the chain always ends in a reciprocal pair.
        if chain_length > 1:
            best = chain[chain_length - 2]
            best_cost = _ward_cost(centroids, mass, current, best)
        else:
            best = -1
            best_cost = np.inf
        for position_in_list in range(active_count):
            other = active[position_in_list]
            if other == current:
                continue
            cost = _ward_cost(centroids, mass, current, other)
            if cost < best_cost:
                best_cost = cost
                best = other
        if chain_length > 1 and best == chain[chain_length - 2]:
            chain_length -= 2
            keep = min(current, best)
            drop = max(current, best)
            total = mass[keep] + mass[drop]
            for channel in range(channels):
                centroids[keep, channel] = (
                    centroids[keep, channel] * mass[keep] + centroids[drop, channel] * mass[drop]
                ) / total
            mass[keep] = total
            left[merges] = keep
            right[merges] = drop
            costs[merges] = best_cost
            merges += 1
            # swap-remove the dropped slot from the active list
            hole = position[drop]
            last = active[active_count - 1]
            active[hole] = last
            position[last] = hole
            active_count -= 1
        else:
            chain[chain_length] = best
            chain_length += 1
    return left, right, costs


@numba.njit(cache=True)
def _find(parent, leaf):
    root = leaf
    while parent[root] != root:
        root = parent[root]
    while parent[leaf] != root:
        following = parent[leaf]
        parent[leaf] = root
        leaf = following
    return root


@numba.njit(cache=True)
def _cut(left, right, merge_count, leaf_count):
    """Labels after the first ``merge_count`` merges: union-find over the dendrogram's edges."""
    parent = np.arange(leaf_count)
    for merge in range(merge_count):
        root_a = _find(parent, left[merge])
        root_b = _find(parent, right[merge])
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    labels = np.empty(leaf_count, np.int64)
    label_of_root = np.full(leaf_count, -1, np.int64)
    next_label = 0
    for leaf in range(leaf_count):
        root = _find(parent, leaf)
        if label_of_root[root] < 0:
            label_of_root[root] = next_label
            next_label += 1
        labels[leaf] = label_of_root[root]
    return labels
