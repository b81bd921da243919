"""The report's figures as PNG bytes: pictures per K, colour space, palettes, rate–distortion.

Matplotlib is imported inside each function and drawn on its Agg canvas without pyplot, so
importing kmq stays fast and no global backend state is touched.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from kmq.analysis.compare import Comparison, Trial
from kmq.analysis.metrics import psnr

if TYPE_CHECKING:
    from kmq.analysis.video import VideoReport, VideoRun

__all__ = [
    "colour_space_figure",
    "crop_window",
    "error_map",
    "k_figure",
    "palette_figure",
    "rate_distortion_figure",
    "scatter_k",
    "video_frames_figure",
    "worst_frame_figure",
]

#: What the figures call each method.
LABELS = {
    "kmeans": "k-means (kmq)",
    "hierarchical": "hierarchical (Ward)",
    "mediancut": "median cut (Pillow)",
    "octree": "octree (Pillow)",
    "minibatch": "MiniBatchKMeans (sklearn)",
}
_STYLES = {
    "kmeans": ("tab:red", "o"),
    "hierarchical": ("tab:blue", "s"),
    "mediancut": ("tab:green", "^"),
    "octree": ("tab:purple", "v"),
    "minibatch": ("tab:orange", "D"),
}
_DPI = 100
_SCATTER_SAMPLE = 4000


def _figure(width: float, height: float, layout: str | None = "constrained") -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout=layout)


def png_bytes(figure: Any) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def error_map(original: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean RGB error, H×W float64 in 0..255 levels (at most 255·√3)."""
    difference = original.astype(np.float64) - restored.astype(np.float64)
    return np.sqrt(np.sum(difference * difference, axis=2))


def crop_window(errors: np.ndarray, size: int) -> tuple[int, int, int]:
    """The square of side ``size`` (clamped to the image) with the largest total error.

    Returns
    -------
    (top, left, side) : tuple of int
    """
    height, width = errors.shape
    side = max(1, min(size, height, width))
    table = np.zeros((height + 1, width + 1))
    table[1:, 1:] = errors.cumsum(0).cumsum(1)
    sums = table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left), side


def _crop_side(comparison: Comparison) -> int:
    return max(24, min(comparison.height, comparison.width) // 5)


def _show(axes: Any, image: np.ndarray, title: str, *, zoom: bool = False) -> None:
    axes.imshow(image, interpolation="nearest" if zoom else "antialiased")
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])


def _box(axes: Any, window: tuple[int, int, int]) -> None:
    from matplotlib.patches import Rectangle

    top, left, side = window
    axes.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor="yellow", linewidth=1.5))


def picture_row(
    container: Any,
    original: np.ndarray,
    restored: np.ndarray,
    title: str,
    *,
    window: tuple[int, int, int] | None = None,
) -> None:
    """Original, result and error map side by side in a figure or subfigure, with a colour bar.

    ``window`` (top, left, side), when given, is outlined on both pictures.
    """
    errors = error_map(original[:, :, :3], restored[:, :, :3])
    whole = container.subplots(1, 3)
    height, width = original.shape[:2]
    _show(whole[0], original[:, :, :3], f"original ({width}×{height})")
    _show(whole[1], restored[:, :, :3], title)
    if window is not None:
        _box(whole[0], window)
        _box(whole[1], window)
    heat = whole[2].imshow(errors, cmap="magma", vmin=0, vmax=max(1.0, float(np.percentile(errors, 99.5))))
    whole[2].set_title(f"its error (mean {errors.mean():.1f} levels)", fontsize=10)
    whole[2].set_xticks([])
    whole[2].set_yticks([])
    bar = container.colorbar(heat, ax=whole[2], shrink=0.9)
    bar.set_label("RGB error (Euclidean, 0–255 levels)", fontsize=9)


