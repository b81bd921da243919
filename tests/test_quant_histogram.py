"""Colour histogram: exact counts and sums per bin, pixel-to-bin map, merging to coarser bins."""

from __future__ import annotations

import numpy as np
import pytest

from kmq.errors import InputError
from kmq.quant.histogram import build_histogram, coarsen


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)


def test_counts_add_up_to_the_pixel_count(noise):
    assert build_histogram(noise, bits=5).counts.sum() == 40 * 50


def test_bin_sums_are_the_exact_sums_of_their_pixels(noise):
    histogram = build_histogram(noise, bits=4)
    rows = noise.reshape(-1, 3).astype(np.float64)
    for channel in range(3):
        expected = np.bincount(histogram.bin_of_pixel, weights=rows[:, channel])
        np.testing.assert_array_equal(histogram.color_sums[:, channel], expected)


def test_bin_colours_are_the_exact_means_of_their_pixels(noise):
    histogram = build_histogram(noise, bits=3)
    np.testing.assert_allclose(histogram.colors * histogram.counts[:, None], histogram.color_sums)


def test_squared_norm_sums_are_exact(noise):
    histogram = build_histogram(noise, bits=5)
    norms = (noise.reshape(-1, 3).astype(np.float64) ** 2).sum(axis=1)
    np.testing.assert_array_equal(histogram.squared_norm_sums, np.bincount(histogram.bin_of_pixel, weights=norms))


def test_eight_bits_give_the_distinct_colours(noise):
    histogram = build_histogram(noise, bits=8)
    assert len(histogram.counts) == len(np.unique(noise.reshape(-1, 3), axis=0))
    assert histogram.is_exact


def test_every_pixel_lies_in_its_bin(noise):
    histogram = build_histogram(noise, bits=5)
    levels = noise.reshape(-1, 3) >> 3
    bin_levels = np.floor(histogram.colors).astype(np.uint8) >> 3
    np.testing.assert_array_equal(bin_levels[histogram.bin_of_pixel], levels)


def test_bins_are_numbered_by_first_appearance():
    image = np.array([[[9, 9, 9], [200, 0, 0], [9, 9, 9], [0, 0, 200]]], dtype=np.uint8)
    assert build_histogram(image).bin_of_pixel.tolist() == [0, 1, 0, 2]


def test_fully_transparent_pixels_share_one_bin():
    image = np.array([[[10, 20, 30, 0], [200, 100, 0, 0], [5, 5, 5, 255]]], dtype=np.uint8)
    histogram = build_histogram(image)
    assert histogram.counts.tolist() == [2.0, 1.0]
    assert histogram.colors[0].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_rgba_bins_separate_by_alpha():
    image = np.array([[[10, 10, 10, 255], [10, 10, 10, 128]]], dtype=np.uint8)
    assert len(build_histogram(image).counts) == 2


def test_hashed_and_direct_tables_agree(noise):
    rgba = np.dstack([noise, noise[..., :1]])
    direct = build_histogram(rgba, bits=4)
    hashed = coarsen(build_histogram(rgba, bits=8), 4)
    np.testing.assert_array_equal(direct.color_sums, hashed.color_sums)
    np.testing.assert_array_equal(direct.bin_of_pixel, hashed.bin_of_pixel)


def test_coarsen_equals_binning_at_fewer_bits(noise):
    merged = coarsen(build_histogram(noise, bits=6), 4)
    direct = build_histogram(noise, bits=4)
    np.testing.assert_array_equal(merged.color_sums, direct.color_sums)
    np.testing.assert_array_equal(merged.squared_norm_sums, direct.squared_norm_sums)
    np.testing.assert_array_equal(merged.pure, direct.pure)
    np.testing.assert_array_equal(merged.bin_of_pixel, direct.bin_of_pixel)


def test_strided_input_gives_the_same_histogram(noise):
    wide = np.zeros((40, 100, 3), np.uint8)
    wide[:, ::2] = noise
    strided = wide[:, ::2]
    np.testing.assert_array_equal(build_histogram(strided).color_sums, build_histogram(noise).color_sums)


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((4, 4, 3), np.float32),
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
    ],
    ids=["float", "grey", "two-channels", "empty"],
)
def test_unusable_pixels_raise_input_error(pixels):
    with pytest.raises(InputError):
        build_histogram(pixels)


def test_bits_outside_one_to_eight_raise_input_error(noise):
    with pytest.raises(InputError):
        build_histogram(noise, bits=9)
