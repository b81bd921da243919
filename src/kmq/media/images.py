"""Still images in and out through Pillow: any mode Pillow reads becomes H×W×3 or H×W×4 uint8."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kmq.codec.framing import DEFAULT_MAX_PIXELS
from kmq.errors import InputError, LimitError

__all__ = ["as_pixels", "load_image", "max_pixels_from_env"]


def max_pixels_from_env() -> int:
    """The pixel limit for inputs: ``KMQ_MAX_PIXELS`` when set, else the documented default."""
    value = os.environ.get("KMQ_MAX_PIXELS")
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        raise InputError(f"KMQ_MAX_PIXELS must be a whole number, got {value!r}") from None
    if limit < 1:
        raise InputError(f"KMQ_MAX_PIXELS must be positive, got {limit}")
    return limit


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as an H×W×3 (RGB) or H×W×4 (RGBA) uint8 array.

    Grey, palette, 16-bit, CMYK and other modes are converted; only an image with some
    transparency keeps an alpha channel. The first frame of an animation is used, and an
    EXIF orientation is applied as viewers do.

    Parameters
    ----------
    path : path-like
        Any file Pillow reads (PNG, JPEG, WebP, TIFF, BMP, GIF, ...).
    max_pixels : int, optional
        Refuse larger images before decoding them (default: :func:`max_pixels_from_env`).

    Returns
    -------
    numpy.ndarray
        H×W×3 or H×W×4 uint8 pixels.

    Raises
    ------
    kmq.errors.InputError
        Missing, unreadable or truncated file, or not an image.
    kmq.errors.LimitError
        More pixels than ``max_pixels`` (a decompression bomb).
    """
    from PIL import Image, UnidentifiedImageError

    source = Path(path)
    limit = max_pixels_from_env() if max_pixels is None else max_pixels
    if source.is_dir():
        raise InputError(f"{source} is a directory, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                _check_pixels(width, height, limit, source)
                image.load()
                return as_pixels(image)
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except PermissionError:
        raise InputError(f"{source}: permission denied") from None
    except UnidentifiedImageError:
        raise InputError(f"{source} is not an image Pillow can read") from None
    except Image.DecompressionBombError:
        raise LimitError(f"{source} has too many pixels (limit {limit}; set KMQ_MAX_PIXELS or --max-pixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{source} is truncated or corrupt: {exc}") from None


def _check_pixels(width: int, height: int, limit: int, source: Any) -> None:
    if width < 1 or height < 1:
        raise InputError(f"{source} has no pixels ({width}×{height})")
    if width * height > limit:
        raise LimitError(
            f"{source} is {width}×{height} = {width * height} pixels, above the limit of {limit} "
            "(set KMQ_MAX_PIXELS or --max-pixels to allow it)"
        )


def as_pixels(image: Any) -> np.ndarray:
    """Turn a PIL image or an array into H×W×3 or H×W×4 uint8 pixels.

    Parameters
    ----------
    image : PIL.Image.Image or array_like
        A PIL image of any mode, or an array H×W (grey), H×W×1, H×W×3 or H×W×4.
        Arrays of uint16 are scaled to 8 bits; float arrays are taken as 0..1.

    Returns
    -------
    numpy.ndarray
        C-contiguous H×W×3 or H×W×4 uint8 array.
    """
    if isinstance(image, np.ndarray) or not hasattr(image, "mode"):
        return _array_pixels(np.asarray(image))
    return _pil_pixels(image)


def _array_pixels(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"expected an H×W, H×W×3 or H×W×4 image array, got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InputError(f"image has no pixels (shape {array.shape})")
    array = _to_uint8(array)
    channels = array.shape[2]
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    elif channels == 2:
        array = np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InputError("image array contains NaN or infinity")
        return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise InputError(f"integer image values must lie in 0..255, got {array.min()}..{array.max()}")
        return array.astype(np.uint8)
    raise InputError(f"unsupported image array type {array.dtype}")


def _pil_pixels(image: Any) -> np.ndarray:
    from PIL import ImageOps

    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block is no reason to refuse the pixels
        pass
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.int64)
        top = 65535 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255
        grey = np.clip((values * 255 + top // 2) // top, 0, 255).astype(np.uint8)
        return _array_pixels(grey)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        return _array_pixels(np.clip(values / top, 0, 1))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    pixels = np.asarray(image)
    if has_alpha and pixels[:, :, 3].min() == 255:
        pixels = pixels[:, :, :3]
    return np.ascontiguousarray(pixels)
