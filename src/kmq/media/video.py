"""Video files in and out: encode any video to .kmqv, decode .kmqv to ordinary video, open .kmqv for reading."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kmq.codec.video import DecodedFrame, KeyframeEntry, KmqvReader, KmqvWriter, StreamHeader, parse_frame
from kmq.errors import FormatError, InputError, OutputError
from kmq.media.files import atomic_output, check_output
from kmq.media.video_encoder import DEFAULT_KEYINT, VideoEncoder
from kmq.media.video_output import PngFolder, open_sink, sink_kind
from kmq.media.video_source import VideoSource

__all__ = [
    "EncodeProgress",
    "EncodeSummary",
    "DecodeSummary",
    "VideoFile",
    "encode_video",
    "decode_video",
    "export_video",
    "open_video",
    "describe_kmqv",
    "default_video_output",
]

VIDEO_SUFFIX = ".kmqv"
EXPORT_KINDS = ("gif", "apng")
DECODE_KINDS = ("ffv1", "h264", "png")
_KIND_NAMES = {"ffv1": ".mkv", "h264": ".mp4", "png": "a folder of PNGs", "gif": ".gif", "apng": ".apng"}


@dataclass(frozen=True)
class EncodeProgress:
    """Where an encode stands, handed to the progress callback after each frame."""

    frames: int
    total: int | None
    output_bytes: int
    elapsed: float
    keyframes: int


@dataclass(frozen=True)
class EncodeSummary:
    """The result of :func:`encode_video`.

    Attributes
    ----------
    input_path, output_path : pathlib.Path
    width, height, channels, k : int
    frames, keyframes, refits, scene_cuts : int
        Frames written; keyframes among them; full palette fits (first frame and scene cuts).
    output_bytes, input_bytes : int
        Sizes on disk; for a trimmed encode, the input's share for the part encoded.
    psnr : float
        Over all frames together (from the mean squared error of every sample), dB.
    seconds : float
        Time the encode took.
    duration : float
        Seconds of video encoded.
    """

    input_path: Path
    output_path: Path
    width: int
    height: int
    channels: int
    k: int
    frames: int
    keyframes: int
    refits: int
    scene_cuts: int
    output_bytes: int
    input_bytes: int
    psnr: float
    seconds: float
    duration: float

    @property
    def raw_bytes(self) -> int:
        """Size of the same frames as raw 24-bit RGB (32-bit with alpha)."""
        return self.width * self.height * self.channels * self.frames

    @property
    def bits_per_pixel(self) -> float:
        """Bits of output per pixel of every frame."""
        return 8.0 * self.output_bytes / (self.width * self.height * self.frames)

    @property
    def fps(self) -> float:
        """Frames encoded per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else math.inf


@dataclass(frozen=True)
class DecodeSummary:
    """The result of :func:`decode_video`: frames written, where, and the damage met with ``salvage``."""

    input_path: Path
    output_path: Path
    kind: str
    frames: int
    damage: str | None


def default_video_output(input_path: str | os.PathLike) -> Path:
    """INPUT with the .kmqv suffix."""
    return Path(input_path).with_suffix(VIDEO_SUFFIX)


