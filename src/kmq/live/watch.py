"""``kmq watch``: a Python viewer of a live stream that checks, counts, and optionally records what it decodes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from kmq.codec.video import (
    TAG_FRAME, TAG_HEADER, DecodedFrame, FramePacket, KmqvWriter, StreamHeader, VideoDecoder, parse_frame,
    renumber_packet,
)
from kmq.errors import FormatError, InputError, OutputError
from kmq.live.access import client_tls
from kmq.live.timing import TAG_TIMING, parse_timing

__all__ = ["WatchSummary", "watch", "stream_url"]

#: Largest message accepted from a server: a worst-case frame of 4K video is about 33 MB.
MAX_MESSAGE_BYTES = 128 << 20
#: How often a viewer waiting for a message looks whether it was asked to stop (seconds).
_STOP_POLL_S = 0.25


@dataclass
class WatchSummary:
    """What a viewer saw.

    Attributes
    ----------
    url : str
        The stream (without its token).
    width, height, k : int
        From the stream header (0 when none arrived).
    frames : int
        Frames decoded.
    keyframes : int
        Keyframes among them.
    skipped : int
        Packets that could not be decoded because the viewer waited for a keyframe (after joining,
        or after a gap in the frame numbers).
    gaps : int
        Times a delta frame arrived without the reference frame it is coded against (a frame
        was lost; discardable frames the server left out are no gap).
    bytes_received : int
        Every message's bytes.
    seconds : float
        From the first message to the last.
    latency_ms : dict
        Capture to decoded, from the server's capture-time records: ``p50``, ``p95``, ``max``.
    end : str
        Why watching stopped.
    output : pathlib.Path or None
        Where the frames were written.
    """

    url: str
    width: int = 0
    height: int = 0
    k: int = 0
    frames: int = 0
    keyframes: int = 0
    skipped: int = 0
    gaps: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    end: str = ""
    output: Path | None = None

    @property
    def fps(self) -> float:
        """Frames decoded per second of watching."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def kbit_per_s(self) -> float:
        """Received bit rate."""
        return 8 * self.bytes_received / self.seconds / 1000 if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain values (``kmq watch --json``)."""
        return {
            "url": self.url,
            "width": self.width,
            "height": self.height,
            "k": self.k,
            "frames": self.frames,
            "keyframes": self.keyframes,
            "skipped": self.skipped,
            "gaps": self.gaps,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "kbit_per_s": round(self.kbit_per_s, 1),
            "latency_ms": self.latency_ms,
            "end": self.end,
            "output": None if self.output is None else str(self.output),
        }


def stream_url(url: str, token: str | None = None) -> str:
    """Check a ``ws://`` or ``wss://`` stream address and add ``token`` to its query.

    Raises
    ------
    kmq.errors.InputError
        Not a WebSocket address.

    Examples
    --------
    >>> stream_url("ws://127.0.0.1:8765/ws", "abcdefgh12")
    'ws://127.0.0.1:8765/ws?token=abcdefgh12'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise InputError(f"expected a stream address such as ws://127.0.0.1:8765/ws, got {url!r}")
    if token is None:
        return url
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "token"] + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _without_token(url: str) -> str:
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "token"]
    return urlunsplit(parts._replace(query=urlencode(query)))


class _PacketSink:
    """The frame packets as they came, to a .kmqv file, numbered from 0 and timed from the first frame.

    The server's numbers start where the viewer joined and leave out the discardable frames it
    did not send, so each packet says again how many frames stand between it and its reference
    frame in the file (the frames written since, all discardable).
    """

    def __init__(self, stream: Any, header: StreamHeader) -> None:
        self._writer = KmqvWriter(stream, header)
        self._reference = -1  # the number in the file of the last reference frame written

    def write(self, packet: FramePacket, pts: int) -> None:
        number = self._writer.frames
        skipped = 0 if packet.keyframe else number - 1 - self._reference
        record = renumber_packet(packet, number, pts, self._writer.header.channels, skipped=skipped)
        self._writer.write_packet(record, number=number, pts=pts, keyframe=packet.keyframe)
        if not packet.discardable:
            self._reference = number

    def close(self) -> None:
        self._writer.finish()

    def abort(self) -> None:
        """Nothing to release: the file is atomic_output's, which removes it."""


