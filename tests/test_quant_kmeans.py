"""Weighted k-means on the histogram: seeding, convergence, empty clusters, warm start, OKLab."""

from __future__ import annotations

import numpy as np
import pytest

from kmq.errors import InputError
from kmq.quant import build_histogram, fit_palette
from kmq.quant._vectors import padded
from kmq.quant.kmeans import _Clustering, _WeightedPoints, kmeans_plus_plus, relocate_centres, replace_empty_clusters


@pytest.fixture(scope="module")
def photo_histogram(photo):
    return build_histogram(photo)


def test_fresh_fit_has_k_entries(photo_histogram):
    fit = fit_palette(photo_histogram, 16)
    assert fit.palette.shape == (16, 3)


def test_fresh_fit_lists_entries_from_most_to_least_used(photo_histogram):
    counts = fit_palette(photo_histogram, 16).counts
    assert np.all(np.diff(counts) <= 0)


def test_counts_add_up_to_the_pixel_count(photo_histogram):
    assert fit_palette(photo_histogram, 8).counts.sum() == photo_histogram.counts.sum()


def test_same_seed_gives_the_same_palette(photo_histogram):
    first = fit_palette(photo_histogram, 32, seed=3)
    second = fit_palette(photo_histogram, 32, seed=3)
    np.testing.assert_array_equal(first.palette, second.palette)


def test_every_bin_is_served_by_its_nearest_entry(photo_histogram):
    fit = fit_palette(photo_histogram, 16)
    distances = ((photo_histogram.colors[:, None, :] - fit.palette[None]) ** 2).sum(axis=2)
    served = distances[np.arange(len(fit.labels)), fit.labels]
    assert np.all(served <= distances.min(axis=1) + 1e-6)


def test_centroids_are_the_exact_means_of_their_pixels():
    rng = np.random.default_rng(5)
    centres = np.array([[30, 30, 30], [220, 40, 40], [40, 200, 60], [90, 90, 230]])
    image = (centres[rng.integers(0, 4, size=(60, 60))] + rng.integers(-20, 21, size=(60, 60, 3))).astype(np.uint8)
    histogram = build_histogram(image)
    fit = fit_palette(histogram, 4)
    rows = image.reshape(-1, 3).astype(np.float64)
    served_by = fit.labels[histogram.bin_of_pixel]
    for entry in range(4):
        np.testing.assert_array_equal(fit.palette[entry], rows[served_by == entry].mean(axis=0))


def test_distortion_is_the_mean_squared_error_of_the_served_pixels(photo, photo_histogram):
    fit = fit_palette(photo_histogram, 16)
    served = fit.palette[fit.labels[photo_histogram.bin_of_pixel]]
    error = np.mean((photo.reshape(-1, 3) - served) ** 2)
    assert fit.distortion == pytest.approx(error, rel=1e-9)


def test_more_colours_give_less_distortion(photo_histogram):
    assert fit_palette(photo_histogram, 32).distortion < fit_palette(photo_histogram, 8).distortion


def test_histogram_with_fewer_bins_than_k_gives_its_colours():
    image = np.array([[[0, 0, 0], [10, 200, 30], [10, 200, 30]]], dtype=np.uint8)
    fit = fit_palette(build_histogram(image), 5)
    assert fit.palette.tolist() == [[10.0, 200.0, 30.0], [0.0, 0.0, 0.0]]
    assert fit.distortion == 0.0


def test_warm_start_keeps_each_entry_in_place(photo_histogram):
    reversed_palette = fit_palette(photo_histogram, 16).palette[::-1]
    warm = fit_palette(photo_histogram, 16, init=reversed_palette)
    distances = ((warm.palette[:, None, :] - reversed_palette[None]) ** 2).sum(axis=2)
    assert distances.argmin(axis=1).tolist() == list(range(16))


