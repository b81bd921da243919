"""The video codec as an API: VideoEncoder -> frame packets -> VideoDecoder, and the .kmqv container."""

from __future__ import annotations

import io

import numpy as np
import pytest

from kmq.codec.video import (
    END_RECORD_BYTES,
    KmqvReader,
    KmqvWriter,
    StreamHeader,
    VideoDecoder,
    pack_record,
    parse_frame,
)
from kmq.errors import FormatError, InputError
from kmq.media.video_encoder import VideoEncoder


def pan(
    photo: np.ndarray, frames: int, *, width: int = 96, height: int = 64, step: int = 3, top: int = 100
) -> list[np.ndarray]:
    """A camera pan across a real photograph, ``step`` pixels per frame."""
    lefts = [40 + step * t for t in range(frames)]
    return [np.ascontiguousarray(photo[top : top + height, left : left + width]) for left in lefts]


def encode_all(encoder: VideoEncoder, frames: list[np.ndarray]) -> list:
    return [encoder.encode(frame) for frame in frames]


def decode_all(header: bytes, packets: list[bytes]) -> list[np.ndarray]:
    decoder = VideoDecoder(header)
    return [decoder.decode(packet).to_array() for packet in packets]


def write_file(encoder: VideoEncoder, frames: list[np.ndarray]) -> bytes:
    stream = io.BytesIO()
    writer = KmqvWriter(stream, encoder.header)
    for frame in frames:
        encoded = encoder.encode(frame)
        writer.write_packet(encoded.packet, number=encoded.number, pts=encoded.pts, keyframe=encoded.keyframe)
    writer.finish(source_bytes=1234)
    return stream.getvalue()


# ---------------------------------------------------------------- round trip


def test_decoded_frames_equal_the_encoders_reconstruction_bit_for_bit(photo):
    frames = pan(photo, 12)
    encoder = VideoEncoder(96, 64, k=16, keyint=5)
    encoded = encode_all(encoder, frames)
    decoded = decode_all(encoder.header_bytes, [e.packet for e in encoded])
    for made, shown in zip(encoded, decoded):
        assert np.array_equal(made.reconstructed, shown)
    assert [e.keyframe for e in encoded] == [True, False, False, False, False] * 2 + [True, False]


def test_reconstruction_is_close_to_the_input(photo):
    frames = pan(photo, 6)
    encoded = encode_all(VideoEncoder(96, 64, k=32), frames)
    assert min(e.psnr for e in encoded) > 24.0
    assert all(len(np.unique(e.indices)) <= 32 for e in encoded)


def test_same_frames_and_settings_give_the_same_bytes(photo):
    frames = pan(photo, 5)
    first = [e.packet for e in encode_all(VideoEncoder(96, 64, k=16), frames)]
    second = [e.packet for e in encode_all(VideoEncoder(96, 64, k=16), frames)]
    assert first == second


# ---------------------------------------------------------------- temporal coherence


def test_a_static_video_costs_almost_nothing_after_the_first_frame(photo):
    frame = np.ascontiguousarray(photo[:120, :160])
    encoded = encode_all(VideoEncoder(160, 120, k=32), [frame] * 8)
    first = len(encoded[0].packet)
    # The record, the frame fields and one flag per block; at most a palette entry still settling.
    assert all(len(e.packet) < 64 for e in encoded[1:]), [len(e.packet) for e in encoded]
    assert first > 50 * max(len(e.packet) for e in encoded[1:])
    assert all(e.changed_pixels == 0 and e.palette_updates <= 1 for e in encoded[1:])


def test_the_palette_carries_over_with_small_updates(photo):
    encoded = encode_all(VideoEncoder(96, 64, k=32), pan(photo, 8, step=1))
    deltas = encoded[1:]
    assert not any(e.keyframe or e.refit for e in deltas)
    assert all(e.palette_updates < 32 for e in deltas)
    # Entry j means nearly the same colour from frame to frame.
    for before, after in zip(encoded, encoded[1:]):
        drift = np.abs(before.palette.astype(int) - after.palette.astype(int)).max(axis=1)
        assert np.median(drift) <= 2


