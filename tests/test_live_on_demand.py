"""`kmq live --on-demand`: the source is open only while somebody watches (or for a while after)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kmq.analysis.metrics import psnr
from kmq.codec.video import TAG_FRAME, StreamHeader, VideoDecoder, parse_frame
from test_live_server import LiveProcess, RawViewer, write_rolling_clip
from test_live_streams import FPS, StreamServer, pattern_frames

#: Seconds without a viewer before the source closes: short, so that the tests are quick.
DELAY = "0.5"


def watch_frames(server: LiveProcess, count: int) -> list[np.ndarray]:
    """Join as a viewer, decode ``count`` frames (the first must be a keyframe), leave."""
    viewer = RawViewer(server.port)
    try:
        header = StreamHeader.from_bytes(viewer.records(1)[0])
        decoder = VideoDecoder(header)
        pictures: list[np.ndarray] = []
        while len(pictures) < count:
            (record,) = viewer.records(1)
            if record[:4] != TAG_FRAME:
                continue
            if not pictures:
                assert parse_frame(record, header).keyframe
            frame = decoder.feed(record)
            assert frame is not None
            pictures.append(frame.to_array())
        return pictures
    finally:
        viewer.close()


def counts(stats: dict) -> tuple[int, int]:
    return stats["source"]["frames_captured"], stats["frames_encoded"]


def assert_still_idle(server: LiveProcess, seconds: float = 1.0) -> dict:
    """The source stays closed and nothing is captured or encoded while nobody watches."""
    before = server.wait_for(lambda s: s["source"]["idle"], "the source closed while nobody watches", timeout=30)
    # Idle is said at once; the frame being read and those waiting for the encoder still go through.
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.3)
        settled = server.stats()
        if counts(settled) == counts(before):
            break
        assert time.monotonic() < deadline, f"frames go on while nobody watches: {counts(settled)}"
        before = settled
    time.sleep(seconds)
    after = server.stats()
    assert after["source"]["idle"]
    assert counts(after) == counts(before)
    return after


@pytest.mark.parametrize("kind", ["testsrc", "file"])
def test_the_source_runs_only_while_somebody_watches(kind, tmp_path):
    if kind == "file":
        clip = tmp_path / "clip.mkv"
        write_rolling_clip(clip)
        args = ["--source", str(clip), "--loop", "-k", "8"]
    else:
        args = ["--source", "testsrc", "--size", "160x96", "--fps", "20", "-k", "16"]
    server = LiveProcess(*args, "--on-demand", DELAY)
    try:
        stats = assert_still_idle(server)
        assert stats["source"]["on_demand_s"] == 0.5 and stats["source"]["wakes"] == 0
        for visit in (1, 2):
            pictures = watch_frames(server, 15)
            assert all(picture.std() > 10 for picture in pictures)  # real pictures, not a blank start
            stats = server.stats()
            assert stats["source"]["wakes"] == visit and stats["source"]["error"] is None
            assert_still_idle(server)
        assert server.proc.poll() is None
    finally:
        output = server.stop()
    assert server.proc.returncode == 0, output
    assert "on demand: the source closes once nobody has watched for 0.5 s" in output
    assert output.count("closed while nobody watches") == 3, output
    assert output.count("opened again for a viewer") == 2, output


def test_a_relayed_stream_is_disconnected_while_nobody_watches(tmp_path):
    camera = StreamServer(tmp_path, pattern_frames(30 * FPS))  # 30 s a connection
    url = f"http://viewer:s3cret-pw@127.0.0.1:{camera.port}/live.ts"
    server = LiveProcess("--source", url, "--loop", "-k", "64", "--on-demand", DELAY)
    try:
        assert_still_idle(server)
        deadline = time.monotonic() + 30
        while camera.cut_short < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (camera.requests, camera.cut_short) == (1, 1)  # kmq hung up: the camera stops sending
        pictures = watch_frames(server, 20)
        assert camera.requests == 2  # connected again for the viewer
        # The camera films the pattern from its start on each connection.
        sources = pattern_frames(3 * FPS)
        for picture in pictures:
            assert max(psnr(source, picture) for source in sources) > 26
        stats = assert_still_idle(server)
        assert stats["source"]["wakes"] == 1 and stats["source"]["restarts"] == 0
        deadline = time.monotonic() + 30
        while camera.cut_short < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert camera.cut_short == 2
    finally:
        output = server.stop()
        camera.close()
    assert server.proc.returncode == 0, output
    assert "s3cret" not in output
    assert f"stream http://127.0.0.1:{camera.port}/live.ts: opened again for a viewer" in output


def test_a_stream_that_cannot_be_opened_again_for_a_viewer_ends_the_server_with_one_error(tmp_path):
    camera = StreamServer(tmp_path, pattern_frames(30 * FPS))
    url = f"http://viewer:s3cret-pw@127.0.0.1:{camera.port}/live.ts"
    server = LiveProcess("--source", url, "-k", "16", "--on-demand", DELAY)
    try:
        assert_still_idle(server, 0.1)
        camera.close()  # the camera is gone while nobody watches
        viewer = RawViewer(server.port)
        try:
            server.proc.wait(timeout=60)
        finally:
            viewer.close()
    finally:
        output = server.stop()
    assert server.proc.returncode == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: source failed: cannot open stream http://127.0.0.1:{camera.port}/live.ts: Connection refused"]
    assert "Traceback" not in output and "s3cret" not in output


def test_a_stream_lost_while_unwatched_waits_closed_and_is_connected_to_again_for_a_viewer(tmp_path):
    camera = StreamServer(tmp_path, pattern_frames(FPS // 2))  # half a second a connection
    port = camera.port
    url = f"http://viewer:s3cret-pw@127.0.0.1:{port}/live.ts"
    server = LiveProcess("--source", url, "--loop", "-k", "16", "--on-demand", "4")
    cameras = [camera]
    try:
        camera.close()  # the stream ends and cannot be opened again: --loop keeps trying, until nobody watches
        stats = assert_still_idle(server)
        assert stats["source"]["error"] is None and server.proc.poll() is None
        # The camera comes back a second after a viewer does: the viewer waits, then gets its pictures.
        timer = threading.Timer(1.0, lambda: cameras.append(StreamServer(tmp_path, pattern_frames(30 * FPS), port=port)))
        timer.start()
        pictures = watch_frames(server, 10)
        timer.join()
        sources = pattern_frames(3 * FPS)
        assert all(max(psnr(source, picture) for source in sources) > 26 for picture in pictures)
        assert server.stats()["source"]["wakes"] == 1
    finally:
        output = server.stop()
        for each in cameras[1:]:
            each.close()
    assert server.proc.returncode == 0, output
    assert "closed while nobody watches" in output
    assert f"cannot open stream http://127.0.0.1:{port}/live.ts: Connection refused: trying again" in output
    assert "opened again for a viewer" in output


def test_an_rtsp_camera_is_torn_down_while_nobody_watches_and_played_again_for_a_viewer():
    from test_live_rtsp import RtspCamera

    camera = RtspCamera(pattern_frames(30 * FPS))
    url = f"rtsp://viewer:s3cret-pw@127.0.0.1:{camera.port}/stream1"
    server = LiveProcess("--source", url, "--loop", "-k", "16", "--on-demand", DELAY)
    try:
        assert_still_idle(server)
        assert camera.requests.count("PLAY") == 1 and camera.requests[-1] == "TEARDOWN"
        pictures = watch_frames(server, 10)
        assert camera.requests.count("PLAY") == 2
        sources = pattern_frames(3 * FPS)
        assert all(max(psnr(source, picture) for source in sources) > 26 for picture in pictures)
        assert_still_idle(server)
        assert camera.requests.count("TEARDOWN") == 2
    finally:
        output = server.stop()
        camera.close()
    assert server.proc.returncode == 0, output
    assert "s3cret" not in output
