"""The clustering methods the report compares; each turns pixels into palettes, one per K."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kmq.errors import InputError

__all__ = ["METHODS", "MethodPalettes", "MethodUnavailable", "check_methods", "fit_palettes"]

#: Every method, in report order, with the words the report uses for it.
METHODS: dict[str, str] = {
    "kmeans": "kmq's k-means (weighted histogram, k-means++ seeding, refined on pixels)",
    "hierarchical": "agglomerative clustering, Ward linkage, on the weighted colour histogram",
    "mediancut": "Pillow's median cut",
    "octree": "Pillow's fast octree",
    "minibatch": "scikit-learn MiniBatchKMeans on the pixels",
}


class MethodUnavailable(Exception):
    """A method cannot run here (an optional package is missing); the report says why and goes on."""


@dataclass
class MethodPalettes:
    """The palettes one method produced for each K, with how long each took.

    Attributes
    ----------
    method : str
        One of :data:`METHODS`.
    palettes : dict
        K -> n×3 uint8 palette (n <= K).
    seconds : dict
        K -> seconds to produce that palette (shared work, such as the Ward dendrogram, counted
        in full for every K: it is what a user fitting only that K would wait).
    note : str
        What the report should say about how the method ran.
    """

    method: str
    palettes: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)
    note: str = ""


def check_methods(names: Sequence[str]) -> list[str]:
    """Validate method names, keeping their order and dropping repeats."""
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise InputError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if not names:
        raise InputError(f"no methods given; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def fit_palettes(method: str, pixels: np.ndarray, ks: Sequence[int], *, seed: int = 0) -> MethodPalettes:
    """Run one method at each K on an RGB image.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    pixels : ndarray
        H×W×3 uint8.
    ks : sequence of int
        Palette sizes, each 2..256.
    seed : int
        Seed for the methods that draw random numbers.

    Returns
    -------
    MethodPalettes

    Raises
    ------
    MethodUnavailable
        When the method needs a package that is not installed.
    """
    check_methods([method])
    return _FITTERS[method](pixels, list(ks), seed)


def _timed(
    fit: Callable[[int], np.ndarray], ks: list[int], result: MethodPalettes, extra_seconds: float = 0.0
) -> MethodPalettes:
    for k in ks:
        started = time.perf_counter()
        palette = fit(k)
        result.seconds[k] = extra_seconds + time.perf_counter() - started
        result.palettes[k] = np.ascontiguousarray(palette, dtype=np.uint8)
    return result


def _kmeans(pixels: np.ndarray, ks: list[int], seed: int) -> MethodPalettes:
    from kmq.quant import quantize_pixels

    result = MethodPalettes("kmeans", note="time includes kmq's own remap inside quantize")
    return _timed(lambda k: quantize_pixels(pixels, k, dither="none", space="rgb", seed=seed)[0], ks, result)


def _hierarchical(pixels: np.ndarray, ks: list[int], seed: int) -> MethodPalettes:
    from kmq.quant.baselines import histogram_for_ward, palette_from_centroids, ward_tree

    started = time.perf_counter()
    histogram = histogram_for_ward(pixels)
    tree = ward_tree(histogram.colors, histogram.counts)
    tree_seconds = time.perf_counter() - started
    bins = tree.leaf_count
    binning = "exact colours" if histogram.bits == 8 else f"{histogram.bits} bits per channel"
    result = MethodPalettes(
        "hierarchical",
        note=f"Ward linkage on {bins:,} histogram bins ({binning}, exact bin means, weighted by pixel count); "
        f"one dendrogram ({tree_seconds:.2f} s) cut at every K",
    )
    return _timed(lambda k: palette_from_centroids(tree.centroids(k)), ks, result, tree_seconds)


def _pillow(method_name: str) -> Callable[[np.ndarray, list[int], int], MethodPalettes]:
    def fit(pixels: np.ndarray, ks: list[int], seed: int) -> MethodPalettes:
        from PIL import Image

        method = Image.Quantize.MEDIANCUT if method_name == "mediancut" else Image.Quantize.FASTOCTREE
        image = Image.fromarray(pixels)

        def palette(k: int) -> np.ndarray:
            quantized = image.quantize(colors=k, method=method, dither=Image.Dither.NONE)
            entries = np.array(quantized.getpalette(), dtype=np.uint8).reshape(-1, 3)
            used = np.unique(np.asarray(quantized))
            return entries[used]

        result = MethodPalettes(method_name, note="Pillow's palette; Pillow's own pixel mapping discarded")
        return _timed(palette, ks, result)

    return fit


def _minibatch(pixels: np.ndarray, ks: list[int], seed: int) -> MethodPalettes:
    try:
        from sklearn.cluster import MiniBatchKMeans
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise MethodUnavailable("scikit-learn is not installed (pip install scikit-learn)") from None
    import warnings

    rows = pixels.reshape(-1, 3).astype(np.float32)

    def palette(k: int) -> np.ndarray:
        # A batch of 1024 colours is too little work to share between threads: on a busy machine
        # the thread pool's hand-offs made fits several times slower than one thread.
        with warnings.catch_warnings(), threadpool_limits(1):
            # fewer distinct colours than K: sklearn warns and duplicates centres; dropped below
            warnings.simplefilter("ignore")
            model = MiniBatchKMeans(n_clusters=min(k, rows.shape[0]), random_state=seed, n_init="auto").fit(rows)
        return np.clip(np.rint(model.cluster_centers_), 0, 255)

    note = f"{rows.shape[0]:,} pixels, scikit-learn defaults (batch 1024, k-means++), one thread"
    result = MethodPalettes("minibatch", note=note)
    return _timed(palette, ks, result)


_FITTERS: dict[str, Callable[[np.ndarray, list[int], int], MethodPalettes]] = {
    "kmeans": _kmeans,
    "hierarchical": _hierarchical,
    "mediancut": _pillow("mediancut"),
    "octree": _pillow("octree"),
    "minibatch": _minibatch,
}
