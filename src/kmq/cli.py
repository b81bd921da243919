"""The ``kmq`` command: parse arguments, call the API, print. No logic of its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class _UsageError(Exception):
    """Bad command-line usage, reported as one ``error:`` line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------- helpers


def _whole_number(text: str, low: int, high: int | None, not_whole: str, out_of_range: str) -> int:
    """``text`` as an int in ``low``..``high`` (no upper end when None), or an argparse error.

    The messages are formats: ``not_whole`` gets ``{text!r}``, ``out_of_range`` gets ``{value}``.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_whole.format(text=text)) from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(out_of_range.format(value=value))
    return value


def _k_value(text: str) -> int:
    return _whole_number(
        text, 2, 256, "K must be a whole number from 2 to 256, got {text!r}", "K must be from 2 to 256, got {value}"
    )


def _k_list(text: str) -> list[int]:
    return [_k_value(part) for part in text.split(",") if part.strip()]


def _k_or_auto(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else _k_value(text)


def _positive_int(text: str) -> int:
    return _whole_number(
        text, 1, None, "expected a positive whole number, got {text!r}", "expected a positive whole number, got {value}"
    )


def _console(args: argparse.Namespace) -> Any:
    from rich.console import Console

    # Piped output is read by programs and logs: don't fold lines at a guessed 80 columns.
    width = None if sys.stdout.isatty() else 160
    return Console(quiet=getattr(args, "quiet", False), highlight=False, width=width, soft_wrap=width is not None)


def _size(nbytes: int) -> str:
    return f"{nbytes:,} B"


# ---------------------------------------------------------------- compress / decompress / info


def _add_image_commands(commands: Any) -> None:
    compress = commands.add_parser(
        "compress",
        help="compress an image to .kmq or an indexed PNG",
        description="Quantize an image to K colours by k-means and write a .kmq file or an indexed PNG (PNG8).",
    )
    compress.add_argument("input", help="image file (PNG, JPEG, WebP, TIFF, BMP, GIF, ...)")
    compress.add_argument("-o", "--output", help="output file (default: INPUT with .kmq, or INPUT-kmq.png)")
    compress.add_argument("-k", "--k", dest="k", type=_k_or_auto, default=64, help="palette size, 2..256, or 'auto' with a target (default 64)")
    compress.add_argument("--target-psnr", type=float, default=None, metavar="DB", help="with -k auto: the smallest K whose PSNR reaches DB")
    compress.add_argument("--target-ssim", type=float, default=None, metavar="VALUE", help="with -k auto: the smallest K whose SSIM reaches VALUE")
    compress.add_argument("--dither", choices=("none", "fs", "ordered"), default="none", help="dithering (default none)")
    compress.add_argument("--space", choices=("rgb", "oklab"), default="rgb", help="clustering colour space (default rgb)")
    compress.add_argument("--format", choices=("kmq", "png"), default=None, help="output format (default: from the output suffix, else kmq)")
    compress.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    compress.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    compress.add_argument("--max-pixels", type=_positive_int, default=None, help="refuse larger inputs (default: KMQ_MAX_PIXELS or 2^28)")
    compress.set_defaults(run=_run_compress)

    decompress = commands.add_parser(
        "decompress", help="decode a .kmq file to an image", description="Decode a .kmq file to PNG (or any format by suffix)."
    )
    decompress.add_argument("input", help=".kmq file")
    decompress.add_argument("-o", "--output", help="output image (default: INPUT with .png)")
    decompress.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    decompress.add_argument("--max-pixels", type=_positive_int, default=None, help="refuse larger images")
    decompress.set_defaults(run=_run_decompress)

    info = commands.add_parser("info", help="describe a .kmq or .kmqv file", description="Print dimensions, K, bits per pixel, sizes and ratios.")
    info.add_argument("input", help=".kmq or .kmqv file")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_run_info)


def _run_compress(args: argparse.Namespace) -> int:
    from kmq.media.still import compress

    fmt = args.format
    if fmt is None:
        fmt = "png" if args.output and Path(args.output).suffix.lower() == ".png" else "kmq"
    started = time.perf_counter()
    result = compress(
        args.input,
        args.output,
        k=args.k,
        dither=args.dither,
        space=args.space,
        seed=args.seed,
        format=fmt,
        force=args.force,
        max_pixels=args.max_pixels,
        target_psnr=args.target_psnr,
        target_ssim=args.target_ssim,
    )
    elapsed = time.perf_counter() - started
    console = _console(args)
    if result.auto is not None:
        console.print(result.auto.describe())
    console.print(
        f"{result.input_path} -> {result.output_path}: {result.width}×{result.height}, K={result.k}, "
        f"{result.bits_per_pixel:.3f} bits/pixel, {_size(result.output_bytes)} "
        f"({result.raw_bytes / result.output_bytes:.1f}× smaller than raw {8 * result.channels}-bit, "
        f"{result.input_bytes / result.output_bytes:.2f}× vs the input file) in {elapsed:.2f} s"
    )
    return EXIT_OK


def _run_decompress(args: argparse.Namespace) -> int:
    from kmq.media.still import decompress

    out = decompress(args.input, args.output, force=args.force, max_pixels=args.max_pixels)
    _console(args).print(f"{args.input} -> {out}")
    return EXIT_OK


def _run_info(args: argparse.Namespace) -> int:
    from kmq.media.inspect import describe_file

    facts = describe_file(args.input)
    if args.json:
        print(json.dumps(facts, indent=2))
        return EXIT_OK
    console = _console(args)
    width = max(len(key) for key in facts)
    for key, value in facts.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, int) and key.endswith("bytes"):
            value = _size(value)
        console.print(f"{key.replace('_', ' '):<{width}}  {value}")
    return EXIT_OK


# ---------------------------------------------------------------- demo


def _add_demo_command(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="compress a built-in photograph at several K and print the results",
        description="Run kmq on a real photograph that ships with an installed package (no download), "
        "write the outputs to a folder and print K, bits per pixel, PSNR, SSIM and sizes on disk.",
    )
    demo.add_argument("-o", "--output", default="kmq-demo", help="folder for the outputs (default ./kmq-demo; its own files are replaced)")
    demo.add_argument("-k", type=_k_list, default=[16, 32, 64, 128, 256], help="comma-separated palette sizes (default 16,32,64,128,256)")
    demo.add_argument("--json", action="store_true", help="print the table as JSON")
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from kmq.media.demo import run_demo

    console = _console(args)
    if not args.json:
        console.print("kmq demo: k-means colour quantization of a real photograph")
    report = run_demo(Path(args.output), args.k, progress=None if args.json else console.print)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    from rich.table import Table

    photo = report["photo"]
    table = Table(title=f"{photo['name']}: {photo['width']}×{photo['height']}, raw 24-bit RGB = {_size(photo['raw_bytes'])} on disk")
    for column in ("K", "bits packed", "bits/px disk", "PSNR dB", "SSIM", ".kmq bytes", "vs raw 24-bit", "PNG8 bytes", "time"):
        table.add_column(column, justify="right")
    for row in report["rows"]:
        table.add_row(
            str(row["k"]),
            str(row["bits_packed"]),
            f"{row['bits_per_pixel']:.3f}",
            f"{row['psnr']:.2f}",
            f"{row['ssim']:.4f}",
            f"{row['kmq_bytes']:,}",
            f"{row['reduction_vs_raw']:.1f}× smaller",
            f"{row['png8_bytes']:,}",
            f"{row['seconds'] * 1000:.0f} ms",
        )
    console.print(table)
    console.print(f"outputs in {report['folder']}/ (the original as raw 24-bit PPM, each K as .kmq and as viewable PNG8)")
    return EXIT_OK


# ---------------------------------------------------------------- batch (Dask)

_BATCH_EPILOG = """\
Inputs are image files, folders (searched recursively) or glob patterns ('photos/**/*.jpg').
Outputs mirror the input tree under OUTDIR; OUTDIR/manifest.csv gets one row per input (status,
K, bytes in/out, bits per pixel, PSNR, seconds, content hashes, error). Exit code 0 when every
file succeeded, 1 when some failed (their rows say why), 2 for bad usage.

