"""`kmq live` relaying a stream: a pipeline on standard input, a stream over HTTP, connecting again."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from kmq.analysis.metrics import psnr
from kmq.codec.video import KmqvReader
from kmq.live.testsrc import TestPattern
from test_live_server import LiveProcess, assert_one_error_line, write_rolling_clip

WIDTH, HEIGHT, FPS = 160, 96, 20


def pattern_frames(count: int) -> list[np.ndarray]:
    """The test pattern's photograph panning, at FPS: what a camera would film."""
    pattern = TestPattern(WIDTH, HEIGHT)
    return [pattern.frame(number / FPS) for number in range(count)]


class TransportStream:
    """Frames encoded as H.264 in MPEG-TS, written to a binary file object as a camera's encoder would."""

    def __init__(self, out, keyint: int = 250, size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
        import av

        # Each packet leaves at once (flush_packets), as from a camera, not when a buffer fills.
        self.container = av.open(out, "w", format="mpegts", container_options={"flush_packets": "1"})
        self.stream = self.container.add_stream("libx264", rate=FPS)
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "12", "g": str(keyint)}
        self.out = out
        self.count = 0

    def write(self, pixels: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        if hasattr(self.out, "flush"):
            self.out.flush()

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def recorded_frames(record: Path) -> list[np.ndarray]:
    with open(record, "rb") as stream:
        return [frame.to_array() for frame in KmqvReader(stream).frames()]


def assert_frames_are_the_sources_in_order(frames: list[np.ndarray], sources: list[np.ndarray]) -> None:
    """Each frame is one of the source pictures (K = 64 of it), and they come in the order filmed."""
    matches = []
    for frame in frames:
        scores = [psnr(source, frame) for source in sources]
        best = int(np.argmax(scores))
        assert scores[best] > 26, f"frame {len(matches)} resembles no source picture (best {scores[best]:.1f} dB)"
        matches.append(best)
    assert matches == sorted(matches), matches


@contextlib.contextmanager
def piped_server(camera: Callable[[BinaryIO], None], *args: str) -> Iterator[LiveProcess]:
    """``kmq live --source -`` with ``camera(pipe)`` writing into its standard input on a thread.

    On leaving, the server is stopped (its output in ``server.output``) and the camera joined.
    """
    read_end, write_end = os.pipe()

    def run() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            camera(pipe)

    writer = threading.Thread(target=run, daemon=True)
    writer.start()
    try:
        server = LiveProcess("--source", "-", *args, stdin=read_end)
    finally:
        os.close(read_end)
    try:
        yield server
    finally:
        server.output = server.stop()
        writer.join(timeout=10)


# ---------------------------------------------------------------- standard input


def test_a_stream_on_standard_input_is_relayed_frame_by_frame_until_it_ends(tmp_path):
    pattern = TestPattern(WIDTH, HEIGHT)
    sources: list[np.ndarray] = []
    record = tmp_path / "out.kmqv"
    ready = threading.Event()

    def camera(pipe: BinaryIO) -> None:
        """Films in real time until 40 frames after the server is up (or 30 s), then ends the stream."""
        stream = TransportStream(pipe)
        after = 0
        while after < 40 and len(sources) < 30 * FPS:
            sources.append(pattern.frame(len(sources) / FPS))
            stream.write(sources[-1])
            after += ready.is_set()
            time.sleep(1 / FPS)
        stream.close()

    with piped_server(camera, "-k", "64", "--record", str(record)) as server:
        ready.set()
        stats = server.stats()
        assert stats["source"]["name"] == "standard input"
        assert (stats["source"]["width"], stats["source"]["height"]) == (WIDTH, HEIGHT)
        server.proc.wait(timeout=60)  # the pipe closes: the stream ends, and so does the server
    assert server.proc.returncode == 0, server.output
    assert "end of stream" in server.output
    frames = recorded_frames(record)
    # Frames are taken as they arrive: those sent in real time get through (a loaded machine may drop some).
    assert len(frames) >= 20, server.output
    assert_frames_are_the_sources_in_order(frames, sources)


def test_a_file_redirected_into_standard_input_is_played_at_its_rate(tmp_path):
    """A file is no live stream: played at its rate, not taken in a burst (which would drop most of it).

    MPEG-TS, which declares no duration: only the file behind standard input tells it from a live stream.
    """
    clip = tmp_path / "clip.ts"
    with open(clip, "wb") as out:
        stream = TransportStream(out)
        for pixels in pattern_frames(30):
            stream.write(pixels)
        stream.close()
    record = tmp_path / "out.kmqv"
    with open(clip, "rb") as stdin:
        server = LiveProcess("--source", "-", "--record", str(record), stdin=stdin.fileno())
    try:
        server.proc.wait(timeout=60)
    finally:
        output = server.stop()
    assert server.proc.returncode == 0, output
    assert_played_at_its_rate(record, output, frames=30, fps=FPS)


def assert_played_at_its_rate(record: Path, output: str, frames: int, fps: float) -> None:
    """Most frames recorded, over the time they take at their rate."""
    with open(record, "rb") as stream:
        times = [frame.time for frame in KmqvReader(stream).frames()]
    assert len(times) >= frames * 0.8, output
    assert times[-1] - times[0] >= 0.9 * (len(times) - 1) / fps, times


def test_a_live_stream_is_decoded_as_its_frames_arrive_none_held_back():
    """Sixty frames, then the camera pauses: all but those the demuxer must wait on (MPEG-TS ends a
    frame when the next begins) are through. Frame threads would each hold one more."""
    paused = threading.Event()

    def camera(pipe: BinaryIO) -> None:
        stream = TransportStream(pipe)
        for pixels in pattern_frames(60):
            stream.write(pixels)
            time.sleep(1 / FPS)
        paused.wait(120)

    with piped_server(camera) as server:
        captured, steady_since = -1, time.monotonic()
        while time.monotonic() - steady_since < 2.0:  # until nothing more comes for two seconds
            count = server.stats()["source"]["frames_captured"]
            if count != captured:
                captured, steady_since = count, time.monotonic()
            time.sleep(0.1)
        paused.set()
    assert captured >= 58, captured


def test_a_camera_that_changes_its_frame_size_mid_stream_goes_on_at_the_streams_size(tmp_path):
    """The camera restarts its encoder at twice the size (a new H.264 stream in the same MPEG-TS
    pipe): its frames are scaled to the size the stream began with, and nothing stops."""
    import av

    pattern = TestPattern(WIDTH, HEIGHT)
    sources: list[np.ndarray] = []
    record = tmp_path / "out.kmqv"
    ready = threading.Event()

    def film(stream: TransportStream, size: tuple[int, int]) -> None:
        sources.append(pattern.frame(len(sources) / FPS))
        frame = av.VideoFrame.from_ndarray(sources[-1], format="rgb24").reformat(*size)
        stream.write(frame.to_ndarray(format="rgb24"))
        time.sleep(1 / FPS)

    def camera(pipe: BinaryIO) -> None:
        """In real time: until 10 frames after the server is up (or 30 s), then 30 at twice the size."""
        stream = TransportStream(pipe)
        after = 0
        while after < 10 and len(sources) < 30 * FPS:
            film(stream, (WIDTH, HEIGHT))
            after += ready.is_set()
        stream.close()
        stream = TransportStream(pipe, size=(2 * WIDTH, 2 * HEIGHT))
        for _ in range(30):
            film(stream, (2 * WIDTH, 2 * HEIGHT))
        stream.close()

    with piped_server(camera, "--record", str(record)) as server:
        ready.set()
        server.proc.wait(timeout=60)
    assert server.proc.returncode == 0, server.output
    assert "end of stream" in server.output
    frames = recorded_frames(record)
    assert all(frame.shape == (HEIGHT, WIDTH, 3) for frame in frames)
    assert len(frames) >= 20
    # The last frame is among the camera's last pictures (scaled twice: not exact, but near).
    scores = [psnr(source, frames[-1]) for source in sources]
    assert int(np.argmax(scores)) >= len(sources) - 5 and max(scores) > 24, scores


@pytest.mark.parametrize(
    "data, message",
    [(b"", "standard input"), (b"not a video at all\n" * 50, "cannot open standard input")],
    ids=["empty", "garbage"],
)
def test_standard_input_that_is_no_video_fails_in_one_line(data, message):
    result = subprocess.run(
        [sys.executable, "-m", "kmq", "live", "--port", "0", "--source", "-"],
        input=data, capture_output=True, timeout=120,
    )  # fmt: skip
    result.stderr = result.stderr.decode()
    assert result.returncode == 2, result.stderr
    assert_one_error_line(result, message)


# ---------------------------------------------------------------- a stream over HTTP


class Chunked:
    """A binary file object that sends what is written to it in HTTP/1.1 chunks."""

    def __init__(self, out) -> None:
        self.out = out

    def write(self, data: bytes) -> int:
        if data:
            self.out.write(b"%x\r\n%s\r\n" % (len(data), bytes(data)))
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    def finish(self) -> None:
        self.out.write(b"0\r\n\r\n")
        self.out.flush()


class StreamServer:
    """A loopback HTTP server, as a camera's: /live.ts sends ``frames`` as live MPEG-TS per request
    (chunked, of no length known in advance), behind a user and password; /video.mjpg sends the
    test pattern as Motion-JPEG for a minute; other paths are files of ``folder``."""

    def __init__(
        self, folder: Path, frames: list[np.ndarray], user: str = "viewer", password: str = "s3cret-pw", port: int = 0
    ) -> None:
        self.requests = 0
        #: Streams of /live.ts that the viewer closed before their end.
        self.cut_short = 0
        #: Whether a stream ends by dropping the connection, before its last chunk (a camera lost).
        self.drop = False
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        owner = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/video.mjpg":
                    return self.motion_jpeg()
                if self.path != "/live.ts":
                    return super().do_GET()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                owner.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                body = Chunked(self.wfile)
                stream = TransportStream(body)
                try:
                    for pixels in frames:
                        stream.write(pixels)
                        time.sleep(1 / FPS)
                    if owner.drop:  # a chunk cut short, and the connection gone
                        self.wfile.write(b"1000\r\n" + b"G" * 100)
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    stream.close()
                    body.finish()
                except (BrokenPipeError, ConnectionResetError):
                    owner.cut_short += 1
                self.close_connection = True

            def motion_jpeg(self) -> None:
                """What cheap IP cameras and mjpg-streamer serve: JPEGs one after another in a multipart response."""
                from PIL import Image

                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Connection", "close")
                self.end_headers()
                pattern = TestPattern(WIDTH, HEIGHT)
                try:
                    for number in range(60 * FPS):
                        pixels = pattern.frame(number / FPS)
                        owner.pictures_sent = number + 1
                        picture = io.BytesIO()
                        Image.fromarray(pixels).save(picture, "JPEG", quality=90)
                        part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % picture.tell()
                        self.wfile.write(part + picture.getvalue() + b"\r\n")
                        self.wfile.flush()
                        time.sleep(1 / FPS)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        #: Frames /video.mjpg has sent (the test pattern's first ones, for a minute at most).
        self.pictures_sent = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def camera(tmp_path):
    server = StreamServer(tmp_path, pattern_frames(30))
    try:
        yield server
    finally:
        server.close()


def test_a_stream_over_http_is_relayed_and_connected_again_when_it_ends(camera, tmp_path):
    record = tmp_path / "out.kmqv"
    url = f"http://viewer:s3cret-pw@127.0.0.1:{camera.port}/live.ts"
    server = LiveProcess("--source", url, "--loop", "-k", "64", "--record", str(record))
    try:
        stats = server.wait_for(lambda s: s["source"]["restarts"] >= 2, "the stream opened three times", timeout=90)
        assert stats["source"]["name"] == f"stream http://127.0.0.1:{camera.port}/live.ts"
        assert not stats["source"]["ended"] and stats["source"]["error"] is None
        before = stats["frames_encoded"]
        server.wait_for(lambda s: s["frames_encoded"] > before + 5, "frames after connecting again")
    finally:
        output = server.stop()
    assert server.proc.returncode == 0, output
    assert camera.requests >= 3  # each with the user and password (after a 401, as HTTP clients do)
    assert f"stream http://127.0.0.1:{camera.port}/live.ts ended: connecting again" in output
    assert f"stream http://127.0.0.1:{camera.port}/live.ts: connected again" in output
    assert "s3cret" not in output and "viewer:" not in output  # the password is never shown
    frames = recorded_frames(record)
    assert len(frames) >= 20  # the first session is partly lost while the server starts
    sources = pattern_frames(30)
    for frame in frames:
        assert max(psnr(source, frame) for source in sources) > 26


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_stream_over_udp_is_joined_where_it_is(tmp_path):
    """A camera sending MPEG-TS over UDP waits for no one: the server joins mid-stream, at its next keyframe."""
    port = free_udp_port()
    sources = pattern_frames(60)
    done = threading.Event()

    def camera() -> None:
        stream = TransportStream(f"udp://127.0.0.1:{port}?pkt_size=1316", keyint=10)
        number = 0
        while not done.is_set() and number < 60 * FPS:
            stream.write(sources[number % len(sources)])
            number += 1
            time.sleep(1 / FPS)
        stream.close()

    sender = threading.Thread(target=camera, daemon=True)
    sender.start()
    record = tmp_path / "out.kmqv"
    server = LiveProcess("--source", f"udp://127.0.0.1:{port}", "--record", str(record))
    try:
        server.wait_for(lambda s: s["frames_encoded"] >= 20, "20 frames from the camera")
    finally:
        output = server.stop()
        done.set()
        sender.join(timeout=10)
    assert server.proc.returncode == 0, output
    frames = recorded_frames(record)
    assert len(frames) >= 20
    for frame in frames:
        assert max(psnr(source, frame) for source in sources) > 26


def run_to_the_end(*args: str) -> tuple[int, str]:
    """``kmq live`` until its source ends: its exit code and what it printed."""
    server = LiveProcess(*args)
    try:
        server.proc.wait(timeout=60)
    finally:
        output = server.stop()
    return server.proc.returncode, output


def test_a_camera_that_goes_away_is_connected_to_again_when_it_is_back(camera, tmp_path):
    url = f"http://viewer:s3cret-pw@127.0.0.1:{camera.port}/live.ts"
    server = LiveProcess("--source", url, "--loop")
    camera.close()  # the stream under way plays to its end; then nothing answers
    try:
        deadline = time.monotonic() + 60
        while not any("connecting again" in line for line in server.lines):
            assert time.monotonic() < deadline, "".join(server.lines)
            time.sleep(0.1)
        time.sleep(1.2)  # the first attempt (after 0.5 s) is refused
        back = StreamServer(tmp_path, pattern_frames(30), port=camera.port)
        try:
            stats = server.wait_for(lambda s: s["source"]["restarts"] >= 1, "the camera connected again")
            assert stats["source"]["error"] is None
            server.wait_for(lambda s: s["frames_encoded"] > stats["frames_encoded"], "frames from the camera again")
        finally:
            back.close()
    finally:
        output = server.stop()
    assert server.proc.returncode == 0, output
    assert "connected again (at attempt" in output


def test_a_motion_jpeg_camera_over_http_is_relayed(camera, tmp_path):
    record = tmp_path / "out.kmqv"
    server = LiveProcess("--source", f"http://127.0.0.1:{camera.port}/video.mjpg", "--record", str(record))
    try:
        stats = server.wait_for(lambda s: s["frames_encoded"] >= 20, "20 frames from the camera")
        assert (stats["source"]["width"], stats["source"]["height"]) == (WIDTH, HEIGHT)
    finally:
        output = server.stop()
    assert server.proc.returncode == 0, output
    frames = recorded_frames(record)
    assert len(frames) >= 20
    assert_frames_are_the_sources_in_order(frames, pattern_frames(camera.pictures_sent))


def test_a_stream_that_ends_without_loop_ends_the_server(camera):
    code, output = run_to_the_end("--source", f"http://viewer:s3cret-pw@127.0.0.1:{camera.port}/live.ts")
    assert code == 0, output
    assert "end of stream" in output and camera.requests == 1


def test_a_video_file_over_http_is_played_at_its_rate(camera, tmp_path):
    """A stream of known length is a file: paced at its rate, not taken in a burst (which would drop most of it)."""
    write_rolling_clip(tmp_path / "clip.mkv")  # 12 frames at 10 fps
    record = tmp_path / "out.kmqv"
    code, output = run_to_the_end("--source", f"http://127.0.0.1:{camera.port}/clip.mkv", "-k", "8", "--record", str(record))
    assert code == 0, output
    assert_played_at_its_rate(record, output, frames=12, fps=10)


def test_a_stream_lost_without_loop_ends_the_server_with_an_error(camera):
    camera.drop = True
    code, output = run_to_the_end("--source", f"http://viewer:s3cret-pw@127.0.0.1:{camera.port}/live.ts")
    assert code == 1, output
    assert f"error: source failed: stream http://127.0.0.1:{camera.port}/live.ts was lost" in output
    assert "Traceback" not in output and "s3cret" not in output


@pytest.mark.parametrize(
    "source, message",
    [
        ("http://127.0.0.1:1/live.ts", "cannot open stream http://127.0.0.1:1/live.ts"),
        ("http://admin:hunter22@127.0.0.1:1/live.ts", "cannot open stream http://127.0.0.1:1/live.ts"),
        ("nosuchprotocol://camera/stream", "cannot open stream nosuchprotocol://camera/stream"),
    ],
    ids=["refused", "password-hidden", "unknown-protocol"],
)
def test_a_stream_that_cannot_be_opened_fails_in_one_line(source, message):
    result = subprocess.run(
        [sys.executable, "-m", "kmq", "live", "--port", "0", "--source", source],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert_one_error_line(result, message)
    assert "hunter22" not in result.stderr and "admin" not in result.stderr


def test_standard_input_that_is_a_terminal_is_refused_at_once():
    import pty

    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kmq", "live", "--port", "0", "--source", "-"],
            stdin=terminal, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 2
    assert_one_error_line(result, "standard input is a terminal: pipe a stream into it")


def test_loop_cannot_start_standard_input_again():
    result = subprocess.run(
        [sys.executable, "-m", "kmq", "live", "--port", "0", "--source", "-", "--loop"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert_one_error_line(result, "--loop cannot start standard input again")
