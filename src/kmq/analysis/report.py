"""``kmq analyze``: run the comparison, draw the figures, and write one self-contained HTML page."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kmq.analysis import figures
from kmq.analysis.autok import AutoK, check_target, smallest_k
from kmq.analysis.compare import Comparison, Progress, check_ks, compare_methods, rgb_pixels
from kmq.analysis.methods import METHODS, check_methods
from kmq.analysis.page import figure_html, finite, format_number, page_html, prepare_folder, save_report
from kmq.errors import InputError

__all__ = ["Report", "analyze_file", "analyze_image", "render_html"]


@dataclass
class Report:
    """What ``kmq analyze`` produced for a still image.

    Attributes
    ----------
    comparison : Comparison
        Every method at every K, measured.
    folder : Path
        Where the files went.
    files : dict
        Role -> path of each written file (``report``, ``json``, figure names, coded outputs).
    auto : AutoK or None
        The bisection, when K was ``auto``.
    name : str
        The image's name in titles.
    picture_ks : list of int
        The K drawn as pictures: every K, or with ``auto`` the chosen K and the one below it.
    notices : list of str
        What a reader must know about the input (an ignored alpha channel).
    """

    comparison: Comparison
    folder: Path
    name: str
    files: dict[str, str] = field(default_factory=dict)
    auto: AutoK | None = None
    picture_ks: list[int] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The numbers ``--json`` prints: the comparison, the bisection, and the files written."""
        summary = {"name": self.name, **self.comparison.summary(), "notices": self.notices}
        if self.auto is not None:
            summary["auto"] = self.auto.summary()
        summary["files"] = self.files
        return finite(summary)


