"""Discardable frames in the browser, in headless Chromium: the packet parser, the JS video decoder,
the player's decoder stage (in workers and on the page) and the player's figures, all bit-exact."""

from __future__ import annotations

import base64
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kmq.codec.video import StreamHeader, VideoDecoder, pack_frame, pack_record, parse_frame
from kmq.errors import FormatError
from test_live_browser import browser  # noqa: F401 (the fixture)
from test_live_js_vectors import DECODERS, coded, page, run_stage  # noqa: F401 (page: the fixture)

VECTORS = Path(__file__).resolve().parent / "vectors"
LAYERED = "video_square_layers_k8.kmqv"

pytestmark = pytest.mark.browser


# ---------------------------------------------------------------- streams


def vector_entry() -> dict:
    entries = json.loads((VECTORS / "video_vectors.json").read_text())
    return next(entry for entry in entries if entry["file"] == LAYERED)


def file_records(data: bytes) -> list[bytes]:
    """The records of a .kmqv file up to its keyframe index, each as one live message."""
    records = []
    offset = 0
    while offset < len(data):
        tag = data[offset : offset + 4]
        length = int.from_bytes(data[offset + 4 : offset + 8], "little")
        if tag in (b"KMQI", b"KMQE"):
            break
        records.append(data[offset : offset + 12 + length])
        offset += 12 + length
    return records


def number_of(record: bytes) -> int:
    return int.from_bytes(record[8:12], "little")


def layered_vector() -> tuple[bytes, dict[int, bytes], dict[int, np.ndarray]]:
    """The layered test vector: its header record, its frame records and its expected frames, by number."""
    entry = vector_entry()
    # The frames the tests below leave out and skip: keyframes 0 and 6, every other frame discardable.
    assert entry["keyframes"] == [0, 6] and entry["discardable"] == [1, 3, 5, 7]
    header, *frames = file_records((VECTORS / entry["file"]).read_bytes())
    shape = (entry["frames"], entry["height"], entry["width"], entry["channels"])
    expected = np.frombuffer((VECTORS / entry["frames_file"]).read_bytes(), np.uint8).reshape(shape)
    records = {number_of(record): record for record in frames}
    assert [records[n][21] for n in (2, 4)] == [1, 1]  # coded against frames 0 and 2: s = 1
    return header, records, dict(enumerate(expected))