class _Output:
    """Frames to a video file or PNG folder, or the packets as they came to a .kmqv file; opened at the first frame."""

    def __init__(self, path: Path, force: bool) -> None:
        from kmq.media.files import check_output
        from kmq.media.video_output import sink_kind

        self.path = path
        if path.suffix.lower() == ".kmqv":
            self.kind = "kmqv"
        else:
            try:
                self.kind = sink_kind(path)
            except InputError as exc:
                raise InputError(f"{exc}; or .kmqv for the stream as it is") from None
        if self.kind != "png":
            check_output(path, force=force)
        self.force = force
        self._stack = contextlib.ExitStack()
        self._sink: Any = None
        self._header: StreamHeader | None = None
        self._first_pts: int | None = None

    def write(self, frame: DecodedFrame, decoder: VideoDecoder, packet: FramePacket) -> None:
        """Add a decoded frame, ``packet`` the frame packet it was decoded from."""
        from kmq.media.files import atomic_output
        from kmq.media.video_output import PngFolder, open_sink

        header = decoder.header
        if self._sink is None:
            self._header = header
            if self.kind == "png":
                self._sink = PngFolder(self.path, force=self.force)
            else:
                stream = self._stack.enter_context(atomic_output(self.path, force=self.force))
                if self.kind == "kmqv":
                    self._sink = _PacketSink(stream, header)
                else:
                    self._sink = open_sink(
                        stream, self.path, self.kind, width=header.width, height=header.height,
                        channels=header.channels, time_base=header.time_base, frame_rate=header.frame_rate,
                    )
            self._first_pts = frame.pts
        elif header != self._header:
            changed = f"{header.width}×{header.height}, K={header.k}"
            raise FormatError(f"the stream's header changed ({changed}): {self.path} holds one stream")
        pts = frame.pts - self._first_pts
        if self.kind == "kmqv":
            self._sink.write(packet, pts)
        else:
            self._sink.write(frame.to_array(), pts, palette=frame.palette, indices=frame.indices)

    def close(self, keep: bool) -> None:
        """Finish the output (``keep``), or remove whatever was written of it."""
        if self._sink is None:
            return
        if not keep:
            self._sink.abort()
            with contextlib.suppress(BaseException):  # atomic_output removes its temporary file
                self._stack.__exit__(OutputError, OutputError("discarded"), None)
            return
        try:
            self._sink.close()
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack.close()


def watch(
    url: str,
    *,
    output: str | os.PathLike | None = None,
    frames: int | None = None,
    token: str | None = None,
    force: bool = False,
    timeout: float = 15.0,
    on_frame: Callable[[DecodedFrame, WatchSummary], None] | None = None,
    stop: Callable[[], bool] | None = None,
    cafile: str | Path | None = None,
) -> WatchSummary:
    """Watch a live stream: decode every frame with :class:`kmq.VideoDecoder`, optionally write them out.

    Parameters
    ----------
    url : str
        The stream, ``ws://HOST:PORT/ws`` (a token may be in its query).
    output : path-like, optional
        Write the decoded frames: .mkv (FFV1, lossless), .mp4 (H.264), .gif, .apng, or a folder of PNGs;
        or .kmqv: the frame packets as they came, from the first keyframe, without turning them
        into pixels or encoding them again (numbered from 0 and timed from the first frame, as
        a .kmqv file has them; ``kmq video decode`` converts the file).
    frames : int, optional
        Stop after this many decoded frames (default: until the stream ends).
    token : str, optional
        The server's token.
    force : bool
        Replace an existing output.
    timeout : float
        Give up when connecting, or waiting for a message, takes longer than this (seconds).
    on_frame : callable, optional
        Called with each decoded frame and the summary so far.
    stop : callable, optional
        Polled between messages, and every 0.25 s while waiting for one; watching ends when it
        returns True, and the output is finished as when the stream ends.
    cafile : path-like, optional
        For ``wss://``: trust the certificates in this PEM file (a server's own, self-signed
        certificate, say) instead of the system's authorities.

    Returns
    -------
    WatchSummary

    Raises
    ------
    kmq.errors.InputError
        A bad address, a server that cannot be reached, refuses the token, or falls silent.
    kmq.errors.FormatError
        A damaged or unknown record, or a stream that ends before a frame could be decoded.
    """
    full_url = stream_url(url, token)
    summary = WatchSummary(url=_without_token(full_url))
    sink = _Output(Path(output), force) if output is not None else None
    if frames is not None and frames < 1:
        raise InputError(f"frames must be positive, got {frames}")
    tls = client_tls(cafile)
    try:
        asyncio.run(_watch(full_url, summary, sink, frames, timeout, on_frame, stop, tls))
    except BaseException:
        if sink is not None:
            sink.close(keep=False)
        raise
    if sink is not None:
        sink.close(keep=summary.frames > 0)
        summary.output = sink.path if summary.frames else None
    if summary.frames == 0:
        raise FormatError(f"{summary.url}: no frame was decoded ({summary.end})")
    return summary