def test_a_camera_pan_is_coded_as_motion(photo):
    frames = pan(photo, 8, width=160, height=96, step=3)
    moving = encode_all(VideoEncoder(160, 96, k=32), frames)
    still = encode_all(VideoEncoder(160, 96, k=32, motion=False), frames)
    # Most blocks find the pan (3 pixels to the left in the picture: dx = +3) ...
    assert all(e.moved_blocks >= 0.6 * 10 * 6 for e in moving[1:])
    assert all(e.moved_blocks == 0 for e in still)
    # ... and the delta frames take a small part of the bytes, at nearly the same quality,
    moving_bytes = sum(len(e.packet) for e in moving[1:])
    still_bytes = sum(len(e.packet) for e in still[1:])
    assert moving_bytes < 0.2 * still_bytes
    assert np.mean([e.psnr for e in moving]) > np.mean([e.psnr for e in still]) - 0.5
    # ... and decode to exactly what the encoder reconstructed.
    decoded = decode_all(VideoEncoder(160, 96, k=32).header_bytes, [e.packet for e in moving])
    assert all(np.array_equal(e.reconstructed, shown) for e, shown in zip(moving, decoded))


def test_motion_search_leaves_a_still_picture_alone(photo):
    frames = [np.ascontiguousarray(photo[:96, :128])] * 4
    encoded = encode_all(VideoEncoder(128, 96, k=32), frames)
    assert all(e.moved_blocks == 0 and e.changed_pixels == 0 for e in encoded[1:])


def test_moving_content_codes_only_what_changed(photo):
    frames = [np.ascontiguousarray(photo[:96, :128]) for _ in range(4)]
    frames[3] = frames[3].copy()
    frames[3][10:30, 20:50] = photo[300:320, 300:330]  # something moves into one corner
    encoded = encode_all(VideoEncoder(128, 96, k=32), frames)
    # The patch, and pixels elsewhere whose entry moved to serve its new colours.
    assert 30 * 20 <= encoded[3].changed_pixels < 128 * 96 / 8
    assert len(encoded[3].packet) < len(encoded[0].packet) / 4


def test_a_scene_cut_refits_the_palette_and_starts_a_keyframe(photo):
    scene_a = pan(photo, 5, top=0)
    other = np.ascontiguousarray(255 - photo[::-1, ::-1])
    scene_b = pan(other, 5, top=200)
    encoded = encode_all(VideoEncoder(96, 64, k=16), scene_a + scene_b)
    cuts = [e.number for e in encoded if e.scene_cut]
    assert cuts == [5]
    assert encoded[5].keyframe and encoded[5].refit
    assert [e.number for e in encoded if e.refit] == [0, 5]


def test_keyframes_come_at_least_every_keyint_frames(photo):
    encoded = encode_all(VideoEncoder(96, 64, k=8, keyint=3), pan(photo, 10, step=1))
    assert [e.number for e in encoded if e.keyframe] == [0, 3, 6, 9]


def test_a_keyframe_can_be_requested_for_a_joining_viewer(photo):
    frames = pan(photo, 6, step=1)
    encoder = VideoEncoder(96, 64, k=8)
    encoded = encode_all(encoder, frames[:3])
    encoder.request_keyframe()
    encoded += encode_all(encoder, frames[3:])
    assert [e.keyframe for e in encoded] == [True, False, False, True, False, False]
    # A viewer that joins at the requested keyframe decodes from there on.
    decoded = decode_all(encoder.header_bytes, [e.packet for e in encoded[3:]])
    assert all(np.array_equal(a.reconstructed, b) for a, b in zip(encoded[3:], decoded))


# ---------------------------------------------------------------- shapes and channels


@pytest.mark.parametrize("width, height", [(1, 1), (853, 479), (17, 3)])
def test_odd_frame_sizes_round_trip(width, height):
    rng = np.random.default_rng(width)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frames = [base, np.roll(base, 1, axis=1), np.roll(base, 2, axis=0)]
    encoder = VideoEncoder(width, height, k=64)
    encoded = encode_all(encoder, frames)
    decoded = decode_all(encoder.header_bytes, [e.packet for e in encoded])
    assert all(np.array_equal(a.reconstructed, b) for a, b in zip(encoded, decoded))


