"""Live sources without a server: the mailbox that drops at the source, the test pattern, files, bad specs."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
import pytest

from kmq.errors import InputError
from kmq.live.access import Access, is_loopback
from kmq.live.sources import Capture, FileSource, FrameMailbox, PatternSource, open_source
from kmq.live.testsrc import TestPattern


def capture(number: int) -> Capture:
    return Capture(np.zeros((2, 2, 3), np.uint8), number, time.time(), time.monotonic())


def test_the_mailbox_keeps_the_newest_frames_and_counts_the_dropped():
    mailbox = FrameMailbox(depth=2)
    for number in range(5):
        mailbox.put(capture(number))
    assert (mailbox.produced, mailbox.dropped) == (5, 3)
    assert [mailbox.get(0).number, mailbox.get(0).number] == [3, 4]
    assert mailbox.get(0.01) is None
    mailbox.close()
    assert mailbox.get() is None and mailbox.closed


def test_the_encoder_side_takes_the_newest_frame_and_counts_the_ones_passed_over():
    mailbox = FrameMailbox(depth=3)
    for number in range(3):
        mailbox.put(capture(number))
    assert mailbox.newest(0).number == 2
    assert (mailbox.produced, mailbox.dropped) == (3, 2)
    assert mailbox.newest(0.01) is None  # nothing older is left behind
    mailbox.put(capture(3))
    assert mailbox.newest(0).number == 3 and mailbox.dropped == 2
    mailbox.close()
    assert mailbox.newest() is None


def test_the_test_pattern_is_photographic_and_moves(photo):
    pattern = TestPattern(160, 90, photo=photo)
    first, later = pattern.frame(0.0), pattern.frame(0.5)
    assert first.shape == (90, 160, 3) and first.dtype == np.uint8
    colours = np.unique(first.reshape(-1, 3), axis=0)
    assert len(colours) > 1000  # a photograph, not flat test colours
    assert (first != later).any(axis=2).mean() > 0.5  # most pixels change as the view pans


def test_the_pattern_source_runs_at_its_own_rate_and_drops_what_nobody_takes():
    source = PatternSource((64, 48), Fraction(50))
    source.start()
    time.sleep(0.5)
    source.stop()
    mailbox = source.mailbox
    assert mailbox.produced >= 5
    assert mailbox.dropped == mailbox.produced - 2  # nobody read: all but the newest two dropped


def write_levels_clip(clip, count: int) -> None:
    """``count`` flat frames, 32×16, of grey levels 0, 40, 80, ..."""
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "bgr0"
        for number in range(count):
            frame = av.VideoFrame.from_ndarray(np.full((16, 32, 3), 40 * number, np.uint8), format="rgb24")
            frame.pts = number
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_a_file_source_loops_when_asked(tmp_path):
    clip = tmp_path / "clip.mkv"
    write_levels_clip(clip, 3)
    source = FileSource(clip, None, Fraction(100), loop=True)
    source.mailbox = FrameMailbox(depth=100)
    source.start()
    deadline = time.monotonic() + 20
    while source.mailbox.produced < 7 and time.monotonic() < deadline:
        time.sleep(0.02)
    source.stop()
    frames = [source.mailbox.get(0) for _ in range(7)]
    levels = [int(frame.pixels[0, 0, 0]) for frame in frames]
    assert levels[:7] == [0, 40, 80, 0, 40, 80, 0]


def test_a_source_closed_for_want_of_viewers_produces_nothing_and_opens_again_from_its_start(tmp_path):
    clip = tmp_path / "clip.mkv"
    write_levels_clip(clip, 6)
    source = FileSource(clip, None, Fraction(20), loop=False)
    source.mailbox = FrameMailbox(depth=100)
    lines: list[str] = []
    source.log = lines.append
    source.start()
    deadline = time.monotonic() + 20
    while source.mailbox.produced < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    source.demand(False)
    assert source.idle
    while not lines and time.monotonic() < deadline:
        time.sleep(0.01)
    produced = source.mailbox.produced
    time.sleep(0.5)  # ten frames' time
    assert source.mailbox.produced == produced and not source.mailbox.closed
    source.demand(True)
    while not source.mailbox.closed and time.monotonic() < deadline:  # played to its end, then it ends
        time.sleep(0.01)
    source.stop()
    levels = [int(capture.pixels[0, 0, 0]) for capture in iter(lambda: source.mailbox.get(0), None)]
    assert levels == [40 * n for n in range(produced)] + [0, 40, 80, 120, 160, 200]
    assert (source.wakes, source.error, source.idle) == (1, None, False)
    assert lines == [f"file {clip.name}: closed while nobody watches", f"file {clip.name}: opened again for a viewer"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("camera:a", "camera must be"), ("no/such/file.mp4", "not testsrc"), ("camera:61", "cannot open camera 61")],
)
def test_bad_source_specs_are_input_errors(spec, message):
    with pytest.raises(InputError, match=message):
        open_source(spec)


def test_loopback_names_and_addresses():
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "192.168.1.2", "example.org", ""))


def test_access_rules_with_and_without_a_token():
    open_access = Access(None)
    assert open_access.problem(None, None, "127.0.0.1:8765", None) is None
    assert open_access.problem(None, None, "localhost:8765", "http://localhost:8765") is None
    assert open_access.problem(None, None, "evil.example:8765", None)[0] == 403
    assert open_access.problem(None, None, "127.0.0.1:8765", "http://evil.example")[0] == 403
    assert open_access.problem(None, None, "127.0.0.1:8765", "null")[0] == 403
    guarded = Access("correct-horse")
    assert guarded.problem(None, None, "example.org", None)[0] == 401
    assert guarded.problem("wrong-horse", None, "example.org", None)[0] == 403
    assert guarded.problem("correct-horse", None, "example.org", None) is None
    assert guarded.problem(None, "Bearer correct-horse", "example.org", None) is None


def test_live_streams_are_decoded_by_slices_up_to_1080p_and_by_frames_beyond():
    from kmq.live.sources import decoder_threads

    assert decoder_threads(1920, 1080, live=True) == "SLICE"
    assert decoder_threads(0, 0, live=True) == "SLICE"  # a size the probe did not find
    assert decoder_threads(2560, 1440, live=True) == "AUTO"
    assert decoder_threads(640, 360, live=False) == "AUTO"
