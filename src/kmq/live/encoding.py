"""The live encoder: takes the source's newest frames on a thread of its own, encodes each once, publishes it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from kmq.errors import InputError, KmqError
from kmq.live.fanout import LivePacket
from kmq.live.recorder import Recorder
from kmq.live.sources import LiveSource
from kmq.live.stats import RateMeter, RecentTimes, TimeHistogram
from kmq.live.timing import pack_timing
from kmq.media.video_encoder import VideoEncoder

__all__ = ["LiveEncoder", "Picture", "LIVE_TIME_BASE"]


@dataclass(frozen=True)
class Picture:
    """A frame as viewers decode it: its palette and index map (what ``/snapshot.png`` shows).

    Attributes
    ----------
    number : int
        Its frame number in the stream.
    captured : float
        When the source captured it, seconds since the Unix epoch.
    palette : numpy.ndarray
        n×3 uint8.
    indices : numpy.ndarray
        H×W uint8, each below n.
    """

    number: int
    captured: float
    palette: np.ndarray
    indices: np.ndarray


#: Live timestamps count microseconds of the source's clock from the first frame.
LIVE_TIME_BASE = Fraction(1, 1_000_000)


#: The encoder keeps up with its source when its average encode time is below this share of the frame period.
_KEEPING_UP = 0.9
#: With automatic temporal layers, the second layer stays on this long (seconds) after a viewer
#: was last seen behind.
LAYER_HOLD = 2.0


class LiveEncoder:
    """Encodes a live source frame by frame and hands each packet to ``publish``.

    The encoder never waits for viewers: ``publish`` only schedules delivery. While it keeps up
    with the source on average it takes every frame in order (an encode that runs long once costs
    no frame); when it is slower than the source it takes the newest frame, and the frames it
    passes over are dropped (counted by the mailbox), so delay never builds up here.

    Parameters
    ----------
    source : LiveSource
        Where frames come from (started by :meth:`start`).
    publish : callable
        Called on the encoder's thread with each :class:`~kmq.live.fanout.LivePacket`.
    k : int
        Palette size.
    keyint : int, optional
        Keyframes at least this often (frames); default: every 8 seconds of the source's rate.
    motion : bool
        Search each block's motion vector (see :class:`kmq.VideoEncoder`).
    temporal_layers : {"auto", 1, 2}
        With 2, every other delta frame is discardable, so that a viewer that is behind is sent
        only the reference frames until it catches up, instead of losing everything up to the
        next keyframe; discardable frames cost bytes (reference frames are coded against the one
        two back). "auto" makes them only while some viewer is behind (see :meth:`viewer_behind`)
        and for ``LAYER_HOLD`` seconds after (the default: a stream whose viewers keep up costs
        what one layer costs, and a page that decodes slower than the stream, whose
        acknowledgements hold back the frames it has not finished, is seen to be behind); 1
        never.
    recorder : Recorder, optional
        Also writes every packet to a .kmqv file.
    on_end : callable, optional
        Called (on the encoder's thread) once the source has ended and the last frame is out.
    """

    def __init__(
        self,
        source: LiveSource,
        publish: Callable[[LivePacket], None],
        *,
        k: int = 64,
        keyint: int | None = None,
        motion: bool = True,
        temporal_layers: int | str = "auto",
        recorder: Recorder | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.publish = publish
        self.recorder = recorder
        self.on_end = on_end
        if temporal_layers not in ("auto", 1, 2):
            raise InputError(f"temporal layers must be 1, 2 or auto, got {temporal_layers!r}")
        self.temporal_layers = temporal_layers
        if keyint is None:
            keyint = max(1, round(8 * float(source.fps)))
        self.encoder = VideoEncoder(
            source.width, source.height, k=k, keyint=keyint, frame_rate=source.fps, time_base=LIVE_TIME_BASE,
            motion=motion, temporal_layers=1 if temporal_layers == "auto" else temporal_layers,
        )
        self._layered_until = -float("inf")
        self.encode_times = RecentTimes()
        self.all_encode_times = TimeHistogram()
        self.delays = RecentTimes()
        self.waits = RecentTimes()
        self.rate = RateMeter()
        self.keyframes_forced = 0
        self.error: BaseException | None = None
        self.record_error: str | None = None
        self._keyframe = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_pts = -1
        #: The newest frame encoded (the encoder makes each frame's arrays anew, so this one stays as it is).
        self.latest: Picture | None = None
        self.finished = threading.Event()
        _warm_up(source.width, source.height, k)

    @property
    def header_bytes(self) -> bytes:
        """The stream header record every viewer gets first."""
        return self.encoder.header_bytes

    def viewer_behind(self) -> None:
        """A viewer is behind: with automatic layers, make discardable frames for a while (thread-safe)."""
        self._layered_until = time.monotonic() + LAYER_HOLD

    def request_keyframe(self) -> None:
        """Make the next frame a keyframe (thread-safe; a request during an encode counts for the next)."""
        self._keyframe.set()

    def start(self) -> None:
        """Start the source and the encoding thread."""
        self._thread = threading.Thread(target=self._run, name="kmq-live-encoder", daemon=True)
        self._thread.start()
        self.source.start()

    def stop(self) -> None:
        """Stop the source, let the frame in progress finish, and close the recording."""
        self._stop.set()
        self.source.stop()
        if self._thread is None:
            self._close_recording()  # never started: the thread that would have closed it
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        origin: float | None = None
        mailbox = self.source.mailbox
        period = 1.0 / float(self.source.fps)
        typical = 0.0  # a moving average of the encode time
        try:
            while not self._stop.is_set():
                # Keeping up on average, a frame late after a slow encode is still taken (the
                # encoder catches up within a few frames, and no frame is lost); falling behind,
                # waiting frames are late for good and the newest is taken.
                if typical < _KEEPING_UP * period:
                    capture = mailbox.get(timeout=0.25)
                else:
                    capture = mailbox.newest(timeout=0.25)
                if capture is None:
                    if mailbox.closed:
                        break
                    continue
                if origin is None:
                    origin = capture.monotonic
                pts = max(self._last_pts + 1, round((capture.monotonic - origin) * 1_000_000))
                self._last_pts = pts
                forced = self._keyframe.is_set()
                if forced:
                    self._keyframe.clear()
                    self.keyframes_forced += 1
                self.waits.add(time.time() - capture.captured)
                if self.temporal_layers == "auto":
                    self.encoder.temporal_layers = 2 if time.monotonic() < self._layered_until else 1
                started = time.perf_counter()
                encoded = self.encoder.encode(capture.pixels, pts, keyframe=forced)
                elapsed = time.perf_counter() - started
                typical += (elapsed - typical) / 16
                self.encode_times.add(elapsed)
                self.all_encode_times.add(elapsed)
                sent = time.time()
                self.delays.add(sent - capture.captured)
                self.rate.add(len(encoded.packet))
                packet = LivePacket(
                    number=encoded.number,
                    keyframe=encoded.keyframe,
                    timing=pack_timing(encoded.number, capture.captured, sent),
                    packet=encoded.packet,
                    discardable=encoded.discardable,
                )
                self.latest = Picture(encoded.number, capture.captured, encoded.palette, encoded.indices)
                self.publish(packet)
                self._record(packet, pts)
        except BaseException as exc:  # reported in the stats and by the server, which then stops
            self.error = exc
        finally:
            self._close_recording()
            self.finished.set()
            if self.on_end is not None:
                self.on_end()

    def _record(self, packet: LivePacket, pts: int) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.write(packet.packet, number=packet.number, pts=pts, keyframe=packet.keyframe)
        except KmqError as exc:
            # A full disk stops the recording, not the stream.
            self.record_error = str(exc)
            self.recorder = None

    def _close_recording(self) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.close()
        except KmqError as exc:
            self.record_error = str(exc)

    def summary(self) -> dict[str, Any]:
        """The encoder part of ``GET /stats``."""
        totals = self.encoder.totals
        fps, bytes_per_second = self.rate.rate()
        header = self.encoder.header
        raw_per_frame = header.width * header.height * 3
        return {
            "frames_encoded": totals.frames,
            "keyframes": totals.keyframes,
            "keyframes_for_viewers": self.keyframes_forced,
            "temporal_layers": self.encoder.temporal_layers,
            "temporal_layers_setting": self.temporal_layers,
            "discardable_frames": totals.discardable,
            "encode_fps": round(fps, 2),
            "encode_ms": self.encode_times.summary(),
            "encode_ms_since_start": self.all_encode_times.summary(),
            "encode_ms_histogram": self.all_encode_times.bins(),
            "capture_to_encode_ms": self.waits.summary(),
            "capture_to_send_ms": self.delays.summary(),
            "k": self.encoder.k,
            "bytes_encoded": totals.packet_bytes,
            "kbit_per_s": round(bytes_per_second * 8 / 1000, 1),
            "ratio_vs_raw_rgb": (
                round(raw_per_frame * totals.frames / totals.packet_bytes, 2) if totals.packet_bytes else None
            ),
            "psnr_db": round(totals.psnr, 2) if totals.frames else None,
            "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
            "recording": None if self.record_error is None else f"stopped: {self.record_error}",
        }


def _warm_up(width: int, height: int, k: int) -> None:
    """Encode a few frames of the stream's size, so that the kernels are compiled before the first real frame."""
    from kmq.live.testsrc import TestPattern

    pattern = TestPattern(width, height)
    encoder = VideoEncoder(width, height, k=k, time_base=LIVE_TIME_BASE)
    for step in range(3):
        encoder.encode(pattern.frame(step * 0.5), keyframe=step == 2)
