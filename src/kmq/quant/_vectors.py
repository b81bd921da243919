"""Colour vectors padded to four coordinates for the numba kernels.

With a fixed length of four, a kernel's channel loop is unrolled and vectorised by the compiler
(a loop over a run-time channel count is not), and one compiled version serves RGB and RGBA:
for RGB the fourth coordinate is zero everywhere, which leaves every distance unchanged.
"""

from __future__ import annotations

import numpy as np

WIDTH = 4


def padded(values: np.ndarray) -> np.ndarray:
    """n×C (C <= 4) numbers as an n×4 C-contiguous float64 array, zeros after column C."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros((values.shape[0], WIDTH))
    out[:, : values.shape[1]] = values
    return out