def test_rgba_frames_keep_their_alpha(photo):
    frames = []
    for frame in pan(photo, 4):
        alpha = np.full(frame.shape[:2] + (1,), 255, np.uint8)
        alpha[:, :20] = 0
        alpha[:, 20:40] = 128
        frames.append(np.concatenate([frame, alpha], axis=2))
    encoder = VideoEncoder(96, 64, k=16, channels=4)
    encoded = encode_all(encoder, frames)
    decoded = decode_all(encoder.header_bytes, [e.packet for e in encoded])
    assert decoded[0].shape == (64, 96, 4)
    assert all(np.array_equal(a.reconstructed, b) for a, b in zip(encoded, decoded))
    assert set(np.unique(decoded[-1][:, :, 3])) <= {0, 128, 255}


def test_grey_frames_stay_grey(photo):
    grey = photo.mean(axis=2).astype(np.uint8)
    frames = [np.repeat(frame[:, :, :1], 3, axis=2) for frame in pan(np.dstack([grey] * 3), 4)]
    encoded = encode_all(VideoEncoder(96, 64, k=16), frames)
    palette = encoded[-1].palette.astype(int)
    assert np.abs(palette[:, 0] - palette[:, 1]).max() <= 1 and np.abs(palette[:, 1] - palette[:, 2]).max() <= 1


def test_ordered_dither_round_trips(photo):
    encoder = VideoEncoder(96, 64, k=8, dither="ordered")
    encoded = encode_all(encoder, pan(photo, 4))
    decoded = decode_all(encoder.header_bytes, [e.packet for e in encoded])
    assert all(np.array_equal(a.reconstructed, b) for a, b in zip(encoded, decoded))


