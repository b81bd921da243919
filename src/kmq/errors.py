"""The few exceptions kmq raises; the command line turns each into one ``error:`` line."""

from __future__ import annotations

__all__ = ["KmqError", "InputError", "LimitError", "FormatError", "OutputError"]


class KmqError(Exception):
    """Base class of every error kmq raises on purpose."""


class InputError(KmqError, ValueError):
    """An input or a parameter is unusable: a missing file, not an image, K out of range."""


class LimitError(InputError):
    """An input is larger than a configured limit (pixels, frames, bytes)."""


class FormatError(KmqError, ValueError):
    """Coded data (.kmq, .kmqv, a live packet) is corrupt, truncated or of an unknown version."""


class OutputError(KmqError, OSError):
    """An output cannot be written: it exists without ``force``, or its folder is unwritable."""
