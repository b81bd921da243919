"""`kmq analyze` on video: bits and PSNR per frame, keyframes and palette refits, from a source or a .kmqv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_kmq
from test_analysis_report import assert_not_blank, open_in_chromium
from test_video_files import pan, read_frames, write_clip
from kmq.analysis.metrics import psnr


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory, photo) -> Path:
    """A lossless 16-frame clip: 8 frames panning across a photograph, then a cut to its negative."""
    frames = pan(photo, 8)
    frames += [255 - frame for frame in pan(photo, 8, step=3)]
    return write_clip(tmp_path_factory.mktemp("clip") / "cut.mkv", frames)


@pytest.fixture(scope="module")
def encoded(cut_clip, tmp_path_factory) -> tuple[Path, dict]:
    """`kmq analyze CLIP -k 16 --json`, run once."""
    folder = tmp_path_factory.mktemp("video") / "report"
    result = run_kmq("analyze", str(cut_clip), "-k", "16", "-o", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    return folder, json.loads(result.stdout)


def test_per_frame_numbers_equal_the_written_stream_and_its_decoded_frames(encoded, cut_clip):
    from kmq.codec.video import KmqvReader
    from kmq.media.video import open_video

    folder, summary = encoded
    (run,) = summary["runs"]
    coded = folder / "coded" / "video-k016.kmqv"
    assert run["path"] == str(coded) and run["stream_bytes"] == coded.stat().st_size
    with open(coded, "rb") as stream:
        sizes = [len(record) for _, record in KmqvReader(stream).packets()]
    with open_video(coded) as video:
        decoded = [(frame.keyframe, frame.to_array()) for frame in video]
    sources = [pixels for _, pixels in read_frames(cut_clip)]
    frames = run["per_frame"]
    assert [frame["number"] for frame in frames] == list(range(16)) and len(decoded) == len(sources) == 16
    assert [frame["packet_bytes"] for frame in frames] == sizes
    assert [frame["keyframe"] for frame in frames] == [keyframe for keyframe, _ in decoded]
    for frame, (_, pixels), source in zip(frames, decoded, sources):
        assert frame["psnr"] == pytest.approx(psnr(source, pixels), rel=1e-12)
    assert run["frames"] == 16 and run["keyframes"] == sum(keyframe for keyframe, _ in decoded)


def test_the_cut_is_a_keyframe_with_a_palette_refit(encoded):
    frames = encoded[1]["runs"][0]["per_frame"]
    assert frames[0]["keyframe"] and frames[0]["refit"]
    assert frames[8]["keyframe"] and frames[8]["refit"] and frames[8]["scene_cut"]
    assert not any(frame["refit"] for frame in frames[1:8] + frames[9:])
    assert frames[8]["palette_updates"] == 16 and frames[8]["changed_share"] == 1.0


def test_a_kmqv_with_its_reference_gives_the_encoders_numbers(encoded, cut_clip, tmp_path):
    folder, summary = encoded
    coded = folder / "coded" / "video-k016.kmqv"
    result = run_kmq("analyze", str(coded), "--reference", str(cut_clip), "-o", str(tmp_path / "r"), "--json")
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    ours, theirs = run["per_frame"], summary["runs"][0]["per_frame"]
    for key in ("number", "packet_bytes", "keyframe", "palette_updates", "changed_share"):
        assert [frame[key] for frame in ours] == [frame[key] for frame in theirs], key
    assert [frame["psnr"] for frame in ours] == pytest.approx([frame["psnr"] for frame in theirs], rel=1e-12)
    assert run["refits"] is None  # a .kmqv does not record why a palette was refitted


def test_a_kmqv_without_reference_says_there_is_no_psnr(encoded, tmp_path):
    coded = encoded[0] / "coded" / "video-k016.kmqv"
    result = run_kmq("analyze", str(coded), "-o", str(tmp_path / "r"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert all(frame["psnr"] is None for frame in summary["runs"][0]["per_frame"])
    assert any("no PSNR" in note for note in summary["notes"])
    assert "no PSNR per frame" in (tmp_path / "r" / "report.html").read_text()


def test_max_frames_stops_early_and_says_so(cut_clip, tmp_path):
    result = run_kmq("analyze", str(cut_clip), "-k", "8", "--max-frames", "5", "-o", str(tmp_path / "r"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["runs"][0]["frames"] == 5 and summary["runs"][0]["reduction_vs_input"] is None
    assert any("first 5 frames" in note for note in summary["notes"])


@pytest.mark.browser
def test_video_report_opens_offline_in_headless_chromium(encoded, tmp_path):
    widths, errors, requests = open_in_chromium(encoded[0] / "report.html", tmp_path / "report.png")
    assert len(widths) == 2 and all(width > 0 for width in widths)  # frame plots and the worst frame
    assert errors == [] and all(url.startswith(("file:", "data:")) for url in requests)
    assert_not_blank(tmp_path / "report.png")


@pytest.mark.parametrize(
    "arguments",
    [("-k", "auto", "--target-psnr", "30"), ("--reference", "other.mp4")],
    ids=["auto K on a video", "reference for a source video"],
)
def test_options_that_do_not_apply_to_a_video_are_refused(cut_clip, tmp_path, arguments):
    result = run_kmq("analyze", str(cut_clip), "-o", str(tmp_path / "r"), *arguments)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
