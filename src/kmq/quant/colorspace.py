"""Colour spaces for quantization: sRGB (0..255) <-> linear light <-> OKLab, alpha carried along.

k-means can cluster in OKLab for perceptual palettes; every conversion here works on arrays of
shape (..., 3) or (..., 4) whose last axis is R, G, B (and A), and the per-pixel helpers are numba
functions that the remap kernels call inline.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "srgb_to_linear",
    "linear_to_srgb",
    "linear_to_oklab",
    "oklab_to_linear",
    "srgb_to_oklab",
    "oklab_to_srgb",
    "to_space",
    "from_space",
]

# OKLab as defined by Björn Ottosson (2020): linear sRGB -> LMS cone response -> cube root -> Lab.
_LINEAR_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_LMS_CUBE_ROOT_TO_LAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
_LAB_TO_LMS_CUBE_ROOT = np.linalg.inv(_LMS_CUBE_ROOT_TO_LAB)
_LMS_TO_LINEAR = np.linalg.inv(_LINEAR_TO_LMS)

# Alpha travels as a fourth OKLab coordinate on the same 0..1 scale as lightness, so a step
# in opacity weighs about as much as the same step in lightness.
_ALPHA_SCALE = 1.0 / 255.0


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve.

    Parameters
    ----------
    srgb : ndarray
        Encoded values on the 0..255 scale, any shape.

    Returns
    -------
    ndarray
        Linear-light values on the 0..1 scale, float64, same shape.

    Examples
    --------
    >>> float(srgb_to_linear(np.array([255.0]))[0])
    1.0
    """
    unit = np.asarray(srgb, dtype=np.float64) / 255.0
    return np.where(unit <= 0.04045, unit / 12.92, ((unit + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Apply the sRGB transfer curve.

    Parameters
    ----------
    linear : ndarray
        Linear-light values on the 0..1 scale (values outside are clipped), any shape.

    Returns
    -------
    ndarray
        Encoded values on the 0..255 scale, float64 (not rounded), same shape.

    Examples
    --------
    >>> round(float(linear_to_srgb(np.array([0.5]))[0]), 1)
    187.5
    """
    unit = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    encoded = np.where(unit <= 0.0031308, unit * 12.92, 1.055 * unit ** (1.0 / 2.4) - 0.055)
    return encoded * 255.0


def linear_to_oklab(linear: np.ndarray) -> np.ndarray:
    """Convert linear-light RGB (..., 3) on the 0..1 scale to OKLab (..., 3).

    Examples
    --------
    >>> np.round(linear_to_oklab(np.array([1.0, 1.0, 1.0])), 4).tolist()
    [1.0, 0.0, 0.0]
    """
    lms = np.asarray(linear, dtype=np.float64) @ _LINEAR_TO_LMS.T
    return np.cbrt(lms) @ _LMS_CUBE_ROOT_TO_LAB.T


def oklab_to_linear(lab: np.ndarray) -> np.ndarray:
    """Convert OKLab (..., 3) to linear-light RGB (..., 3), unclipped.

    Examples
    --------
    >>> np.round(oklab_to_linear(np.array([1.0, 0.0, 0.0])), 4).tolist()
    [1.0, 1.0, 1.0]
    """
    lms_cube_root = np.asarray(lab, dtype=np.float64) @ _LAB_TO_LMS_CUBE_ROOT.T
    return lms_cube_root**3 @ _LMS_TO_LINEAR.T


def srgb_to_oklab(srgb: np.ndarray) -> np.ndarray:
    """Convert sRGB(A) colours on the 0..255 scale to OKLab(A).

    Parameters
    ----------
    srgb : ndarray
        Shape (..., 3) or (..., 4); alpha, when present, becomes a fourth coordinate on 0..1.

    Returns
    -------
    ndarray
        float64 array of the same shape: L, a, b (and alpha).

    Examples
    --------
    >>> np.round(srgb_to_oklab(np.array([[0, 0, 0], [255, 255, 255]])), 4).tolist()
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    """
    srgb = np.asarray(srgb, dtype=np.float64)
    lab = linear_to_oklab(srgb_to_linear(srgb[..., :3]))
    if srgb.shape[-1] == 4:
        lab = np.concatenate([lab, srgb[..., 3:] * _ALPHA_SCALE], axis=-1)
    return lab


def oklab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """Convert OKLab(A) to sRGB(A) on the 0..255 scale, clipped to the gamut, not rounded.

    Examples
    --------
    >>> np.round(oklab_to_srgb(np.array([0.5, 0.0, 0.0, 1.0]))).tolist()
    [99.0, 99.0, 99.0, 255.0]
    """
    lab = np.asarray(lab, dtype=np.float64)
    srgb = linear_to_srgb(oklab_to_linear(lab[..., :3]))
    if lab.shape[-1] == 4:
        alpha = np.clip(lab[..., 3:] / _ALPHA_SCALE, 0.0, 255.0)
        srgb = np.concatenate([srgb, alpha], axis=-1)
    return srgb


def to_space(srgb: np.ndarray, space: str) -> np.ndarray:
    """Colours on the 0..255 scale as float64 coordinates of ``space`` ("rgb" or "oklab")."""
    if space == "oklab":
        return srgb_to_oklab(srgb)
    return np.asarray(srgb, dtype=np.float64)


def from_space(points: np.ndarray, space: str) -> np.ndarray:
    """Coordinates of ``space`` back to colours on the 0..255 scale (float64, clipped)."""
    if space == "oklab":
        return oklab_to_srgb(points)
    return np.clip(np.asarray(points, dtype=np.float64), 0.0, 255.0)


# Per-pixel conversion inside numba kernels (dithering in OKLab converts each diffused colour).
_LINEAR_TO_LMS_NB = np.ascontiguousarray(_LINEAR_TO_LMS)
_LMS_CUBE_ROOT_TO_LAB_NB = np.ascontiguousarray(_LMS_CUBE_ROOT_TO_LAB)


@numba.njit(cache=True, inline="always")
def _encoded_to_linear(value: float) -> float:
    unit = min(max(value, 0.0), 255.0) / 255.0
    if unit <= 0.04045:
        return unit / 12.92
    return ((unit + 0.055) / 1.055) ** 2.4


@numba.njit(cache=True)
def srgb_pixel_to_oklab(colour: np.ndarray, out: np.ndarray) -> None:
    """Write the OKLab(A) coordinates of one sRGB(A) colour (float, 0..255) into ``out``."""
    red = _encoded_to_linear(colour[0])
    green = _encoded_to_linear(colour[1])
    blue = _encoded_to_linear(colour[2])
    to_lms = _LINEAR_TO_LMS_NB
    long_cone = np.cbrt(to_lms[0, 0] * red + to_lms[0, 1] * green + to_lms[0, 2] * blue)
    medium_cone = np.cbrt(to_lms[1, 0] * red + to_lms[1, 1] * green + to_lms[1, 2] * blue)
    short_cone = np.cbrt(to_lms[2, 0] * red + to_lms[2, 1] * green + to_lms[2, 2] * blue)
    to_lab = _LMS_CUBE_ROOT_TO_LAB_NB
    for row in range(3):
        out[row] = to_lab[row, 0] * long_cone + to_lab[row, 1] * medium_cone + to_lab[row, 2] * short_cone
    if colour.shape[0] == 4:
        out[3] = min(max(colour[3], 0.0), 255.0) * _ALPHA_SCALE