def striped_layers(count: int = 7) -> tuple[bytes, dict[int, bytes], dict[int, np.ndarray]]:
    """A stream of ``count`` frames in five stripes with two temporal layers, motion and palette updates.

    Frame 0 is a keyframe; odd frames are discardable, coded against the frame before them; even
    frames are references coded against the reference two frames back (s = 1).
    """
    from kmq.codec.entropy import encode_index_map, motion_vector_shape

    rng = np.random.default_rng(11)
    width, height, k = 72, 50, 12
    header = StreamHeader(width=width, height=height, k=k, time_base=Fraction(1, 30))
    palette = rng.integers(0, 256, (k, 3), dtype=np.uint8)
    indices = (np.add.outer(np.arange(height) // 6, np.arange(width) // 9) % k).astype(np.uint8)
    reference = (palette, indices)
    records = {}
    vector_shape = motion_vector_shape(height, width, 11)
    for number in range(count):
        keyframe = number == 0
        discardable = number % 2 == 1
        changed = vectors = None
        if not keyframe:
            palette, indices = reference[0].copy(), reference[1].copy()
            if number >= 3:
                indices = np.roll(indices, 2 + number % 2, axis=1)
                vectors = np.full(vector_shape, (-2 - number % 2, 0), np.int8)
            top = number * 6 % 40
            indices[top : top + 9, 5 + number : 40] = rng.integers(0, k, (9, 35 - number))
            changed = np.zeros(k, bool)
            changed[[number % 8, number % 8 + 4]] = True
            palette[changed] = rng.integers(0, 256, (2, 3))
        previous = None if keyframe else reference[1]
        data = encode_index_map(indices, k, previous, stripe_rows=11, vectors=vectors)
        skipped = 1 if number >= 2 and not discardable else 0
        records[number] = pack_frame(
            number,
            number,
            keyframe=keyframe,
            palette=palette,
            changed=changed,
            index_data=data,
            discardable=discardable,
            skipped=skipped,
        )
        if not discardable:
            reference = (palette, indices)
    decoder = VideoDecoder(header)
    expected = {number: decoder.decode(record).to_array() for number, record in records.items()}
    return header.to_bytes(), records, expected


STREAMS = {"vector": layered_vector, "stripes": striped_layers}


# ---------------------------------------------------------------- the packet parser

PARSE = """async ({ header, records }) => {
  const { parseFramePacket, parseStreamHeader, readRecord } = await import('/static/records.js');
  const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const stream = parseStreamHeader(readRecord(bytes(header)).payload);
  return records.map((record) => {
    try {
      const packet = parseFramePacket(readRecord(bytes(record)).payload, stream);
      return { keyframe: packet.keyframe, discardable: packet.discardable, skipped: packet.skipped };
    } catch (error) {
      return { error: error.name };
    }
  });
}"""


def altered(record: bytes, *, flags: int | None = None, skipped: int | None = None) -> bytes:
    """The frame record with its flags byte or its skipped-frames byte changed (checksum redone)."""
    payload = bytearray(record[8:-4])
    if flags is not None:
        payload[12] = flags
    if skipped is not None:
        payload[13] = skipped
    return pack_record(b"KMQF", bytes(payload))


# (frame, flags, skipped) -> what a parser makes of it: the fields, or None for a refusal.
PACKETS = {
    "keyframe": (0, None, None, (True, False, 0)),
    "discardable delta frame": (1, None, None, (False, True, 0)),
    "delta frame after a skipped frame": (2, None, None, (False, False, 1)),
    "delta frame after three skipped frames": (4, None, 3, (False, False, 3)),
    "keyframe marked discardable": (0, 1 | 4, None, None),
    "keyframe after skipped frames": (6, None, 1, None),
    "delta frame skipping frame 0 and before": (2, None, 2, None),
    "delta frame skipping past the stream's start": (2, None, 200, None),
    "frame with an unknown flag": (2, 8, None, None),
}


def test_the_javascript_parser_reads_and_refuses_layer_fields_as_the_python_parser_does(page):  # noqa: F811
    header_record, records, _ = layered_vector()
    header = StreamHeader.from_bytes(header_record)
    packets = [altered(records[n], flags=flags, skipped=s) for n, flags, s, _ in PACKETS.values()]
    found = page.evaluate(PARSE, {"header": coded([header_record])[0], "records": coded(packets)})
    for (name, (_, _, _, expected)), packet, result in zip(PACKETS.items(), packets, found):
        if expected is None:
            with pytest.raises(FormatError):
                parse_frame(packet, header)
            assert result == {"error": "FormatError"}, name
        else:
            parsed = parse_frame(packet, header)
            assert (parsed.keyframe, parsed.discardable, parsed.skipped) == expected, name
            assert (result["keyframe"], result["discardable"], result["skipped"]) == expected, name


# ---------------------------------------------------------------- the JS video decoder

DECODE = """async ({ header, records }) => {
  const { decodeRecords } = await import('/static/video-decoder.js');
  const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const found = [];
  let error = null;
  try {
    decodeRecords([header, ...records].map(bytes), (decoder, frame) => {
      const pixels = decoder.toPixels();
      let binary = '';
      for (let i = 0; i < pixels.length; i += 0x8000) binary += String.fromCharCode.apply(null, pixels.subarray(i, i + 0x8000));
      found.push({ number: frame.number, discardable: frame.discardable, pixels: btoa(binary) });
    });
  } catch (error_) {
    error = `${error_.name}: ${error_.message}`;
  }
  return { frames: found, error };
}"""


def decoded_pixels(frame: dict, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(frame["pixels"]), np.uint8).reshape(shape)


@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.parametrize("numbers", ["all", "references"])
def test_the_javascript_video_decoder_keeps_its_reference_across_discardable_frames(page, stream, numbers):  # noqa: F811
    header, records, expected = STREAMS[stream]()
    wanted = [n for n in records if numbers == "all" or n % 2 == 0]
    found = page.evaluate(DECODE, {"header": coded([header])[0], "records": coded([records[n] for n in wanted])})
    assert found["error"] is None
    assert [frame["number"] for frame in found["frames"]] == wanted
    for frame in found["frames"]:
        assert frame["discardable"] == (frame["number"] % 2 == 1)
        assert np.array_equal(decoded_pixels(frame, expected[frame["number"]].shape), expected[frame["number"]])


def test_the_javascript_video_decoder_refuses_a_frame_whose_reference_is_missing(page):  # noqa: F811
    header, records, expected = layered_vector()
    # Frame 4 is coded against frame 2; after 0 and the discardable 1, the reference is 0.
    found = page.evaluate(DECODE, {"header": coded([header])[0], "records": coded([records[n] for n in (0, 1, 4)])})
    assert [frame["number"] for frame in found["frames"]] == [0, 1]
    assert found["error"].startswith("FormatError: frame 4 is coded against frame 2")
    decoder = VideoDecoder(header)
    decoder.decode(records[0])
    decoder.decode(records[1])
    with pytest.raises(FormatError, match="coded against frame 2"):
        decoder.decode(records[4])


# ---------------------------------------------------------------- the player's decoder stage

def assert_exact(found: dict, expected: dict[int, np.ndarray]) -> None:
    for frame in found["frames"]:
        pixels = expected[frame["number"]]
        rgba = decoded_pixels(frame, (*pixels.shape[:2], 4))
        assert np.array_equal(rgba[:, :, :3], pixels), f"frame {frame['number']}"
        assert (rgba[:, :, 3] == 255).all()
        assert frame["discardable"] == (frame["number"] % 2 == 1)


@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.parametrize(("decoders", "worker"), DECODERS)
@pytest.mark.parametrize("numbers", ["all", "references"])
def test_the_decoder_stage_decodes_a_layered_stream_exactly_with_or_without_its_discardable_frames(
    page,  # noqa: F811
    stream,
    decoders,
    worker,
    numbers,
):
    header, records, expected = STREAMS[stream]()
    # "references": the discardable frames left out, as the server does for a viewer that is behind.
    wanted = [n for n in records if numbers == "all" or n % 2 == 0]
    found = run_stage(page, header, [records[n] for n in wanted], decoders, worker, paced=True)
    assert found["errors"] == [] and found["skipped"] == [] and found["discarded"] == []
    assert [frame["number"] for frame in found["frames"]] == wanted
    assert_exact(found, expected)
    assert found["acks"] == wanted and found["keyframeRequests"] == 0
    if stream == "stripes":
        assert found["workers"] == decoders


@pytest.mark.parametrize(("decoders", "worker"), DECODERS)
def test_the_decoder_stage_waits_for_a_keyframe_when_a_frames_reference_is_missing(page, decoders, worker):  # noqa: F811
    header, records, expected = layered_vector()
    # Frame 4 is coded against frame 2, which never came: 4 and 5 are not decodable, 6 is a keyframe.
    found = run_stage(page, header, [records[n] for n in (0, 1, 4, 5, 6, 7)], decoders, worker, paced=True)
    assert found["errors"] == [] and found["discarded"] == []
    assert found["skipped"] == [4, 5]
    assert [frame["number"] for frame in found["frames"]] == [0, 1, 6, 7]
    assert_exact(found, expected)
    assert sorted(found["acks"]) == [0, 1, 4, 5, 6, 7]


@pytest.mark.parametrize(("decoders", "worker"), DECODERS)
def test_the_decoder_stage_refuses_a_keyframe_marked_discardable_as_corrupt(page, decoders, worker):  # noqa: F811
    header, records, _ = layered_vector()
    frames = [altered(records[0], flags=1 | 4), records[1], records[2]]
    found = run_stage(page, header, frames, decoders, worker, paced=False)
    assert found["frames"] == []
    assert len(found["errors"]) == 1 and "keyframe marked discardable" in found["errors"][0]
    assert found["keyframeRequests"] == 1


@pytest.mark.parametrize("stream", sorted(STREAMS))
@pytest.mark.parametrize(("decoders", "worker"), DECODERS)
def test_the_decoder_stage_passes_over_a_discardable_frame_with_a_newer_frame_queued(page, stream, decoders, worker):  # noqa: F811
    header, records, expected = STREAMS[stream]()
    numbers = sorted(records)
    # All at once: the first frame is decoding while the others queue behind it. Each discardable
    # frame then has a newer frame behind it, except the last frame of all.
    found = run_stage(page, header, [records[n] for n in numbers], decoders, worker, paced=False)
    last = numbers[-1]
    passed = [n for n in numbers if n % 2 == 1 and n != last]
    assert found["errors"] == [] and found["skipped"] == []
    assert found["discarded"] == passed and found["stageDiscarded"] == len(passed)
    assert found["stageDropped"] == 0 and found["keyframeRequests"] == 0
    assert [frame["number"] for frame in found["frames"]] == [n for n in numbers if n not in passed]
    assert_exact(found, expected)
    # Every frame is acknowledged, decoded or passed over, so the server's window moves on.
    assert sorted(found["acks"]) == numbers
    assert acknowledged_before_decoded(found) == []


def acknowledged_before_decoded(found: dict) -> list[int]:
    """Frames the stage handed on decoded after an acknowledgement had covered them (acknowledgements are cumulative)."""
    early = []
    acknowledged = -1
    for event, number in found["order"]:
        if event == "ack":
            acknowledged = max(acknowledged, number)
        elif number <= acknowledged:
            early.append(number)
    return early


@pytest.mark.parametrize(("decoders", "worker"), DECODERS)
def test_the_decoder_stage_far_behind_passes_over_discardable_frames_before_dropping_any(page, decoders, worker):  # noqa: F811
    header, records, expected = striped_layers(15)
    # Fifteen frames at once: more than the stage lets wait (eight), with no keyframe but the
    # first. Passing over the discardable ones brings the queue back under the limit, so no
    # reference frame is dropped and no keyframe is asked for.
    found = run_stage(page, header, list(records.values()), decoders, worker, paced=False)
    assert found["errors"] == [] and found["skipped"] == []
    assert found["stageDropped"] == 0 and found["keyframeRequests"] == 0
    assert sorted(found["discarded"]) == list(range(1, 15, 2)) and found["stageDiscarded"] == 7
    assert [frame["number"] for frame in found["frames"]] == list(range(0, 15, 2))
    assert_exact(found, expected)
    # Acknowledgements are cumulative, "done with every frame up to n": a frame passed over is
    # acknowledged once the frames before it are decoded, never while one of them still waits
    # (the server would count that one as done too early).
    assert found["acks"] == [1, 3, 5, 7, 9, 11, 12, 13, 14]
    assert acknowledged_before_decoded(found) == []


# ---------------------------------------------------------------- the player's figures

#: A player on a stand-in socket that delivers the records in one task, as a burst of messages
#: that arrived while the page was busy: its figures once every frame is accounted for.
PLAYER = """async ({ records, worker }) => {
  const { Player } = await import('/static/player.js');
  const RealWebSocket = window.WebSocket;
  const sockets = [];
  class StandIn {
    static OPEN = 1;
    constructor(url) {
      this.url = url;
      this.readyState = 1;
      this.sent = [];
      sockets.push(this);
    }
    send(text) { this.sent.push(JSON.parse(text)); }
    close() { this.readyState = 3; }
  }
  window.WebSocket = StandIn;
  const stage = document.createElement('div');
  document.body.append(stage);
  let player;
  try {
    player = new Player(document.createElement('canvas'), 'ws://kmq.test/ws', { worker, overlay: stage });
  } finally {
    window.WebSocket = RealWebSocket;
  }
  const socket = sockets[0];
  socket.onopen();
  for (const text of records) {
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    socket.onmessage({ data: bytes.buffer });
  }
  const frames = records.length - 1;
  const deadline = Date.now() + 20000;
  const stats = player.stats;
  while (stats.framesDecoded + stats.framesSkipped + stats.framesDropped < frames && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await new Promise((resolve) => setTimeout(resolve, 300)); // the overlay redraws
  const result = { ...stats, overlay: stage.innerText, acks: socket.sent.filter((m) => m.type === 'ack').map((m) => m.frame) };
  player.destroy();
  stage.remove();
  return result;
}"""


@pytest.mark.parametrize("worker", [True, False])
def test_the_player_counts_discardable_frames_passed_over_apart_from_frames_dropped(page, worker):  # noqa: F811
    header, records, _ = layered_vector()
    found = page.evaluate(PLAYER, {"records": coded([header, *records.values()]), "worker": worker})
    assert found["framesSkipped"] == 3  # 1, 3 and 5; 7 is the last frame, with nothing behind it
    assert found["framesDecoded"] == 5 and found["framesDropped"] == 0
    assert found["errors"] == 0 and found["keyframes"] == 2
    assert {1, 3, 5} <= set(found["acks"]) and max(found["acks"]) == 7
    assert "dropped 0" in found["overlay"] and "skipped 3" in found["overlay"]
