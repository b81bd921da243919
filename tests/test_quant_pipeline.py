"""quantize_pixels end to end: palette size, exactness, losslessness, RGBA, OKLab, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kmq.errors import InputError
from kmq.quant import quantize_pixels


def psnr(image: np.ndarray, reconstruction: np.ndarray) -> float:
    error = np.mean((image.astype(np.float64) - reconstruction) ** 2)
    return float(10 * np.log10(255**2 / error))


def assert_each_pixel_has_its_nearest_entry(pixels, palette, indices):
    rows = pixels.reshape(-1, pixels.shape[2]).astype(np.float64)
    distances = ((rows[:, None, :] - palette.astype(np.float64)[None]) ** 2).sum(axis=2)
    chosen = distances[np.arange(len(distances)), indices.reshape(-1)]
    np.testing.assert_array_equal(chosen, distances.min(axis=1))


def test_palette_has_at_most_k_entries(photo):
    palette, indices = quantize_pixels(photo, 16)
    assert palette.shape[0] <= 16 and palette.dtype == np.uint8
    assert indices.shape == photo.shape[:2] and indices.dtype == np.uint8


def test_every_pixel_gets_its_nearest_palette_entry(photo):
    palette, indices = quantize_pixels(photo, 32)
    assert_each_pixel_has_its_nearest_entry(photo, palette, indices)


def test_every_entry_is_used(photo):
    palette, indices = quantize_pixels(photo, 64, dither="fs")
    assert len(np.unique(indices)) == len(palette)


def test_same_seed_gives_the_same_bytes(photo):
    first = quantize_pixels(photo, 64, seed=11)
    second = quantize_pixels(photo, 64, seed=11)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_more_colours_reconstruct_better(photo):
    scores = []
    for k in (2, 16, 256):
        palette, indices = quantize_pixels(photo, k)
        scores.append(psnr(photo, palette[indices]))
    assert scores[0] < scores[1] < scores[2]


def test_k_256_reaches_high_fidelity_on_a_photo(photo):
    palette, indices = quantize_pixels(photo, 256)
    assert len(palette) == 256
    assert psnr(photo, palette[indices]) > 37.0


def test_two_colours_split_a_two_tone_image():
    image = np.zeros((10, 10, 3), np.uint8)
    image[:, 5:] = (200, 180, 20)
    palette, indices = quantize_pixels(image, 2)
    np.testing.assert_array_equal(palette[indices], image)


def test_single_pixel_image_is_kept_exactly():
    image = np.array([[[12, 34, 56]]], dtype=np.uint8)
    palette, indices = quantize_pixels(image, 2)
    assert palette.tolist() == [[12, 34, 56]] and indices.tolist() == [[0]]


def test_fewer_distinct_colours_than_k_is_lossless():
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 256, size=(40, 3), dtype=np.uint8)
    image = colours[rng.integers(0, 40, size=(300, 200))]
    palette, indices = quantize_pixels(image, 64)
    assert len(palette) == 40
    np.testing.assert_array_equal(palette[indices], image)


def test_near_colours_sharing_a_bin_stay_lossless():
    # Neighbouring values fall into one bin of a reduced histogram; they must still be kept.
    image = np.zeros((200, 200, 3), np.uint8)
    image[:, :100] = (100, 100, 100)
    image[:, 100:] = (101, 100, 100)
    palette, indices = quantize_pixels(image, 2)
    np.testing.assert_array_equal(palette[indices], image)


def test_rgba_quantizes_alpha_with_the_colour():
    image = np.zeros((40, 40, 4), np.uint8)
    image[..., :3] = 150
    image[:20, :, 3] = 255
    image[20:, :, 3] = 30
    palette, indices = quantize_pixels(image, 2)
    np.testing.assert_array_equal(palette[indices], image)


def test_fully_transparent_pixels_become_transparent_black():
    image = np.zeros((8, 8, 4), np.uint8)
    image[..., :3] = (10, 200, 30)
    image[:4, :, 3] = 255
    palette, indices = quantize_pixels(image, 4)
    assert palette[indices[7, 7]].tolist() == [0, 0, 0, 0]


def test_rgba_photo_keeps_the_nearest_entry_property(photo):
    alpha = np.linspace(1, 255, photo.shape[1]).astype(np.uint8)[None, :].repeat(photo.shape[0], 0)
    rgba = np.dstack([photo, alpha])
    palette, indices = quantize_pixels(rgba, 48)
    assert_each_pixel_has_its_nearest_entry(rgba, palette, indices)


def test_oklab_palette_reconstructs_the_photo(photo):
    palette, indices = quantize_pixels(photo, 32, space="oklab")
    assert len(palette) <= 32
    assert psnr(photo, palette[indices]) > 27.0


def test_strided_input_gives_the_same_result(photo):
    flipped = photo[:, ::-1]
    palette, indices = quantize_pixels(flipped, 16)
    copy_palette, copy_indices = quantize_pixels(np.ascontiguousarray(flipped), 16)
    np.testing.assert_array_equal(palette, copy_palette)
    np.testing.assert_array_equal(indices, copy_indices)


@pytest.mark.parametrize("k", [1, 257, -3])
def test_k_outside_two_to_256_raises_input_error(photo, k):
    with pytest.raises(InputError):
        quantize_pixels(photo, k)


@pytest.mark.parametrize("option", [{"dither": "spiral"}, {"space": "lab"}])
def test_unknown_option_raises_input_error(photo, option):
    with pytest.raises(InputError):
        quantize_pixels(photo, 8, **option)


small_images = st.integers(1, 12).flatmap(
    lambda height: st.integers(1, 12).flatmap(
        lambda width: st.sampled_from([3, 4]).flatmap(
            lambda channels: arrays(np.uint8, (height, width, channels), elements=st.integers(0, 255))
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(image=small_images, k=st.integers(2, 256), dither=st.sampled_from(["none", "fs", "ordered"]))
def test_small_random_images_give_valid_output(image, k, dither):
    palette, indices = quantize_pixels(image, k, dither=dither)
    assert 1 <= len(palette) <= k
    assert indices.shape == image.shape[:2]
    assert indices.max() < len(palette)


@settings(max_examples=60, deadline=None)
@given(image=small_images, k=st.integers(2, 16))
def test_small_random_images_map_each_pixel_to_its_nearest_entry(image, k):
    canonical = image.copy()
    if image.shape[2] == 4:
        canonical[canonical[..., 3] == 0] = 0
    palette, indices = quantize_pixels(image, k)
    assert_each_pixel_has_its_nearest_entry(canonical, palette, indices)


@settings(max_examples=40, deadline=None)
@given(image=small_images)
def test_small_images_with_few_colours_are_lossless(image):
    canonical = image.copy()
    if image.shape[2] == 4:
        canonical[canonical[..., 3] == 0] = 0
    distinct = len(np.unique(canonical.reshape(-1, image.shape[2]), axis=0))
    k = max(2, distinct)
    palette, indices = quantize_pixels(image, k)
    np.testing.assert_array_equal(palette[indices], canonical)