def analyze_image(
    pixels: np.ndarray,
    folder: str | os.PathLike,
    *,
    ks: Sequence[int] | str = (8, 16, 32, 64, 128, 256),
    methods: Sequence[str] = tuple(METHODS),
    name: str = "image",
    input_bytes: int | None = None,
    target_psnr: float | None = None,
    target_ssim: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Report:
    """Compare clustering methods across K on one image and write the report folder.

    Writes ``report.html`` (figures embedded as data URIs, no outside references),
    ``report.json``, ``figures/*.png`` and every coded result as ``coded/METHOD-kNNN.kmq``;
    files of an earlier report in the same folder are replaced.

    Parameters
    ----------
    pixels : ndarray
        H×W×3 uint8 image (alpha is ignored).
    folder : path-like
        Output folder, created when missing.
    ks : sequence of int, or "auto"
        Palette sizes; ``"auto"`` bisects for the smallest K that reaches the target and
        reports every K the bisection tried (pictures only for the chosen K and the K below).
    methods : sequence of str
        Names from :data:`kmq.analysis.methods.METHODS`.
    name : str
        The image's name in titles.
    input_bytes : int, optional
        Size of the input file, for the reduction against it.
    target_psnr, target_ssim : float, optional
        With ``ks="auto"``: the target (exactly one).
    seed : int
        Seed of the randomised methods.
    progress : callable, optional
        ``progress(done, total, what)``.

    Returns
    -------
    Report
    """
    from kmq.media.files import write_bytes_atomic

    target = Path(folder)
    auto = None
    methods = check_methods(list(methods))
    if isinstance(ks, str):
        if ks != "auto":
            raise InputError(f"K must be a list of palette sizes or 'auto', got {ks!r}")
        check_target(target_psnr, target_ssim)
    else:
        ks = check_ks(ks)
    rgb = rgb_pixels(pixels)
    if isinstance(ks, str):
        if progress:
            progress(0, 1, "bisecting on K")
        auto = smallest_k(rgb, target_psnr=target_psnr, target_ssim=target_ssim, seed=seed)
        ks = sorted(auto.scores)
    ks = check_ks(ks)
    prepare_folder(target)
    comparison = compare_methods(rgb, ks, methods, seed=seed, input_bytes=input_bytes, progress=progress)
    report = Report(comparison=comparison, folder=target, name=name, auto=auto, picture_ks=list(ks))
    if auto is not None:
        report.picture_ks = [k for k in (auto.k - 1, auto.k) if k in ks]
    if pixels.shape[2] == 4 and bool((np.asarray(pixels)[:, :, 3] < 255).any()):
        report.notices.append("The image has transparency: the comparison uses its RGB channels and ignores alpha.")

    for trial in comparison.trials:
        coded = target / "coded" / f"{trial.method}-k{trial.k:03d}.kmq"
        write_bytes_atomic(coded, trial.coded, force=True)
        report.files[f"coded/{coded.stem}"] = str(coded)
    images = {}
    if comparison.methods:
        if progress:
            progress(0, 1, "drawing figures")
        images["rate_distortion"] = figures.rate_distortion_figure(comparison, name)
        images["colour_space"] = figures.colour_space_figure(comparison, name)
        images["palettes"] = figures.palette_figure(comparison, name)
        for k in report.picture_ks:
            images[f"k{k:03d}"] = figures.k_figure(comparison, k, name)
    save_report(target, report.files, images, lambda: render_html(report, images), report.summary)
    return report


def analyze_file(
    path: str | os.PathLike,
    folder: str | os.PathLike | None = None,
    *,
    max_pixels: int | None = None,
    **options: Any,
) -> Report:
    """:func:`analyze_image` on an image file; the folder defaults to ``./STEM-analysis``.

    Parameters
    ----------
    path : path-like
        Any image Pillow reads.
    folder : path-like, optional
        Output folder.
    max_pixels : int, optional
        Refuse larger inputs.
    **options
        As for :func:`analyze_image` (``ks``, ``methods``, targets, ``seed``, ``progress``).
    """
    from kmq.media.images import load_image

    source = Path(path)
    pixels = load_image(source, max_pixels=max_pixels)
    target = Path(folder) if folder is not None else Path(f"{source.stem}-analysis")
    return analyze_image(pixels, target, name=source.name, input_bytes=source.stat().st_size, **options)


# ---------------------------------------------------------------- HTML

def _table(comparison: Comparison) -> str:
    best_psnr = {k: max(comparison.trial(method, k).psnr for method in comparison.methods) for k in comparison.ks}
    head = (
        "<tr><th class=method>method</th><th>K</th><th>colours used</th><th>PSNR (dB)</th><th>SSIM</th>"
        "<th>bits/pixel packed</th><th>bits/pixel coded</th><th>.kmq bytes</th>"
        "<th>× smaller than 24-bit raw</th><th>× smaller than input file</th><th>time (s)</th></tr>"
    )
    lines = []
    for trial in comparison.trials:
        row = comparison.row(trial)
        first = " class=first" if trial.k == comparison.ks[0] else ""
        best = " best" if trial.psnr == best_psnr[trial.k] else ""
        lines.append(
            f"<tr{first}><td class=method>{figures.LABELS[trial.method]}</td><td>{trial.k}</td><td>{trial.colors}</td>"
            f"<td class='psnr{best}'>{format_number(row['psnr'], 2)}</td><td>{format_number(row['ssim'], 4)}</td>"
            f"<td>{row['bits_per_pixel_packed']}</td><td>{format_number(row['bits_per_pixel_coded'], 3)}</td>"
            f"<td>{row['kmq_bytes']:,}</td><td>{format_number(row['reduction_vs_raw'], 1)}</td>"
            f"<td>{format_number(row['reduction_vs_input'], 2)}</td><td>{format_number(row['seconds'], 3)}</td></tr>"
        )
    return f"<table><thead>{head}</thead><tbody>{''.join(lines)}</tbody></table>"


def _methods_list(comparison: Comparison) -> str:
    items = []
    for method, description in METHODS.items():
        if method in comparison.notes:
            note = html.escape(_sentence(comparison.notes[method]))
            items.append(f"<dt>{figures.LABELS[method]}</dt><dd>{html.escape(description)}. {note}</dd>")
        elif method in comparison.skipped:
            reason = html.escape(comparison.skipped[method])
            items.append(f"<dt>{figures.LABELS[method]}</dt><dd class=warning>{reason}</dd>")
    return f"<dl>{''.join(items)}</dl>"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _auto_section(auto: AutoK | None) -> str:
    if auto is None:
        return ""
    unit = " dB" if auto.metric == "psnr" else ""
    rows = "".join(
        f"<tr><td>{step}</td><td>{k}</td><td>{format_number(score, 2 if auto.metric == 'psnr' else 4)}{unit}</td>"
        f"<td class=method>{'reaches' if score >= auto.target else 'falls short'}</td></tr>"
        for step, (k, score) in enumerate(auto.scores.items(), start=1)
    )
    css = "finding" if auto.reached else "warning"
    return (
        f"<h2>Automatic K</h2><p class={css}>{html.escape(auto.describe())}.</p>"
        "<p>Bisection on K with kmq's k-means, as pngquant's <code>--quality</code> chooses its colour count: "
        "the K below the answer was tried and falls short. The table below covers every K tried.</p>"
        f"<table><thead><tr><th>step</th><th>K</th><th>{auto.metric.upper()}</th><th class=method>target "
        f"{auto.target:g}{unit}</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render_html(report: Report, images: dict[str, bytes]) -> str:
    """The report as one HTML page; every figure is inlined as a PNG data URI.

    Parameters
    ----------
    report : Report
        The comparison and its context.
    images : dict
        Figure name -> PNG bytes, as :func:`analyze_image` draws them.
    """
    comparison = report.comparison
    name = html.escape(report.name)
    input_line = ""
    if comparison.input_bytes:
        input_bpp = 8 * comparison.input_bytes / (comparison.width * comparison.height)
        input_line = f", input file {comparison.input_bytes:,} bytes ({input_bpp:.2f} bits/pixel)"
    findings = "".join(f"<p class=finding>{html.escape(sentence)}</p>" for sentence in comparison.findings())
    findings += "".join(f"<p class=warning>{html.escape(notice)}</p>" for notice in report.notices)
    k_figures = "".join(
        figure_html(
            images,
            f"k{k:03d}",
            f"{report.name} at K={k}",
            f"K = {k}: the original, kmq's k-means result and its error map; below, the region where the most "
            "detail is lost, enlarged, for every method.",
        )
        for k in report.picture_ks
    )
    if report.picture_ks != comparison.ks:
        k_figures = f"<p>Pictures for the chosen K and the K below it; the table covers every K tried.</p>{k_figures}"
    scatter = figures.scatter_k(comparison.ks) if comparison.ks else 0
    body = f"""
<h1>kmq analysis: {name}</h1>
<p>{comparison.width}×{comparison.height} pixels, raw 24-bit RGB {comparison.raw_bytes:,} bytes{input_line}.
K = {", ".join(map(str, comparison.ks))}.</p>
{findings}
{_auto_section(report.auto)}
<h2>Methods</h2>
<p>Each method only chooses the palette. Every palette then takes the same path: each pixel is mapped to its nearest
entry (no dithering), unused entries are dropped, entries are ordered by use, and the index map is coded with kmq's
context-modelled coder into a .kmq file. So the methods differ in their palettes and nothing else.</p>
{_methods_list(comparison)}
<h2>Numbers</h2>
<p>PSNR over the RGB channels; SSIM with a Gaussian window (σ = 1.5), averaged over channels; bits per pixel
<em>packed</em> = ⌈log₂ colours⌉, the fixed-width index size;
bits per pixel <em>coded</em> = 8 × .kmq file size ÷ pixels
(palette and headers included); time = palette + remap + coding on this machine. Bold: best PSNR at that K.</p>
{_table(comparison)}
<h2>Rate and distortion</h2>
{figure_html(images, "rate_distortion", "rate-distortion curves",
         "Quality against bits per pixel on disk: up and to the left is better.")}
<h2>The colour space</h2>
{figure_html(images, "colour_space", "RGB colour space before and after clustering",
         f"A random sample of the pixels in RGB space, first in their own colours, then in the colour of the centroid "
         f"they are mapped to at K = {scatter}; the ringed discs are the centroids.")}
{figure_html(images, "palettes", "palette swatches",
         "Each palette sorted by how many pixels use each colour; widths are shares of the pixels.")}
<h2>Pictures at each K</h2>
{k_figures}
"""
    return page_html(f"kmq analysis: {report.name}", body)
