"""``kmq analyze`` for video: bits and PSNR per frame, keyframes, palette refits and updates.

A source video (anything PyAV reads) is encoded here, frame by frame, at each K asked for, and the
.kmqv written into the report folder; a .kmqv file is read packet by packet and decoded, and
compared with its source when one is given.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kmq.analysis.metrics import psnr
from kmq.analysis.page import figure_html, finite, format_number, page_html, prepare_folder, save_report
from kmq.errors import InputError

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_VIDEO_K",
    "FrameStats",
    "VideoReport",
    "VideoRun",
    "analyze_video",
    "is_video_path",
]

#: Suffixes ``kmq analyze`` treats as video (besides .kmqv); anything else is read as an image.
VIDEO_SUFFIXES = frozenset(
    (".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".ts", ".ogv", ".flv", ".wmv", ".y4m")
)
KMQV_SUFFIX = ".kmqv"
#: Frames analysed unless told otherwise: enough for some scene changes, quick to draw.
DEFAULT_MAX_FRAMES = 300
#: Palette size of a video analysis when no K is given.
DEFAULT_VIDEO_K = 64

Progress = Callable[[int, int, str], Any]


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether ``kmq analyze`` reads this path as a video (by its suffix)."""
    suffix = Path(path).suffix.lower()
    return suffix == KMQV_SUFFIX or suffix in VIDEO_SUFFIXES


@dataclass(frozen=True)
class FrameStats:
    """What one frame cost and how close it came.

    Attributes
    ----------
    number : int
        Frame number from 0.
    seconds : float
        Presentation time.
    packet_bytes : int
        Size of its frame record in the .kmqv stream.
    keyframe : bool
        Decodable on its own.
    palette_updates : int
        Palette entries the packet carries (all of them on a keyframe).
    changed_share : float
        Share of pixels whose palette index differs from the previous frame's (1 on a keyframe).
    refit : bool or None
        The palette was fitted afresh; None where the stream does not say (a .kmqv input).
    scene_cut : bool or None
        The encoder saw a scene cut here; None where unknown.
    psnr : float or None
        PSNR in dB against the source frame; None without a source.
    """

    number: int
    seconds: float
    packet_bytes: int
    keyframe: bool
    palette_updates: int
    changed_share: float
    refit: bool | None
    scene_cut: bool | None
    psnr: float | None


@dataclass
class VideoRun:
    """One stream measured frame by frame: an encode at one K, or a .kmqv file.

    Attributes
    ----------
    k : int
        The stream's palette size.
    frames : list of FrameStats
    stream_bytes : int
        Size of the whole .kmqv (header, packets, index, end record).
    path : str
        The .kmqv measured or written.
    seconds : float or None
        Encoding time, when the video was encoded here.
    worst : tuple or None
        (frame number, source frame, decoded frame) of the lowest PSNR, for a picture.
    """

    k: int
    frames: list[FrameStats] = field(default_factory=list)
    stream_bytes: int = 0
    path: str = ""
    seconds: float | None = None
    worst: tuple[int, np.ndarray, np.ndarray] | None = None
    worst_psnr: float = math.inf

    def observe(self, stats: FrameStats, source: np.ndarray | None, decoded: Callable[[], np.ndarray]) -> None:
        """Record a frame; keep its pictures when its PSNR is the lowest so far (``decoded`` makes one)."""
        self.frames.append(stats)
        if stats.psnr is None or source is None:
            return
        if self.worst is None or stats.psnr < self.worst_psnr:
            self.worst = (stats.number, source.copy(), np.array(decoded(), copy=True))
            self.worst_psnr = stats.psnr

    def summary(self, pixels_per_frame: int, channels: int, input_bytes: int | None) -> dict[str, Any]:
        """Totals and per-frame numbers, as ``--json`` prints them."""
        count = len(self.frames)
        scores = [f.psnr for f in self.frames if f.psnr is not None]
        duration = self.frames[-1].seconds - self.frames[0].seconds if count > 1 else 0.0
        raw = pixels_per_frame * channels * count
        mean_psnr = None
        if scores:
            finite_mse = [255.0**2 / 10 ** (score / 10) for score in scores if math.isfinite(score)]
            pooled = sum(finite_mse) / len(scores)
            mean_psnr = math.inf if pooled == 0 else 10 * math.log10(255.0**2 / pooled)
        return {
            "k": self.k,
            "path": self.path,
            "frames": count,
            "keyframes": sum(f.keyframe for f in self.frames),
            "refits": None if any(f.refit is None for f in self.frames) else sum(bool(f.refit) for f in self.frames),
            "scene_cuts": (
                None if any(f.scene_cut is None for f in self.frames) else sum(bool(f.scene_cut) for f in self.frames)
            ),
            "stream_bytes": self.stream_bytes,
            "bits_per_pixel": 8.0 * self.stream_bytes / (pixels_per_frame * max(count, 1)),
            "kbit_per_second": 8.0 * self.stream_bytes / duration / 1000.0 if duration > 0 else None,
            "psnr": mean_psnr,
            "psnr_min": min(scores) if scores else None,
            "reduction_vs_raw": raw / self.stream_bytes if self.stream_bytes else None,
            "reduction_vs_input": input_bytes / self.stream_bytes if input_bytes and self.stream_bytes else None,
            "encode_seconds": self.seconds,
            "per_frame": [vars(stats) for stats in self.frames],
        }