def encode_video(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    k: int = 64,
    keyint: int = DEFAULT_KEYINT,
    dither: str = "none",
    motion: bool = True,
    temporal_layers: int = 1,
    max_frames: int | None = None,
    start: float | None = None,
    duration: float | None = None,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    force: bool = False,
    max_pixels: int | None = None,
    progress: Callable[[EncodeProgress], None] | None = None,
) -> EncodeSummary:
    """Encode a video file to .kmqv, streaming frame by frame (memory does not grow with length).

    Parameters
    ----------
    input_path : path-like
        Any video PyAV (FFmpeg) reads.
    output_path : path-like, optional
        The .kmqv file (default: the input with .kmqv).
    k : int
        Palette size, 2..256.
    keyint : int
        Keyframes at least this often (frames).
    dither : {"none", "ordered"}
    motion : bool
        Search each block's motion vector (RGB video); False codes every block in place, which
        is faster on still pictures and costs more bytes on moving ones.
    temporal_layers : {1, 2}
        With 2, every other delta frame is discardable (a player that is behind may skip it);
        the file is somewhat larger.
    max_frames : int, optional
        Stop after this many frames.
    start, duration : float, optional
        Seconds to skip, and seconds to encode.
    size : (int, int), optional
        Scale frames to this width and height.
    seed : int
        Seed of the palette fits.
    force : bool
        Replace an existing output.
    max_pixels : int, optional
        Refuse larger frames.
    progress : callable, optional
        Called with an :class:`EncodeProgress` after each frame.

    Returns
    -------
    EncodeSummary

    Raises
    ------
    kmq.errors.InputError
        Not a video, truncated or corrupt input, bad parameters.
    kmq.errors.OutputError
        The output exists (without ``force``) or cannot be written; nothing is left behind.
    """
    output = Path(output_path) if output_path is not None else default_video_output(input_path)
    check_output(output, force=force, inputs=(input_path,))
    started = time.perf_counter()
    with VideoSource(
        input_path, size=size, start=start, duration=duration, max_frames=max_frames, max_pixels=max_pixels
    ) as source:
        info = source.info
        encoder = VideoEncoder.for_source(info, k=k, keyint=keyint, dither=dither, seed=seed, motion=motion,
            temporal_layers=temporal_layers,
        )
        with atomic_output(output, force=force, inputs=(input_path,)) as stream:
            writer = KmqvWriter(stream, encoder.header)
            for frame in source:
                encoded = encoder.encode(frame.pixels, frame.pts)
                writer.write_packet(encoded.packet, number=encoded.number, pts=encoded.pts, keyframe=encoded.keyframe)
                if progress is not None:
                    progress(
                        EncodeProgress(
                            frames=encoded.number + 1,
                            total=info.frame_count,
                            output_bytes=writer.bytes_written,
                            elapsed=time.perf_counter() - started,
                            keyframes=encoder.totals.keyframes,
                        )
                    )
            end_pts = writer.end_pts_so_far()
            # Against the part of the input that was encoded (all of it, unless trimmed).
            input_bytes = source.share_of_file(float(end_pts * encoder.header.time_base))
            output_bytes = writer.finish(end_pts=end_pts, source_bytes=input_bytes)
    totals = encoder.totals
    return EncodeSummary(
        input_path=Path(input_path),
        output_path=output,
        width=info.width,
        height=info.height,
        channels=info.channels,
        k=k,
        frames=totals.frames,
        keyframes=totals.keyframes,
        refits=totals.refits,
        scene_cuts=totals.scene_cuts,
        output_bytes=output_bytes,
        input_bytes=input_bytes,
        psnr=totals.psnr,
        seconds=time.perf_counter() - started,
        duration=float(end_pts * encoder.header.time_base),
    )


