"""``kmq info``: describe a coded file (dimensions, K, bits per pixel, sizes, ratios) without decoding it all."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from kmq.codec import image as image_codec
from kmq.errors import InputError
from kmq.media.files import read_input_bytes

__all__ = ["describe_file"]


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """Facts about a .kmq or .kmqv file, in display order.

    Parameters
    ----------
    path : path-like
        A .kmq image or a .kmqv video.

    Returns
    -------
    dict
        format, width, height, channels, k, bits per index (packed), bits per pixel on disk,
        sizes, and ratios against raw RGB and (when recorded) the original input file.
    """
    source = Path(path)
    if _starts_with(source, b"KMQV"):
        from kmq.media.video import describe_kmqv

        return describe_kmqv(source)
    data = read_input_bytes(source)
    if data[:4] == image_codec.MAGIC[:4]:
        return _describe_image(source, data)
    raise InputError(f"{source} is not a .kmq or .kmqv file")


def _starts_with(source: Path, magic: bytes) -> bool:
    """Whether a readable file begins with ``magic`` (errors are left to the full read)."""
    try:
        with open(source, "rb") as stream:
            return stream.read(len(magic)) == magic
    except OSError:
        return False


def _describe_image(source: Path, data: bytes) -> dict[str, Any]:
    info = image_codec.image_info(data)
    pixels = info.width * info.height
    raw = pixels * 3
    facts: dict[str, Any] = {
        "file": str(source),
        "format": "kmq image",
        "width": info.width,
        "height": info.height,
        "channels": info.channels,
        "k": info.k,
        "coding": info.method,
        "bits_per_index_packed": info.bits_per_index,
        "bits_per_pixel": 8.0 * len(data) / pixels,
        "file_bytes": len(data),
        "index_data_bytes": info.payload_bytes,
        "raw_rgb_bytes": raw,
        "ratio_vs_raw_rgb": raw / len(data),
    }
    source_bytes = getattr(info, "source_bytes", None)
    if source_bytes:
        facts["input_file_bytes"] = source_bytes
        facts["ratio_vs_input_file"] = source_bytes / len(data)
    if not math.isfinite(facts["bits_per_pixel"]):
        raise InputError(f"{source} declares no pixels")
    return facts
