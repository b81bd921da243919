"""Remap: every pixel's exact nearest entry, dithering, OKLab, palette checks."""

from __future__ import annotations

import numpy as np
import pytest

from kmq.errors import InputError
from kmq.quant import quantize_pixels, remap
from kmq.quant.colorspace import srgb_to_oklab


def nearest_distances(pixels: np.ndarray, palette: np.ndarray, space: str = "rgb") -> np.ndarray:
    """Squared distance from every pixel to every entry, in ``space`` (brute force)."""
    rows = pixels.reshape(-1, pixels.shape[2]).astype(np.float64)
    entries = palette.astype(np.float64)
    if space == "oklab":
        rows, entries = srgb_to_oklab(rows), srgb_to_oklab(entries)
    return ((rows[:, None, :] - entries[None]) ** 2).sum(axis=2)


def assert_nearest(pixels, palette, indices, space="rgb"):
    distances = nearest_distances(pixels, palette, space)
    chosen = distances[np.arange(len(distances)), indices.reshape(-1)]
    # Ties may go either way: the chosen entry must be as near as the nearest.
    np.testing.assert_allclose(chosen, distances.min(axis=1), rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def photo_palette(photo):
    return quantize_pixels(photo, 64)[0]


def test_every_photo_pixel_gets_its_nearest_entry(photo, photo_palette):
    assert_nearest(photo, photo_palette, remap(photo, photo_palette))


@pytest.mark.parametrize("k", [2, 7, 256])
def test_every_noise_pixel_gets_its_nearest_entry(k):
    rng = np.random.default_rng(k)
    pixels = rng.integers(0, 256, size=(120, 150, 3), dtype=np.uint8)
    palette = rng.integers(0, 256, size=(k, 3), dtype=np.uint8)
    assert_nearest(pixels, palette, remap(pixels, palette))


def test_every_rgba_pixel_gets_its_nearest_entry():
    rng = np.random.default_rng(4)
    pixels = rng.integers(1, 256, size=(90, 90, 4), dtype=np.uint8)
    palette = rng.integers(0, 256, size=(40, 4), dtype=np.uint8)
    assert_nearest(pixels, palette, remap(pixels, palette))


def test_nearest_is_measured_in_oklab_when_asked(photo, photo_palette):
    crop = photo[:64, :64]
    assert_nearest(crop, photo_palette, remap(crop, photo_palette, space="oklab"), space="oklab")


def test_duplicate_palette_entries_are_allowed(photo):
    palette = np.array([[0, 0, 0], [0, 0, 0], [255, 255, 255]], dtype=np.uint8)
    assert_nearest(photo, palette, remap(photo, palette))


def test_single_entry_palette_maps_everything_to_it(photo):
    assert np.all(remap(photo, np.array([[9, 9, 9]], dtype=np.uint8)) == 0)


@pytest.mark.parametrize("dither", ["fs", "ordered"])
@pytest.mark.parametrize("space", ["rgb", "oklab"])
def test_dithered_indices_point_into_the_palette(photo, photo_palette, dither, space):
    indices = remap(photo[:80, :100], photo_palette[:8], dither=dither, space=space)
    assert indices.shape == (80, 100) and indices.dtype == np.uint8
    assert indices.max() < 8


def grey_gradient() -> np.ndarray:
    ramp = np.rint(np.linspace(0, 255, 256)).astype(np.uint8)
    return np.repeat(np.broadcast_to(ramp[None, :, None], (64, 256, 1)), 3, axis=2)


def local_mean_error(image: np.ndarray, reconstruction: np.ndarray, block: int = 8) -> float:
    """Mean absolute difference of 8×8 block averages: what an eye sees from a distance."""
    height, width = image.shape[0] // block * block, image.shape[1] // block * block

    def blocks(values):
        values = values[:height, :width].astype(np.float64)
        return values.reshape(height // block, block, width // block, block, -1).mean(axis=(1, 3))

    return float(np.abs(blocks(image) - blocks(reconstruction)).mean())


@pytest.mark.parametrize("dither", ["fs", "ordered"])
def test_dithering_lowers_the_mean_error_on_a_smooth_gradient(dither):
    image = grey_gradient()
    palette = np.array([[0, 0, 0], [85, 85, 85], [170, 170, 170], [255, 255, 255]], np.uint8)
    plain = palette[remap(image, palette)]
    dithered = palette[remap(image, palette, dither=dither)]
    assert local_mean_error(image, dithered) < 0.5 * local_mean_error(image, plain)


@pytest.mark.parametrize(
    "palette",
    [np.zeros((0, 3)), np.zeros((4, 4)), np.full((2, 3), 300), np.full((2, 3), np.nan), np.zeros((257, 3))],
    ids=["empty", "wrong-channels", "out-of-range", "nan", "too-many"],
)
def test_unusable_palette_raises_input_error(photo, palette):
    with pytest.raises(InputError):
        remap(photo, palette)


def test_unknown_dither_raises_input_error(photo, photo_palette):
    with pytest.raises(InputError):
        remap(photo, photo_palette, dither="random")