@dataclass
class VideoReport:
    """What ``kmq analyze`` produced for a video or a .kmqv file."""

    name: str
    folder: Path
    kind: str
    width: int
    height: int
    channels: int
    frame_rate: float | None
    input_bytes: int | None
    reference: str | None
    runs: list[VideoRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything ``--json`` prints: the video, each run's totals and per-frame numbers, the files."""
        pixels = self.width * self.height
        return finite(
            {
                "name": self.name,
                "kind": self.kind,
                "video": {
                    "width": self.width,
                    "height": self.height,
                    "channels": self.channels,
                    "frame_rate": self.frame_rate,
                    "input_bytes": self.input_bytes,
                    "reference": self.reference,
                },
                "runs": [run.summary(pixels, self.channels, self.input_bytes) for run in self.runs],
                "notes": self.notes,
                "files": self.files,
            }
        )


# ---------------------------------------------------------------- measuring


def _encode_run(
    path: Path, folder: Path, k: int, *, max_frames: int, seed: int, max_pixels: int | None, progress: Progress | None
) -> tuple[VideoRun, Any]:
    """Encode a source video at one K into ``folder/coded``, measuring every frame."""
    from kmq.codec.video import KmqvWriter
    from kmq.media.files import atomic_output
    from kmq.media.video_encoder import VideoEncoder
    from kmq.media.video_source import VideoSource

    output = folder / "coded" / f"video-k{k:03d}{KMQV_SUFFIX}"
    run = VideoRun(k=k, path=str(output))
    started = time.perf_counter()
    with VideoSource(path, max_frames=max_frames, max_pixels=max_pixels) as source:
        info = source.info
        encoder = VideoEncoder(
            info.width,
            info.height,
            k=k,
            channels=info.channels,
            frame_rate=info.frame_rate or 30,
            time_base=info.time_base,
            seed=seed,
        )
        pixels = info.width * info.height
        with atomic_output(output, force=True) as stream:
            writer = KmqvWriter(stream, encoder.header)
            for frame in source:
                encoded = encoder.encode(frame.pixels, frame.pts)
                writer.write_packet(encoded.packet, number=encoded.number, pts=encoded.pts, keyframe=encoded.keyframe)
                stats = FrameStats(
                    number=encoded.number,
                    seconds=float(encoded.pts * encoder.header.time_base),
                    packet_bytes=len(encoded.packet),
                    keyframe=encoded.keyframe,
                    palette_updates=encoded.palette_updates,
                    changed_share=encoded.changed_pixels / pixels,
                    refit=encoded.refit,
                    scene_cut=encoded.scene_cut,
                    psnr=encoded.psnr,
                )
                run.observe(stats, frame.pixels, lambda: encoded.reconstructed)
                if progress:
                    progress(encoded.number + 1, info.frame_count or max_frames, f"K={k}: frame {encoded.number + 1}")
            run.stream_bytes = writer.finish(source_bytes=info.file_bytes)
    run.seconds = time.perf_counter() - started
    return run, info


def _warm_up_encoder() -> None:
    """Encode two tiny frames, so compiling the encoder's kernels is no part of the time measured."""
    from kmq.media.video_encoder import VideoEncoder

    encoder = VideoEncoder(16, 16, k=2)
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[8:] = 255
    encoder.encode(frame)
    encoder.encode(frame[::-1].copy())


def _measure_kmqv(
    path: Path, reference: Path | None, *, max_frames: int, max_pixels: int | None, progress: Progress | None
) -> tuple[VideoRun, Any]:
    """Read a .kmqv packet by packet, decode it, and compare with ``reference`` when given."""
    from kmq.codec.video import KmqvReader, VideoDecoder, parse_frame
    from kmq.media.images import max_pixels_from_env

    limit = max_pixels_from_env() if max_pixels is None else max_pixels
    with open(path, "rb") as stream:
        reader = KmqvReader(stream, name=str(path), max_pixels=limit)
        header = reader.header
        decoder = VideoDecoder(header, max_pixels=limit)
        run = VideoRun(k=header.k, path=str(path), stream_bytes=path.stat().st_size)
        sources = _reference_frames(reference, header, max_frames, max_pixels)
        previous = None
        pixels = header.width * header.height
        for _, record in reader.packets():
            if len(run.frames) >= max_frames:
                break
            packet = parse_frame(record, header)
            decoded = decoder.decode(packet)
            changed = 1.0 if previous is None or packet.keyframe else float(np.mean(decoded.indices != previous))
            previous = decoded.indices.copy()
            source = next(sources, None)
            stats = FrameStats(
                number=packet.number,
                seconds=float(packet.pts * header.time_base),
                packet_bytes=len(record),
                keyframe=packet.keyframe,
                palette_updates=packet.palette_size if packet.keyframe else len(packet.palette_entries),
                changed_share=changed,
                refit=None,
                scene_cut=None,
                psnr=None if source is None else psnr(source, decoded.to_array()),
            )
            run.observe(stats, source, decoded.to_array)
            if progress:
                progress(len(run.frames), max_frames, f"frame {packet.number + 1}")
    return run, header


def _reference_frames(reference: Path | None, header: Any, max_frames: int, max_pixels: int | None):
    """The source's frames one by one, checked against the stream's size; nothing without a source."""
    if reference is None:
        return iter(())
    from kmq.media.video_source import VideoSource

    def frames():
        with VideoSource(reference, max_frames=max_frames, max_pixels=max_pixels) as source:
            info = source.info
            if (info.width, info.height, info.channels) != (header.width, header.height, header.channels):
                raise InputError(
                    f"the reference {reference} has {info.width}×{info.height}×{info.channels} frames, "
                    f"the .kmqv {header.width}×{header.height}×{header.channels}"
                )
            for frame in source:
                yield frame.pixels

    return frames()


# ---------------------------------------------------------------- the report


def analyze_video(
    path: str | os.PathLike,
    folder: str | os.PathLike | None = None,
    *,
    ks: Sequence[int] = (DEFAULT_VIDEO_K,),
    reference: str | os.PathLike | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    seed: int = 0,
    max_pixels: int | None = None,
    progress: Progress | None = None,
) -> VideoReport:
    """Measure a video frame by frame and write the report folder.

    A source video is encoded at each K (``folder/coded/video-kNNN.kmqv``); a .kmqv file is
    measured as it is, against ``reference`` (its source) when given. Writes ``report.html``,
    ``report.json`` and ``figures/*.png`` as for images.

    Parameters
    ----------
    path : path-like
        A video PyAV reads, or a .kmqv file.
    folder : path-like, optional
        Output folder (default ``./STEM-analysis``).
    ks : sequence of int
        Palette sizes to encode a source video at (ignored for .kmqv: the file has its own).
    reference : path-like, optional
        For a .kmqv: the video it was encoded from, for PSNR per frame.
    max_frames : int
        Stop after this many frames.
    seed : int
        Seed of the palette fits.
    max_pixels : int, optional
        Refuse larger frames.
    progress : callable, optional
        ``progress(done, total, what)``.

    Returns
    -------
    VideoReport
    """
    from kmq.analysis.compare import check_ks

    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: no such file" if not source.exists() else f"{source} is not a file")
    if max_frames < 1:
        raise InputError(f"max_frames must be positive, got {max_frames}")
    target = Path(folder) if folder is not None else Path(f"{source.stem}-analysis")
    is_kmqv = source.suffix.lower() == KMQV_SUFFIX
    if reference is not None and not is_kmqv:
        raise InputError("a reference video goes with a .kmqv input (a source video is its own reference)")
    ks = check_ks(ks)
    prepare_folder(target)
    if is_kmqv:
        reference_path = Path(reference) if reference is not None else None
        run, header = _measure_kmqv(
            source, reference_path, max_frames=max_frames, max_pixels=max_pixels, progress=progress
        )
        report = _new_report(source, target, "kmqv", header, None, reference_path)
        report.runs.append(run)
        report.notes.append(
            "A .kmqv file records keyframes and palette updates but not why a palette was refitted: "
            "refits and scene cuts are shown when kmq analyze encodes the source video itself."
        )
        if reference_path is None:
            report.notes.append("No --reference source video was given, so there is no PSNR per frame.")
    else:
        _warm_up_encoder()
        runs = []
        for k in ks:
            run, info = _encode_run(
                source, target, k, max_frames=max_frames, seed=seed, max_pixels=max_pixels, progress=progress
            )
            runs.append(run)
        report = _new_report(source, target, "video", info, info.file_bytes, source)
        for run in runs:
            report.runs.append(run)
            report.files[f"coded/{Path(run.path).stem}"] = run.path
    if any(len(run.frames) >= max_frames for run in report.runs):
        report.notes.append(
            f"Only the first {max_frames} frames were analysed (--max-frames); "
            "sizes are not compared with the whole input file."
        )
        report.input_bytes = None
    if progress:
        progress(0, 1, "drawing figures")
    from kmq.analysis import figures

    images = {"frames": figures.video_frames_figure(report)}
    for run in report.runs:
        if run.worst is not None:
            images[f"worst-k{run.k:03d}"] = figures.worst_frame_figure(report.name, run)
    save_report(target, report.files, images, lambda: render_video_html(report, images), report.summary)
    return report


def _new_report(
    source: Path, folder: Path, kind: str, stream: Any, input_bytes: int | None, reference: Path | None
) -> VideoReport:
    """An empty report for a stream whose size, channels and frame rate ``stream`` gives."""
    return VideoReport(
        name=source.name,
        folder=folder,
        kind=kind,
        width=stream.width,
        height=stream.height,
        channels=stream.channels,
        frame_rate=float(stream.frame_rate) if stream.frame_rate else None,
        input_bytes=input_bytes,
        reference=None if reference is None else str(reference),
    )


def _totals_table(report: VideoReport) -> str:
    summary = report.summary()
    head = (
        "<tr><th>K</th><th>frames</th><th>keyframes</th><th>refits</th><th>scene cuts</th><th>.kmqv bytes</th>"
        "<th>bits/pixel</th><th>kbit/s</th><th>PSNR (dB)</th><th>worst PSNR (dB)</th>"
        "<th>× smaller than raw</th><th>× smaller than input</th><th>encode (s)</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{run['k']}</td><td>{run['frames']}</td><td>{run['keyframes']}</td>"
        f"<td>{format_number(run['refits'], 0)}</td><td>{format_number(run['scene_cuts'], 0)}</td>"
        f"<td>{run['stream_bytes']:,}</td><td>{format_number(run['bits_per_pixel'], 3)}</td>"
        f"<td>{format_number(run['kbit_per_second'], 0)}</td><td>{format_number(run['psnr'], 2)}</td>"
        f"<td>{format_number(run['psnr_min'], 2)}</td><td>{format_number(run['reduction_vs_raw'], 1)}</td>"
        f"<td>{format_number(run['reduction_vs_input'], 2)}</td><td>{format_number(run['encode_seconds'], 1)}</td></tr>"
        for run in summary["runs"]
    )
    return f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"


def render_video_html(report: VideoReport, images: dict[str, bytes]) -> str:
    """The video report as one HTML page, figures inlined."""
    name = html.escape(report.name)
    rate = f", {report.frame_rate:g} frames/s" if report.frame_rate else ""
    source = f", input file {report.input_bytes:,} bytes" if report.input_bytes else ""
    notes = "".join(f"<p class=warning>{html.escape(note)}</p>" for note in report.notes)
    worst = "".join(
        figure_html(
            images,
            f"worst-k{run.k:03d}",
            f"worst frame at K={run.k}",
            f"K = {run.k}: the frame with the lowest PSNR (frame {run.worst[0]}), its decoded picture and its error.",
        )
        for run in report.runs
        if run.worst is not None
    )
    what = "encoded here from the source" if report.kind == "video" else "read from the .kmqv file"
    body = f"""
<h1>kmq analysis: {name}</h1>
<p>{report.width}×{report.height} pixels, {report.channels} channels{rate}{source}; streams {what}.</p>
{notes}
<h2>Totals</h2>
<p>PSNR over all analysed frames together (the mean squared error pooled, then in dB); bits per pixel = 8 × .kmqv size
÷ (pixels per frame × frames); raw = {8 * report.channels}-bit pixels for every frame.</p>
{_totals_table(report)}
<h2>Frame by frame</h2>
{figure_html(images, "frames", "bits, PSNR, keyframes and palette refits per frame",
             "Bits per frame (log scale), PSNR per frame, share of pixels whose index changed, and palette entries "
             "sent, with keyframes and palette refits marked.")}
{worst}
"""
    return page_html(f"kmq analysis: {report.name}", body)