def k_figure(comparison: Comparison, k: int, name: str = "image") -> bytes:
    """Original, k-means result and its error map at one K, and a zoomed crop for every method.

    The crop is where k-means loses the most detail at this K, the same window for each method.
    """
    pixels = comparison.pixels
    lead = comparison.methods[0] if "kmeans" not in comparison.methods else "kmeans"
    trial = comparison.trial(lead, k)
    restored = trial.restored()
    errors = error_map(pixels, restored)
    window = crop_window(errors, _crop_side(comparison))
    top, left, side = window
    crop = (slice(top, top + side), slice(left, left + side))

    columns = max(3, 1 + len(comparison.methods))
    aspect = comparison.height / comparison.width
    width = max(13.0, 2.6 * columns)
    figure = _figure(width, width / 3 * aspect + width / columns + 0.9)
    figure.suptitle(
        f"{name}: K = {k}, {LABELS[lead]}; yellow box = zoomed region where detail is lost most", fontsize=12
    )
    upper, lower = figure.subfigures(2, 1, height_ratios=[width / 3 * aspect, width / columns])
    picture_row(upper, pixels, restored, f"{LABELS[lead]}, K={k}: {trial.psnr:.2f} dB", window=window)

    zooms = np.atleast_1d(lower.subplots(1, columns))
    _show(zooms[0], pixels[crop], f"original, zoom ({side}×{side} px)", zoom=True)
    for axes, method in zip(zooms[1:], comparison.methods):
        other = comparison.trial(method, k)
        _show(axes, other.restored()[crop], f"{LABELS[method]}\n{other.psnr:.2f} dB, {other.colors} colours", zoom=True)
    for axes in zooms[1 + len(comparison.methods) :]:
        axes.set_axis_off()
    return png_bytes(figure)


def scatter_k(ks: list[int]) -> int:
    """The K shown in the colour-space figure: the one closest to 16, where centroids stay legible."""
    return min(ks, key=lambda k: (abs(np.log2(k) - 4), k))


def _sample(pixels: np.ndarray, count: int) -> np.ndarray:
    flat = pixels.reshape(-1, 3)
    if flat.shape[0] <= count:
        return np.arange(flat.shape[0])
    return np.sort(np.random.default_rng(0).choice(flat.shape[0], count, replace=False))


def _rgb_axes(axes: Any, title: str) -> None:
    # a 3-D axes box is mostly empty above its cube: put the title just over the cube
    axes.text2D(0.5, 0.9, title, transform=axes.transAxes, ha="center", fontsize=10)
    axes.set_xlabel("R (0–255)", fontsize=9, labelpad=2)
    axes.set_ylabel("G (0–255)", fontsize=9, labelpad=2)
    axes.set_zlabel("B (0–255)", fontsize=9, labelpad=2)
    for setter in (axes.set_xlim, axes.set_ylim, axes.set_zlim):
        setter(-8, 263)  # room for the markers of colours at 0 and 255
    axes.tick_params(labelsize=7, pad=0)
    axes.view_init(elev=22, azim=-58)
    axes.computed_zorder = False  # centroids, drawn last, stay on top of the pixel cloud
    # shrink the cube a little so the axis labels stay inside the panel
    axes.set_box_aspect(None, zoom=0.9)


