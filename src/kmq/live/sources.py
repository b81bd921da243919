"""Live sources: a test pattern, a video file, a camera or a stream, each on its own thread at its own rate.

A source never waits for the encoder. It hands each frame to a :class:`FrameMailbox` that holds
the newest few; an encoder that falls behind takes the newest, and the frames it passes over are
dropped and counted.
"""

from __future__ import annotations

import collections
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from kmq.errors import InputError
from kmq.media.video_source import ffmpeg_reason

__all__ = [
    "Capture",
    "FrameMailbox",
    "LiveSource",
    "PatternSource",
    "FileSource",
    "CameraSource",
    "StreamSource",
    "decoder_threads",
    "open_source",
    "DEFAULT_SIZE",
]

#: Frame size of sources that have none of their own (the test pattern), and of cameras unless asked.
DEFAULT_SIZE = (1280, 720)
#: Frames the mailbox holds: the newest, and one behind it for a reader that takes every frame.
MAILBOX_DEPTH = 2
#: Seconds a network stream may take to open, and to send more data, before it counts as lost.
STREAM_TIMEOUT = (10.0, 10.0)
#: Seconds between attempts to open a lost network stream again (``--loop``); the last repeats.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
#: What a ``--source`` URL starts with: a scheme, as in rtsp://, http://, udp://, srt://.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Capture:
    """One frame as the source produced it.

    Attributes
    ----------
    pixels : numpy.ndarray
        H×W×3 uint8.
    number : int
        Frames the source produced before this one (counting those dropped).
    captured : float
        Wall-clock time of capture, seconds since the Unix epoch (what viewers measure latency from).
    monotonic : float
        The same moment on the monotonic clock (what timestamps are counted on).
    """

    pixels: np.ndarray
    number: int
    captured: float
    monotonic: float


