"""Chunked video encoding on Dask: split at source keyframes, encode chunks in parallel, join them into one .kmqv."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from kmq.codec.video import KmqvReader, KmqvWriter, parse_frame, renumber_packet
from kmq.errors import FormatError, InputError, OutputError
from kmq.media.files import atomic_output, check_output

__all__ = ["ChunkSpan", "ChunkResult", "encode_chunk", "encode_video_chunked", "join_chunks", "plan_chunks"]

# Chunk boundaries are passed to the video source as seconds; a tenth of a microsecond above
# the keyframe's time keeps float rounding from landing on the frame before it (the source
# accepts frames within a microsecond of the start).
_BOUNDARY_NUDGE_S = 1e-7


@dataclass(frozen=True)
class ChunkSpan:
    """A run of source frames that starts at a source keyframe.

    Attributes
    ----------
    index : int
        Position of the chunk in the video.
    start_pts : int
        Source timestamp of the chunk's first frame (stream time base).
    end_pts : int or None
        Source timestamp where the next chunk starts; None for the last chunk.
    offset : int
        ``start_pts`` minus the timestamp of the video's first frame: what the chunk's own
        timestamps (which start at 0) become in the joined stream.
    frames : int
        Frames expected (packets counted in the container), for progress.
    """

    index: int
    start_pts: int
    end_pts: int | None
    offset: int
    frames: int = 0


@dataclass(frozen=True)
class ChunkResult:
    """What encoding one chunk gave: its file and totals."""

    index: int
    path: str
    frames: int
    keyframes: int
    refits: int
    scene_cuts: int
    output_bytes: int
    psnr: float
    seconds: float


def plan_chunks(path: str | os.PathLike, chunks: int) -> tuple[list[ChunkSpan], Fraction]:
    """Choose up to ``chunks`` spans of a video, each starting at a source keyframe, of similar length.

    Only packets are read (no frame is decoded except the first), so planning an hour of video
    takes seconds. A video with fewer keyframes than ``chunks`` gives fewer spans.

    Parameters
    ----------
    path : path-like
        Any video PyAV reads.
    chunks : int
        Spans wanted, at least 1.

    Returns
    -------
    spans : list of ChunkSpan
        In order; together they cover the whole video.
    time_base : fractions.Fraction
        Seconds per timestamp unit of the source's video stream.

    Raises
    ------
    kmq.errors.InputError
        Not a readable video, or no timestamps to split by.
    """
    import av

    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise InputError(f"chunks must be a positive whole number, got {chunks!r}")
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: no such file")
    try:
        with av.open(str(source), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise InputError(f"{source} has no video stream")
            stream = container.streams.video[0]
            time_base = Fraction(stream.time_base or Fraction(1, 1000))
            keyframes, frame_pts = [], []
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                if packet.is_keyframe:
                    keyframes.append(packet.pts)
                frame_pts.append(packet.pts)
        first_pts = _first_frame_pts(source, time_base)
    except av.error.FFmpegError as exc:
        raise InputError(f"{source} is not a video PyAV can read ({exc})") from None
    if not frame_pts or first_pts is None:
        raise InputError(f"{source} has no timestamped frames to split into chunks")
    starts = _balanced_starts(sorted(pts for pts in set(keyframes) if pts > first_pts), first_pts, max(frame_pts), chunks)
    bounds = [first_pts, *starts]
    frame_pts = np.sort(np.array(frame_pts, np.int64))
    spans = []
    for i, start in enumerate(bounds):
        end = bounds[i + 1] if i + 1 < len(bounds) else None
        frames = np.searchsorted(frame_pts, end if end is not None else frame_pts[-1] + 1) - np.searchsorted(frame_pts, start)
        spans.append(ChunkSpan(index=i, start_pts=start, end_pts=end, offset=start - first_pts, frames=int(frames)))
    return spans, time_base


def _first_frame_pts(source: Path, time_base: Fraction) -> int | None:
    """Timestamp of the first frame a full decode keeps (frames before time 0 are dropped, as the source does)."""
    import av

    with av.open(str(source), metadata_errors="ignore") as container:
        for frame in container.decode(video=0):
            if frame.pts is not None and frame.pts * time_base >= 0:
                return int(frame.pts)
    return None


def _balanced_starts(candidates: list[int], first: int, last: int, chunks: int) -> list[int]:
    """Keyframes nearest to the ``chunks - 1`` evenly spaced times between ``first`` and ``last``."""
    chosen: list[int] = []
    remaining = candidates
    for part in range(1, chunks):
        if not remaining:
            break
        target = first + (last - first) * part / chunks
        best = min(range(len(remaining)), key=lambda i: abs(remaining[i] - target))
        chosen.append(remaining[best])
        remaining = remaining[best + 1 :]
    return chosen


# ---------------------------------------------------------------- on the workers


def encode_chunk(
    input_path: str,
    chunk_path: str,
    span: ChunkSpan,
    time_base: Fraction,
    options: dict[str, Any],
) -> ChunkResult:
    """Encode one span of a video to its own .kmqv file; runs as one Dask task.

    The chunk's first frame is a keyframe with a palette fitted afresh, so the chunk decodes on
    its own; its frames are numbered, and timed, from 0.

    Parameters
    ----------
    input_path : str
        The source video (workers must see it at this path).
    chunk_path : str
        Where to write the chunk's .kmqv file.
    span : ChunkSpan
        The frames to encode.
    time_base : fractions.Fraction
        Of the source's video stream.
    options : dict
        Passed to :func:`kmq.media.video.encode_video` (k, keyint, dither, motion, temporal_layers, size,
        seed, max_pixels).

    Returns
    -------
    ChunkResult
    """
    from kmq.media.video import encode_video
    from kmq.scale.cluster import one_kernel_thread

    one_kernel_thread()
    start = 0.0 if span.index == 0 else float(span.start_pts * time_base) + _BOUNDARY_NUDGE_S
    duration = None if span.end_pts is None else float(span.end_pts * time_base) + _BOUNDARY_NUDGE_S - start
    summary = encode_video(input_path, chunk_path, start=start or None, duration=duration, force=True, **options)
    return ChunkResult(
        index=span.index,
        path=chunk_path,
        frames=summary.frames,
        keyframes=summary.keyframes,
        refits=summary.refits,
        scene_cuts=summary.scene_cuts,
        output_bytes=summary.output_bytes,
        psnr=summary.psnr,
        seconds=summary.seconds,
    )


# ---------------------------------------------------------------- joining


def join_chunks(
    chunk_paths: Sequence[str | os.PathLike],
    offsets: Sequence[int],
    output: str | os.PathLike,
    *,
    force: bool = False,
    inputs: tuple = (),
    source_bytes: int = 0,
) -> int:
    """Join chunk .kmqv files into one: frames renumbered and retimed, one keyframe index.

    Parameters
    ----------
    chunk_paths : sequence of path-like
        Complete .kmqv files with the same stream header, in order; each starts with a keyframe.
    offsets : sequence of int
        Added to each chunk's timestamps (see :attr:`ChunkSpan.offset`).
    output : path-like
        The joined file, written atomically.
    force : bool
        Replace an existing output.
    inputs : tuple of path-like
        Files the output must not replace.
    source_bytes : int
        Size of the source video, for the end record.

    Returns
    -------
    int
        Bytes written.

    Raises
    ------
    kmq.errors.FormatError
        A chunk is incomplete or damaged, or the chunks do not fit together.
    """
    if not chunk_paths or len(chunk_paths) != len(offsets):
        raise InputError("join_chunks needs one offset per chunk, and at least one chunk")
    with contextlib.ExitStack() as stack:
        readers = []
        for path in chunk_paths:
            reader = KmqvReader(stack.enter_context(open(path, "rb")), name=str(path))
            if reader.end is None:
                raise FormatError(f"chunk {path} is incomplete: {reader.trailer_problem}")
            readers.append(reader)
        header = readers[0].header
        for path, reader in zip(chunk_paths, readers):
            if reader.header != header:
                raise FormatError(f"chunk {path} has another stream header ({reader.header}) than the first ({header})")
        with atomic_output(output, force=force, inputs=inputs) as stream:
            writer = KmqvWriter(stream, header)
            number, last_pts, end_pts = 0, None, 0
            for path, reader, offset in zip(chunk_paths, readers, offsets):
                for position, (_, record) in enumerate(reader.packets()):
                    packet = parse_frame(record, header, what=f"a packet of chunk {path}")
                    if position == 0 and not packet.keyframe:
                        raise FormatError(f"chunk {path} does not start with a keyframe")
                    pts = packet.pts + offset
                    if last_pts is not None and pts <= last_pts:
                        raise FormatError(f"chunk {path} overlaps the chunk before it (time {pts} after {last_pts})")
                    if (packet.number, packet.pts) != (number, pts):
                        record = renumber_packet(packet, number, pts, header.channels)
                    writer.write_packet(record, number=number, pts=pts, keyframe=packet.keyframe)
                    number, last_pts = number + 1, pts
                end_pts = reader.end.end_pts + offset
            return writer.finish(end_pts=end_pts, source_bytes=source_bytes)


# ---------------------------------------------------------------- on the client


def encode_video_chunked(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    chunks: int,
    scheduler: str | None = None,
    workers: int | None = None,
    client: Any = None,
    force: bool = False,
    progress: Callable[[Any], None] | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> Any:
    """Encode a video in ``chunks`` parts in parallel on Dask and join them into one .kmqv file.

    The video is split at source keyframes into spans of similar length; each span is encoded
    as its own stream (starting with a keyframe and a fresh palette fit), and the chunks are
    joined into one valid .kmqv whose frames decode exactly as the chunks decoded one by one.

    Parameters
    ----------
    input_path : path-like
        The video; the workers must see it at the same path.
    output_path : path-like, optional
        The .kmqv file (default: the input with .kmqv). Chunk files are written beside it, in a
        hidden folder removed at the end.
    chunks : int
        Parts wanted (fewer when the video has fewer keyframes).
    scheduler, workers, client
        Which Dask cluster, as for :func:`kmq.scale.run_batch`.
    force : bool
        Replace an existing output.
    progress : callable, optional
        Called with a :class:`kmq.media.video.EncodeProgress` as each chunk finishes.
    stop : threading.Event, optional
        When set, the encode is abandoned (KeyboardInterrupt) and its chunk files removed.
    **options
        ``k``, ``keyint``, ``dither``, ``motion``, ``temporal_layers``, ``size``, ``seed``,
        ``max_pixels`` as for
        :func:`kmq.media.video.encode_video`.

    Returns
    -------
    kmq.media.video.EncodeSummary
    """
    from kmq.media.video import EncodeSummary, default_video_output

    unknown = set(options) - {"k", "keyint", "dither", "motion", "temporal_layers", "size", "seed", "max_pixels"}
    if unknown:
        raise InputError(f"chunked encoding does not take {', '.join(sorted(unknown))} (it encodes the whole video)")
    if scheduler and workers is not None:
        raise InputError("--workers sets the size of the local cluster; with --scheduler, start workers on the cluster's machines")
    output = Path(output_path) if output_path is not None else default_video_output(input_path)
    check_output(output, force=force, inputs=(input_path,))
    started = time.perf_counter()
    spans, time_base = plan_chunks(input_path, chunks)
    scratch = output.parent / f".{output.name}.chunks-{uuid.uuid4().hex[:8]}"
    try:
        scratch.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot write beside {output}: {exc.strerror or exc}") from None
    try:
        with contextlib.ExitStack() as stack:
            if client is None:
                from kmq.scale.cluster import connect

                client = stack.enter_context(connect(scheduler, workers=workers, video=True))
            results = _run_chunks(client, str(Path(input_path).resolve()), scratch, spans, time_base, options, started, progress, stop)
        source_bytes = Path(input_path).stat().st_size
        output_bytes = join_chunks(
            [result.path for result in results],
            [span.offset for span in spans],
            output,
            force=force,
            inputs=(input_path,),
            source_bytes=source_bytes,
        )
        with open(output, "rb") as stream:
            reader = KmqvReader(stream, name=str(output))
            header, end = reader.header, reader.end
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    frames = sum(result.frames for result in results)
    squared = sum(result.frames * _mse(result.psnr) for result in results) / max(frames, 1)
    return EncodeSummary(
        input_path=Path(input_path),
        output_path=output,
        width=header.width,
        height=header.height,
        channels=header.channels,
        k=header.k,
        frames=frames,
        keyframes=sum(result.keyframes for result in results),
        refits=sum(result.refits for result in results),
        scene_cuts=sum(result.scene_cuts for result in results),
        output_bytes=output_bytes,
        input_bytes=source_bytes,
        psnr=math.inf if squared == 0 else 10.0 * math.log10(255.0 * 255.0 / squared),
        seconds=time.perf_counter() - started,
        duration=float(end.end_pts * header.time_base) if end else 0.0,
    )


def _run_chunks(
    client: Any,
    input_path: str,
    scratch: Path,
    spans: list[ChunkSpan],
    time_base: Fraction,
    options: dict[str, Any],
    started: float,
    progress: Callable[[Any], None] | None,
    stop: threading.Event | None,
) -> list[ChunkResult]:
    """Submit one task per chunk; wait for all (or a stop); return the results in order."""
    from distributed import wait

    from kmq.media.video import EncodeProgress

    futures = [
        client.submit(
            encode_chunk,
            input_path,
            str(scratch / f"chunk-{span.index:05d}.kmqv"),
            span,
            time_base,
            options,
            key=f"kmq-chunk-{scratch.name}-{span.index}",
            pure=False,
        )
        for span in spans
    ]
    results: dict[int, ChunkResult] = {}
    pending = set(futures)
    try:
        while pending:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            try:
                done = wait(list(pending), timeout=0.25, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                continue
            for future in done:
                pending.discard(future)
                result = future.result()  # a chunk's error (bad input, unwritable output) ends the encode
                results[result.index] = result
                if progress is not None:
                    progress(
                        EncodeProgress(
                            frames=sum(r.frames for r in results.values()),
                            total=sum(span.frames for span in spans),
                            output_bytes=sum(r.output_bytes for r in results.values()),
                            elapsed=time.perf_counter() - started,
                            keyframes=sum(r.keyframes for r in results.values()),
                        )
                    )
    finally:
        if pending:
            client.cancel(list(pending))
    return [results[span.index] for span in spans]


def _mse(psnr: float) -> float:
    return 0.0 if math.isinf(psnr) else 255.0 * 255.0 / 10.0 ** (psnr / 10.0)