def test_a_still_dithered_picture_moves_no_block(photo):
    # A still camera's picture: the same photograph with a little sensor noise in every frame.
    # The motion search judges the dithered colours the indices are chosen for, so the dither
    # pattern, which stays in place, keeps every block where it is.
    still = photo[100:260, 40:296].astype(np.int16)
    rng = np.random.default_rng(0)
    frames = [np.clip(still + rng.integers(-2, 3, still.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    sizes = {}
    for motion in (False, True):
        encoded = encode_all(VideoEncoder(256, 160, k=32, dither="ordered", motion=motion), frames)
        assert all(frame.moved_blocks == 0 for frame in encoded)
        sizes[motion] = sum(len(frame.packet) for frame in encoded[1:])
    assert sizes[True] == sizes[False] < 100 * 3


def test_the_encoder_refuses_a_frame_of_another_size():
    encoder = VideoEncoder(32, 24, k=8)
    with pytest.raises(InputError, match="24×32×3"):
        encoder.encode(np.zeros((24, 30, 3), np.uint8))


def test_timestamps_are_kept_and_must_increase():
    encoder = VideoEncoder(8, 8, k=4)
    frame = np.zeros((8, 8, 3), np.uint8)
    assert [encoder.encode(frame, pts).pts for pts in (0, 7, 9, 30)] == [0, 7, 9, 30]
    with pytest.raises(InputError, match="increase"):
        encoder.encode(frame, 30)


# ---------------------------------------------------------------- packets and the decoder


def test_a_damaged_packet_is_refused_by_its_checksum(photo):
    encoder = VideoEncoder(96, 64, k=8)
    packet = bytearray(encoder.encode(pan(photo, 1)[0]).packet)
    packet[40] ^= 0x10
    with pytest.raises(FormatError, match="checksum"):
        VideoDecoder(encoder.header_bytes).decode(bytes(packet))


def test_a_truncated_packet_is_refused(photo):
    encoder = VideoEncoder(96, 64, k=8)
    packet = encoder.encode(pan(photo, 1)[0]).packet
    with pytest.raises(FormatError, match="truncated"):
        VideoDecoder(encoder.header_bytes).decode(packet[:-9])


def test_a_delta_frame_needs_the_frame_before_it(photo):
    frames = pan(photo, 3)
    encoder = VideoEncoder(96, 64, k=8)
    packets = [e.packet for e in encode_all(encoder, frames)]
    decoder = VideoDecoder(encoder.header_bytes)
    with pytest.raises(FormatError, match="keyframe"):
        decoder.decode(packets[1])
    decoder.decode(packets[0])
    with pytest.raises(FormatError, match="missing"):
        decoder.decode(packets[2])


def test_two_temporal_layers_alternate_discardable_frames(photo):
    frames = pan(photo, 9, width=160, height=96, step=2)
    encoder = VideoEncoder(160, 96, k=16, keyint=7, temporal_layers=2)
    encoded = encode_all(encoder, frames)
    kinds = ["K" if e.keyframe else "D" if e.discardable else "R" for e in encoded]
    assert "".join(kinds) == "KDRDRDRKD"
    packets = [parse_frame(e.packet, encoder.header) for e in encoded]
    # A reference frame is coded against the reference two back; a discardable one against the
    # reference just before it.
    assert [p.skipped for p in packets] == [0, 0, 1, 0, 1, 0, 1, 0, 0]
    assert all(e.moved_blocks > 0 for e in encoded[1:7])
    # Every frame decodes to the encoder's reconstruction ...
    decoded = decode_all(encoder.header_bytes, [e.packet for e in encoded])
    assert all(np.array_equal(e.reconstructed, shown) for e, shown in zip(encoded, decoded))
    # ... and so does every reference frame of a viewer that skipped the discardable ones.
    decoder = VideoDecoder(encoder.header_bytes)
    for made in encoded:
        if not made.discardable:
            assert np.array_equal(decoder.decode(made.packet).to_array(), made.reconstructed)


def test_temporal_layers_may_change_between_frames(photo):
    frames = pan(photo, 10, width=160, height=96, step=2)
    encoder = VideoEncoder(160, 96, k=16)
    encoded = []
    for number, frame in enumerate(frames):
        encoder.temporal_layers = 2 if 3 <= number < 7 else 1
        encoded.append(encoder.encode(frame))
    assert [e.discardable for e in encoded] == [False] * 3 + [True, False, True, False] + [False] * 3
    decoded = decode_all(encoder.header_bytes, [e.packet for e in encoded])
    assert all(np.array_equal(e.reconstructed, shown) for e, shown in zip(encoded, decoded))
    with pytest.raises(InputError, match="temporal layers"):
        encoder.temporal_layers = 0


def test_one_temporal_layer_is_the_default_and_codes_every_frame_against_the_last():
    encoder = VideoEncoder(32, 24, k=4)
    frame = np.zeros((24, 32, 3), np.uint8)
    encoded = [encoder.encode(frame) for _ in range(4)]
    assert not any(e.discardable for e in encoded)
    assert all(parse_frame(e.packet, encoder.header).skipped == 0 for e in encoded)
    with pytest.raises(InputError, match="temporal layers"):
        VideoEncoder(32, 24, k=4, temporal_layers=3)


def test_a_delta_frame_is_refused_without_its_reference_frame(photo):
    encoder = VideoEncoder(96, 64, k=8, temporal_layers=2)
    encoded = encode_all(encoder, pan(photo, 5))
    packets = [parse_frame(e.packet, encoder.header) for e in encoded]
    decoder = VideoDecoder(encoder.header_bytes)
    decoder.decode(packets[0])
    decoder.decode(packets[1])  # discardable: the reference is still frame 0
    assert decoder.can_decode(packets[2]) and not decoder.can_decode(packets[4])
    with pytest.raises(FormatError, match="coded against frame 2.*missing"):
        decoder.decode(packets[4])  # frame 2, its reference, never came
    decoder.decode(packets[2])
    assert decoder.can_decode(packets[3]) and decoder.can_decode(packets[4])


@pytest.mark.parametrize(
    "flags, skipped, number, message",
    [(1 | 4, 0, 3, "keyframe marked discardable"), (1, 1, 3, "keyframe"), (0, 3, 3, "claims 3 skipped")],
)
def test_impossible_layer_fields_are_refused(photo, flags, skipped, number, message):
    encoder = VideoEncoder(96, 64, k=8)
    encoder.encode(pan(photo, 1)[0])
    record = bytearray(encoder.encode(pan(photo, 2)[1]).packet)
    payload = record[8:-4]
    payload[0:4] = number.to_bytes(4, "little")
    payload[12] = flags | (payload[12] & 2)
    payload[13] = skipped
    with pytest.raises(FormatError, match=message):
        parse_frame(pack_record(b"KMQF", bytes(payload)), encoder.header)


def test_a_live_stream_is_a_header_then_packets_and_optional_records_are_skipped(photo):
    encoder = VideoEncoder(96, 64, k=8)
    encoded = encode_all(encoder, pan(photo, 3))
    decoder = VideoDecoder()
    optional = pack_record(b"note", b"later")
    messages = [encoder.header_bytes, encoded[0].packet, optional, encoded[1].packet, encoded[2].packet]
    frames = [frame for frame in map(decoder.feed, messages) if frame is not None]
    assert [f.number for f in frames] == [0, 1, 2]
    assert np.array_equal(frames[2].to_array(), encoded[2].reconstructed)
    with pytest.raises(FormatError, match="unknown record"):
        decoder.feed(pack_record(b"NOTE", b"critical"))


def test_the_stream_header_round_trips_and_rejects_other_versions():
    header = StreamHeader(width=853, height=479, channels=4, k=200, frame_rate=30000 / 1001)
    again = StreamHeader.from_bytes(header.to_bytes())
    assert again == header and again.frame_rate == header.frame_rate
    record = bytearray(header.to_bytes())
    record[8] = 9  # the version byte
    with pytest.raises(FormatError):
        StreamHeader.from_bytes(bytes(record))
    with pytest.raises(FormatError, match="not a kmq video"):
        StreamHeader.from_bytes(b"RIFF" + bytes(40))


def test_a_palette_update_carries_only_the_moved_entries(photo):
    encoder = VideoEncoder(96, 64, k=16)
    encoded = encode_all(encoder, pan(photo, 4, step=2))
    header = encoder.header
    for made in encoded[1:]:
        packet = parse_frame(made.packet, header)
        assert len(packet.palette_entries) == made.palette_updates < 16


# ---------------------------------------------------------------- .kmqv files


def test_a_file_holds_a_keyframe_index_for_seeking_by_time(photo):
    encoder = VideoEncoder(96, 64, k=8, keyint=4, frame_rate=10)
    frames = pan(photo, 10)
    data = write_file(encoder, frames)
    reader = KmqvReader(io.BytesIO(data))
    assert reader.end.frames == 10 and reader.end.source_bytes == 1234
    assert [k.number for k in reader.keyframes] == [0, 4, 8]
    entry = reader.keyframe_at(0.65)
    assert entry.number == 4
    numbers = [f.number for f in reader.frames(start=entry)]
    assert numbers == [4, 5, 6, 7, 8, 9]
    assert reader.keyframe_at(-1.0).number == 0


def test_a_file_cut_short_reports_the_damaged_frame_and_salvage_keeps_the_ones_before(photo):
    data = write_file(VideoEncoder(96, 64, k=8), pan(photo, 6))
    reader = KmqvReader(io.BytesIO(data))
    offsets = [offset for offset, _ in reader.packets()]
    cut = data[: offsets[4] + 30]
    reader = KmqvReader(io.BytesIO(cut))
    assert reader.end is None
    with pytest.raises(FormatError, match="frame 4 .*truncated"):
        list(reader.frames())
    kept = list(reader.frames(salvage=True))
    assert [f.number for f in kept] == [0, 1, 2, 3]
    assert "frame 4" in reader.damage


def test_a_corrupted_frame_in_a_file_is_named(photo):
    data = bytearray(write_file(VideoEncoder(96, 64, k=8), pan(photo, 6)))
    offsets = [offset for offset, _ in KmqvReader(io.BytesIO(bytes(data))).packets()]
    data[offsets[2] + 20] ^= 0xFF
    reader = KmqvReader(io.BytesIO(bytes(data)))
    with pytest.raises(FormatError, match=r"frame 2 \(byte \d+\).*checksum"):
        list(reader.frames())
    assert len(list(reader.frames(salvage=True))) == 2


def test_a_file_ends_with_a_fixed_size_end_record(photo):
    data = write_file(VideoEncoder(96, 64, k=8), pan(photo, 2))
    assert data[:4] == b"KMQV" and data[-END_RECORD_BYTES:][:4] == b"KMQE"


def test_not_a_kmqv_file_is_refused():
    with pytest.raises(FormatError, match="not a .kmqv"):
        KmqvReader(io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(100)))