def colour_space_figure(comparison: Comparison, name: str = "image") -> bytes:
    """3-D RGB scatter of a pixel sample in its own colours, then coloured by cluster centroid.

    One "after" panel for k-means and, when it ran, one for hierarchical clustering, at the
    K from :func:`scatter_k`; centroids are drawn as large ringed markers.
    """
    from matplotlib.lines import Line2D

    k = scatter_k(comparison.ks)
    methods = [method for method in ("kmeans", "hierarchical") if method in comparison.methods]
    methods = methods or comparison.methods[:1]
    sample = _sample(comparison.pixels, _SCATTER_SAMPLE)
    points = comparison.pixels.reshape(-1, 3)[sample]
    panels = 1 + len(methods)
    # 3-D axes keep a cube's aspect, which constrained layout pads generously: place them by hand
    figure = _figure(4.6 * panels, 4.4, layout=None)
    figure.suptitle(
        f"{name}: the colour space before and after clustering (K = {k}, {len(sample):,} sampled pixels)",
        fontsize=12,
        y=0.98,
    )
    axes = figure.add_axes((0.0, 0.02, 1.0 / panels, 0.98), projection="3d")
    axes.scatter(*points.T, c=points / 255.0, s=3, depthshade=False, linewidths=0)
    _rgb_axes(axes, "the space to cluster: pixels in their own colours")
    for panel, method in enumerate(methods, start=2):
        trial = comparison.trial(method, k)
        labels = trial.indices.reshape(-1)[sample]
        axes = figure.add_axes(((panel - 1.0) / panels, 0.02, 1.0 / panels, 0.98), projection="3d")
        axes.scatter(*points.T, c=trial.palette[labels] / 255.0, s=3, depthshade=False, linewidths=0)
        axes.scatter(
            *trial.palette.T, c=trial.palette / 255.0, s=90, edgecolors="black", linewidths=1.2, depthshade=False
        )
        _rgb_axes(axes, f"after {LABELS[method]}: coloured by centroid")
    handles = [
        Line2D([], [], linestyle="", marker="o", markersize=4, color="grey", label="pixel (sample)"),
        Line2D(
            [],
            [],
            linestyle="",
            marker="o",
            markersize=10,
            markerfacecolor="lightgrey",
            markeredgecolor="black",
            label=f"centroid (K = {k})",
        ),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    return png_bytes(figure)


def _swatch_row(axes: Any, row: int, trial: Trial) -> None:
    counts = np.bincount(trial.indices.ravel(), minlength=trial.colors).astype(np.float64)
    order = np.argsort(-counts, kind="stable")
    shares = counts[order] / counts.sum() * 100.0
    starts = np.concatenate([[0.0], np.cumsum(shares)[:-1]])
    axes.barh(row, shares, left=starts, height=0.8, color=trial.palette[order] / 255.0, linewidth=0)


def palette_figure(comparison: Comparison, name: str = "image") -> bytes:
    """Palette swatches ordered by population, each as wide as its share of the pixels.

    Left: k-means at every K. Right: every method at the K of the colour-space figure.
    """
    lead = "kmeans" if "kmeans" in comparison.methods else comparison.methods[0]
    k = scatter_k(comparison.ks)
    rows = max(len(comparison.ks), len(comparison.methods))
    figure = _figure(13, 1.2 + 0.45 * rows)
    figure.suptitle(f"{name}: palettes ordered by population (swatch width = share of pixels)", fontsize=12)
    left, right = figure.subplots(1, 2)
    for row, kk in enumerate(comparison.ks):
        _swatch_row(left, row, comparison.trial(lead, kk))
    left.set_yticks(range(len(comparison.ks)), [f"K = {kk}" for kk in comparison.ks])
    left.set_title(f"{LABELS[lead]} at each K", fontsize=10)
    for row, method in enumerate(comparison.methods):
        _swatch_row(right, row, comparison.trial(method, k))
    right.set_yticks(range(len(comparison.methods)), [LABELS[method] for method in comparison.methods])
    right.set_title(f"each method at K = {k}", fontsize=10)
    for axes in (left, right):
        axes.set_xlim(0, 100)
        axes.set_xlabel("cumulative share of pixels (%)")
        axes.invert_yaxis()
        axes.tick_params(axis="y", labelsize=9)
    return png_bytes(figure)


def _spaced(rows: list[dict[str, Any]], key: str, gap: float = 0.07) -> list[dict[str, Any]]:
    """The rows whose K labels will not collide: each at least ``gap`` of the curve's span from the last kept."""
    xs = np.array([row["bits_per_pixel_coded"] for row in rows])
    ys = np.array([row[key] for row in rows], dtype=np.float64)
    finite = np.isfinite(ys)
    span_x = max(float(np.ptp(xs)), 1e-9)
    span_y = max(float(np.ptp(ys[finite])) if finite.any() else 0.0, 1e-9)
    kept: list[int] = []
    for index in np.flatnonzero(finite):
        if kept:
            dx = (xs[index] - xs[kept[-1]]) / span_x
            dy = (ys[index] - ys[kept[-1]]) / span_y
            if math.hypot(dx, dy) < gap:
                continue
        kept.append(int(index))
    return [rows[index] for index in kept]


def rate_distortion_figure(comparison: Comparison, name: str = "image") -> bytes:
    """PSNR and SSIM against bits per pixel on disk, one curve per method, K marked on k-means.

    A third panel, when k-means ran with other methods, gives each method's PSNR minus that of
    k-means at the same K, where small differences hidden by the first panel's scale show.
    """
    lead = "kmeans" if "kmeans" in comparison.methods else None
    others = [method for method in comparison.methods if method != lead]
    panels = 3 if lead and others else 2
    figure = _figure(6.0 * panels, 4.8)
    figure.suptitle(f"{name}: rate–distortion of each method (same remap, same coder)", fontsize=12)
    all_axes = figure.subplots(1, panels)
    for axes, key, label in ((all_axes[0], "psnr", "PSNR (dB)"), (all_axes[1], "ssim", "SSIM (1 = identical)")):
        for method in comparison.methods:
            rows = [comparison.row(comparison.trial(method, k)) for k in comparison.ks]
            colour, marker = _STYLES[method]
            axes.plot(
                [row["bits_per_pixel_coded"] for row in rows],
                [row[key] for row in rows],
                color=colour,
                marker=marker,
                markersize=5,
                linewidth=1.5,
                label=LABELS[method],
            )
            if method == "kmeans":
                for row in _spaced(rows, key):
                    axes.annotate(
                        f"K={row['k']}",
                        (row["bits_per_pixel_coded"], row[key]),
                        textcoords="offset points",
                        xytext=(-6, 7),
                        ha="right",
                        fontsize=8,
                        color=colour,
                    )
        axes.set_xlabel("bits per pixel on disk (.kmq file)")
        axes.set_ylabel(label)
        axes.set_title(f"{label.split(' ')[0]} against rate", fontsize=10)
        axes.grid(True, alpha=0.3)
        axes.margins(x=0.06, y=0.1)
        axes.legend(fontsize=8, loc="lower right")
    if panels == 3:
        _gain_panel(all_axes[2], comparison, lead, others)
    return png_bytes(figure)


def _gain_panel(axes: Any, comparison: Comparison, lead: str, others: list[str]) -> None:
    axes.axhline(0.0, color=_STYLES[lead][0], linewidth=1.5, label=f"{LABELS[lead]} (reference)")
    for method in others:
        colour, marker = _STYLES[method]
        gaps = [comparison.trial(method, k).psnr - comparison.trial(lead, k).psnr for k in comparison.ks]
        axes.plot(comparison.ks, gaps, color=colour, marker=marker, markersize=5, linewidth=1.5, label=LABELS[method])
    axes.set_xscale("log", base=2)
    axes.set_xticks(comparison.ks, [str(k) for k in comparison.ks])
    axes.minorticks_off()
    axes.set_xlabel("K (palette size, log scale)")
    axes.set_ylabel("PSNR difference (dB)")
    axes.set_title(f"PSNR minus {LABELS[lead]} at equal K (below 0: worse)", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.margins(x=0.06, y=0.1)
    axes.legend(fontsize=8, loc="best")


_RUN_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:cyan", "tab:olive")


def video_frames_figure(report: VideoReport) -> bytes:
    """Four panels against frame number: bits, PSNR, changed pixels, palette entries sent.

    One line per K; keyframes are triangles on the bits line, palette refits dashed verticals
    (keyframes instead, for a .kmqv that does not record refits).
    """
    from matplotlib.lines import Line2D

    figure = _figure(13, 10.5)
    rate = f", {report.frame_rate:g} frames/s" if report.frame_rate else ""
    figure.suptitle(f"{report.name}: frame by frame ({report.width}×{report.height}{rate})", fontsize=12)
    bits_axes, psnr_axes, changed_axes, palette_axes = figure.subplots(4, 1, sharex=True)
    marks_refits = all(frame.refit is not None for run in report.runs for frame in run.frames)
    handles = []
    for run, colour in zip(report.runs, _RUN_COLOURS * 8):
        numbers = np.array([frame.number for frame in run.frames])
        kbits = np.array([frame.packet_bytes * 8 / 1000 for frame in run.frames])
        keyframes = np.array([frame.keyframe for frame in run.frames])
        bits_axes.plot(numbers, kbits, color=colour, linewidth=1.0)
        bits_axes.plot(numbers[keyframes], kbits[keyframes], "^", color=colour, markersize=7, markeredgecolor="black")
        scores = [frame.psnr for frame in run.frames]
        if any(score is not None for score in scores):
            psnr_axes.plot(numbers, [np.nan if s is None else s for s in scores], color=colour, linewidth=1.0)
        changed_axes.plot(numbers, [frame.changed_share * 100 for frame in run.frames], color=colour, linewidth=1.0)
        palette_axes.step(numbers, [frame.palette_updates for frame in run.frames], where="mid", color=colour)
        events = [frame.number for frame in run.frames if (frame.refit if marks_refits else frame.keyframe)]
        for axes in (bits_axes, psnr_axes, changed_axes, palette_axes):
            for number in events:
                axes.axvline(number, color=colour, linestyle="--", linewidth=0.8, alpha=0.6)
        handles.append(Line2D([], [], color=colour, label=f"K = {run.k}"))
    handles.append(Line2D([], [], linestyle="", marker="^", color="grey", markeredgecolor="black", label="keyframe"))
    event_label = "palette refit" if marks_refits else "keyframe (refits not recorded)"
    handles.append(Line2D([], [], color="grey", linestyle="--", label=event_label))
    bits_axes.set_yscale("log")
    bits_axes.set_ylabel("kbit per frame")
    bits_axes.set_title("bits per frame (.kmqv packet)", fontsize=10)
    figure.legend(handles=handles, fontsize=9, loc="outside lower center", ncol=len(handles), frameon=False)
    psnr_axes.set_ylabel("PSNR (dB)")
    psnr_axes.set_title("PSNR per frame against the source", fontsize=10)
    if not psnr_axes.lines:
        psnr_axes.text(0.5, 0.5, "no source video given: no PSNR", transform=psnr_axes.transAxes, ha="center")
    changed_axes.set_ylabel("pixels changed (%)")
    changed_axes.set_title("share of pixels whose palette index changed (100 % on keyframes)", fontsize=10)
    palette_axes.set_ylabel("entries sent")
    palette_axes.set_title("palette entries sent (all on keyframes)", fontsize=10)
    palette_axes.set_xlabel("frame number")
    for axes in (bits_axes, psnr_axes, changed_axes, palette_axes):
        axes.grid(True, alpha=0.3)
    return png_bytes(figure)


def worst_frame_figure(name: str, run: VideoRun) -> bytes:
    """The frame with the lowest PSNR of a run: source, decoded, error map."""
    number, original, decoded = run.worst
    height, width = original.shape[:2]
    figure = _figure(13, 13 / 3 * height / width + 0.9)
    figure.suptitle(f"{name}: frame {number}, the lowest PSNR at K = {run.k}", fontsize=12)
    picture_row(figure, original, decoded, f"decoded, K={run.k}: {psnr(original, decoded):.2f} dB")
    return png_bytes(figure)
