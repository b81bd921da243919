"""Parameter checks shared by the quantizer's public functions, each raising InputError."""

from __future__ import annotations

import numpy as np

from kmq.errors import InputError

SPACES = ("rgb", "oklab")
DITHERS = ("none", "fs", "ordered")
MIN_COLORS = 2
MAX_COLORS = 256


def check_colors(k: int) -> None:
    """Raise :class:`InputError` unless ``k`` is an integer from 2 to 256."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not MIN_COLORS <= k <= MAX_COLORS:
        raise InputError(f"k must be an integer from {MIN_COLORS} to {MAX_COLORS}, got {k!r}")


def check_space(space: str) -> None:
    """Raise :class:`InputError` unless ``space`` is one of :data:`SPACES`."""
    if space not in SPACES:
        raise InputError(f"space must be one of {', '.join(SPACES)}; got {space!r}")


def check_dither(dither: str) -> None:
    """Raise :class:`InputError` unless ``dither`` is one of :data:`DITHERS`."""
    if dither not in DITHERS:
        raise InputError(f"dither must be one of {', '.join(DITHERS)}; got {dither!r}")