class VideoFile:
    """A .kmqv file open for reading: iterate its frames, or start from the keyframe at a time.

    Use :func:`open_video` to make one.

    Attributes
    ----------
    header : StreamHeader
        Size, channels, K and timing.
    keyframes : list of KeyframeEntry
        The keyframe index (empty for a file cut short).
    """

    def __init__(self, path: str | os.PathLike, *, max_pixels: int | None = None) -> None:
        from kmq.media.images import max_pixels_from_env

        self.path = Path(path)
        self._stream: BinaryIO = _open_input(self.path)
        try:
            limit = max_pixels_from_env() if max_pixels is None else max_pixels
            self._reader = KmqvReader(self._stream, name=str(self.path), max_pixels=limit)
        except BaseException:
            self._stream.close()
            raise
        self.header: StreamHeader = self._reader.header
        self.keyframes: list[KeyframeEntry] = self._reader.keyframes
        self._start: KeyframeEntry | None = None
        self.damage: str | None = None

    @property
    def frame_count(self) -> int | None:
        """Frames in the file, from its end record (None for a file cut short)."""
        end = self._reader.end
        return end.frames if end else None

    @property
    def duration(self) -> float | None:
        """Seconds of video, from the end record (None for a file cut short)."""
        end = self._reader.end
        return float(end.end_pts * self.header.time_base) if end else None

    @property
    def source_bytes(self) -> int:
        """Size of the file the video was encoded from (0 when unknown)."""
        end = self._reader.end
        return end.source_bytes if end else 0

    @property
    def complete(self) -> bool:
        """Whether the file has its keyframe index and end record."""
        return self._reader.end is not None

    @property
    def problem(self) -> str | None:
        """Why the keyframe index and end record are missing or unusable, when they are."""
        return self._reader.trailer_problem

    def scan(self) -> tuple[int, int, float | None, str | None]:
        """Count frames and keyframes by reading every packet (index maps are not decoded).

        Returns
        -------
        tuple
            Frames readable, keyframes among them, seconds up to the last one, and the damage that
            stopped the scan (None when the data ended cleanly).
        """
        frames = keyframes = 0
        last_pts = None
        damage = None
        try:
            for _, record in self._reader.packets():
                packet = parse_frame(record, self.header)
                frames += 1
                keyframes += packet.keyframe
                last_pts = packet.pts
        except FormatError as exc:
            damage = str(exc)
        duration = float(last_pts * self.header.time_base) if last_pts is not None else None
        return frames, keyframes, duration, damage

    def seek(self, seconds: float) -> float:
        """Make iteration start at the last keyframe at or before ``seconds``; return that keyframe's time."""
        entry = self._reader.keyframe_at(seconds)
        self._start = entry
        return float(entry.pts * self.header.time_base)

    def frames(self, *, start: float | None = None, salvage: bool = False) -> Iterator[DecodedFrame]:
        """Decoded frames in order, from the beginning or from the keyframe at or before ``start`` seconds.

        With ``salvage``, a damaged frame ends the iteration quietly and :attr:`damage` says where.
        """
        if start is not None:
            self.seek(start)
        entry, self._start = self._start, None
        iterator = self._reader.frames(salvage=salvage, start=entry)
        try:
            yield from iterator
        finally:
            self.damage = getattr(self._reader, "damage", None)

    def __iter__(self) -> Iterator[DecodedFrame]:
        return self.frames()

    def close(self) -> None:
        """Close the file."""
        self._stream.close()

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def open_video(path: str | os.PathLike, *, max_pixels: int | None = None) -> VideoFile:
    """Open a .kmqv file; iterating it yields decoded frames.

    Parameters
    ----------
    path : path-like
        A .kmqv file.
    max_pixels : int, optional
        Refuse larger frames.

    Returns
    -------
    VideoFile
        Iterate it for :class:`~kmq.codec.video.DecodedFrame` objects (``.to_array()``, ``.time``),
        or call ``.frames(start=seconds)`` to begin at the keyframe at or before a time.

    Examples
    --------
    >>> import kmq
    >>> with kmq.open_video("clip.kmqv") as video:  # doctest: +SKIP
    ...     for frame in video.frames(start=5.0):
    ...         pixels = frame.to_array()
    """
    return VideoFile(path, max_pixels=max_pixels)


