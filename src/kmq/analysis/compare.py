"""Every method at every K through the same remap and the same coder, measured the same way."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kmq.analysis.methods import METHODS, MethodUnavailable, check_methods, fit_palettes
from kmq.analysis.metrics import bits_per_pixel, compression_ratio, psnr, ssim
from kmq.errors import InputError

__all__ = ["Comparison", "Trial", "check_ks", "code_palette", "compare_methods", "rgb_pixels"]

#: progress(done, total, what) is called before each step.
Progress = Callable[[int, int, str], Any]


@dataclass(frozen=True)
class Trial:
    """One method at one K: the palette image, its coded bytes and its measurements."""

    method: str
    k: int
    palette: np.ndarray
    indices: np.ndarray
    coded: bytes
    seconds: float
    psnr: float
    ssim: float

    @property
    def colors(self) -> int:
        """Palette entries actually used (at most K)."""
        return int(self.palette.shape[0])

    @property
    def bits_packed(self) -> int:
        """Bits per index when indices are packed at a fixed width: ceil(log2(colors))."""
        return max(1, math.ceil(math.log2(self.colors)))

    def restored(self) -> np.ndarray:
        """The decoded picture, H×W×3 uint8."""
        return self.palette[self.indices]


def code_palette(pixels: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray, bytes]:
    """The path every method's palette takes: remap, drop unused entries, order by use, code.

    Parameters
    ----------
    pixels : ndarray
        H×W×3 uint8 image.
    palette : ndarray
        n×3 uint8 palette from any method (repeats allowed).

    Returns
    -------
    palette : ndarray
        m×3 uint8, m <= n: the entries some pixel uses, most used first.
    indices : ndarray
        H×W uint8 nearest-entry map (no dithering).
    coded : bytes
        The .kmq file.
    """
    from kmq.codec.image import encode_image
    from kmq.quant import remap

    _, first = np.unique(palette, axis=0, return_index=True)
    palette = np.ascontiguousarray(palette[np.sort(first)])
    indices = remap(pixels, palette, dither="none")
    counts = np.bincount(indices.ravel(), minlength=palette.shape[0])
    order = np.argsort(-counts, kind="stable")[: int(np.count_nonzero(counts))]
    rank = np.zeros(palette.shape[0], dtype=np.uint8)
    rank[order] = np.arange(order.shape[0], dtype=np.uint8)
    palette, indices = palette[order], rank[indices]
    return palette, indices, encode_image(palette, indices, method="cm")


@dataclass
class Comparison:
    """The outcome of :func:`compare_methods`.

    Attributes
    ----------
    pixels : ndarray
        The H×W×3 image every method was run on.
    ks : list of int
        Palette sizes, ascending.
    methods : list of str
        Methods that ran, in report order.
    notes : dict
        Method -> how it ran (bins clustered, defaults used).
    skipped : dict
        Method -> why it did not run.
    trials : list of Trial
        One per method that ran and K.
    input_bytes : int or None
        Size of the input file, when there was one.
    """

    pixels: np.ndarray
    ks: list[int]
    methods: list[str]
    notes: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    input_bytes: int | None = None

    @property
    def height(self) -> int:
        """Rows of pixels."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Columns of pixels."""
        return int(self.pixels.shape[1])

    @property
    def raw_bytes(self) -> int:
        """Size of the image as raw 24-bit RGB."""
        return self.width * self.height * 3

    def trial(self, method: str, k: int) -> Trial:
        """The trial of ``method`` at ``k``."""
        for trial in self.trials:
            if trial.method == method and trial.k == k:
                return trial
        raise KeyError((method, k))

    def row(self, trial: Trial) -> dict[str, Any]:
        """The numbers of one trial, as the table and ``--json`` give them."""
        coded_bytes = len(trial.coded)
        return {
            "method": trial.method,
            "k": trial.k,
            "colors": trial.colors,
            "psnr": trial.psnr,
            "ssim": trial.ssim,
            "bits_per_pixel_packed": trial.bits_packed,
            "bits_per_pixel_coded": bits_per_pixel(coded_bytes, self.width, self.height),
            "kmq_bytes": coded_bytes,
            "reduction_vs_raw": compression_ratio(self.raw_bytes, coded_bytes),
            "reduction_vs_input": (
                None if self.input_bytes is None else compression_ratio(self.input_bytes, coded_bytes)
            ),
            "seconds": trial.seconds,
        }

    def rows(self) -> list[dict[str, Any]]:
        """:meth:`row` of every trial, by method then K."""
        return [self.row(trial) for trial in self.trials]

    def findings(self) -> list[str]:
        """Plain sentences on k-means against hierarchical clustering, true to the numbers."""
        if "kmeans" not in self.methods or "hierarchical" not in self.methods:
            return []
        gaps = {k: self.trial("kmeans", k).psnr - self.trial("hierarchical", k).psnr for k in self.ks}
        ahead = [k for k, gap in gaps.items() if gap > 0]
        behind = [k for k in self.ks if k not in ahead]
        sentences = []
        if ahead:
            low, high = min(gaps[k] for k in ahead), max(gaps[k] for k in ahead)
            where = "at every K" if not behind else "at K = " + ", ".join(map(str, ahead))
            sentences.append(
                f"k-means is ahead of hierarchical (Ward) clustering on PSNR {where}, by {low:.2f} to {high:.2f} dB."
            )
        for k in behind:
            sentences.append(
                f"On this image hierarchical (Ward) clustering is not behind k-means at K = {k}: "
                f"{_decibels(self.trial('hierarchical', k).psnr)} against {_decibels(self.trial('kmeans', k).psnr)}."
            )
        return sentences

    def summary(self) -> dict[str, Any]:
        """Everything ``--json`` prints about the comparison (without file paths)."""
        return {
            "image": {
                "width": self.width,
                "height": self.height,
                "raw_bytes": self.raw_bytes,
                "input_bytes": self.input_bytes,
            },
            "ks": self.ks,
            "methods": {
                name: {"ran": name in self.methods, "note": self.notes.get(name) or self.skipped[name]}
                for name in METHODS
                if name in self.notes or name in self.skipped
            },
            "rows": self.rows(),
            "findings": self.findings(),
        }


