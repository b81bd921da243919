"""Metrics: PSNR and SSIM as the literature defines them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kmq.analysis.metrics import bits_per_pixel, psnr, ssim


def test_psnr_of_identical_images_is_infinite(photo):
    assert psnr(photo, photo) == math.inf


def test_psnr_of_a_constant_error_of_one_level():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))


def test_ssim_of_identical_images_is_one(photo):
    assert ssim(photo, photo) == pytest.approx(1.0)


def test_ssim_matches_scikit_image_with_the_papers_window(photo):
    metrics = pytest.importorskip("skimage.metrics")
    noisy = np.clip(photo + np.random.default_rng(0).normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
    expected = metrics.structural_similarity(
        photo, noisy, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(photo, noisy) == pytest.approx(expected, abs=1e-9)


def test_ssim_of_a_tiny_image_is_defined():
    a = np.zeros((1, 1, 3), np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)


def test_bits_per_pixel_counts_bytes_on_disk():
    assert bits_per_pixel(1000, 100, 80) == 1.0