Without --scheduler a local Dask cluster (one worker process per core) starts and stops by
itself. To spread the work over several machines, start a scheduler and workers there:

  dask scheduler --port 8786                                # on one machine
  dask worker tcp://HOST:8786 --nworkers auto --nthreads 1  # on each machine
  kmq batch /shared/photos -o /shared/out --scheduler tcp://HOST:8786

Workers must see inputs and OUTDIR at the same paths (a shared file system).
'python -m kmq.scale' prints the full guide.
"""


def _add_scale_commands(commands: Any) -> None:
    batch = commands.add_parser(
        "batch",
        help="compress many images in parallel on Dask (local or a cluster)",
        description="Compress many images at once on a Dask cluster: a local one by default, or an existing one.",
        epilog=_BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    batch.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    batch.add_argument("-k", type=_k_value, default=64, help="palette size, 2..256 (default 64)")
    batch.add_argument("--format", choices=("kmq", "png"), default="kmq", help="output format (default kmq)")
    batch.add_argument("--workers", type=_positive_int, default=None, help="worker processes of the local cluster (default: one per core)")
    batch.add_argument("--scheduler", metavar="ADDRESS", default=None, help="use an existing Dask cluster, e.g. tcp://HOST:8786")
    batch.add_argument("--resume", action="store_true", help="continue an earlier run into OUTDIR: skip files whose output matches the manifest")
    batch.add_argument("-f", "--force", action="store_true", help="start afresh in an OUTDIR that holds an earlier run, replacing its outputs")
    batch.add_argument("--max-pixels", type=_positive_int, default=None, help="refuse larger inputs (default: KMQ_MAX_PIXELS or 2^28)")
    batch.add_argument("--json", action="store_true", help="print the summary as JSON")
    batch.set_defaults(run=_run_batch)


def _run_batch(args: argparse.Namespace) -> int:
    from kmq.scale.batch import run_batch
    from kmq.scale.progress import BatchProgress
    from kmq.scale.signals import graceful_stop

    show_bar = not (args.quiet or args.json)
    with graceful_stop() as stop, BatchProgress() as bar:
        summary = run_batch(
            args.inputs,
            args.output,
            k=args.k,
            format=args.format,
            workers=args.workers,
            scheduler=args.scheduler,
            resume=args.resume,
            force=args.force,
            max_pixels=args.max_pixels,
            progress=bar if show_bar else None,
            stop=stop,
        )
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        _console(args).print(summary.line(), soft_wrap=True)
    return EXIT_FAILED if summary.failed or summary.interrupted else EXIT_OK


def _chunked_video_encoder(args: argparse.Namespace) -> Callable[..., Any]:
    """``encode_video`` for ``kmq video encode --chunks N``: the same arguments, the work spread over Dask."""
    from kmq.errors import InputError
    from kmq.scale.chunks import encode_video_chunked
    from kmq.scale.signals import graceful_stop

    if args.scheduler and args.chunks is None:
        raise InputError("--scheduler needs --chunks")

    def encode(input_path: str, output_path: str | None, **options: Any) -> Any:
        for name in ("max_frames", "start", "duration"):
            if options.pop(name) is not None:
                raise InputError(f"--chunks encodes the whole video; it does not combine with --{name.replace('_', '-')}")
        with graceful_stop() as stop:
            return encode_video_chunked(input_path, output_path, chunks=args.chunks, scheduler=args.scheduler, stop=stop, **options)

    return encode


# ---------------------------------------------------------------- analyze

_ANALYSIS_METHODS = "kmeans,hierarchical,mediancut,octree,minibatch"


def _k_list_or_auto(text: str) -> list[int] | str:
    return "auto" if text.strip().lower() == "auto" else _k_list(text)


def _add_analysis_commands(commands: Any) -> None:
    analyze = commands.add_parser(
        "analyze",
        help="compare clustering methods across K (or measure a video frame by frame) and write an HTML report",
        description="For an image: quantize it with several clustering methods at several K, push every palette "
        "through the same remap and coder, and write DIR/report.html (self-contained, opens offline), the figures "
        "as PNG files, report.json and the coded .kmq files. For a video (.mp4, .mkv, .webm, ...): encode it at "
        "each K and plot bits and PSNR per frame, keyframes and palette refits; for a .kmqv file: the same from "
        "the file, with PSNR when --reference names its source.",
    )
    analyze.add_argument("input", help="image file, video file, or .kmqv file")
    analyze.add_argument(
        "-k",
        "--k",
        dest="k",
        type=_k_list_or_auto,
        default=None,
        help="comma-separated palette sizes, or 'auto' with --target-psnr/--target-ssim "
        "(default 8,16,32,64,128,256 for an image, 64 for a video)",
    )
    analyze.add_argument("--methods", default=_ANALYSIS_METHODS, help=f"comma-separated methods (default {_ANALYSIS_METHODS})")
    analyze.add_argument("-o", "--output", default=None, help="report folder (default ./STEM-analysis; its own files are replaced)")
    analyze.add_argument("--target-psnr", type=float, default=None, metavar="DB", help="with -k auto: smallest K whose PSNR reaches DB")
    analyze.add_argument("--target-ssim", type=float, default=None, metavar="VALUE", help="with -k auto: smallest K whose SSIM reaches VALUE")
    analyze.add_argument("--reference", default=None, metavar="SOURCE", help="for a .kmqv input: the video it was encoded from")
    analyze.add_argument("--max-frames", type=_positive_int, default=300, help="video: frames to analyse (default 300)")
    analyze.add_argument("--seed", type=int, default=0, help="seed of the randomised methods (default 0)")
    analyze.add_argument("--max-pixels", type=_positive_int, default=None, help="refuse larger inputs")
    analyze.add_argument("--json", action="store_true", help="print the numbers as JSON")
    analyze.set_defaults(run=_run_analyze)


def _run_analyze(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from kmq.analysis.video import is_video_path

    video = is_video_path(args.input)
    targets = args.target_psnr is not None or args.target_ssim is not None
    if args.k != "auto" and targets:
        raise _UsageError("--target-psnr and --target-ssim go with -k auto")
    if video and args.k == "auto":
        raise _UsageError("-k auto is for still images; give a video one or more K")
    if args.reference is not None and not Path(args.input).suffix.lower() == ".kmqv":
        raise _UsageError("--reference goes with a .kmqv input")
    errors = Console(stderr=True)
    with Progress(console=errors, transient=True, disable=args.quiet or not errors.is_terminal) as bar:
        task = bar.add_task("analyzing", total=None)
        options = {
            "seed": args.seed,
            "max_pixels": args.max_pixels,
            "progress": lambda done, total, what: bar.update(task, completed=done, total=total, description=what),
        }
        if args.k is not None:
            options["ks"] = args.k
        if video:
            from kmq.analysis.video import analyze_video

            report = analyze_video(args.input, args.output, reference=args.reference, max_frames=args.max_frames, **options)
        else:
            from kmq.analysis.report import analyze_file

            methods = [name.strip() for name in args.methods.split(",") if name.strip()]
            report = analyze_file(
                args.input, args.output, methods=methods, target_psnr=args.target_psnr, target_ssim=args.target_ssim, **options
            )
    summary = report.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    console = _console(args)
    console.print(_video_table(report.name, summary) if video else _image_table(report.name, summary))
    if not video:
        for method, facts in summary["methods"].items():
            if not facts["ran"]:
                console.print(f"{method}: {facts['note']}")
        if report.auto is not None:
            console.print(report.auto.describe())
    for sentence in summary.get("findings", []) + summary["notes" if video else "notices"]:
        console.print(sentence)
    console.print(f"report: {summary['files']['report']}")
    return EXIT_OK


def _image_table(name: str, summary: dict) -> Any:
    from rich.table import Table

    image = summary["image"]
    table = Table(title=f"{name}: {image['width']}×{image['height']}, raw 24-bit {_size(image['raw_bytes'])}")
    for column in ("method", "K", "PSNR dB", "SSIM", "bits/px coded", "vs raw 24-bit", "vs input", "time"):
        table.add_column(column, justify="left" if column == "method" else "right", no_wrap=column == "method")
    for row in summary["rows"]:
        vs_input = row["reduction_vs_input"]
        table.add_row(
            row["method"],
            str(row["k"]),
            "lossless" if row["psnr"] is None else f"{row['psnr']:.2f}",
            f"{row['ssim']:.4f}",
            f"{row['bits_per_pixel_coded']:.3f}",
            f"{row['reduction_vs_raw']:.1f}×",
            "–" if vs_input is None else f"{vs_input:.2f}×",
            f"{row['seconds']:.2f} s",
        )
    return table


def _video_table(name: str, summary: dict) -> Any:
    from rich.table import Table

    video = summary["video"]
    table = Table(title=f"{name}: {video['width']}×{video['height']}")
    for column in ("K", "frames", "keyframes", "refits", "bits/px", "kbit/s", "PSNR dB", "worst PSNR", "vs raw"):
        table.add_column(column, justify="right")

    def cell(value: Any, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    for run in summary["runs"]:
        table.add_row(
            str(run["k"]),
            str(run["frames"]),
            str(run["keyframes"]),
            cell(run["refits"], "d"),
            cell(run["bits_per_pixel"], ".3f"),
            cell(run["kbit_per_second"], ",.0f"),
            cell(run["psnr"], ".2f"),
            cell(run["psnr_min"], ".2f"),
            cell(run["reduction_vs_raw"], ".1f") + ("×" if run["reduction_vs_raw"] else ""),
        )
    return table


# ---------------------------------------------------------------- video


def _seconds(text: str) -> float:
    """A time as seconds (``12.5``) or ``[HH:]MM:SS[.fff]``."""
    try:
        value = 0.0
        for part in text.split(":"):
            value = value * 60 + float(part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or [HH:]MM:SS, got {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a time of zero or more, got {text!r}")
    return value


def _frame_size(text: str) -> tuple[int, int]:
    from kmq.errors import InputError
    from kmq.media.video_source import parse_size

    try:
        return parse_size(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_video_commands(commands: Any) -> None:
    video = commands.add_parser(
        "video",
        help="encode video to .kmqv, decode it, export GIF/APNG",
        description="K-means palette video: each frame continues the previous frame's palette, unchanged "
        "regions cost almost nothing, scene cuts start a keyframe with a fresh palette.",
    )
    actions = video.add_subparsers(dest="video_command", metavar="ACTION", parser_class=_Parser)
    video.set_defaults(run=lambda args: _usage_of(video))

    encode = actions.add_parser(
        "encode",
        help="encode a video file to .kmqv",
        description="Encode any video FFmpeg reads to .kmqv, frame by frame (memory does not grow with length).",
    )
    encode.add_argument("input", help="video file (MP4, MKV, WebM, MOV, GIF, ...)")
    encode.add_argument("-o", "--output", help="output .kmqv file (default: INPUT with .kmqv)")
    encode.add_argument("-k", type=_k_value, default=64, help="palette size, 2..256 (default 64)")
    encode.add_argument("--keyint", type=_positive_int, default=None, metavar="N", help="a keyframe at least every N frames (default 250)")
    encode.add_argument("--dither", choices=("none", "ordered"), default="none", help="dithering (default none)")
    encode.add_argument("--no-motion", dest="motion", action="store_false", help="no motion vectors: code every block in place (faster on still pictures, larger on moving ones)")
    encode.add_argument("--temporal-layers", type=int, choices=(1, 2), default=1, metavar="{1,2}", help="2: every other delta frame is discardable, so a player that is behind can skip it (default 1)")
    encode.add_argument("--max-frames", type=_positive_int, default=None, metavar="N", help="stop after N frames")
    encode.add_argument("--start", type=_seconds, default=None, metavar="T", help="skip to time T (seconds or [HH:]MM:SS)")
    encode.add_argument("--duration", type=_seconds, default=None, metavar="T", help="encode T of video")
    encode.add_argument("--size", type=_frame_size, default=None, metavar="WxH", help="scale frames, for example 1280x720")
    encode.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    encode.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    encode.add_argument("--max-pixels", type=_positive_int, default=None, help="refuse larger frames")
    encode.add_argument("--json", action="store_true", help="print the summary as JSON")
    encode.add_argument("--chunks", type=_positive_int, default=None, metavar="N", help="split at keyframes into N parts encoded in parallel on Dask")
    encode.add_argument("--scheduler", metavar="ADDRESS", default=None, help="with --chunks: an existing Dask cluster, e.g. tcp://HOST:8786")
    encode.set_defaults(run=_run_video_encode)

    for name, help_text, target in (
        ("decode", "decode .kmqv to FFV1 .mkv, H.264 .mp4 or a folder of PNGs", "OUT.mkv, OUT.mp4 or OUTDIR/"),
        ("export", "export .kmqv as an animated GIF or APNG", "OUT.gif or OUT.apng"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        action.add_argument("input", help=".kmqv file")
        action.add_argument("-o", "--output", required=True, help=f"output: {target}")
        action.add_argument("--salvage", action="store_true", help="keep the frames before a damaged one instead of failing")
        action.add_argument("-f", "--force", action="store_true", help="replace an existing output")
        action.set_defaults(run=_run_video_decode, export=name == "export")


def _usage_of(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_BAD_INPUT


def _run_video_encode(args: argparse.Namespace) -> int:
    from kmq.media.video import encode_video

    console = _console(args)
    options = {} if args.keyint is None else {"keyint": args.keyint}
    with _EncodeProgressBar(console, enabled=not (args.json or args.quiet)) as bar:
        summary = (encode_video if args.chunks is None and args.scheduler is None else _chunked_video_encoder(args))(
            args.input,
            args.output,
            k=args.k,
            dither=args.dither,
            motion=args.motion,
            temporal_layers=args.temporal_layers,
            max_frames=args.max_frames,
            start=args.start,
            duration=args.duration,
            size=args.size,
            seed=args.seed,
            force=args.force,
            max_pixels=args.max_pixels,
            progress=bar.update,
            **options,
        )
    facts = {
        "input": str(summary.input_path),
        "output": str(summary.output_path),
        "width": summary.width,
        "height": summary.height,
        "k": summary.k,
        "frames": summary.frames,
        "keyframes": summary.keyframes,
        "palette_refits": summary.refits,
        "scene_cuts": summary.scene_cuts,
        "duration_seconds": summary.duration,
        "output_bytes": summary.output_bytes,
        "bits_per_pixel": summary.bits_per_pixel,
        "psnr_db": summary.psnr,
        "ratio_vs_raw_rgb": summary.raw_bytes / summary.output_bytes,
        "ratio_vs_input_file": summary.input_bytes / summary.output_bytes,
        "seconds": summary.seconds,
        "fps": summary.fps,
    }
    if args.json:
        print(json.dumps(facts, indent=2))
        return EXIT_OK
    console.print(
        f"{summary.input_path} -> {summary.output_path}: {summary.frames} frames of {summary.width}×{summary.height} "
        f"({summary.duration:.2f} s), K={summary.k}"
    )
    console.print(
        f"keyframes {summary.keyframes}, palette refits {summary.refits} (scene cuts {summary.scene_cuts}); "
        f"{_size(summary.output_bytes)}, {summary.bits_per_pixel:.3f} bits/pixel, PSNR {summary.psnr:.2f} dB"
    )
    console.print(
        f"{facts['ratio_vs_raw_rgb']:.1f}× smaller than raw RGB, {facts['ratio_vs_input_file']:.2f}× vs the input file; "
        f"{summary.seconds:.1f} s at {summary.fps:.1f} frames/s"
    )
    return EXIT_OK


class _EncodeProgressBar:
    """A rich progress bar for ``kmq video encode``: frames, frames per second, ETA and size so far."""

    def __init__(self, console: Any, *, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("encoding"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:>6.1f} fps"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[size]}"),
                console=console,
                transient=True,
            )

    def __enter__(self) -> _EncodeProgressBar:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("encode", total=None, fps=0.0, size="")
        return self

    def update(self, state: Any) -> None:
        if self._progress is None:
            return
        fps = state.frames / state.elapsed if state.elapsed > 0 else 0.0
        self._progress.update(
            self._task, completed=state.frames, total=state.total, fps=fps, size=f"{state.output_bytes / 1e6:.2f} MB"
        )

    def __exit__(self, *exc_info: Any) -> None:
        if self._progress is not None:
            self._progress.stop()


def _run_video_decode(args: argparse.Namespace) -> int:
    from kmq.errors import FormatError
    from kmq.media.video import decode_video, export_video

    run = export_video if args.export else decode_video
    try:
        summary = run(args.input, args.output, salvage=args.salvage, force=args.force)
    except FormatError as exc:
        hint = "" if args.salvage else " (use --salvage to keep the frames before it)"
        raise FormatError(f"{exc}{hint}") from None
    console = _console(args)
    console.print(f"{summary.input_path} -> {summary.output_path}: {summary.frames} frames ({summary.kind})")
    if summary.damage:
        print(f"warning: stopped at damage, frames before it kept: {summary.damage}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------- live


def _fps_value(text: str) -> float:
    from fractions import Fraction

    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"fps must be a number such as 30 or 30000/1001, got {text!r}") from None
    if not 0 < value <= 240:
        raise argparse.ArgumentTypeError(f"fps must be above 0 and at most 240, got {text}")
    return float(value)


def _seconds_value(text: str) -> float:
    from kmq.live.server import MAX_ON_DEMAND  # only for --on-demand, which runs the server anyway

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seconds must be a number, got {text!r}") from None
    if not 0 < value <= MAX_ON_DEMAND:
        raise argparse.ArgumentTypeError(f"seconds must be above 0 and at most {MAX_ON_DEMAND:g}, got {text}")
    return value


def _port_value(text: str) -> int:
    return _whole_number(
        text, 0, 65535, "port must be a whole number, got {text!r}", "port must be 0..65535 (0: any free port), got {value}"
    )


_LIVE_EPILOG = """\
Open the player address in a browser: it decodes the palette indices in JavaScript and shows
fps, bit rate, compression against raw RGB, palette size and latency. GET /stats returns the
server's numbers as JSON, GET /snapshot.png the newest frame. The server binds 127.0.0.1 unless
--host says otherwise; any other address needs --token (one is generated and printed when none
is given), which /ws, /stats and /snapshot.png then require as ?token=... ; with --tls-cert the
page, the stream and the token go over TLS (https://, wss://). Ctrl-C stops it (and finishes a
--record file).

