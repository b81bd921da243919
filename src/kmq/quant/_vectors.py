"""Colour vectors padded to four coordinates for the numba kernels.

With a fixed length of four, a kernel's channel loop is unrolled and vectorised by the compiler
(a loop over a run-time channel count is not), and one compiled version serves RGB and RGBA:
for RGB the fourth coordinate is zero everywhere, which leaves every distance unchanged.
"""

from __future__ import annotations

import numba
import numpy as np

WIDTH = 4


def padded(values: np.ndarray) -> np.ndarray:
    """n×C (C <= 4) numbers as an n×4 C-contiguous float64 array, zeros after column C."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros((values.shape[0], WIDTH))
    out[:, : values.shape[1]] = values
    return out


@numba.njit(cache=True)
def squared_distances_to_all(point, by_channel, out):
    """Squared distance from one padded point to each of n padded vectors stored 4×n."""
    p0 = point[0]
    p1 = point[1]
    p2 = point[2]
    p3 = point[3]
    for j in range(by_channel.shape[1]):
        d0 = p0 - by_channel[0, j]
        d1 = p1 - by_channel[1, j]
        d2 = p2 - by_channel[2, j]
        d3 = p3 - by_channel[3, j]
        out[j] = d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3


@numba.njit(cache=True)
def _minimum(values):
    smallest = np.inf
    for j in range(values.shape[0]):
        smallest = min(smallest, values[j])
    return smallest


@numba.njit(cache=True)
def _smallest(values):
    """Position and value of the smallest entry: a branch-free minimum (it vectorises), then
    a scan for its first position."""
    smallest = _minimum(values)
    position = 0
    while position < values.shape[0] - 1 and values[position] != smallest:
        position += 1
    return position, smallest


@numba.njit(cache=True)
def two_smallest(values):
    """Position of the smallest value, the smallest, and the second smallest (inf if none)."""
    position, smallest = _smallest(values)
    values[position] = np.inf
    second = _minimum(values)
    values[position] = smallest
    return position, smallest, second


@numba.njit(cache=True)
def three_smallest(values):
    """Positions and values of the two smallest entries, and the third smallest value."""
    first, first_value = _smallest(values)
    values[first] = np.inf
    second, second_value, third_value = two_smallest(values)
    values[first] = first_value
    return first, first_value, second, second_value, third_value