async def _next_message(ws: Any, timeout: float, stop: Callable[[], bool] | None) -> Any:
    """The next message, or None when ``stop`` says so; raises ``asyncio.TimeoutError`` after ``timeout`` s of silence.

    Waits a little at a time, so that a stop asked for while the stream is silent (Ctrl-C,
    say) is seen at once; a timed-out wait loses nothing (the socket's messages stay queued).
    """
    deadline = time.monotonic() + timeout
    while True:
        if stop is not None and stop():
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError
        try:
            return await ws.receive(timeout=min(_STOP_POLL_S, left))
        except asyncio.TimeoutError:
            continue


async def _watch(
    url: str,
    summary: WatchSummary,
    sink: _Output | None,
    frames: int | None,
    timeout: float,
    on_frame: Callable[[DecodedFrame, WatchSummary], None] | None,
    stop: Callable[[], bool] | None,
    tls: ssl.SSLContext | None,
) -> None:
    import aiohttp

    decoder = VideoDecoder()
    captured: dict[int, float] = {}
    latencies: list[float] = []
    started: float | None = None
    client_timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        try:
            trust = {"ssl": tls} if tls is not None else {}  # else the system's authorities
            ws = await session.ws_connect(url, max_msg_size=MAX_MESSAGE_BYTES, heartbeat=None, autoping=True, **trust)
        except aiohttp.WSServerHandshakeError as exc:
            raise InputError(f"{summary.url}: the server refused the stream ({exc.status} {exc.message})") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            why = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
            raise InputError(
                f"{summary.url}: the server's certificate is not trusted ({why}); --cafile CERT.pem trusts its own"
            ) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise InputError(f"cannot connect to {summary.url}: {exc or type(exc).__name__}") from None
        async with ws:
            while True:
                try:
                    message = await _next_message(ws, timeout, stop)
                except asyncio.TimeoutError:
                    raise InputError(f"{summary.url}: no data for {timeout:g} s") from None
                if message is None:
                    summary.end = "stopped"
                    break
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    reason = ws.close_code, (message.extra or "")
                    summary.end = f"the server closed the stream ({reason[0]} {reason[1]})".strip()
                    break
                if message.type == aiohttp.WSMsgType.ERROR:
                    summary.end = f"connection error: {ws.exception()}"
                    break
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                data = message.data
                now = time.time()
                started = started if started is not None else now
                summary.seconds = now - started
                summary.bytes_received += len(data)
                tag = bytes(data[:4])
                if tag == TAG_TIMING:
                    timing = parse_timing(data)
                    captured[timing.number] = timing.captured_us / 1e6
                    if len(captured) > 64:
                        captured.pop(next(iter(captured)))
                    continue
                if tag == TAG_HEADER:
                    header = decoder.read_header(data)
                    summary.width, summary.height, summary.k = header.width, header.height, header.k
                    continue
                if tag != TAG_FRAME:
                    decoder.feed(data)  # checks the record; skips optional ones, refuses unknown ones
                    continue
                if decoder.header is None:
                    raise FormatError("a frame packet arrived before the stream header")
                packet = parse_frame(data, decoder.header)
                if not decoder.can_decode(packet):
                    if decoder.ready:
                        summary.gaps += 1
                        decoder.reset()
                    summary.skipped += 1
                    await ws.send_str(f'{{"type":"ack","frame":{packet.number}}}')
                    continue
                frame = decoder.decode(packet)
                summary.frames += 1
                summary.keyframes += frame.keyframe
                if frame.number in captured:
                    latencies.append(time.time() - captured.pop(frame.number))
                if sink is not None:
                    sink.write(frame, decoder, packet)
                if on_frame is not None:
                    on_frame(frame, summary)
                # Acknowledged once handled: the server then keeps only a few frames in flight to
                # this viewer, so a slow viewer skips ahead instead of falling ever further behind.
                await ws.send_str(f'{{"type":"ack","frame":{frame.number}}}')
                if frames is not None and summary.frames >= frames:
                    summary.end = f"{frames} frames decoded"
                    break
    if latencies:
        values = np.array(latencies) * 1000
        summary.latency_ms = {
            "p50": round(float(np.percentile(values, 50)), 1),
            "p95": round(float(np.percentile(values, 95)), 1),
            "max": round(float(values.max()), 1),
        }