A stream as the source: an IP camera or another encoder, by its URL, or a pipeline on standard
input; a live stream's frames are taken as they arrive, and --loop connects again when it drops:
  kmq live --source rtsp://user:password@192.168.1.20:554/stream1 --loop
  ffmpeg -i INPUT -f mpegts - | kmq live --source -

With --on-demand the source (a camera, a stream, a file) is open only while somebody watches.
"""


def _add_live_commands(commands: Any) -> None:
    live = commands.add_parser(
        "live",
        help="stream a camera, a file, a network stream or a test pattern live to browsers",
        description="Encode a live source once, frame by frame, and stream the packets over WebSocket to "
        "every viewer; the player page decodes them in JavaScript.",
        epilog=_LIVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    live.add_argument("--source", default="testsrc", metavar="SOURCE", help="camera, camera:N, a video file, a stream's URL (rtsp://, http://, udp://, srt://, ...), - (a stream on standard input), or testsrc (a pan across a real photo; default)")
    live.add_argument("--loop", action="store_true", help="play a file source again when it ends; connect to a stream again when it ends or drops")
    live.add_argument("-k", type=_k_value, default=64, help="palette size, 2..256 (default 64)")
    live.add_argument("--size", type=_frame_size, default=None, metavar="WxH", help="frame size (default: the source's; 1280x720 for testsrc)")
    live.add_argument("--fps", type=_fps_value, default=None, help="source frame rate (default: the source's; 30 for testsrc)")
    live.add_argument("--keyint", type=_positive_int, default=None, metavar="N", help="a keyframe at least every N frames (default: 8 seconds' worth)")
    live.add_argument("--no-motion", dest="motion", action="store_false", help="no motion vectors: code every block in place (less CPU on still pictures)")
    live.add_argument("--temporal-layers", choices=("auto", "1", "2"), default="auto", help="auto (default): every other delta frame is discardable while a viewer is behind, so it is sent the others first; 2: always (the clip's stream about 15%% larger); 1: every frame a reference")
    live.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need a token)")
    live.add_argument("--port", type=_port_value, default=8765, help="port to listen on (default 8765; 0 picks a free one)")
    live.add_argument("--token", default=None, help="token viewers must give (default: none on loopback, generated otherwise)")
    live.add_argument("--tls-cert", default=None, metavar="CERT.pem", help="serve https:// and wss:// with this certificate chain (PEM)")
    live.add_argument("--tls-key", default=None, metavar="KEY.pem", help="the certificate's private key (PEM; default: in CERT.pem)")
    live.add_argument("--max-viewers", type=_positive_int, default=32, metavar="N", help="viewers at once (default 32)")
    live.add_argument("--on-demand", type=_seconds_value, nargs="?", const=10.0, default=None, metavar="S", help="close the source (camera, stream or file; nothing is encoded) once nobody has watched for S seconds (default 10), and open it again when a viewer comes")
    live.add_argument("--record", default=None, metavar="OUT.kmqv", help="also write the stream to a .kmqv file")
    live.add_argument("-f", "--force", action="store_true", help="replace an existing --record file")
    live.set_defaults(run=_run_live)

    watch = commands.add_parser(
        "watch",
        help="watch a live stream from Python: check it, count it, record it",
        description="Connect to a kmq live stream, decode every frame with kmq.VideoDecoder, and print what arrived "
        "(frames, keyframes, bit rate, latency); optionally write the frames to a video file or PNG folder, or keep "
        "the stream as it came in a .kmqv file. Ctrl-C stops watching and finishes the output; a second Ctrl-C abandons it.",
    )
    watch.add_argument("url", help="the stream, ws://HOST:PORT/ws")
    watch.add_argument("-o", "--output", default=None, help="write frames to OUT.mkv (lossless), OUT.mp4, OUT.gif, OUT.apng or OUTDIR/; OUT.kmqv keeps the stream as it came")
    watch.add_argument("--frames", type=_positive_int, default=None, metavar="N", help="stop after N frames (default: until the stream ends)")
    watch.add_argument("--token", default=None, help="the server's token")
    watch.add_argument("--cafile", default=None, metavar="CERT.pem", help="for wss://: trust the certificates in this file (a self-signed server's own)")
    watch.add_argument("--timeout", type=float, default=15.0, metavar="S", help="give up after S seconds without data (default 15)")
    watch.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    watch.add_argument("--json", action="store_true", help="print the summary as JSON")
    watch.set_defaults(run=_run_watch)


def _run_live(args: argparse.Namespace) -> int:
    from kmq.live.access import is_loopback, new_token
    from kmq.live.server import LiveOptions, run_live

    token = args.token
    generated = token is None and not is_loopback(args.host)
    if generated:
        token = new_token()
    options = LiveOptions(
        source=args.source,
        size=args.size,
        fps=args.fps,
        loop=args.loop,
        k=args.k,
        keyint=args.keyint,
        motion=args.motion,
        temporal_layers=args.temporal_layers if args.temporal_layers == "auto" else int(args.temporal_layers),
        host=args.host,
        port=args.port,
        token=token,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        record=Path(args.record) if args.record else None,
        force=args.force,
        max_viewers=args.max_viewers,
        on_demand=args.on_demand,
    )
    quiet = args.quiet

    def say(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    def ready(server: Any) -> None:
        source = server.source
        # Always printed, even with --quiet: the address is how the server is used.
        print(f"kmq live: {source.name} {source.width}×{source.height} at {float(source.fps):g} fps, K={args.k}", flush=True)
        print(f"player  {server.url}", flush=True)
        print(f"stream  {server.address('/ws', scheme='ws')}", flush=True)
        print(f"stats   {server.address('/stats')}", flush=True)
        print(f"picture {server.address('/snapshot.png')}", flush=True)
        if generated:
            print(f"token   {token} (generated; viewers, /stats and /snapshot.png need it)", flush=True)
        if server.tls is None and not is_loopback(args.host):
            say("note: without --tls-cert the token and the stream cross the network unencrypted")
        if server.recorder is not None:
            say(f"recording to {server.recorder.path}")
        if args.on_demand is not None:
            say(f"on demand: the source closes once nobody has watched for {args.on_demand:g} s, and opens for the next viewer")
        say("Ctrl-C stops.")

    server = run_live(options, on_ready=ready, log=say)
    stats = server.stats()
    encode = stats["encode_ms"]
    viewers = stats["viewers"]
    say(
        f"stopped ({server.end_reason}): {stats['frames_encoded']} frames encoded "
        f"(p50 {encode.get('p50')} ms, p95 {encode.get('p95')} ms), {stats['source']['frames_dropped']} dropped at the source, "
        f"{viewers.get('joined_total', 0)} viewers, {_size(stats['bytes_sent'])} sent"
    )
    if server.recorder is not None:
        say(f"recorded {server.recorder.frames} frames to {server.recorder.path}")
    if server.end_reason.startswith("source failed"):
        print(f"error: {server.end_reason}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _run_watch(args: argparse.Namespace) -> int:
    from kmq.live.watch import watch
    from kmq.scale.signals import graceful_stop

    console = _console(args)
    shown = {"at": 0.0}

    def progress(frame: Any, summary: Any) -> None:
        now = time.monotonic()
        if args.json or args.quiet or now - shown["at"] < 1.0:
            return
        shown["at"] = now
        print(f"\r{summary.frames} frames, {summary.fps:.1f} fps, {summary.kbit_per_s:.0f} kbit/s", end="", file=sys.stderr, flush=True)

    # The first Ctrl-C (or SIGTERM) stops watching and finishes the output; a second one abandons it.
    with graceful_stop() as stop:
        summary = watch(
            args.url, output=args.output, frames=args.frames, token=args.token, force=args.force,
            timeout=args.timeout, on_frame=progress, stop=stop.is_set, cafile=args.cafile,
        )
    if not (args.json or args.quiet):
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return EXIT_OK
    latency = summary.latency_ms
    console.print(
        f"{summary.url}: {summary.frames} frames of {summary.width}×{summary.height} (K={summary.k}), "
        f"{summary.keyframes} keyframes, {summary.skipped} skipped waiting for a keyframe; "
        f"{summary.fps:.1f} fps, {summary.kbit_per_s:.0f} kbit/s"
        + (f", latency p50 {latency['p50']} ms, p95 {latency['p95']} ms" if latency else "")
    )
    if summary.output is not None:
        console.print(f"frames written to {summary.output}")
    console.print(f"ended: {summary.end}")
    return EXIT_OK


# ---------------------------------------------------------------- entry point

_COMMAND_GROUPS: list[Callable[[Any], None]] = [_add_image_commands, _add_demo_command]
_COMMAND_GROUPS.append(_add_scale_commands)
_COMMAND_GROUPS.append(_add_analysis_commands)
_COMMAND_GROUPS.append(_add_video_commands)
_COMMAND_GROUPS.append(_add_live_commands)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kmq`` command and its subcommands."""
    from kmq import __version__

    parser = _Parser(prog="kmq", description="Image and video compression by k-means colour quantization.")
    parser.add_argument("--version", action="version", version=f"kmq {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add_group in _COMMAND_GROUPS:
        add_group(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kmq`` command; return its exit code (0 ok, 1 failed while working, 2 bad input).

    With ``argv`` None (the command itself, arguments from ``sys.argv``) the process is taken to
    end when this returns: see :mod:`kmq._startup` for what start-up and exit then skip.
    """
    from kmq._startup import freeze_for_exit, load_numba_without_blas
    from kmq.errors import KmqError

    whole_process = argv is None
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_BAD_INPUT
        if whole_process:
            load_numba_without_blas()
        return int(args.run(args))
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KmqError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:  # an unexpected failure: one line unless --debug
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if whole_process:
            freeze_for_exit()


if __name__ == "__main__":
    raise SystemExit(main())
