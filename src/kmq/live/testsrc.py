"""The ``testsrc`` live source's picture: a slow pan and zoom across a real photograph, at any size."""

from __future__ import annotations

import math

import numba
import numpy as np

from kmq.errors import InputError

__all__ = ["TestPattern"]

#: Pan speed in source pixels per second, across and down (a camera slowly sweeping a scene).
PAN_SPEED = (57.0, 23.0)
#: Zoom: source pixels per output pixel swing between these over ``ZOOM_PERIOD`` seconds.
ZOOM_RANGE = (0.8, 1.25)
ZOOM_PERIOD = 17.0


class TestPattern:
    """Renders frames of a pan and zoom across a photograph, mirrored so that the scene never ends.

    The photograph is tiled with mirrored copies (so its edges meet without seams) and a window
    of the requested size moves across the tiles along a slow path while the scale swings in and
    out. Every frame is real photographic content and every pixel moves, so compression and speed
    figures measured on it are not flattered by flat colours or a still picture.

    Parameters
    ----------
    width, height : int
        Frame size.
    photo : numpy.ndarray, optional
        H×W×3 uint8 picture to pan across (default: the bundled photograph,
        :func:`kmq.media.demo.demo_photo_path`).

    Examples
    --------
    >>> pattern = TestPattern(64, 48)
    >>> pattern.frame(0.0).shape
    (48, 64, 3)
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, width: int, height: int, *, photo: np.ndarray | None = None) -> None:
        if width < 1 or height < 1:
            raise InputError(f"test pattern size must be positive, got {width}×{height}")
        if photo is None:
            from kmq.media.demo import demo_photo_path
            from kmq.media.images import load_image

            photo = load_image(demo_photo_path())
        photo = np.ascontiguousarray(np.asarray(photo)[:, :, :3], dtype=np.uint8)
        if photo.ndim != 3 or photo.shape[0] < 2 or photo.shape[1] < 2:
            raise InputError(f"test pattern photo must be H×W×3 with sides of 2 or more, got shape {photo.shape}")
        self.width = width
        self.height = height
        self.photo = photo

    def frame(self, seconds: float, out: np.ndarray | None = None) -> np.ndarray:
        """The picture at time ``seconds`` (H×W×3 uint8), written into ``out`` when given."""
        if out is None:
            out = np.empty((self.height, self.width, 3), np.uint8)
        swing = 0.5 * (1 - math.cos(2 * math.pi * seconds / ZOOM_PERIOD))
        step = ZOOM_RANGE[0] + (ZOOM_RANGE[1] - ZOOM_RANGE[0]) * swing
        # The window's centre moves at a steady speed; the zoom is about that centre.
        centre_x = PAN_SPEED[0] * seconds + 0.5 * self.width
        centre_y = PAN_SPEED[1] * seconds + 0.5 * self.height + 40.0 * math.sin(2 * math.pi * seconds / 11.0)
        columns = _mirrored(centre_x + (np.arange(self.width) - 0.5 * self.width) * step, self.photo.shape[1])
        rows = _mirrored(centre_y + (np.arange(self.height) - 0.5 * self.height) * step, self.photo.shape[0])
        _gather(self.photo, rows, columns, out)
        return out


def _mirrored(positions: np.ndarray, size: int) -> np.ndarray:
    """Source coordinates on a plane tiled with the picture and its mirror images: 0..size-1."""
    cells = np.floor(positions).astype(np.int64) % (2 * size)
    return np.where(cells < size, cells, 2 * size - 1 - cells).astype(np.int32)


@numba.njit(cache=True, nogil=True)
def _gather(photo, rows, columns, out):
    for y in range(out.shape[0]):
        source = photo[rows[y]]
        for x in range(out.shape[1]):
            pixel = source[columns[x]]
            out[y, x, 0] = pixel[0]
            out[y, x, 1] = pixel[1]
            out[y, x, 2] = pixel[2]
