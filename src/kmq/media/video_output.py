"""Video output through PyAV: decoded frames to FFV1 .mkv, H.264 .mp4, a PNG folder, GIF or APNG."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from kmq.errors import InputError, OutputError

__all__ = ["VideoSink", "PngFolder", "open_sink", "sink_kind", "SINK_KINDS"]

#: Output kinds by file suffix; a path without a suffix (or ending in a slash) is a PNG folder.
SINK_KINDS = {".mkv": "ffv1", ".mp4": "h264", ".gif": "gif", ".apng": "apng"}
#: H.264 quality for ``kmq video decode -o OUT.mp4`` (visually lossless on palette frames).
H264_CRF = 18


def sink_kind(path: str | os.PathLike) -> str:
    """The kind of output a path asks for: ffv1, h264, gif, apng or png (a folder of PNG files)."""
    text = os.fspath(path)
    suffix = Path(text).suffix.lower()
    if text.endswith(("/", os.sep)) or not suffix:
        return "png"
    if suffix not in SINK_KINDS:
        raise InputError(
            f"cannot tell the output format of {text}: "
            "use .mkv (FFV1), .mp4 (H.264), .gif, .apng, or a folder for PNG frames"
        )
    return SINK_KINDS[suffix]


class VideoSink:
    """Writes frames (H×W×C uint8 with timestamps) to one output through PyAV.

    Parameters
    ----------
    stream : binary file
        Where the container goes (PNG folders are written by :class:`PngFolder` instead).
    kind : str
        ffv1, h264, gif or apng.
    width, height, channels : int
        Frame size; H.264 frames of odd size are padded by repeating the last row or column.
    time_base : fractions.Fraction
        Unit of the timestamps given to :meth:`write`.
    frame_rate : fractions.Fraction or None
        Nominal rate for the container.
    """

    def __init__(
        self,
        stream: Any,
        kind: str,
        *,
        width: int,
        height: int,
        channels: int,
        time_base: Fraction,
        frame_rate: Fraction | None,
    ) -> None:
        import av

        self.kind = kind
        self.channels = channels
        self.time_base = time_base
        formats = {"ffv1": "matroska", "h264": "mp4", "gif": "gif", "apng": "apng"}
        options = {"plays": "0"} if kind == "apng" else {}
        self._container = av.open(stream, "w", format=formats[kind], options=options)
        rate = frame_rate or Fraction(25)
        codec = {"ffv1": "ffv1", "h264": "libx264", "gif": "gif", "apng": "apng"}[kind]
        self._stream = self._container.add_stream(codec, rate=rate)
        self._pad = (0, 0)
        if kind == "h264":
            # 4:2:0 chroma needs even sides.
            self._pad = (height % 2, width % 2)
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(H264_CRF)}
            self._input_format = "rgb24"
        elif kind == "ffv1":
            self._stream.pix_fmt = "bgra" if channels == 4 else "bgr0"
            self._input_format = "rgba" if channels == 4 else "rgb24"
        elif kind == "gif":
            self._stream.pix_fmt = "pal8"
            self._input_format = "pal8"
        else:
            self._stream.pix_fmt = "rgba" if channels == 4 else "rgb24"
            self._input_format = self._stream.pix_fmt
        self._stream.width = width + self._pad[1]
        self._stream.height = height + self._pad[0]
        self._stream.time_base = time_base
        self._stream.codec_context.time_base = time_base
        self._last_pts: int | None = None

    def write(
        self, pixels: np.ndarray, pts: int, *, palette: np.ndarray | None = None, indices: np.ndarray | None = None
    ) -> None:
        """Add one frame; GIF output takes the palette and indices instead of the pixels."""
        import av

        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        if self.kind == "gif":
            frame = av.VideoFrame.from_ndarray((np.ascontiguousarray(indices), _argb_palette(palette)), format="pal8")
        else:
            if self.kind == "h264":
                pixels = pixels[:, :, :3]
                if any(self._pad):
                    pixels = np.pad(pixels, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format=self._input_format)
        frame.pts = pts
        frame.time_base = self.time_base
        self._mux(self._stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and finish the container."""
        self._mux(self._stream.encode(None))
        self._container.close()

    def abort(self) -> None:
        """Release the container without finishing it (the output is discarded)."""
        try:
            self._container.close()
        except Exception:  # the output is being thrown away; its state does not matter
            pass

    def _mux(self, packets: list) -> None:
        for packet in packets:
            self._container.mux(packet)


def _argb_palette(palette: np.ndarray) -> np.ndarray:
    """A 256×4 ARGB table for a pal8 frame; an entry with alpha below 128 becomes transparent."""
    table = np.zeros((256, 4), np.uint8)
    table[:, 0] = 255
    table[: len(palette), 1:4] = palette[:, :3]
    if palette.shape[1] == 4:
        table[: len(palette), 0] = np.where(palette[:, 3] < 128, 0, 255)
    return table


class PngFolder:
    """Frames as numbered PNG files in a folder that appears only once complete."""

    def __init__(self, folder: Path, *, force: bool) -> None:
        import tempfile

        self.folder = folder
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"output {folder} exists and is not a folder")
        if folder.exists() and any(folder.iterdir()) and not force:
            raise OutputError(f"output folder {folder} is not empty (use --force to add to it)")
        parent = folder.parent
        if not parent.is_dir():
            raise OutputError(f"cannot write {folder}: folder {parent} does not exist")
        try:
            self._staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=parent))
        except OSError as exc:
            raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from None
        self.count = 0

    def write(self, pixels: np.ndarray, pts: int, **_: Any) -> None:
        """Add one frame as the next numbered PNG file."""
        from PIL import Image

        Image.fromarray(pixels).save(self._staging / f"frame_{self.count:06d}.png", compress_level=1)
        self.count += 1

    def close(self) -> None:
        """Move the finished frames into place."""
        if not self.folder.exists():
            os.replace(self._staging, self.folder)
            return
        for item in sorted(self._staging.iterdir()):
            os.replace(item, self.folder / item.name)
        self._staging.rmdir()

    def abort(self) -> None:
        """Remove the frames written so far."""
        import shutil

        shutil.rmtree(self._staging, ignore_errors=True)


def open_sink(stream: Any, path: Path, kind: str, **settings: Any) -> VideoSink:
    """A sink for one of the container kinds, writing to ``stream``."""
    try:
        return VideoSink(stream, kind, **settings)
    except Exception as exc:  # PyAV reports a missing encoder as one of several errors
        raise OutputError(f"cannot write {path}: {exc}") from None
