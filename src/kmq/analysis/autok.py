"""``-k auto``: the smallest palette that reaches a quality target, found by bisection on K."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kmq.analysis.metrics import psnr, ssim
from kmq.errors import InputError

__all__ = ["AutoK", "smallest_k", "check_target"]

_METRICS = {"psnr": psnr, "ssim": ssim}
_UNITS = {"psnr": " dB", "ssim": ""}


@dataclass
class AutoK:
    """The outcome of :func:`smallest_k`.

    Attributes
    ----------
    k : int
        The chosen palette size: the smallest K found to reach the target, or the largest
        allowed when none does.
    metric : {"psnr", "ssim"}
        What the target is measured in.
    target : float
        The quality asked for.
    reached : bool
        Whether ``scores[k] >= target``.
    scores : dict
        Every K tried -> its quality, in the order tried.
    palette, indices : ndarray
        The quantization at ``k``.
    """

    k: int
    metric: str
    target: float
    reached: bool
    scores: dict[int, float] = field(default_factory=dict)
    palette: np.ndarray | None = None
    indices: np.ndarray | None = None

    def describe(self) -> str:
        """One sentence for people: what was chosen and why."""
        unit = _UNITS[self.metric]
        name = self.metric.upper()
        score = self.scores[self.k]
        if not self.reached:
            return f"no K up to {self.k} reaches {name} {self.target:g}{unit}; K={self.k} gives {score:.4g}{unit}"
        below = self.scores.get(self.k - 1)
        tail = f" (K={self.k - 1} gives {below:.4g}{unit})" if below is not None else ""
        return f"K={self.k} is the smallest K reaching {name} {self.target:g}{unit}: {score:.4g}{unit}{tail}"

    def summary(self) -> dict:
        """The numbers, for JSON."""
        return {
            "k": self.k,
            "metric": self.metric,
            "target": self.target,
            "reached": self.reached,
            "tried": [{"k": k, self.metric: score} for k, score in self.scores.items()],
        }


def check_target(target_psnr: float | None, target_ssim: float | None) -> tuple[str, float]:
    """Exactly one target, in range: PSNR above 0 dB, SSIM in (0, 1]. Returns (metric, target)."""
    if (target_psnr is None) == (target_ssim is None):
        raise InputError("K auto needs exactly one target: --target-psnr DB or --target-ssim VALUE")
    if target_psnr is not None:
        if not math.isfinite(target_psnr) or target_psnr <= 0:
            raise InputError(f"the PSNR target must be a positive number of dB, got {target_psnr}")
        return "psnr", float(target_psnr)
    if not math.isfinite(target_ssim) or not 0 < target_ssim <= 1:
        raise InputError(f"the SSIM target must be above 0 and at most 1, got {target_ssim}")
    return "ssim", float(target_ssim)


def smallest_k(
    pixels: np.ndarray,
    *,
    target_psnr: float | None = None,
    target_ssim: float | None = None,
    dither: str = "none",
    space: str = "rgb",
    seed: int = 0,
    k_max: int = 256,
) -> AutoK:
    """Bisect on K for the smallest palette whose quantization reaches the target.

    Tries ``k_max`` first; if that falls short, it is the answer (``reached`` is False).
    Otherwise keeps a K that falls short below and one that reaches the target above, and
    halves the gap until they are neighbours, so the K below the answer was itself tried and
    fell short. Quality grows with K nearly always; where it does not, bisection finds a
    K that reaches the target with a K-1 that does not, as pngquant's ``--quality`` does.

    Parameters
    ----------
    pixels : ndarray
        H×W×3 or H×W×4 uint8.
    target_psnr, target_ssim : float, optional
        Exactly one: PSNR in dB, or SSIM (0..1), of the quantized image against ``pixels``.
    dither, space, seed
        As for :func:`kmq.quantize`.
    k_max : int
        Largest K to consider, 2..256.

    Returns
    -------
    AutoK

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> image = rng.integers(0, 256, (4, 1, 3), dtype=np.uint8).repeat(8, axis=0).repeat(8, axis=1)
    >>> smallest_k(image, target_psnr=60).k  # four colours: K=4 is exact
    4
    """
    from kmq.quant import quantize_pixels

    metric, target = check_target(target_psnr, target_ssim)
    if not 2 <= k_max <= 256:
        raise InputError(f"k_max must be from 2 to 256, got {k_max}")
    measure = _METRICS[metric]
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    choice = AutoK(k=k_max, metric=metric, target=target, reached=False)

    def reaches(k: int) -> bool:
        palette, indices = quantize_pixels(pixels, k, dither=dither, space=space, seed=seed)
        results[k] = (palette, indices)
        choice.scores[k] = measure(pixels, palette[indices])
        return choice.scores[k] >= target

    if reaches(k_max):
        short, enough = 1, k_max  # K=1 stands for "falls short": a one-colour palette is no answer
        while enough - short > 1:
            middle = (short + enough) // 2
            if reaches(middle):
                enough = middle
            else:
                short = middle
        choice.k, choice.reached = enough, True
    choice.palette, choice.indices = results[choice.k]
    return choice
