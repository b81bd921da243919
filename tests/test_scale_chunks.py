"""Chunked video encoding: split at source keyframes, encode each chunk alone, join into one .kmqv."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import run_kmq
from kmq.codec.video import KmqvReader, parse_frame, renumber_packet
from kmq.errors import InputError
from kmq.media.video import encode_video, open_video
from kmq.media.video_encoder import VideoEncoder
from kmq.scale.chunks import encode_chunk, encode_video_chunked, join_chunks, plan_chunks

FRAMES = 40
GOP = 8  # a source keyframe every 8 frames: at frames 0, 8, 16, 24, 32


@pytest.fixture(scope="module")
def clip(tmp_path_factory, photo) -> Path:
    """40 frames of H.264 (B-frames, a keyframe every 8) panning across a real photograph at 10 frames/s."""
    path = tmp_path_factory.mktemp("chunks") / "pan.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.codec_context.gop_size = GOP
        stream.codec_context.options = {"keyint_min": str(GOP), "scenecut": "0", "bf": "2"}
        for t in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[100 + t : 196 + t, 50 + 3 * t : 178 + 3 * t]), format="rgb24")
            frame.pts = t
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _frames(path: Path) -> list:
    with open_video(path) as video:
        return list(video)


def test_spans_start_at_source_keyframes_and_cover_the_video(clip):
    spans, time_base = plan_chunks(clip, 4)
    frame = int(round(1 / (10 * time_base)))  # timestamp units per frame
    starts = [span.start_pts // frame for span in spans]
    assert starts[0] == 0 and len(spans) == 4
    assert all(start % GOP == 0 for start in starts) and starts == sorted(set(starts))
    assert [span.end_pts for span in spans[:-1]] == [span.start_pts for span in spans[1:]] and spans[-1].end_pts is None
    assert [span.offset for span in spans] == [span.start_pts - spans[0].start_pts for span in spans]
    assert sum(span.frames for span in spans) == FRAMES


def test_a_video_with_fewer_keyframes_than_chunks_gives_one_chunk_per_keyframe(clip):
    spans, _ = plan_chunks(clip, 50)
    assert len(spans) == FRAMES // GOP


@pytest.mark.parametrize("layers", [1, 2])
def test_renumbering_a_packet_to_its_own_place_changes_no_byte(photo, layers):
    encoder = VideoEncoder(64, 48, k=8, keyint=4, temporal_layers=layers)
    for t in range(7):  # keyframes, deltas with and without palette updates (and discardable ones)
        encoded = encoder.encode(np.ascontiguousarray(photo[200 + 3 * t : 248 + 3 * t, 100 : 164]))
        packet = parse_frame(encoded.packet, encoder.header)
        assert renumber_packet(packet, encoded.number, encoded.pts, 3) == encoded.packet
        moved = parse_frame(renumber_packet(packet, encoded.number + 100, encoded.pts + 5, 3), encoder.header)
        assert (moved.number, moved.pts) == (encoded.number + 100, encoded.pts + 5)
        assert (moved.discardable, moved.skipped) == (packet.discardable, packet.skipped)
        assert bytes(moved.index_data) == bytes(packet.index_data) and np.array_equal(moved.palette_colors, packet.palette_colors)


@pytest.mark.parametrize("layers", [1, 2])
def test_the_joined_file_decodes_exactly_as_the_chunks_decoded_one_by_one(clip, tmp_path, layers):
    spans, time_base = plan_chunks(clip, 3)
    chunk_paths = []
    for span in spans:
        path = tmp_path / f"chunk{span.index}.kmqv"
        encode_chunk(str(clip), str(path), span, time_base, {"k": 16, "temporal_layers": layers})
        chunk_paths.append(path)
    joined = tmp_path / "joined.kmqv"
    join_chunks(chunk_paths, [span.offset for span in spans], joined)

    one_by_one = [frame for path in chunk_paths for frame in _frames(path)]
    together = _frames(joined)
    assert len(together) == len(one_by_one) == FRAMES
    for mine, theirs in zip(together, one_by_one):
        assert np.array_equal(mine.palette, theirs.palette) and np.array_equal(mine.indices, theirs.indices)
    assert [frame.number for frame in together] == list(range(FRAMES))
    chunk_starts = [0] + list(np.cumsum([len(_frames(path)) for path in chunk_paths])[:-1])
    with open(joined, "rb") as stream:
        reader = KmqvReader(stream)
        assert reader.end is not None and reader.end.frames == FRAMES
        assert {entry.number for entry in reader.keyframes} >= set(chunk_starts)


def test_video_encode_with_chunks_on_a_local_cluster_keeps_every_frame_and_timestamp(clip, tmp_path):
    whole = encode_video(clip, tmp_path / "whole.kmqv", k=16)
    result = run_kmq("video", "encode", str(clip), "-o", str(tmp_path / "chunked.kmqv"), "-k", "16", "--chunks", "4", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert (facts["frames"], facts["duration_seconds"]) == (whole.frames, whole.duration) == (FRAMES, pytest.approx(4.0))
    assert facts["keyframes"] >= 4 and facts["palette_refits"] >= 4 and facts["psnr_db"] > 25
    chunked, reference = _frames(tmp_path / "chunked.kmqv"), _frames(tmp_path / "whole.kmqv")
    assert [frame.pts for frame in chunked] == [frame.pts for frame in reference]
    spans, time_base = plan_chunks(clip, 4)
    frame_units = round(1 / (10 * time_base))
    assert {span.start_pts // frame_units for span in spans} <= {frame.number for frame in chunked if frame.keyframe}
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")], "chunk files were left behind"


def test_a_scheduler_without_chunks_or_chunks_with_a_time_range_is_bad_usage(clip, tmp_path):
    for extra in (["--scheduler", "tcp://127.0.0.1:9"], ["--chunks", "2", "--duration", "1"]):
        result = run_kmq("video", "encode", str(clip), "-o", str(tmp_path / "out.kmqv"), *extra)
        assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert not (tmp_path / "out.kmqv").exists()


def test_a_file_that_is_not_a_video_is_an_input_error_before_any_cluster_starts(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(InputError):
        encode_video_chunked(bad, tmp_path / "out.kmqv", chunks=2, workers=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.mp4"]


def test_the_shared_clip_splits_at_its_keyframes(shared_clip, tmp_path):
    spans, time_base = plan_chunks(shared_clip, 4)
    assert len(spans) >= 2
    with av.open(str(shared_clip)) as container:
        keyframes = {packet.pts for packet in container.demux(video=0) if packet.is_keyframe and packet.size}
    assert {span.start_pts for span in spans} <= keyframes