def _open_input(path: Path) -> BinaryIO:
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a .kmqv file")
    try:
        return open(path, "rb")  # noqa: SIM115 (closed by the VideoFile)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def decode_video(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    salvage: bool = False,
    force: bool = False,
    max_pixels: int | None = None,
    kinds: tuple[str, ...] = DECODE_KINDS + EXPORT_KINDS,
    progress: Callable[[int, int | None], None] | None = None,
) -> DecodeSummary:
    """Decode a .kmqv file to ordinary video: FFV1 .mkv (lossless), H.264 .mp4, a PNG folder, GIF or APNG.

    Parameters
    ----------
    input_path : path-like
        The .kmqv file.
    output_path : path-like
        Its suffix picks the format; a path ending in a slash (or without a suffix) is a folder of PNGs.
    salvage : bool
        Write the frames before a damaged one instead of failing.
    force : bool
        Replace an existing output.
    kinds : tuple of str
        Formats allowed (``kmq video export`` allows only gif and apng).
    progress : callable, optional
        Called with (frames written, frames in the file) after each frame.

    Returns
    -------
    DecodeSummary

    Raises
    ------
    kmq.errors.FormatError
        A damaged or truncated file (without ``salvage``); no output is left behind.
    """
    output = Path(output_path)
    kind = sink_kind(output_path)
    if kind not in kinds:
        allowed = " or ".join(_KIND_NAMES[name] for name in kinds)
        raise InputError(f"cannot write {output}: this command writes {allowed}")
    with open_video(input_path, max_pixels=max_pixels) as video:
        header = video.header
        settings = dict(
            width=header.width,
            height=header.height,
            channels=header.channels,
            time_base=header.time_base,
            frame_rate=header.frame_rate,
        )
        if kind == "png":
            sink: Any = PngFolder(output, force=force)
            written = _copy_frames(video, sink, salvage, progress)
        else:
            with atomic_output(output, force=force, inputs=(input_path,)) as stream:
                sink = open_sink(stream, output, kind, **settings)
                written = _copy_frames(video, sink, salvage, progress)
        if written == 0:
            raise FormatError(f"{input_path}: no frame could be decoded ({video.damage})")
        return DecodeSummary(Path(input_path), output, kind, written, video.damage)


def _copy_frames(video: VideoFile, sink: Any, salvage: bool, progress: Callable[[int, int | None], None] | None) -> int:
    written = 0
    try:
        for frame in video.frames(salvage=salvage):
            sink.write(frame.to_array(), frame.pts, palette=frame.palette, indices=frame.indices)
            written += 1
            if progress is not None:
                progress(written, video.frame_count)
        if written == 0:
            sink.abort()
            return 0
        sink.close()
    except BaseException as exc:
        sink.abort()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write the output: {exc}") from None
        raise
    return written


def export_video(
    input_path: str | os.PathLike, output_path: str | os.PathLike, *, salvage: bool = False, force: bool = False
) -> DecodeSummary:
    """Export a .kmqv file as an animated GIF (each frame keeps its own palette) or APNG.

    See :func:`decode_video` for the parameters.
    """
    return decode_video(input_path, output_path, salvage=salvage, force=force, kinds=EXPORT_KINDS)


def describe_kmqv(path: str | os.PathLike) -> dict[str, Any]:
    """Facts about a .kmqv file for ``kmq info``, in display order, without decoding its frames.

    A file cut short (no end record) is described by scanning its records.
    """
    source = Path(path)
    with open_video(source) as video:
        header = video.header
        size = source.stat().st_size
        frames = video.frame_count
        keyframes = len(video.keyframes) if video.complete else None
        duration = video.duration
        damage = None
        if frames is None:
            frames, keyframes, duration, damage = video.scan()
        facts: dict[str, Any] = {
            "file": str(source),
            "format": "kmq video",
            "width": header.width,
            "height": header.height,
            "channels": header.channels,
            "k": header.k,
            "frames": frames,
            "keyframes": keyframes,
            "duration_seconds": duration,
            "frame_rate": float(header.frame_rate) if header.frame_rate else None,
            "time_base": f"{header.time_base.numerator}/{header.time_base.denominator}",
        }
        pixels = header.width * header.height * max(frames, 1)
        raw = pixels * header.channels
        facts["bits_per_pixel"] = 8.0 * size / pixels
        if duration:
            facts["bitrate_kbit_s"] = 8.0 * size / duration / 1000.0
        facts["file_bytes"] = size
        facts["raw_rgb_bytes"] = raw
        facts["ratio_vs_raw_rgb"] = raw / size
        if video.source_bytes:
            facts["input_file_bytes"] = video.source_bytes
            facts["ratio_vs_input_file"] = video.source_bytes / size
        if not video.complete:
            facts["complete"] = False
            facts["problem"] = video.problem
            if damage:
                facts["damage"] = damage
        return facts
