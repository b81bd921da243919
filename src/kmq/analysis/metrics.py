"""Quality and size metrics: PSNR, SSIM, bits per pixel and compression ratios."""

from __future__ import annotations

import math

import numpy as np

from kmq.errors import InputError

__all__ = ["bits_per_pixel", "compression_ratio", "mse", "psnr", "ssim"]


def _pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference)
    test = np.asarray(test)
    if reference.shape != test.shape:
        raise InputError(f"images differ in shape: {reference.shape} vs {test.shape}")
    if reference.size == 0:
        raise InputError("images have no pixels")
    return reference, test


def mse(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean squared error over all samples (uint8 units).

    Parameters
    ----------
    reference, test : numpy.ndarray
        Arrays of the same shape, values 0..255.
    """
    reference, test = _pair(reference, test)
    difference = reference.astype(np.float64) - test.astype(np.float64)
    return float(np.mean(difference * difference))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit images; ``inf`` when identical.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((2, 2, 3), np.uint8)
    >>> round(psnr(a, a + 1), 2)
    48.13
    """
    error = mse(reference, test)
    if error == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0 * 255.0 / error)


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    weights = np.exp(-(offsets * offsets) / (2.0 * sigma * sigma))
    return weights / weights.sum()


def _filter_valid(plane: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D plane with a 1-D window along both axes."""
    size = window.shape[0]
    rows = np.lib.stride_tricks.sliding_window_view(plane, size, axis=0) @ window
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=1) @ window


def ssim(reference: np.ndarray, test: np.ndarray, *, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004): Gaussian window σ=1.5 (11 taps), mean over channels.

    Parameters
    ----------
    reference, test : numpy.ndarray
        H×W or H×W×C arrays of the same shape, values 0..255.
    sigma : float
        Standard deviation of the Gaussian window; the window is shrunk for tiny images.

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; 1.0 for identical images.
    """
    reference, test = _pair(reference, test)
    if reference.ndim == 2:
        reference, test = reference[:, :, None], test[:, :, None]
    height, width = reference.shape[:2]
    size = min(11, height, width)
    if size % 2 == 0:
        size -= 1
    window = _gaussian_window(size, sigma)
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    scores = []
    for channel in range(reference.shape[2]):
        x = reference[:, :, channel].astype(np.float64)
        y = test[:, :, channel].astype(np.float64)
        mean_x = _filter_valid(x, window)
        mean_y = _filter_valid(y, window)
        var_x = _filter_valid(x * x, window) - mean_x * mean_x
        var_y = _filter_valid(y * y, window) - mean_y * mean_y
        cov = _filter_valid(x * y, window) - mean_x * mean_y
        numerator = (2 * mean_x * mean_y + c1) * (2 * cov + c2)
        denominator = (mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)
        scores.append(float(np.mean(numerator / denominator)))
    return float(np.mean(scores))


def bits_per_pixel(nbytes: int, width: int, height: int) -> float:
    """Bits on disk per pixel: ``8 * nbytes / (width * height)``."""
    return 8.0 * nbytes / (width * height)


def compression_ratio(original_bytes: int, compressed_bytes: int) -> float:
    """How many times smaller the compressed size is (``original / compressed``)."""
    return original_bytes / compressed_bytes if compressed_bytes else math.inf