def _decibels(value: float) -> str:
    return "lossless" if math.isinf(value) else f"{value:.2f} dB"


def _warm_up_image() -> np.ndarray:
    """A 192×192 image of smooth colour ramps: large and varied enough to take a photo's code paths."""
    ramp = np.linspace(0, 255, 192)
    red, green = np.meshgrid(ramp, ramp)
    return np.stack([red, green, (red + green) / 2], axis=2).round().astype(np.uint8)


def rgb_pixels(pixels: np.ndarray) -> np.ndarray:
    """Validate an H×W×3 or H×W×4 uint8 image and return its RGB channels, C-contiguous."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or 0 in pixels.shape:
        raise InputError(f"expected an H×W×3 uint8 image, got {pixels.dtype} of shape {pixels.shape}")
    return np.ascontiguousarray(pixels[:, :, :3])


def check_ks(ks: Sequence[int]) -> list[int]:
    """Validate palette sizes (2..256) and return them sorted without repeats."""
    values = sorted(set(int(k) for k in ks))
    if not values:
        raise InputError("no K given")
    bad = [k for k in values if not 2 <= k <= 256]
    if bad:
        raise InputError(f"K must be from 2 to 256, got {bad[0]}")
    return values


def compare_methods(
    pixels: np.ndarray,
    ks: Sequence[int] = (8, 16, 32, 64, 128, 256),
    methods: Sequence[str] = tuple(METHODS),
    *,
    seed: int = 0,
    input_bytes: int | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Quantize an image with every method at every K and measure each result.

    Each method only chooses a palette; every palette then takes :func:`code_palette`, so the
    methods differ in nothing else.

    Parameters
    ----------
    pixels : ndarray
        H×W×3 uint8 image (an alpha channel is ignored).
    ks : sequence of int
        Palette sizes, 2..256.
    methods : sequence of str
        Names from :data:`kmq.analysis.methods.METHODS`.
    seed : int
        Seed of the methods that draw random numbers.
    input_bytes : int, optional
        Size of the input file, for the reduction against it.
    progress : callable, optional
        Called as ``progress(done, total, what)`` before each step.

    Returns
    -------
    Comparison
    """
    pixels = rgb_pixels(pixels)
    ks = check_ks(ks)
    methods = check_methods(list(methods))
    comparison = Comparison(pixels=pixels, ks=ks, methods=[], input_bytes=input_bytes)
    total = len(methods) * (len(ks) + 1)
    done = 0
    # a first run of each step loads or compiles its kernels, which is no part of the time measured
    warm_up = _warm_up_image()
    code_palette(warm_up, warm_up[0, :2])
    for method in methods:
        if progress:
            progress(done, total, f"{method}: fitting palettes")
        try:
            fit_palettes(method, warm_up, [max(ks)], seed=seed)
            fitted = fit_palettes(method, pixels, ks, seed=seed)
        except MethodUnavailable as exc:
            comparison.skipped[method] = f"skipped: {exc}"
            done += len(ks) + 1
            continue
        done += 1
        comparison.methods.append(method)
        comparison.notes[method] = fitted.note
        for k in ks:
            if progress:
                progress(done, total, f"{method}: K={k}")
            started = time.perf_counter()
            palette, indices, coded = code_palette(pixels, fitted.palettes[k])
            seconds = fitted.seconds[k] + time.perf_counter() - started
            restored = palette[indices]
            comparison.trials.append(
                Trial(method, k, palette, indices, coded, seconds, psnr(pixels, restored), ssim(pixels, restored))
            )
            done += 1
    if progress:
        progress(total, total, "done")
    return comparison
