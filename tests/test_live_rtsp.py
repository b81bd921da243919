"""`kmq live --source rtsp://...`: an IP camera's RTSP stream, relayed.

The camera is a small RTSP server on loopback that speaks as cameras do: it asks for a user and
password, describes one H.264 track in SDP, turns down RTP over UDP (461), and sends RTP over the
RTSP connection itself (interleaved TCP) — single NAL unit packets, and FU-A fragments for NAL
units larger than a packet — of frames encoded by libx264, at their rate.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import struct
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from test_live_server import LiveProcess
from test_live_streams import FPS, HEIGHT, WIDTH, assert_frames_are_the_sources_in_order, pattern_frames, recorded_frames

#: Largest RTP payload: NAL units above it are sent as FU-A fragments.
PAYLOAD = 1200
CLOCK = 90_000


def h264_access_units(frames: list[np.ndarray]) -> list[list[bytes]]:
    """Each frame encoded by libx264 as a list of NAL units (SPS and PPS before each keyframe)."""
    import av

    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, FPS), FPS
    codec.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "12", "g": str(FPS)}
    units = []
    for number, pixels in enumerate(frames + [None]):
        frame = None
        if pixels is not None:
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = number
        for packet in codec.encode(frame):
            nals = re.split(b"\x00\x00\x00\x01|\x00\x00\x01", bytes(packet))
            units.append([nal for nal in nals if nal])
    return units


def rtp_packets(nal_units: list[bytes], sequence: int, timestamp: int) -> list[bytes]:
    """One access unit as RTP packets (RFC 6184): single NAL units, or FU-A fragments; marker on the last."""
    payloads = []
    for nal in nal_units:
        if len(nal) <= PAYLOAD:
            payloads.append(nal)
            continue
        indicator, kind = (nal[0] & 0xE0) | 28, nal[0] & 0x1F
        body = nal[1:]
        for start in range(0, len(body), PAYLOAD):
            header = kind | (0x80 if start == 0 else 0) | (0x40 if start + PAYLOAD >= len(body) else 0)
            payloads.append(bytes([indicator, header]) + body[start : start + PAYLOAD])
    packets = []
    for index, payload in enumerate(payloads):
        marker = 0x80 if index == len(payloads) - 1 else 0
        head = struct.pack(">BBHII", 0x80, marker | 96, (sequence + index) & 0xFFFF, timestamp, 0x4B4D5121)
        packets.append(head + payload)
    return packets


class RtspCamera:
    """An RTSP server on loopback with one stream, ``/stream1``, of ``frames`` (then the session ends)."""

    def __init__(self, frames: list[np.ndarray], user: str = "viewer", password: str = "s3cret-pw") -> None:
        self.units = h264_access_units(frames)
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.requests: list[str] = []
        self.frames_sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(connection,), daemon=True).start()

    def _session(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        playing = threading.Event()
        sender = threading.Thread(target=self._send, args=(connection, playing), daemon=True)
        try:
            while True:
                line = reader.readline()
                if not line:
                    return
                if line.startswith(b"$"):  # RTCP from the client, interleaved: skip it
                    continue
                request = line.decode().strip()
                if not request:
                    continue
                headers = {}
                while (header := reader.readline().decode().strip()) != "":
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if int(headers.get("content-length", 0)):
                    reader.read(int(headers["content-length"]))
                method = request.split()[0]
                self.requests.append(method)
                answer = self._answer(method, request, headers)
                connection.sendall(answer.encode())
                if method == "PLAY" and answer.startswith("RTSP/1.0 200"):
                    playing.set()
                    sender.start()
                if method == "TEARDOWN":
                    return
        except OSError:
            return
        finally:
            playing.clear()
            connection.close()

    def _answer(self, method: str, request: str, headers: dict[str, str]) -> str:
        cseq = headers.get("cseq", "0")
        extra = ""
        body = ""
        if headers.get("authorization") != self.expected and method != "OPTIONS":
            status = "401 Unauthorized"
            extra = 'WWW-Authenticate: Basic realm="camera"\r\n'
        elif method == "OPTIONS":
            status = "200 OK"
            extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"
        elif method == "DESCRIBE":
            status = "200 OK"
            url = request.split()[1]
            body = (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=camera\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
                "a=control:track1\r\n"
            )
            extra = f"Content-Base: {url}/\r\nContent-Type: application/sdp\r\n"
        elif method == "SETUP":
            transport = headers.get("transport", "")
            if "RTP/AVP/TCP" not in transport:
                status = "461 Unsupported Transport"  # as cameras behind a firewall: TCP only
            else:
                status = "200 OK"
                extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 4b4d5121;timeout=60\r\n"
        elif method in ("PLAY", "GET_PARAMETER", "TEARDOWN"):
            status = "200 OK"
            extra = "Session: 4b4d5121\r\n"
        else:
            status = "405 Method Not Allowed"
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        return f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{extra}{length}\r\n{body}"

    def _send(self, connection: socket.socket, playing: threading.Event) -> None:
        sequence = 0
        started = time.monotonic()
        for number, units in enumerate(self.units):
            delay = started + number / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if not playing.is_set():
                return
            packets = rtp_packets(units, sequence, number * CLOCK // FPS)
            sequence += len(packets)
            try:
                connection.sendall(b"".join(struct.pack(">cBH", b"$", 0, len(p)) + p for p in packets))
            except OSError:
                return
            self.frames_sent = number + 1
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)  # the camera's session ends

    def close(self) -> None:
        self.listener.close()


def test_an_rtsp_camera_is_relayed_frame_by_frame(tmp_path: Path):
    sources = pattern_frames(6 * FPS)
    camera = RtspCamera(sources)
    record = tmp_path / "out.kmqv"
    url = f"rtsp://viewer:s3cret-pw@127.0.0.1:{camera.port}/stream1"
    server = LiveProcess("--source", url, "-k", "64", "--record", str(record))
    try:
        server.proc.wait(timeout=60)  # the camera's session ends after its frames: so does the stream
    finally:
        output = server.stop()
        camera.close()
    assert server.proc.returncode == 0, output
    assert f"kmq live: stream rtsp://127.0.0.1:{camera.port}/stream1 {WIDTH}×{HEIGHT}" in output
    assert "s3cret" not in output and "viewer:" not in output
    assert camera.requests[:1] == ["OPTIONS"] and "PLAY" in camera.requests
    frames = recorded_frames(record)
    assert len(frames) >= 2 * FPS, output  # the first ones go by while the server starts (seconds when loaded)
    assert_frames_are_the_sources_in_order(frames, sources)


def test_an_rtsp_camera_whose_session_ends_is_connected_to_again_with_loop():
    camera = RtspCamera(pattern_frames(FPS))  # one second a session
    url = f"rtsp://viewer:s3cret-pw@127.0.0.1:{camera.port}/stream1"
    server = LiveProcess("--source", url, "--loop", "-k", "16")
    try:
        stats = server.wait_for(lambda s: s["source"]["restarts"] >= 2, "two sessions more", timeout=90)
        before = stats["frames_encoded"]
        server.wait_for(lambda s: s["frames_encoded"] > before + 5, "frames after connecting again")
    finally:
        output = server.stop()
        camera.close()
    assert server.proc.returncode == 0, output
    assert camera.requests.count("PLAY") >= 3
    assert f"stream rtsp://127.0.0.1:{camera.port}/stream1 ended: connecting again" in output
    assert "s3cret" not in output