def test_warm_start_repairs_an_empty_entry_in_place(photo_histogram):
    init = fit_palette(photo_histogram, 8).palette.copy()
    init[3] = (255.0, 0.0, 255.0)  # no pixel of the photo is near pure magenta
    warm = fit_palette(photo_histogram, 8, init=init, max_iter=4)
    assert np.all(warm.counts > 0)
    np.testing.assert_allclose(np.delete(warm.palette, 3, axis=0), np.delete(init, 3, axis=0), atol=8.0)


def test_warm_start_with_fewer_rows_seeds_the_rest(photo_histogram):
    init = fit_palette(photo_histogram, 4).palette
    warm = fit_palette(photo_histogram, 8, init=init)
    assert warm.palette.shape == (8, 3)
    assert np.all(warm.counts > 0)


def test_warm_start_rejects_a_palette_of_the_wrong_shape(photo_histogram):
    with pytest.raises(InputError):
        fit_palette(photo_histogram, 4, init=np.zeros((5, 3)))


def test_oklab_fit_returns_rgb_colours(photo_histogram):
    fit = fit_palette(photo_histogram, 16, space="oklab")
    assert fit.palette.shape == (16, 3)
    assert fit.palette.min() >= 0.0 and fit.palette.max() <= 255.0
    assert fit.distortion < fit_palette(photo_histogram, 2).distortion


def test_rgba_fit_clusters_alpha_too():
    image = np.zeros((2, 50, 4), np.uint8)
    image[0] = (100, 100, 100, 255)
    image[1] = (100, 100, 100, 40)
    fit = fit_palette(build_histogram(image), 2)
    assert sorted(fit.palette[:, 3].tolist()) == [40.0, 255.0]


@pytest.mark.parametrize("k", [1, 257, 2.5, True])
def test_k_outside_two_to_256_raises_input_error(photo_histogram, k):
    with pytest.raises(InputError):
        fit_palette(photo_histogram, k)


def test_unknown_space_raises_input_error(photo_histogram):
    with pytest.raises(InputError):
        fit_palette(photo_histogram, 4, space="hsv")


def test_kmeans_plus_plus_picks_distinct_points(photo_histogram):
    points = padded(photo_histogram.colors)
    centres = kmeans_plus_plus(points, photo_histogram.counts, 32, np.random.default_rng(0))
    assert len(np.unique(centres, axis=0)) == 32
    assert all((points == centre).all(axis=1).any() for centre in centres)


def test_replace_empty_clusters_reseeds_at_the_worst_served_point():
    points = padded(np.array([[0.0, 0, 0], [1.0, 0, 0], [100.0, 0, 0], [104.0, 0, 0]]))
    weights = np.array([1.0, 1.0, 1.0, 3.0])
    centres = padded(np.array([[0.5, 0, 0], [101.0, 0, 0], [50.0, 50, 50]]))
    labels = np.array([0, 0, 1, 1], np.int32)
    runner_up = np.array([1, 1, 0, 0], np.int32)
    sums = np.zeros((3, 4))
    cluster_weights = np.zeros(3)
    np.add.at(sums, labels, points * weights[:, None])
    np.add.at(cluster_weights, labels, weights)
    bounds = np.ones((4, 3))
    reseeded = replace_empty_clusters(
        points, points * weights[:, None], weights, centres, labels, runner_up, sums, cluster_weights, bounds
    )
    # Point 3 contributes 3 * 3² = 27, more than point 2's 1²: it moves to the empty cluster 2.
    assert reseeded == 1
    assert labels.tolist() == [0, 0, 1, 2]
    assert cluster_weights.tolist() == [2.0, 1.0, 3.0]


def test_relocations_never_raise_the_error(photo_histogram):
    data = _WeightedPoints.of(photo_histogram, "rgb")
    clustering = _Clustering.start(kmeans_plus_plus(data.points, data.weights, 16, np.random.default_rng(1)), len(data.weights))
    clustering.run_lloyd(data, 300)
    relocated = relocate_centres(data, clustering, 6)
    assert relocated.error <= clustering.error
