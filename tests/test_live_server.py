"""`kmq live` as a real server on a loopback port: stream, stats, slow and broken viewers, tokens, `kmq watch`."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import run_kmq
from kmq.codec.video import TAG_FRAME, KmqvReader, StreamHeader, VideoDecoder, parse_frame
from kmq.live.timing import TAG_TIMING, parse_timing

#: Small frames keep the tests quick; the benchmark measures 1280×720.
SIZE = "256x144"


class LiveProcess:
    """``kmq live`` in a child process, as a user starts it; reads the addresses it prints."""

    def __init__(self, *args: str, port: int = 0, startup: float = 120.0, stdin: int | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kmq", "live", "--port", str(port), *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.addresses: dict[str, str] = {}
        deadline = time.monotonic() + startup
        wants_token = "--host" in args and "--token" not in args
        while "stats" not in self.addresses or (wants_token and "token" not in self.addresses):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("kmq live exited:\n" + "".join(self.lines))
            self.lines.append(line)
            name, _, value = line.partition(" ")
            if name in ("player", "stream", "stats", "token"):
                self.addresses[name] = value.strip().split()[0]
            if time.monotonic() > deadline:
                raise RuntimeError("kmq live did not start:\n" + "".join(self.lines))
        self.port = int(self.addresses["stats"].split(":")[2].split("/")[0])
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def stats(self, token: str | None = None) -> dict:
        query = f"?token={token}" if token else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats{query}", timeout=10) as response:
            return json.loads(response.read())

    def wait_for(self, condition, what: str, timeout: float = 60.0, token: str | None = None) -> dict:
        """Poll /stats until ``condition(stats)`` holds (a deadline against hangs, not a measurement)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats(token)
            if condition(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {json.dumps(stats)[:2000]}")
            time.sleep(0.1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return "".join(self.lines)


class RawViewer:
    """A WebSocket client on a plain socket, so a test decides exactly when and how much it reads."""

    def __init__(
        self,
        port: int,
        path: str = "/ws",
        *,
        receive_buffer: int | None = None,
        host: str = "127.0.0.1",
        origin: str | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            # Before connecting, so that the advertised window stays small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(20)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if origin:
            lines.append(f"Origin: {origin}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.bytes_read = 0

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        self.bytes_read += size
        return data

    def read_message(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next whole message; pings are answered, fragments joined."""
        parts: list[bytes] = []
        while True:
            first, second = self._read_exactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", self._read_exactly(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", self._read_exactly(8))
            payload = self._read_exactly(length)
            opcode = first & 0x0F
            if opcode == 0x9:
                self.send(payload, opcode=0xA)
                continue
            parts.append(payload)
            if first & 0x80:
                return (opcode if opcode else 2), b"".join(parts)

    def records(self, count: int) -> list[bytes]:
        """The next ``count`` binary messages."""
        found = []
        while len(found) < count:
            opcode, payload = self.read_message()
            if opcode == 0x8:
                raise ConnectionError(f"closed: {payload!r}")
            if opcode == 0x2:
                found.append(payload)
        return found

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = (np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), length)).tobytes()
        self.sock.sendall(head + mask + masked)

    def crawl(self, done: threading.Event, chunk: int = 1024) -> None:
        """Read ``chunk`` bytes every 50 ms on a thread until ``done``: a viewer on a very slow link."""

        def run() -> None:
            while not done.is_set():
                try:
                    self.sock.recv(chunk)
                except OSError:
                    return
                time.sleep(0.05)

        threading.Thread(target=run, daemon=True).start()

    def close_abruptly(self) -> None:
        """Reset the connection without a closing handshake (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def assert_one_error_line(result: subprocess.CompletedProcess, fragment: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], result.stderr


def http_status(url: str) -> int:
    return http_answer(url)[0]


def http_answer(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """The status and headers of a GET (refusals included)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


_SHARED: dict = {}


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> LiveProcess:
    """One `kmq live` test-pattern server for the session, recording what it streams.

    Other modules import this fixture; the first to ask starts the server, the others reuse it.
    """
    if "live" in _SHARED:
        yield _SHARED["live"]
        return
    record = tmp_path_factory.mktemp("live") / "stream.kmqv"
    server = LiveProcess("--source", "testsrc", "--size", SIZE, "--fps", "30", "-k", "32", "--record", str(record))
    server.recording = record
    _SHARED["live"] = server
    try:
        yield server
    finally:
        _SHARED.clear()
        server.stop()


def viewer_stats(stats: dict) -> dict[int, dict]:
    return {entry["id"]: entry for entry in stats["viewers"]["list"]}


def newest_viewer_id(live: LiveProcess) -> int:
    return max(viewer_stats(live.wait_for(lambda s: s["viewers"]["count"] > 0, "a viewer")))


# ---------------------------------------------------------------- the stream


def test_stats_report_the_encoder_the_source_and_the_viewers(live):
    stats = live.wait_for(lambda s: s["frames_encoded"] >= 10, "frames to be encoded")
    assert stats["source"]["name"] == "testsrc"
    assert (stats["source"]["width"], stats["source"]["height"]) == (256, 144)
    for key in ("p50", "p95"):
        assert stats["encode_ms"][key] > 0
    assert stats["encode_fps"] > 0
    assert stats["encoder"]["k"] == 32
    assert "count" in stats["viewers"] and "bytes_sent" in stats
    assert "frames_dropped" in stats["source"]


def test_a_viewer_gets_the_header_then_starts_at_a_keyframe_with_capture_times(live):
    viewer = RawViewer(live.port)
    try:
        assert viewer.status == 101
        header_record, *records = viewer.records(7)
        header = StreamHeader.from_bytes(header_record)
        assert (header.width, header.height, header.k) == (256, 144, 32)
        assert records[0][:4] == TAG_TIMING and records[1][:4] == TAG_FRAME
        timing = parse_timing(records[0])
        first = parse_frame(records[1], header)
        assert first.keyframe and timing.number == first.number
        assert timing.captured_us <= timing.sent_us
        decoder = VideoDecoder(header)
        frames = [decoder.feed(record) for record in records]
        assert [f.number for f in frames if f is not None] == [first.number, first.number + 1, first.number + 2]
    finally:
        viewer.close()


def test_every_viewer_gets_the_same_packet_bytes(live):
    first, second = RawViewer(live.port), RawViewer(live.port)
    try:
        header = StreamHeader.from_bytes(first.records(1)[0])
        assert second.records(1)[0] == header.to_bytes()
        a = {parse_frame(r, header).number: r for r in first.records(40) if r[:4] == TAG_FRAME}
        b = {parse_frame(r, header).number: r for r in second.records(40) if r[:4] == TAG_FRAME}
        shared = sorted(set(a) & set(b))
        assert len(shared) >= 10
        assert all(a[number] == b[number] for number in shared)
    finally:
        first.close()
        second.close()


def test_a_stalled_viewer_is_dropped_to_keyframes_while_another_keeps_every_frame(live):
    healthy = RawViewer(live.port)
    header = StreamHeader.from_bytes(healthy.records(1)[0])
    healthy_id = newest_viewer_id(live)
    numbers: list[int] = []
    done = threading.Event()

    def watch_healthy() -> None:
        # A viewer that keeps up and acknowledges each frame, as the browser player does.
        decoder = VideoDecoder(header)
        while not done.is_set():
            frame = decoder.feed(healthy.records(1)[0])
            if frame is not None:
                numbers.append(frame.number)
                healthy.send(json.dumps({"type": "ack", "frame": frame.number}).encode(), opcode=0x1)

    watcher = threading.Thread(target=watch_healthy, daemon=True)
    watcher.start()
    stalled = RawViewer(live.port, receive_buffer=4096)
    stalled.records(1)  # the header; then it never reads again
    stalled_id = newest_viewer_id(live)
    crawler = RawViewer(live.port, receive_buffer=4096)
    crawler_id = newest_viewer_id(live)
    crawler.crawl(done)  # about 20 kB/s, far below the stream's rate
    try:
        start = live.stats()
        received_before = len(numbers)
        end = live.wait_for(
            lambda s: all(viewer_stats(s)[i]["frames_dropped"] > 0 for i in (stalled_id, crawler_id)),
            "both slow viewers to be dropped to keyframes",
        )
        encoded = end["frames_encoded"] - start["frames_encoded"]
        received = len(numbers) - received_before
        done.set()
        watcher.join(timeout=10)
        # The healthy viewer got every frame in order, and kept pace with the encoder meanwhile
        # (to within its window of frames in flight), but for a discardable frame left out when
        # a newer one already waited for it (its decoder, which needs every reference frame,
        # would have refused the next frame after a missing one).
        healthy_stats = viewer_stats(end)[healthy_id]
        gaps = np.diff(numbers)
        assert set(gaps.tolist()) <= {1, 2} and np.count_nonzero(gaps == 2) <= healthy_stats["frames_skipped"]
        assert received >= encoded - end["viewers"]["queue_limit"]["in_flight"] - 2 - healthy_stats["frames_skipped"]
        assert healthy_stats["frames_dropped"] == 0
        limits = end["viewers"]["queue_limit"]
        for slow_id in (stalled_id, crawler_id):
            slow = viewer_stats(end)[slow_id]
            assert slow["queued_frames"] <= limits["frames"]
            assert slow["queued_bytes"] <= limits["bytes"]
    finally:
        done.set()
        for viewer in (stalled, crawler, healthy):
            viewer.close()


def test_automatic_layers_turn_on_for_a_viewer_behind_until_it_leaves():
    live = LiveProcess("--size", "320x240", "--fps", "30", "-k", "16", "--temporal-layers", "auto")
    try:
        assert live.stats()["encoder"]["temporal_layers_setting"] == "auto"
        watch_a_viewer_behind(live)
    finally:
        live.stop()


def watch_a_viewer_behind(live: LiveProcess) -> None:
    stalled = RawViewer(live.port, receive_buffer=4096)
    try:
        stalled.records(1)  # the header; then it never reads again, and its packets wait
        before = live.wait_for(lambda s: s["encoder"]["temporal_layers"] == 2, "the second layer")
        during = live.wait_for(
            lambda s: s["encoder"]["discardable_frames"] > before["encoder"]["discardable_frames"] + 3,
            "discardable frames",
        )
    finally:
        stalled.close()
    live.wait_for(lambda s: s["viewers"]["count"] == 0, "the viewer to leave")
    # A few seconds after the last viewer behind, every frame is a reference again.
    after = live.wait_for(lambda s: s["encoder"]["temporal_layers"] == 1, "one layer again")
    later = live.wait_for(lambda s: s["frames_encoded"] > after["frames_encoded"] + 10, "more frames")
    assert later["encoder"]["discardable_frames"] == after["encoder"]["discardable_frames"]
    assert during["encoder"]["discardable_frames"] > 0


def test_a_viewer_that_disconnects_mid_frame_is_removed_and_the_stream_goes_on(live):
    viewer = RawViewer(live.port)
    viewer.records(1)
    viewer_id = newest_viewer_id(live)
    # Read into the middle of a frame packet, then reset the connection.
    while True:
        _, second = viewer._read_exactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", viewer._read_exactly(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", viewer._read_exactly(8))
        if length > 200:
            viewer._read_exactly(length // 2)
            break
        viewer._read_exactly(length)
    viewer.close_abruptly()
    live.wait_for(lambda s: viewer_id not in viewer_stats(s), "the viewer to be removed")
    after = RawViewer(live.port)
    try:
        header = StreamHeader.from_bytes(after.records(1)[0])
        decoder = VideoDecoder(header)
        decoded = [decoder.feed(record) for record in after.records(10)]
        assert sum(frame is not None for frame in decoded) == 5
    finally:
        after.close()


def test_a_10_mb_message_from_a_viewer_is_refused_and_the_connection_closed(live):
    before = live.stats()["refused"]["messages"]
    viewer = RawViewer(live.port)
    viewer.records(1)
    try:
        viewer.send(b"\0" * (10 << 20))
    except OSError:
        pass  # the server may close before all of it is written
    code = None
    try:
        while True:
            opcode, payload = viewer.read_message()
            if opcode == 0x8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                break
    except (ConnectionError, OSError):
        pass
    viewer.close()
    assert code in (1009, None)  # 1009: message too big (or the connection was simply cut)
    live.wait_for(lambda s: s["refused"]["messages"] > before, "the refusal to be counted")
    other = RawViewer(live.port)
    try:
        assert len(other.records(3)) == 3
    finally:
        other.close()


def test_requests_for_another_host_or_from_another_origin_are_refused(live):
    rebound = RawViewer(live.port, host="attacker.example")
    cross = RawViewer(live.port, origin="http://attacker.example")
    same = RawViewer(live.port, origin=f"http://127.0.0.1:{live.port}")
    try:
        assert rebound.status == 403
        assert cross.status == 403
        assert same.status == 101
    finally:
        for viewer in (rebound, cross, same):
            viewer.close()


def test_the_page_and_its_modules_are_served_with_a_strict_policy(live):
    with urllib.request.urlopen(f"http://127.0.0.1:{live.port}/", timeout=10) as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert "static/main.js" in page
    assert "default-src 'self'" in policy
    with urllib.request.urlopen(f"http://127.0.0.1:{live.port}/static/index-decoder.js", timeout=10) as response:
        assert "javascript" in response.headers["Content-Type"]
    assert http_status(f"http://127.0.0.1:{live.port}/static/../server.py") == 404


def test_kmq_watch_decodes_and_writes_the_stream(live, tmp_path):
    out = tmp_path / "watched.mkv"
    result = run_kmq("watch", f"ws://127.0.0.1:{live.port}/ws", "--frames", "20", "-o", str(out), "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == 20 and summary["keyframes"] >= 1
    assert (summary["width"], summary["height"]) == (256, 144)
    assert summary["latency_ms"]["p50"] is not None
    import av

    with av.open(str(out)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 20 and frames[0].shape == (144, 256, 3)


def test_kmq_watch_keeps_the_stream_as_it_came_in_a_kmqv_file_that_decodes_to_what_it_saw(tmp_path):
    from kmq.live.watch import watch

    # Two temporal layers and a watcher slower than the stream: the server leaves discardable
    # frames out for it, so the packets it keeps skip frame numbers the file must not have.
    live = LiveProcess("--size", "96x64", "--fps", "30", "-k", "16", "--temporal-layers", "2")
    seen: list[tuple[int, bool, np.ndarray]] = []

    def slow(frame, summary) -> None:
        seen.append((frame.number, frame.discardable, frame.to_array()))
        time.sleep(0.08)

    out = tmp_path / "kept.kmqv"
    try:
        summary = watch(f"ws://127.0.0.1:{live.port}/ws", output=out, frames=40, on_frame=slow)
    finally:
        live.stop()
    assert summary.frames == 40 and summary.output == out
    numbers = [number for number, _, _ in seen]
    assert any(b - a > 1 for a, b in zip(numbers, numbers[1:])), numbers  # frames were left out
    with open(out, "rb") as stream:
        reader = KmqvReader(stream)
        packets = [parse_frame(record, reader.header) for _, record in reader.packets()]
        frames = list(reader.frames())
        assert reader.end.frames == 40 and reader.keyframes[0].pts == 0
    assert [packet.number for packet in packets] == list(range(40))
    assert packets[0].keyframe and packets[0].pts == 0 and all(a.pts < b.pts for a, b in zip(packets, packets[1:]))
    assert [packet.discardable for packet in packets] == [discardable for _, discardable, _ in seen]
    for frame, (_, _, pixels) in zip(frames, seen, strict=True):
        np.testing.assert_array_equal(frame.to_array(), pixels)


def test_ctrl_c_stops_kmq_watch_and_finishes_its_recording(live, tmp_path):
    out = tmp_path / "until-stopped.kmqv"
    watcher = subprocess.Popen(
        [sys.executable, "-m", "kmq", "watch", f"ws://127.0.0.1:{live.port}/ws", "-o", str(out), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".until-stopped.kmqv.*")) and time.monotonic() < deadline:
            time.sleep(0.1)  # the temporary file appears with the first frame
        time.sleep(1.0)
        watcher.send_signal(signal.SIGINT)
        stdout, stderr = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["end"] == "stopped" and summary["frames"] >= 5 and summary["output"] == str(out)
    with open(out, "rb") as stream:
        reader = KmqvReader(stream)
        assert reader.end.frames == summary["frames"] == len(list(reader.frames()))
    assert not list(tmp_path.glob(".until-stopped*"))  # no temporary file left


@pytest.fixture()
def silent_stream():
    """A WebSocket server on loopback that sends a stream header, then nothing: ws://.../ws."""
    import asyncio

    from aiohttp import web

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    where: dict = {}

    async def stream(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(StreamHeader(width=32, height=16, channels=3, k=8, time_base=1).to_bytes())
        async for _ in ws:  # nothing more is sent; ends when the viewer goes
            pass
        return ws

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/ws", stream)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        where["port"] = runner.addresses[0][1]
        where["runner"] = runner
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert ready.wait(10)
    yield f"ws://127.0.0.1:{where['port']}/ws"
    asyncio.run_coroutine_threadsafe(where["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_kmq_watch_gives_up_on_a_silent_stream_and_stops_at_once_when_asked(silent_stream):
    from kmq.errors import FormatError, InputError
    from kmq.live.watch import watch

    started = time.monotonic()
    with pytest.raises(InputError, match="no data for 1 s"):
        watch(silent_stream, timeout=1.0)
    assert time.monotonic() - started < 5
    # Asked to stop while nothing arrives (Ctrl-C, say): it stops within a poll, not after the time-out.
    started = time.monotonic()
    with pytest.raises(FormatError, match=r"no frame was decoded \(stopped\)"):
        watch(silent_stream, timeout=30.0, stop=lambda: time.monotonic() - started > 0.5)
    assert time.monotonic() - started < 3


def test_the_snapshot_is_the_newest_frame_exactly_as_viewers_decode_it(live):
    from PIL import Image

    viewer = RawViewer(live.port)
    try:
        header = StreamHeader.from_bytes(viewer.records(1)[0])
        decoder = VideoDecoder(header)
        decoded: dict[int, np.ndarray] = {}

        def read_through(number: int) -> None:
            while max(decoded, default=-1) < number:
                frame = decoder.feed(viewer.records(1)[0])
                if frame is not None:
                    decoded[frame.number] = frame.to_array()

        read_through(0)  # the keyframe the viewer starts at
        for _ in range(3):  # (a frame left out for this viewer, were it behind, is tried again)
            time.sleep(0.3)  # past the interval at which snapshots are made, so the next is newer
            with urllib.request.urlopen(f"http://127.0.0.1:{live.port}/snapshot.png", timeout=10) as response:
                headers, body = response.headers, response.read()
            number = int(headers["X-Kmq-Frame"])
            read_through(number)
            if number in decoded:
                break
    finally:
        viewer.close()
    assert headers["Content-Type"] == "image/png" and headers["Cache-Control"] == "no-store"
    assert abs(float(headers["X-Kmq-Captured"]) - time.time()) < 60
    image = Image.open(io.BytesIO(body))
    assert image.format == "PNG" and image.mode == "P" and image.size == (256, 144)
    assert len(image.getpalette()) // 3 <= 32  # the stream's own palette (K = 32)
    assert number in decoded, (number, sorted(decoded)[-5:])
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), decoded[number])


#: A self-signed certificate for localhost and 127.0.0.1 (valid until 2126), for tests only.
TLS_CERT = Path(__file__).parent / "tls" / "localhost-cert.pem"
TLS_KEY = Path(__file__).parent / "tls" / "localhost-key.pem"


@pytest.fixture(scope="module")
def secure() -> LiveProcess:
    """A server with TLS and a token, as for viewers on other machines."""
    server = LiveProcess(
        "--size", "64x48", "--fps", "10", "-k", "8", "--token", "tls-token-42",
        "--tls-cert", str(TLS_CERT), "--tls-key", str(TLS_KEY),
    )  # fmt: skip
    yield server
    server.stop()


def test_a_server_with_tls_serves_https_and_wss_only(secure):
    assert secure.addresses["player"].startswith("https://") and secure.addresses["stream"].startswith("wss://")
    trusting = ssl.create_default_context(cafile=str(TLS_CERT))
    url = f"https://127.0.0.1:{secure.port}/stats?token=tls-token-42"
    with urllib.request.urlopen(url, timeout=10, context=trusting) as response:
        assert json.loads(response.read())["viewers"]["count"] == 0
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(url.replace("https:", "http:"), timeout=10)  # plain HTTP gets nothing
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(url, timeout=10)  # not a certificate the system trusts


def test_kmq_watch_reads_a_wss_stream_trusting_the_servers_certificate(secure):
    stream = f"wss://127.0.0.1:{secure.port}/ws"
    result = run_kmq("watch", stream, "--token", "tls-token-42", "--frames", "5", "--cafile", str(TLS_CERT), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["frames"] == 5
    untrusted = run_kmq("watch", stream, "--token", "tls-token-42", "--frames", "5", "--timeout", "10")
    assert untrusted.returncode == 2
    assert_one_error_line(untrusted, "certificate is not trusted")


def test_kmq_watch_reports_an_unreachable_server_in_one_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_kmq("watch", f"ws://127.0.0.1:{port}/ws", "--frames", "1", "--timeout", "5")
    assert result.returncode == 2
    assert_one_error_line(result, "cannot connect")


# ---------------------------------------------------------------- access


@pytest.fixture(scope="module")
def guarded() -> LiveProcess:
    """A server with a token and room for one viewer."""
    server = LiveProcess("--size", "64x48", "--fps", "10", "-k", "8", "--token", "s3cret-token", "--max-viewers", "1")
    yield server
    server.stop()


def test_the_stats_of_a_server_with_a_token_may_be_read_by_pages_of_other_sites(guarded, live):
    """A page elsewhere that holds the token reads them and the snapshot (and reads a refusal as one); without a token, no."""
    other_site = {"Origin": "https://site.example"}
    base = f"http://127.0.0.1:{guarded.port}/stats"
    guarded.wait_for(lambda s: s["frames_encoded"] > 0, "a frame for /snapshot.png", token="s3cret-token")
    for query, status in (("", 401), ("?token=wrong-token", 403), ("?token=s3cret-token", 200)):
        answer, headers = http_answer(base + query, other_site)
        assert answer == status and headers.get("Access-Control-Allow-Origin") == "*"
        answer, headers = http_answer(base.replace("/stats", "/snapshot.png") + query, other_site)
        assert answer == status and headers.get("Access-Control-Allow-Origin") == "*"
        assert headers["Content-Type"] == ("image/png" if status == 200 else "application/json; charset=utf-8")
    answer, headers = http_answer(f"http://127.0.0.1:{live.port}/stats", other_site)
    assert answer == 403 and "Access-Control-Allow-Origin" not in headers


def test_stats_and_stream_refuse_a_missing_or_wrong_token(guarded):
    base = f"http://127.0.0.1:{guarded.port}"
    assert http_status(f"{base}/stats") == 401
    assert http_status(f"{base}/stats?token=wrong-token") == 403
    assert http_status(f"{base}/stats?token=s3cret-token") == 200
    for path in ("/ws", "/ws?token=wrong-token"):
        viewer = RawViewer(guarded.port, path)
        assert viewer.status in (401, 403)
        viewer.close()
    viewer = RawViewer(guarded.port, "/ws?token=s3cret-token")
    try:
        assert viewer.status == 101
        assert len(viewer.records(3)) == 3
        # The viewer limit: a second one is turned away while the first watches.
        second = RawViewer(guarded.port, "/ws?token=s3cret-token")
        assert second.status == 503
        second.close()
    finally:
        viewer.close()


def test_kmq_watch_with_a_wrong_token_fails_in_one_line(guarded):
    result = run_kmq("watch", f"ws://127.0.0.1:{guarded.port}/ws", "--token", "wrong-token", "--frames", "1")
    assert result.returncode == 2
    assert_one_error_line(result, "refused")


def test_binding_beyond_loopback_generates_a_token():
    server = LiveProcess("--host", "0.0.0.0", "--size", "64x48", "--fps", "5", "-k", "4")
    try:
        token = server.addresses["token"]
        assert len(token) >= 16
        assert http_status(f"http://127.0.0.1:{server.port}/stats") == 401
        assert http_status(f"http://127.0.0.1:{server.port}/stats?token={token}") == 200
        # Without TLS the user is told that the token crosses the network in the clear.
        deadline = time.monotonic() + 30
        while not any("without --tls-cert" in line for line in server.lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("without --tls-cert" in line for line in server.lines), "".join(server.lines)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "no-such-file.mp4"], "not testsrc, camera"),
        (["--source", "camera:x"], "camera must be"),
        (["--source", "camera:57"], "cannot open camera 57"),
        (["--size", "0x10"], "size"),
        (["--fps", "0"], "fps"),
        (["--token", "short"], "at least 8"),
        (["--port", "70000"], "port"),
        (["--tls-cert", "no-such-cert.pem"], "no-such-cert.pem: no such file"),
        (["--tls-key", str(TLS_KEY)], "needs its certificate"),
        (["--tls-cert", str(TLS_CERT)], "not a PEM certificate chain and its private key"),
        (["--tls-cert", str(TLS_CERT), "--tls-key", str(TLS_CERT)], "not a PEM certificate chain"),
        (["--on-demand", "0"], "seconds must be above 0"),
        (["--on-demand", "soon"], "seconds must be a number"),
        (["--source", "-", "--on-demand"], "cannot open standard input again"),
        (["--on-demand", "--record", "out.kmqv"], "--record needs it open all the time"),
    ],
)
def test_bad_live_arguments_fail_in_one_line(args, message):
    result = run_kmq("live", "--port", "0", *args, timeout=60)
    assert result.returncode == 2
    assert_one_error_line(result, message)


def write_rolling_clip(clip: Path) -> None:
    """12 frames of noise moving a pixel to the right each frame, 64×48, at 10 fps."""
    import av

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for number in range(12):
            frame = av.VideoFrame.from_ndarray(np.roll(base, number, axis=1), format="rgb24")
            frame.pts = number
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def stream_rolling_clip(tmp_path: Path, *flags: str) -> Path:
    """``kmq live`` on the rolling clip to its end, with a recording: the recording."""
    clip = tmp_path / "clip.mkv"
    write_rolling_clip(clip)
    record = tmp_path / "out.kmqv"
    server = LiveProcess("--source", str(clip), "-k", "8", "--record", str(record), *flags)
    try:
        server.proc.wait(timeout=60)
    finally:
        output = server.stop()
    assert server.proc.returncode == 0, output
    return record


def recorded_modes(record: Path) -> list[int]:
    """The index data mode (0 intra, 1 inter, 2 motion) of each frame of a recording."""
    with open(record, "rb") as stream:
        reader = KmqvReader(stream)
        return [parse_frame(packet, reader.header).index_data[0] for _, packet in reader.packets()]


def recorded_layers(record: Path) -> list[tuple[bool, bool, int]]:
    """(keyframe, discardable, skipped) of each frame of a recording."""
    with open(record, "rb") as stream:
        reader = KmqvReader(stream)
        packets = [parse_frame(packet, reader.header) for _, packet in reader.packets()]
    return [(p.keyframe, p.discardable, p.skipped) for p in packets]


@pytest.mark.parametrize(
    "flags, layers", [((), 1), (("--temporal-layers", "1"), 1), (("--temporal-layers", "2"), 2)], ids=["auto", "1", "2"]
)
def test_the_stream_has_the_temporal_layers_asked_for(tmp_path, flags, layers):
    """By default ("auto") two layers only while a viewer is behind, and there is none here."""
    frames = recorded_layers(stream_rolling_clip(tmp_path, *flags))
    assert len(frames) >= 4 and frames[0][0]
    discardable = [d for _, d, _ in frames]
    if layers == 1:
        assert not any(discardable) and all(s == 0 for _, _, s in frames)
    else:
        # After each reference frame a discardable one; each reference after it skips it.
        for (key, disc, _), (next_key, next_disc, skipped) in zip(frames, frames[1:]):
            if not next_key:
                assert next_disc != disc and skipped == (1 if disc else 0)


@pytest.mark.parametrize("flags, delta_mode", [((), 2), (("--no-motion",), 1)])
def test_the_moving_file_source_is_streamed_with_motion_vectors_unless_told_not_to(tmp_path, flags, delta_mode):
    modes = recorded_modes(stream_rolling_clip(tmp_path, *flags))
    assert modes[0] == 0 and len(modes) >= 2
    assert set(modes[1:]) <= {0, delta_mode} and delta_mode in modes[1:]


def test_a_file_source_streams_then_ends_the_stream(tmp_path):
    clip = tmp_path / "clip.mkv"
    write_rolling_clip(clip)
    record = tmp_path / "out.kmqv"
    server = LiveProcess("--source", str(clip), "-k", "8", "--record", str(record))
    try:
        server.proc.wait(timeout=60)  # the file ends, and so does the server
    finally:
        output = server.stop()
    assert server.proc.returncode == 0, output
    assert "end of stream" in output
    import kmq

    with kmq.open_video(record) as video:
        assert video.complete and 1 <= video.frame_count <= 12
        assert video.header.width == 64
