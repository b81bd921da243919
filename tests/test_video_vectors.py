"""The video test vectors (tests/vectors/video_*): what any .kmqv decoder must reproduce exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from kmq.codec.video import KmqvReader, VideoDecoder, parse_frame
from kmq.errors import FormatError

VECTORS = Path(__file__).resolve().parent / "vectors"
LISTED = json.loads((VECTORS / "video_vectors.json").read_text())


def expected_frames(vector: dict) -> np.ndarray:
    shape = (vector["frames"], vector["height"], vector["width"], vector["channels"])
    return np.frombuffer((VECTORS / vector["frames_file"]).read_bytes(), np.uint8).reshape(shape)


@pytest.mark.parametrize("vector", LISTED, ids=[v["file"] for v in LISTED])
def test_each_video_vector_decodes_to_its_frames(vector):
    reader = KmqvReader(io.BytesIO((VECTORS / vector["file"]).read_bytes()))
    frames = list(reader.frames())
    assert [f.pts for f in frames] == vector["pts"]
    assert [f.number for f in frames if f.keyframe] == vector["keyframes"]
    assert [f.number for f in frames if f.discardable] == vector["discardable"]
    assert np.array_equal(np.stack([f.to_array() for f in frames]), expected_frames(vector))


@pytest.mark.parametrize("vector", LISTED, ids=[v["file"] for v in LISTED])
def test_each_video_vector_plays_as_a_live_stream(vector):
    """The same records, one message each, through the live decoder."""
    reader = KmqvReader(io.BytesIO((VECTORS / vector["file"]).read_bytes()))
    decoder = VideoDecoder()
    decoder.feed(reader.header.to_bytes())
    frames = [decoder.feed(record).to_array() for _, record in reader.packets()]
    assert np.array_equal(np.stack(frames), expected_frames(vector))


def test_the_layered_vector_plays_without_its_discardable_frames():
    """A viewer that is behind is sent only the reference frames: they decode exactly."""
    (vector,) = [v for v in LISTED if v["discardable"]]
    reader = KmqvReader(io.BytesIO((VECTORS / vector["file"]).read_bytes()))
    decoder = VideoDecoder(reader.header)
    expected = expected_frames(vector)
    shown = []
    for _, record in reader.packets():
        packet = parse_frame(record, reader.header)
        if packet.number not in vector["discardable"]:
            frame = decoder.decode(packet)
            shown.append(frame.number)
            assert np.array_equal(frame.to_array(), expected[frame.number])
    assert shown == [n for n in range(vector["frames"]) if n not in vector["discardable"]]


def test_a_video_vector_cut_anywhere_is_refused_or_salvaged():
    vector = LISTED[0]
    data = (VECTORS / vector["file"]).read_bytes()
    expected = expected_frames(vector)
    for size in range(0, len(data) - 1, 7):
        try:
            reader = KmqvReader(io.BytesIO(data[:size]))
        except FormatError:
            continue
        kept = list(reader.frames(salvage=True))
        assert all(np.array_equal(f.to_array(), expected[f.number]) for f in kept)
        if len(kept) < vector["frames"]:
            assert reader.damage is not None
            with pytest.raises(FormatError):
                list(reader.frames())
