"""``kmq demo``: the main job on a real photograph that an installed package ships."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kmq.analysis.metrics import psnr, ssim
from kmq.errors import InputError, OutputError
from kmq.media.files import write_bytes_atomic
from kmq.media.images import load_image
from kmq.media.still import encode_image, quantize

__all__ = ["demo_photo_path", "run_demo"]


def demo_photo_path() -> Path:
    """The built-in photograph: Grace Hopper's portrait (public domain), shipped by matplotlib."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the demo photograph ships with matplotlib, which is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise InputError(f"the demo photograph is missing from matplotlib's sample data ({path})")
    return path


def _ppm_bytes(pixels: np.ndarray) -> bytes:
    height, width = pixels.shape[:2]
    return f"P6\n{width} {height}\n255\n".encode("ascii") + np.ascontiguousarray(pixels[:, :, :3]).tobytes()


def run_demo(
    folder: Path,
    ks: Sequence[int] = (16, 32, 64, 128, 256),
    *,
    progress: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Compress the built-in photograph at each K and measure what a user would.

    Writes ``original.ppm`` (raw 24-bit RGB), and for each K ``kNNN.kmq`` and ``kNNN.png`` (PNG8)
    into ``folder``, replacing earlier demo outputs there.

    Returns
    -------
    dict
        ``photo`` (name, size, raw bytes) and ``rows`` (one per K: bits per index packed, bits
        per pixel on disk, PSNR, SSIM, sizes, reduction against raw, seconds of quantizing and
        coding, after one untimed run that loads the compiled kernels).
    """
    photo = demo_photo_path()
    pixels = load_image(photo)
    height, width = pixels.shape[:2]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None
    raw_path = folder / "original.ppm"
    raw_bytes = write_bytes_atomic(raw_path, _ppm_bytes(pixels), force=True)
    # Load the compiled kernels once, untimed, so the first K's time is its work alone.
    encode_image(quantize(pixels, min(ks)))
    rows = []
    for k in ks:
        if progress:
            progress(f"  K={k} ...")
        started = time.perf_counter()
        quantized = quantize(pixels, k)
        data = encode_image(quantized)
        seconds = time.perf_counter() - started
        kmq_path = folder / f"k{k:03d}.kmq"
        png_path = folder / f"k{k:03d}.png"
        write_bytes_atomic(kmq_path, data, force=True)
        write_bytes_atomic(png_path, quantized.to_png8(), force=True)
        restored = quantized.to_array()
        kmq_on_disk = kmq_path.stat().st_size
        rows.append(
            {
                "k": k,
                "palette_entries": quantized.k,
                "bits_packed": max(1, math.ceil(math.log2(k))),
                "bits_per_pixel": 8.0 * kmq_on_disk / (width * height),
                "psnr": psnr(pixels, restored),
                "ssim": ssim(pixels, restored),
                "kmq_bytes": kmq_on_disk,
                "png8_bytes": png_path.stat().st_size,
                "reduction_vs_raw": raw_path.stat().st_size / kmq_on_disk,
                "seconds": seconds,
            }
        )
    return {
        "photo": {"name": photo.name, "path": str(photo), "width": width, "height": height, "raw_bytes": raw_bytes},
        "folder": str(folder),
        "rows": rows,
    }
