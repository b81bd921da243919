"""The live server: the player page at ``/``, the stream at ``/ws``, numbers at ``/stats``, the
newest frame at ``/snapshot.png`` (aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from kmq.errors import InputError, LimitError
from kmq.live.access import Access, check_token_text, is_loopback, tls_context
from kmq.live.encoding import LiveEncoder, Picture
from kmq.live.fanout import (
    DEFAULT_KEYFRAME_GAP,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_FRAMES,
    DEFAULT_RECOVERY_GAP,
    FanOut,
    LivePacket,
    Viewer,
)
from kmq.live.recorder import Recorder
from kmq.live.sources import open_source
from kmq.media.files import check_output
from kmq.media.png import png8_bytes

__all__ = ["LiveOptions", "LiveServer", "run_live", "STATIC"]

STATIC = Path(__file__).resolve().parent / "static"
#: Largest message a viewer may send (they send only small requests); larger ones close the connection.
MAX_INCOMING_BYTES = 4096
#: Seconds between pings; a viewer that does not answer within half of it is disconnected.
HEARTBEAT = 20.0
#: Kernel send buffer of each viewer's connection. Fixed instead of auto-tuned (which grows to
#: megabytes), so a viewer that stops reading is found out after a few frames, not a few seconds,
#: and holds little memory; 256 KiB still carries 40 Mbit/s over a 50 ms round trip.
SEND_BUFFER = 256 << 10
#: Seconds a closing handshake may take before the connection is dropped.
CLOSE_TIMEOUT = 2.0
#: ``/snapshot.png`` makes a new PNG at most this often (seconds); asked sooner, it gives the last.
SNAPSHOT_INTERVAL = 0.2
#: Headers of every page and script: nothing from elsewhere, no referrer (the URL may hold a token).
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass
class LiveOptions:
    """What ``kmq live`` was asked for.

    Attributes
    ----------
    source : str
        ``testsrc``, ``camera``, ``camera:N``, a video file, a stream's URL or ``-`` (standard input).
    size : (int, int) or None
        Frame size (default: the source's; 1280×720 for the test pattern).
    fps : float or None
        Source rate (default: the source's; 30 for the test pattern).
    loop : bool
        Play a file source again at its end; connect to a stream again when it ends or drops.
    k : int
        Palette size.
    keyint : int or None
        Keyframes at least every this many frames (default: 8 seconds' worth).
    motion : bool
        Search each block's motion vector (False: every block coded in place).
    temporal_layers : {"auto", 1, 2}
        2: every other delta frame is discardable, and viewers that are behind are sent the
        reference frames first; "auto" (the default): so while a viewer is behind; 1: never.
    host : str
        Address to bind; anything but loopback needs ``token``.
    port : int
        Port to bind; 0 picks a free one.
    token : str or None
        Required of viewers and of ``/stats`` when given.
    tls_cert, tls_key : path or None
        Serve HTTPS and WSS with this certificate chain (PEM) and its private key (PEM; default:
        in the certificate's file), so that viewers elsewhere get the token and the stream
        encrypted, and pages of HTTPS sites may open the stream.
    record : path or None
        Also write the stream to this .kmqv file.
    force : bool
        Replace an existing recording.
    max_viewers : int
        Viewers at once.
    queue_frames, queue_bytes : int
        Bounds of each viewer's queue.
    keyframe_gap : float
        Seconds between keyframes made for joining or recovering viewers.
    recovery_gap : float
        Seconds after the last keyframe before one is made for a viewer that fell behind.
    on_demand : float or None
        Close the source (a camera, a stream, a file; nothing is encoded) once nobody has watched
        for this many seconds, and open it again when a viewer comes. None: always open.
    """

    source: str = "testsrc"
    size: tuple[int, int] | None = None
    fps: float | None = None
    loop: bool = False
    k: int = 64
    keyint: int | None = None
    motion: bool = True
    temporal_layers: int | str = "auto"
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    record: Path | None = None
    force: bool = False
    max_viewers: int = 32
    queue_frames: int = DEFAULT_QUEUE_FRAMES
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    keyframe_gap: float = DEFAULT_KEYFRAME_GAP
    recovery_gap: float = DEFAULT_RECOVERY_GAP
    on_demand: float | None = None


#: Longest --on-demand delay (seconds).
MAX_ON_DEMAND = 86_400.0


class LiveServer:
    """One live stream: a source, its encoder, the fan-out and the HTTP/WebSocket server.

    Use :meth:`start` and :meth:`stop` inside a running event loop, or :func:`run_live`.

    Parameters
    ----------
    options : LiveOptions
    log : callable, optional
        Receives one line per event (viewers joining and leaving, a stream source lost and
        connected again, an on-demand source closed and opened again, the stream ending).

    Raises
    ------
    kmq.errors.InputError
        A non-loopback ``host`` without a token, a bad token, or a source that cannot be opened.
    """

    def __init__(self, options: LiveOptions, *, log: Callable[[str], None] | None = None) -> None:
        if options.token is not None:
            check_token_text(options.token)
        elif not is_loopback(options.host):
            raise InputError(f"binding {options.host} (not loopback) needs a token: give --token")
        if not 1 <= options.max_viewers <= 10_000:
            raise InputError(f"max viewers must be 1..10000, got {options.max_viewers}")
        if options.on_demand is not None:
            if not 0 < options.on_demand <= MAX_ON_DEMAND:
                raise InputError(f"--on-demand must be above 0 and at most {MAX_ON_DEMAND:g} seconds, got {options.on_demand:g}")
            if options.source == "-":
                raise InputError("--on-demand cannot open standard input again once closed")
            if options.record is not None:
                raise InputError("--on-demand closes the source while nobody watches; --record needs it open all the time")
        if options.record is not None:
            check_output(options.record, force=options.force)  # before the slow start, not after
        self.tls = tls_context(options.tls_cert, options.tls_key)
        self.options = options
        self.access = Access(options.token)
        self.log = log or (lambda line: None)
        self.source = open_source(options.source, size=options.size, fps=options.fps, loop=options.loop)
        self.source.log = self.log
        self.recorder: Recorder | None = None
        self.encoder: LiveEncoder | None = None
        self.fanout: FanOut | None = None
        self.port: int | None = None
        self.ended = asyncio.Event()
        self.end_reason = "server stopping"
        self.refused_messages = 0
        self.refused_requests = 0
        self._sockets: dict[int, web.WebSocketResponse] = {}
        self._snapshot_lock = asyncio.Lock()
        self._snapshot_made: tuple[float, Picture, bytes] | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._close_later: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = time.monotonic()

    # -- lifetime

    async def start(self) -> None:
        """Open the recording, start the source and encoder, and begin serving."""
        self._loop = loop = asyncio.get_running_loop()
        options = self.options
        # Building the encoder compiles its kernels (seconds on a cold cache): off the event loop.
        encoder = await loop.run_in_executor(
            None,
            lambda: LiveEncoder(
                self.source, self._publish_threadsafe, k=options.k, keyint=options.keyint, motion=options.motion,
                temporal_layers=options.temporal_layers, on_end=self._source_ended,
            ),
        )
        if options.record is not None:
            encoder.recorder = self.recorder = Recorder(options.record, encoder.encoder.header, force=options.force)
        self.encoder = encoder
        self.fanout = FanOut(
            encoder.request_keyframe,
            max_viewers=options.max_viewers,
            queue_frames=options.queue_frames,
            queue_bytes=options.queue_bytes,
            keyframe_gap=options.keyframe_gap,
            recovery_gap=options.recovery_gap,
            on_behind=encoder.viewer_behind,
        )
        app = web.Application(client_max_size=MAX_INCOMING_BYTES)
        app.router.add_get("/", self._page)
        app.router.add_get("/ws", self._stream)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/snapshot.png", self._snapshot)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        app.on_response_prepare.append(_add_page_headers)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=CLOSE_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, options.host, options.port, reuse_address=True, ssl_context=self.tls)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise InputError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
        self.port = _bound_port(site)
        self._started = time.monotonic()
        encoder.start()
        self._follow_demand()

    async def stop(self) -> None:
        """Close every viewer, stop the encoder and source, finish the recording, stop serving."""
        self._stopping = True
        self.ended.set()
        if self._close_later is not None:
            self._close_later.cancel()
        # Viewers hear why first: 1000 "end of stream" when a file ended, 1001 when the server stops.
        code = 1000 if self.end_reason == "end of stream" else 1001
        closing = [ws.close(code=code, message=self.end_reason.encode()[:120]) for ws in self._sockets.values()]
        if closing:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), CLOSE_TIMEOUT + 1)
        if self.fanout is not None:
            self.fanout.close()
        if self.encoder is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.encoder.stop)
        else:
            self.source.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        """The player page's address (with the token, when there is one)."""
        return self.address("/")

    def address(self, path: str = "/", *, scheme: str = "http") -> str:
        """The address of ``path`` on this server (``scheme`` ws for the stream), with the token if any.

        With TLS, http becomes https and ws wss.
        """
        if self.tls is not None:
            scheme = {"http": "https", "ws": "wss"}.get(scheme, scheme)
        host = self.options.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        query = f"?token={self.options.token}" if self.options.token else ""
        return f"{scheme}://{host}:{self.port}{path}{query}"

    def _source_ended(self) -> None:
        """Called on the encoder's thread when the source has no more frames (or failed)."""
        if self._stopping:
            return
        source_error = self.source.error or (self.encoder.error if self.encoder else None)
        self.end_reason = "end of stream" if source_error is None else f"source failed: {source_error}"
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.ended.set)

    def _follow_demand(self) -> None:
        """--on-demand: keep the source open while anybody watches; close it once nobody has for the delay."""
        if self.options.on_demand is None or self.fanout is None or self._loop is None:
            return
        if self.fanout.viewers:
            if self._close_later is not None:
                self._close_later.cancel()
                self._close_later = None
            self.source.demand(True)
        elif self._close_later is None:
            self._close_later = self._loop.call_later(self.options.on_demand, self._close_source)

    def _close_source(self) -> None:
        self._close_later = None
        if self.fanout is not None and not self.fanout.viewers and not self._stopping:
            self.source.demand(False)

    # -- packets from the encoder's thread

    def _publish_threadsafe(self, packet: LivePacket) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                loop.call_soon_threadsafe(self._publish, packet)

    def _publish(self, packet: LivePacket) -> None:
        if self.fanout is not None:
            self.fanout.publish(packet)

    # -- HTTP

    def _refusal(self, request: web.Request) -> web.Response | None:
        headers = request.headers
        problem = self.access.problem(
            request.query.get("token"), headers.get("Authorization"), headers.get("Host"), headers.get("Origin")
        )
        if problem is None:
            return None
        self.refused_requests += 1
        status, reason = problem
        return web.json_response({"error": reason}, status=status)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _stats(self, request: web.Request) -> web.Response:
        response = self._refusal(request)
        if response is None:
            response = web.json_response(self.stats(), dumps=lambda value: json.dumps(value, indent=1))
        return self._shared(response)

    async def _snapshot(self, request: web.Request) -> web.Response:
        """The newest frame as viewers see it, as an indexed PNG of its own palette."""
        response = self._refusal(request)
        if response is None:
            snapshot = await self._newest_png()
            if snapshot is None:
                response = web.json_response({"error": "no frame encoded yet"}, status=503)
            else:
                picture, body = snapshot
                headers = {
                    "Cache-Control": "no-store",
                    "X-Kmq-Frame": str(picture.number),
                    "X-Kmq-Captured": f"{picture.captured:.6f}",
                }
                response = web.Response(body=body, content_type="image/png", headers=headers)
        return self._shared(response)

    async def _newest_png(self) -> tuple[Picture, bytes] | None:
        """The newest frame and its PNG, or None before the first frame.

        A PNG is made at most every SNAPSHOT_INTERVAL seconds, one at a time and off the event
        loop, so that clients asking often cost the encoder little CPU.
        """
        async with self._snapshot_lock:
            picture = self.encoder.latest if self.encoder is not None else None
            made = self._snapshot_made
            if made is not None and (
                picture is None or picture is made[1] or time.monotonic() - made[0] < SNAPSHOT_INTERVAL
            ):
                return made[1], made[2]
            if picture is None:
                return None
            # zlib level 1: 9 ms for 1280×720, a fifth larger than the smallest PNG (which takes 260 ms).
            make = functools.partial(png8_bytes, picture.palette, picture.indices, level=1)
            body = await asyncio.get_running_loop().run_in_executor(None, make)
            self._snapshot_made = (time.monotonic(), picture, body)
            return picture, body

    def _shared(self, response: web.Response) -> web.Response:
        if self.access.token is not None:
            # Pages of other sites may read the figures when they hold the token (it guards them,
            # not the origin), and read a refusal as one: a player embedded there shows "refused".
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    def stats(self) -> dict[str, Any]:
        """Everything ``GET /stats`` returns."""
        source = self.source
        mailbox = source.mailbox
        encoder = self.encoder.summary() if self.encoder else {}
        viewers = self.fanout.summary() if self.fanout else {}
        recorder = self.recorder
        return {
            "uptime_s": round(time.monotonic() - self._started, 1),
            "source": {
                "name": source.name,
                "width": source.width,
                "height": source.height,
                "fps": float(source.fps),
                "frames_captured": mailbox.produced,
                "frames_dropped": mailbox.dropped,
                "restarts": source.restarts,
                "on_demand_s": self.options.on_demand,
                "idle": source.idle,
                "wakes": source.wakes,
                "ended": mailbox.closed,
                "error": None if source.error is None else str(source.error),
            },
            "encoder": encoder,
            "frames_encoded": encoder.get("frames_encoded", 0),
            "encode_fps": encoder.get("encode_fps", 0.0),
            "encode_ms": encoder.get("encode_ms", {}),
            "viewers": viewers,
            "bytes_sent": self.fanout.bytes_sent if self.fanout else 0,
            "refused": {"requests": self.refused_requests, "messages": self.refused_messages},
            "recording": None
            if recorder is None
            else {"path": str(recorder.path), "frames": recorder.frames, "bytes": recorder.bytes_written},
        }

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        fanout = self.fanout
        assert fanout is not None and self.encoder is not None
        if self.ended.is_set():
            return web.json_response({"error": "the stream has ended"}, status=410)
        try:
            viewer = fanout.join(request.remote or "?")
        except LimitError as exc:
            self.refused_requests += 1
            return web.json_response({"error": str(exc)}, status=503)
        self._follow_demand()
        ws = web.WebSocketResponse(
            max_msg_size=MAX_INCOMING_BYTES, heartbeat=HEARTBEAT, timeout=CLOSE_TIMEOUT, compress=False
        )
        sender: asyncio.Task | None = None
        try:
            await ws.prepare(request)
            connection = request.transport.get_extra_info("socket") if request.transport else None
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            self._sockets[viewer.id] = ws
            self.log(f"viewer {viewer.id} joined from {viewer.address} ({len(fanout.viewers)} watching)")
            sender = asyncio.create_task(self._send(viewer, ws, self.encoder.header_bytes))
            await self._receive(viewer, ws)
        finally:
            fanout.leave(viewer)
            self._follow_demand()
            self._sockets.pop(viewer.id, None)
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            if not ws.closed and ws.prepared:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
            self.log(f"viewer {viewer.id} left: {viewer.frames_sent} frames sent, {viewer.frames_dropped} dropped")
        return ws

    async def _send(self, viewer: Viewer, ws: web.WebSocketResponse, header: bytes) -> None:
        """Header first, then each packet of the viewer's queue; ends with the connection."""
        try:
            await ws.send_bytes(header)
            while (packet := await viewer.next()) is not None:
                await ws.send_bytes(packet.timing)
                await ws.send_bytes(packet.packet)
                viewer.sent(packet)
        except (ConnectionError, RuntimeError):
            pass  # the viewer went away; the receiving side cleans up
        finally:
            if not ws.closed:
                # Wake the receiving side so that the handler ends too.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)

    async def _receive(self, viewer: Viewer, ws: web.WebSocketResponse) -> None:
        """Read what a viewer sends: small JSON messages only; anything too large ends the connection.

        ``{"type": "ack", "frame": N}``: frame N is decoded (the viewer then gets a window of frames
        in flight); ``{"type": "keyframe"}``: the viewer's decoder fell behind and restarts at a keyframe.
        """
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                try:
                    request = json.loads(message.data)
                except ValueError:
                    continue
                if not isinstance(request, dict):
                    continue
                if request.get("type") == "ack" and isinstance(request.get("frame"), int):
                    viewer.acknowledge(request["frame"])
                elif request.get("type") == "keyframe":
                    viewer.skip_to_keyframe()
            elif message.type == WSMsgType.ERROR:
                self.refused_messages += 1
                self.log(f"viewer {viewer.id}: {ws.exception()}")
                break


async def _add_page_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path.startswith("/static/"):
        for name, value in _PAGE_HEADERS.items():
            response.headers.setdefault(name, value)


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the listening sockets here
    for sock in getattr(server, "sockets", None) or ():
        return int(sock.getsockname()[1])
    raise InputError("the server did not start listening")


def run_live(
    options: LiveOptions,
    *,
    on_ready: Callable[[LiveServer], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> LiveServer:
    """Serve a live stream until Ctrl-C, SIGTERM, or the end of a file source.

    Parameters
    ----------
    options : LiveOptions
    on_ready : callable, optional
        Called once the server listens (with the server: its ``url``, ``port``).
    log : callable, optional
        Receives event lines.

    Returns
    -------
    LiveServer
        The stopped server (its :meth:`LiveServer.stats` still answer).
    """

    async def main() -> LiveServer:
        server = LiveServer(options, log=log)
        try:
            await server.start()
        except BaseException:
            await server.stop()
            raise
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, server.ended.set)
        try:
            if on_ready is not None:
                on_ready(server)
            await server.ended.wait()
        finally:
            await server.stop()
        return server

    return asyncio.run(main())