class FrameMailbox:
    """The newest frames of a source, at most ``depth``, waiting for the encoder.

    ``put`` never blocks: when the mailbox is full the oldest frame is dropped and counted.
    """

    def __init__(self, depth: int = MAILBOX_DEPTH) -> None:
        self._frames: collections.deque[Capture] = collections.deque()
        self._depth = max(1, depth)
        self._ready = threading.Condition()
        self._closed = False
        self.produced = 0
        self.dropped = 0

    def put(self, capture: Capture) -> None:
        """Hand over a frame; drop the oldest waiting one if the encoder is behind."""
        with self._ready:
            if len(self._frames) >= self._depth:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(capture)
            self.produced += 1
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Capture | None:
        """The oldest waiting frame; None when closed and empty, or after ``timeout`` seconds."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._frames or self._closed, timeout):
                return None
            return self._frames.popleft() if self._frames else None

    def newest(self, timeout: float | None = None) -> Capture | None:
        """The newest waiting frame, dropping (and counting) the older ones; None as :meth:`get`.

        What a live encoder takes when it is slower than its source: a frame that waited while
        the previous one was encoded is already late, and encoding it would pass its delay on to
        every viewer.
        """
        with self._ready:
            if not self._ready.wait_for(lambda: self._frames or self._closed, timeout):
                return None
            if not self._frames:
                return None
            self.dropped += len(self._frames) - 1
            capture = self._frames.pop()
            self._frames.clear()
            return capture

    def close(self) -> None:
        """No more frames will come; wake the reader."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        """Whether the source has finished."""
        return self._closed


class LiveSource:
    """Base of the live sources: produces frames into a mailbox on a thread of its own.

    Attributes
    ----------
    name : str
        What the source is, for the stats and the page.
    width, height : int
        Frame size.
    fps : fractions.Fraction
        The rate the source runs at.
    error : BaseException or None
        Why the source stopped early, when it did.
    restarts : int
        Times the source started again after it ended (``--loop``: a file from its start, a
        stream by connecting again).
    wakes : int
        Times the source was opened again for a viewer after :meth:`demand` closed it.
    log : callable
        Receives a line for each event worth telling (a stream lost, connected again, the source
        closed while nobody watches and opened again).
    """

    name = "source"

    def __init__(self, width: int, height: int, fps: Fraction) -> None:
        self.width = width
        self.height = height
        self.fps = fps
        self.error: BaseException | None = None
        self.restarts = 0
        self.wakes = 0
        self.log: Callable[[str], None] = lambda line: None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._demand = threading.Condition()
        self._wanted = True
        #: Set by a source whose frames stopped because nobody watches (not because it ended).
        self._gave_up_idle = False
        self.mailbox = FrameMailbox()

    @property
    def idle(self) -> bool:
        """Whether the source is closed (or closing) because nobody watches."""
        return not self._wanted

    def demand(self, wanted: bool) -> None:
        """Close the source while nobody watches (``False``), and open it again for a viewer (``True``).

        Thread-safe. Idle, a source releases its device, file or stream and produces nothing;
        wanted again, it opens it afresh (a file from its start, a stream by connecting again)
        and its next frames follow. A source that cannot be opened again fails as a lost one does.
        """
        with self._demand:
            self._wanted = wanted
            self._demand.notify_all()

    def start(self) -> None:
        """Start producing frames."""
        self._thread = threading.Thread(target=self._run, name=f"kmq-live-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop producing and release the device or file."""
        self._stop.set()
        with self._demand:
            self._demand.notify_all()
        if self._thread is None:
            self._release()  # never started: nothing else will
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.mailbox.close()

    def _run(self) -> None:
        try:
            number = 0
            while True:
                self._gave_up_idle = False
                frames = self._frames()
                try:
                    for pixels in frames:
                        if self._stop.is_set() or not self._wanted:
                            break
                        self.mailbox.put(Capture(pixels, number, time.time(), time.monotonic()))
                        number += 1
                    else:
                        if not self._gave_up_idle:  # the end of the source
                            return
                finally:
                    frames.close()
                if self._stop.is_set():
                    return
                # Nobody watches: close the device, file or stream until somebody does.
                self._release()
                self.log(f"{self.name}: closed while nobody watches")
                while True:
                    with self._demand:
                        self._demand.wait_for(lambda: self._wanted or self._stop.is_set())
                    if self._stop.is_set():
                        return
                    if self._reopen():
                        break
                self.wakes += 1
                self.log(f"{self.name}: opened again for a viewer")
        except BaseException as exc:  # reported by the server; the stream then ends
            self.error = exc
        finally:
            self._release()
            self.mailbox.close()

    def _frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _release(self) -> None:
        """Free what the source holds (a file, a device); may be called again once freed."""

    def _reopen(self) -> bool:
        """Open again what :meth:`_release` freed, for :meth:`_frames` to read from the start.

        False: not opened, and given up on since (nobody watches any more).
        """
        return True

    def _paced(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Yield frames at the source's rate by the monotonic clock, whatever the consumer does.

        A source that is itself late (its thread starved of CPU) skips the frames it missed
        instead of bursting to catch up, as a camera would.
        """
        period = 1.0 / float(self.fps)
        deadline = time.monotonic()
        for pixels in frames:
            now = time.monotonic()
            if deadline > now:
                if self._stop.wait(deadline - now):
                    return
            elif now - deadline > period:
                deadline = now
            yield pixels
            deadline += period


class PatternSource(LiveSource):
    """``testsrc``: a pan and zoom across a real photograph (:class:`kmq.live.testsrc.TestPattern`).

    Parameters
    ----------
    size : (int, int)
        Width and height.
    fps : fractions.Fraction
        Frames per second.
    """

    name = "testsrc"

    def __init__(self, size: tuple[int, int], fps: Fraction) -> None:
        from kmq.live.testsrc import TestPattern

        super().__init__(size[0], size[1], fps)
        self._pattern = TestPattern(*size)
        self._pattern.frame(0.0)  # compiles the kernel before the clock starts

    def _frames(self) -> Iterator[np.ndarray]:
        def pictures() -> Iterator[np.ndarray]:
            started = time.monotonic()
            while True:
                yield self._pattern.frame(time.monotonic() - started)

        return self._paced(pictures())


class FileSource(LiveSource):
    """A video file played at a steady rate, scaled to ``size``; with ``loop``, played again at its end.

    Parameters
    ----------
    path : path-like
        Any video FFmpeg reads.
    size : (int, int), optional
        Scale frames to this size (default: the file's).
    fps : fractions.Fraction, optional
        Play at this rate (default: the file's nominal rate, else 30).
    loop : bool
        Start again at the end instead of ending the stream.
    """

    def __init__(self, path: str | Path, size: tuple[int, int] | None, fps: Fraction | None, *, loop: bool) -> None:
        from kmq.media.video_source import VideoSource

        self.path = Path(path)
        self.name = f"file {self.path.name}"
        self._size = size
        self._loop = loop
        self._video = VideoSource(self.path, size=size)
        info = self._video.info
        rate = fps or info.frame_rate or Fraction(30)
        super().__init__(info.width, info.height, Fraction(rate).limit_denominator(1000))

    def _frames(self) -> Iterator[np.ndarray]:
        def pictures() -> Iterator[np.ndarray]:
            video = self._video
            while True:
                delivered = 0
                for frame in video:
                    delivered += 1
                    # Live frames are opaque: a file's alpha channel, if any, is left out.
                    yield np.ascontiguousarray(frame.pixels[:, :, :3])
                video.close()
                if not self._loop or delivered == 0 or self._stop.is_set():
                    return
                self._reopen()
                video = self._video
                self.restarts += 1

        return self._paced(pictures())

    def _release(self) -> None:
        self._video.close()

    def _reopen(self) -> bool:
        from kmq.media.video_source import VideoSource

        self._video = VideoSource(self.path, size=(self.width, self.height))
        return True


class CameraSource(LiveSource):
    """A camera through FFmpeg's capture devices (``v4l2`` on Linux, ``avfoundation`` on macOS).

    Parameters
    ----------
    index : int
        Camera number: ``/dev/videoN`` on Linux, the device index on macOS.
    size : (int, int), optional
        Ask the camera for this size (frames are scaled to it when the camera picks another).
    fps : fractions.Fraction, optional
        Ask the camera for this rate; the camera's own timing is what the stream follows.
    """

    def __init__(self, index: int, size: tuple[int, int] | None, fps: Fraction | None) -> None:
        self.name = f"camera {index}"
        if sys.platform.startswith("linux"):
            device, kind = f"/dev/video{index}", "v4l2"
        elif sys.platform == "darwin":
            device, kind = f"{index}:none", "avfoundation"
        else:
            raise InputError(f"cameras are supported on Linux and macOS, not on {sys.platform}")
        options = {}
        if size is not None:
            options["video_size"] = f"{size[0]}x{size[1]}"
        if fps is not None:
            options["framerate"] = str(float(fps))
        self._device = (index, device, kind, options)
        self._open()
        stream = self._container.streams.video[0]
        width, height = size or (stream.codec_context.width, stream.codec_context.height)
        rate = fps or stream.average_rate or Fraction(30)
        super().__init__(width, height, Fraction(rate).limit_denominator(1000))

    def _frames(self) -> Iterator[np.ndarray]:
        for frame in self._container.decode(video=0):
            if self._stop.is_set():
                return
            yield _rgb(frame, self.width, self.height)

    def _release(self) -> None:
        self._container.close()

    def _reopen(self) -> bool:
        self._open()
        return True

    def _open(self) -> None:
        import av

        index, device, kind, options = self._device
        try:
            self._container = av.open(device, format=kind, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"cannot open camera {index} ({device}): {ffmpeg_reason(exc)}") from None


def _rgb(frame: Any, width: int, height: int) -> np.ndarray:
    """A decoded PyAV frame as H×W×3 RGB of the given size, whatever size and format it came in."""
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def shown_url(url: str) -> str:
    """A source URL as the stats and the log show it: without user, password or query (they may hold secrets).

    Examples
    --------
    >>> shown_url("rtsp://admin:secret@192.168.1.20:554/stream1?token=abc")
    'rtsp://192.168.1.20:554/stream1'
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


class StreamSource(LiveSource):
    """A stream read through FFmpeg: a network URL, or a video piped into standard input.

    What an IP camera or another encoder sends (``rtsp://``, ``http://``, ``udp://``, ``srt://``,
    ``rtmp://``, … in any container FFmpeg reads), or what a pipeline writes to standard input
    (``ffmpeg … -f mpegts - | kmq live --source -``). A live stream's frames are taken as they
    arrive, as a camera's are; a stream of known duration (a file served over HTTP, or redirected
    into standard input) is played at its rate, as a file is.

    Parameters
    ----------
    spec : str
        The URL, or ``-`` for standard input.
    size : (int, int), optional
        Scale frames to this size (default: the stream's first frame's).
    fps : fractions.Fraction, optional
        The rate the stream is taken to run at (default: the rate it declares, else 30).
    loop : bool
        Connect again, with growing pauses, when the stream ends or is lost (not for standard input).
    """

    def __init__(self, spec: str, size: tuple[int, int] | None, fps: Fraction | None, *, loop: bool) -> None:
        from kmq.media.images import max_pixels_from_env

        self.spec = spec
        self.name = "standard input" if spec == "-" else f"stream {shown_url(spec)}"
        if loop and spec == "-":
            raise InputError("--loop cannot start standard input again: loop in the program that writes it")
        if spec == "-" and sys.stdin is not None and sys.stdin.isatty():
            raise InputError("standard input is a terminal: pipe a stream into it (ffmpeg ... -f mpegts - | kmq live --source -)")
        self._loop = loop
        #: Whether frames are taken as they arrive (a live stream) rather than played at the rate.
        self.live = True
        self._open()
        try:
            stream = self._container.streams.video[0]
            width, height = size or (self._first.width, self._first.height)
            limit = max_pixels_from_env()
            if width * height > limit:
                raise InputError(f"{self.name} has {width}×{height} frames, above the limit of {limit} pixels")
            rate = fps or stream.average_rate or stream.guessed_rate or Fraction(30)
        except BaseException:
            self._container.close()
            raise
        super().__init__(width, height, Fraction(rate).limit_denominator(1000))

    def _open(self) -> None:
        """Open the stream and decode its first frame: ``_container``, ``_first``, and ``_decoded`` (the frames after it)."""
        import av

        try:
            # Standard input through FFmpeg's own pipe reader, which hands on what has arrived
            # (a Python file object would wait to fill its buffer: a quarter second at 1 Mbit/s).
            url, timeout = ("pipe:0", None) if self.spec == "-" else (self.spec, STREAM_TIMEOUT)
            container = av.open(url, timeout=timeout, metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"cannot open {self.name}: {_stream_reason(exc)}") from None
        try:
            if not container.streams.video:
                raise InputError(f"{self.name} has no video stream")
            if self.spec == "-":
                self.live = not stat.S_ISREG(os.fstat(0).st_mode)
            else:
                self.live = container.duration is None
            video = container.streams.video[0]
            video.thread_type = decoder_threads(video.codec_context.width, video.codec_context.height, live=self.live)
            decoded = container.decode(video=0)
            try:
                first = next(decoded, None)
            except (av.error.FFmpegError, OSError) as exc:
                raise InputError(f"cannot read {self.name}: {_stream_reason(exc)}") from None
            if first is None:
                raise InputError(f"{self.name} ended before its first frame")
        except BaseException:
            container.close()
            raise
        self._container, self._decoded, self._first = container, decoded, first

    def _frames(self) -> Iterator[np.ndarray]:
        import av

        def pictures() -> Iterator[np.ndarray]:
            while True:
                lost = None
                try:
                    yield _rgb(self._first, self.width, self.height)
                    for frame in self._decoded:
                        if self._stop.is_set():
                            return
                        yield _rgb(frame, self.width, self.height)
                except (av.error.FFmpegError, OSError) as exc:
                    lost = exc
                self._container.close()
                if not self._loop or self._stop.is_set():
                    if lost is not None:
                        raise InputError(f"{self.name} was lost: {_stream_reason(lost)}")
                    return
                what = "ended" if lost is None else f"was lost ({_stream_reason(lost)})"
                self.log(f"{self.name} {what}: connecting again")
                if not self._connect_again():
                    return
                self.restarts += 1

        return pictures() if self.live else self._paced(pictures())

    def _connect_again(self, attempt: int = 0) -> bool:
        """``--loop``: open the stream again after growing pauses, until it opens (True), the
        server stops or nobody watches any more (False)."""
        while True:
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            with self._demand:  # the pause ends early when the server stops or the last viewer has gone
                self._demand.wait_for(lambda: self._stop.is_set() or not self._wanted, timeout=delay)
            if self._stop.is_set():
                return False
            if not self._wanted:
                self._gave_up_idle = True
                return False
            attempt += 1
            try:
                self._open()
                break
            except InputError:
                continue
        self.log(f"{self.name}: connected again" + (f" (at attempt {attempt})" if attempt > 1 else ""))
        return True

    def _release(self) -> None:
        self._container.close()

    def _reopen(self) -> bool:
        try:
            self._open()
            return True
        except InputError as exc:
            if not self._loop:
                raise
            self.log(f"{exc}: trying again")
        return self._connect_again(attempt=1)


#: Live streams up to this many pixels a frame are decoded by slices (one thread decodes 1080p H.264
#: in about 5 ms here); larger ones by frames, which keeps up at the price of a frame of delay a thread.
SLICE_DECODING_PIXELS = 1920 * 1080


def decoder_threads(width: int, height: int, *, live: bool) -> str:
    """How FFmpeg should spread a stream's decoding over threads: ``"SLICE"`` or ``"AUTO"`` (frames too).

    Frame threads hold a frame each until the next arrives (on 16 cores, half a second at 30 fps),
    so a live stream is decoded by slices, as soon as its frames are whole, unless its frames are
    larger than 1080p (then one thread may not keep up). Files and streams of known length: both.

    Examples
    --------
    >>> decoder_threads(1280, 720, live=True), decoder_threads(3840, 2160, live=True)
    ('SLICE', 'AUTO')
    >>> decoder_threads(1280, 720, live=False)
    'AUTO'
    """
    return "SLICE" if live and width * height <= SLICE_DECODING_PIXELS else "AUTO"


def _stream_reason(exc: BaseException) -> str:
    """Why FFmpeg could not open or read a stream, without the URL (which may hold a password)."""
    import av

    if isinstance(exc, av.error.ExitError):  # the time-out stopped the wait
        return f"nothing arrived for {STREAM_TIMEOUT[1]:g} seconds"
    return ffmpeg_reason(exc)


def open_source(
    spec: str,
    *,
    size: tuple[int, int] | None = None,
    fps: Fraction | float | None = None,
    loop: bool = False,
) -> LiveSource:
    """The source a ``kmq live --source`` value names.

    ``testsrc``, ``camera``, ``camera:N``, a video file, a stream's URL (``rtsp://…``,
    ``http://…``, ``udp://…``: anything with a scheme FFmpeg reads) or ``-`` (a stream on
    standard input).

    Parameters
    ----------
    spec : str
        What to stream.
    size : (int, int), optional
        Frame size (test pattern default 1280×720; files and cameras: their own).
    fps : float, optional
        Frames per second (test pattern default 30; files and cameras: their own).
    loop : bool
        Play a file again when it ends; connect to a stream again when it ends or is lost.

    Returns
    -------
    LiveSource
        Not started yet.

    Raises
    ------
    kmq.errors.InputError
        An unknown camera, a missing or unreadable file, a stream that cannot be opened, a bad
        size or rate.
    """
    rate = None
    if fps is not None:
        rate = Fraction(fps).limit_denominator(1000)
        if not 0 < rate <= 240:
            raise InputError(f"fps must be above 0 and at most 240, got {fps}")
    if size is not None and (size[0] < 1 or size[1] < 1 or size[0] > 65536 or size[1] > 65536):
        raise InputError(f"size must be 1..65536 on each side, got {size[0]}x{size[1]}")
    if spec == "testsrc":
        return PatternSource(size or DEFAULT_SIZE, rate or Fraction(30))
    if spec == "camera" or spec.startswith("camera:"):
        number = spec.partition(":")[2] or "0"
        if not number.isdigit():
            raise InputError(f"camera must be camera or camera:N with N a number, got {spec!r}")
        return CameraSource(int(number), size, rate)
    if spec == "-" or _URL.match(spec):
        return StreamSource(spec, size, rate, loop=loop)
    path = Path(spec)
    if not path.exists():
        raise InputError(f"source {spec!r} is not testsrc, camera[:N], a video file, a stream's URL or -")
    return FileSource(path, size, rate, loop=loop)
