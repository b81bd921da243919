"""The hierarchical (Ward) baseline: the same dendrogram as the textbook algorithm, on weighted colours."""

from __future__ import annotations

import numpy as np
import pytest

from kmq.errors import InputError
from kmq.quant.baselines import histogram_for_ward, ward_palette, ward_tree


def _points(seed: int = 0, count: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 255, (6, 3))
    return centres[rng.integers(0, 6, count)] + rng.normal(0, 12, (count, 3))


def test_merge_heights_equal_scipys_ward_linkage():
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    points = _points()
    tree = ward_tree(points)
    # scipy reports sqrt(2 * increase of the sum of squared errors) as the merge height
    assert np.allclose(np.sqrt(2 * tree.costs), hierarchy.linkage(points, "ward")[:, 2])


def test_cuts_equal_scipys_clusters_at_every_k():
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    points = _points(1)
    tree = ward_tree(points)
    linkage = hierarchy.linkage(points, "ward")
    for k in (1, 2, 6, 40, len(points)):
        ours = tree.labels(k)
        theirs = hierarchy.fcluster(linkage, k, "maxclust")
        assert ours.max() + 1 == k
        # the same partition: each of our clusters maps to exactly one of theirs
        pairs = set(zip(ours.tolist(), theirs.tolist()))
        assert len(pairs) == k


def test_weighted_colours_cluster_like_their_repeated_pixels():
    rng = np.random.default_rng(2)
    colours = rng.uniform(0, 255, (40, 3)).round()
    counts = rng.integers(1, 5, 40)
    pixels = np.repeat(colours, counts, axis=0)
    weighted = ward_tree(colours, counts)
    repeated = ward_tree(pixels)
    # duplicates merge first at zero cost; the remaining merges are the weighted tree's
    assert np.allclose(repeated.costs[counts.sum() - 40 :], weighted.costs)
    for k in (3, 10):
        assert np.allclose(np.sort(weighted.centroids(k), axis=0), np.sort(repeated.centroids(k), axis=0))


def test_centroids_are_exact_weighted_means():
    colours = np.array([[0.0, 0, 0], [2.0, 0, 0], [200.0, 0, 0]])
    tree = ward_tree(colours, np.array([3.0, 1.0, 5.0]))
    assert tree.centroids(2).tolist() == [[0.5, 0, 0], [200.0, 0, 0]]


def test_palette_of_a_photo_has_k_colours_from_a_bounded_histogram(photo):
    histogram = histogram_for_ward(photo, max_bins=2000)
    assert histogram.colors.shape[0] <= 2000
    palette = ward_palette(photo[::4, ::4], 16, max_bins=2000)
    assert palette.shape == (16, 3) and palette.dtype == np.uint8
    assert len(np.unique(palette, axis=0)) == 16


def test_k_above_the_number_of_colours_gives_every_colour():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2] = (255, 0, 0)
    assert sorted(map(tuple, ward_palette(image, 8).tolist())) == [(0, 0, 0), (255, 0, 0)]


def test_bad_weights_are_refused():
    with pytest.raises(InputError):
        ward_tree(np.zeros((3, 3)), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(InputError):
        ward_tree(np.zeros((0, 3)))
