"""Video files end to end: `kmq video encode | decode | export`, `kmq info`, open_video, and bad input."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_error_line, run_kmq
from kmq.codec.video import KmqvReader, VideoDecoder, parse_frame
from kmq.errors import FormatError, InputError
from kmq.media.video import decode_video, encode_video, export_video, open_video
from kmq.media.video_source import VideoSource

SIZE = (96, 64)


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    *,
    codec: str = "ffv1",
    pix_fmt: str = "bgr0",
    pts: list[int] | None = None,
    time_base: Fraction = Fraction(1, 10),
    rotation: int | None = None,
) -> Path:
    """Write frames (H×W×3 or H×W×4 uint8) to a video file with PyAV."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(1) / time_base if pts is None else 10)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for number, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgba" if pixels.shape[2] == 4 else "rgb24")
            frame.pts = number if pts is None else pts[number]
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def pan(photo: np.ndarray, count: int, *, step: int = 2) -> list[np.ndarray]:
    width, height = SIZE
    lefts = [60 + step * t for t in range(count)]
    return [np.ascontiguousarray(photo[150 : 150 + height, left : left + width]) for left in lefts]


def read_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as container:
        return [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


@pytest.fixture
def clip(tmp_path, photo) -> Path:
    """A 12-frame lossless clip: a pan across a real photograph at 10 frames per second."""
    return write_clip(tmp_path / "pan.mkv", pan(photo, 12))


@pytest.fixture
def coded(tmp_path, clip) -> Path:
    """The clip encoded to .kmqv through the API (keyframes every 5 frames)."""
    out = tmp_path / "pan.kmqv"
    encode_video(clip, out, k=16, keyint=5)
    return out


# ---------------------------------------------------------------- the commands


def test_encode_prints_a_summary_and_decode_gives_the_decoders_frames_exactly(tmp_path, clip):
    out = tmp_path / "out.kmqv"
    result = run_kmq("video", "encode", str(clip), "-o", str(out), "-k", "16")
    assert result.returncode == 0, result.stderr
    for word in ("12 frames", "keyframes", "palette refits", "bits/pixel", "PSNR", "raw RGB", "input file"):
        assert word in result.stdout
    with open_video(out) as video:
        expected = [(frame.time, frame.to_array()) for frame in video]

    lossless = tmp_path / "out.mkv"
    result = run_kmq("video", "decode", str(out), "-o", str(lossless))
    assert result.returncode == 0, result.stderr
    decoded = read_frames(lossless)
    assert len(decoded) == 12
    for (time_a, pixels_a), (time_b, pixels_b) in zip(decoded, expected):
        assert time_a == pytest.approx(time_b, abs=1e-3) and np.array_equal(pixels_a, pixels_b)


def test_no_motion_codes_the_pan_in_place_and_larger(tmp_path, clip):
    sizes = {}
    for flags in ((), ("--no-motion",)):
        out = tmp_path / f"out{len(flags)}.kmqv"
        result = run_kmq("video", "encode", str(clip), "-o", str(out), "-k", "16", *flags)
        assert result.returncode == 0, result.stderr
        with open_video(out) as video:
            frames = [frame.to_array() for frame in video]
        assert len(frames) == 12
        sizes[flags] = out.stat().st_size
    # The pan moves 2 pixels a frame: with motion vectors its delta frames are far smaller.
    assert sizes[()] < 0.6 * sizes[("--no-motion",)]


def test_two_temporal_layers_make_every_other_delta_frame_discardable(tmp_path, clip):
    out = tmp_path / "layers.kmqv"
    result = run_kmq("video", "encode", str(clip), "-o", str(out), "-k", "16", "--temporal-layers", "2")
    assert result.returncode == 0, result.stderr
    with open_video(out) as video:
        frames = list(video)
    assert len(frames) == 12
    assert [frame.discardable for frame in frames] == [False] + [True, False] * 5 + [True]
    # A player that skips the discardable frames shows the others exactly as they are.
    with open(out, "rb") as stream:
        reader = KmqvReader(stream)
        decoder = VideoDecoder(reader.header)
        for frame, (_, record) in zip(frames, reader.packets()):
            packet = parse_frame(record, reader.header)
            if not packet.discardable:
                assert np.array_equal(decoder.decode(packet).to_array(), frame.to_array())


def test_export_to_gif_keeps_each_frames_palette_exactly(tmp_path, coded):
    gif = tmp_path / "out.gif"
    result = run_kmq("video", "export", str(coded), "-o", str(gif))
    assert result.returncode == 0, result.stderr
    with open_video(coded) as video:
        expected = [frame.to_array() for frame in video]
    with Image.open(gif) as image:
        assert image.n_frames == 12
        for number, pixels in enumerate(expected):
            image.seek(number)
            assert np.array_equal(np.asarray(image.convert("RGB")), pixels)


def test_export_to_apng_and_decode_to_mp4_and_png_folder(tmp_path, coded):
    with open_video(coded) as video:
        expected = [frame.to_array() for frame in video]
    apng = decode_video(coded, tmp_path / "out.apng")
    assert apng.frames == 12
    assert all(np.array_equal(a, b) for (_, a), b in zip(read_frames(tmp_path / "out.apng"), expected))
    mp4 = decode_video(coded, tmp_path / "out.mp4")
    assert mp4.kind == "h264" and len(read_frames(tmp_path / "out.mp4")) == 12
    folder = decode_video(coded, tmp_path / "frames/")
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert folder.frames == 12 and names[0] == "frame_000000.png" and len(names) == 12
    assert np.array_equal(np.asarray(Image.open(tmp_path / "frames" / names[5])), expected[5])


def test_info_describes_a_kmqv_file(coded):
    result = run_kmq("info", str(coded), "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["format"] == "kmq video"
    assert (facts["width"], facts["height"], facts["frames"], facts["keyframes"]) == (96, 64, 12, 3)
    assert facts["duration_seconds"] == pytest.approx(1.2)
    assert facts["ratio_vs_raw_rgb"] > 1 and facts["input_file_bytes"] > 0


def test_open_video_seeks_to_the_keyframe_at_or_before_a_time(coded):
    with open_video(coded) as video:
        assert [k.number for k in video.keyframes] == [0, 5, 10]
        assert video.seek(0.75) == pytest.approx(0.5)
        numbers = [frame.number for frame in video]
        assert numbers == [5, 6, 7, 8, 9, 10, 11]
        assert [frame.number for frame in video.frames(start=1.05)][0] == 10


def test_start_duration_and_max_frames_choose_the_frames(tmp_path, clip):
    summary = encode_video(clip, tmp_path / "a.kmqv", start=0.3, duration=0.5)
    assert summary.frames == 5
    assert summary.input_bytes == pytest.approx(clip.stat().st_size * 0.5 / 1.2, rel=0.01)
    with open_video(tmp_path / "a.kmqv") as video:
        assert [round(frame.time, 3) for frame in video] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert encode_video(clip, tmp_path / "b.kmqv", max_frames=3).frames == 3


# ---------------------------------------------------------------- sources


def test_a_variable_frame_rate_source_keeps_its_timestamps(tmp_path, photo):
    pts = [0, 40, 50, 130, 400, 410, 900]
    clip = write_clip(tmp_path / "vfr.mkv", pan(photo, len(pts)), pts=pts, time_base=Fraction(1, 1000))
    encode_video(clip, tmp_path / "vfr.kmqv")
    with open_video(tmp_path / "vfr.kmqv") as video:
        assert [round(frame.time * 1000) for frame in video] == pts
    decode_video(tmp_path / "vfr.kmqv", tmp_path / "back.mkv")
    assert [round(time * 1000) for time, _ in read_frames(tmp_path / "back.mkv")] == pts


@pytest.mark.parametrize("full_range", [False, True])
def test_an_enlarged_yuv_source_is_the_picture_swscale_converts_in_one_step(tmp_path, photo, full_range):
    """The source enlarges the YUV planes before the conversion to RGB (cheaper): same picture, same range."""
    path = tmp_path / "yuv.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.color_range = 2 if full_range else 1
        for number, pixels in enumerate(pan(photo, 3)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(
                format="yuv420p", dst_color_range=2 if full_range else 1
            )
            frame.pts = number
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    size = (SIZE[0] * 5 // 3, SIZE[1] * 5 // 3)
    with av.open(str(path)) as container:
        expected = [
            frame.reformat(*size, format="rgb24", interpolation="FAST_BILINEAR").to_ndarray()
            for frame in container.decode(video=0)
        ]
    with VideoSource(path, size=size) as source:
        enlarged = [frame.pixels for frame in source]
    assert len(enlarged) == len(expected) == 3
    for ours, theirs in zip(enlarged, expected):
        assert ours.shape == theirs.shape == (size[1], size[0], 3)
        difference = np.abs(ours.astype(int) - theirs)
        assert difference.mean() < 3 and difference.max() <= 16


def test_a_rotated_source_is_encoded_upright_with_its_timing(tmp_path, photo):
    frames = pan(photo, 4)
    marked = []
    for frame in frames:
        frame = frame.copy()
        frame[:8, :16] = 255  # a white mark at the top left of the stored picture
        marked.append(frame)
    clip = write_clip(tmp_path / "rotated.mp4", marked, codec="libx264", pix_fmt="yuv444p", rotation=90)
    encode_video(clip, tmp_path / "rotated.kmqv")
    with open_video(tmp_path / "rotated.kmqv") as video:
        assert (video.header.width, video.header.height) == (64, 96)
        shown = list(video)
    # Shown upright, the mark is at the bottom left, where players display it.
    bottom_left = shown[0].to_array()[-16:, :8].mean()
    assert bottom_left > 200 and shown[0].to_array()[:16, :8].mean() < bottom_left
    assert [round(frame.time, 3) for frame in shown] == [0.0, 0.1, 0.2, 0.3]


def test_grey_and_alpha_sources_are_encoded(tmp_path, photo):
    grey = [np.repeat(frame.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2) for frame in pan(photo, 3)]
    clip = write_clip(tmp_path / "grey.mkv", grey, pix_fmt="gray")
    encode_video(clip, tmp_path / "grey.kmqv", k=8)
    with open_video(tmp_path / "grey.kmqv") as video:
        pixels = next(iter(video)).to_array().astype(int)
    assert np.abs(pixels[:, :, 0] - pixels[:, :, 2]).max() <= 1

    alpha = []
    for frame in pan(photo, 3):
        layer = np.full(frame.shape[:2] + (1,), 255, np.uint8)
        layer[:, :30] = 0
        alpha.append(np.concatenate([frame, layer], axis=2))
    clip = write_clip(tmp_path / "alpha.mkv", alpha, pix_fmt="bgra")
    encode_video(clip, tmp_path / "alpha.kmqv", k=8)
    with open_video(tmp_path / "alpha.kmqv") as video:
        assert video.header.channels == 4
        pixels = next(iter(video)).to_array()
    assert pixels.shape == (64, 96, 4) and pixels[:, :30, 3].max() == 0 and pixels[:, 40:, 3].min() == 255
    decode_video(tmp_path / "alpha.kmqv", tmp_path / "alpha-back.mkv")
    with av.open(str(tmp_path / "alpha-back.mkv")) as container:
        back = next(container.decode(video=0)).to_ndarray(format="rgba")
    assert np.array_equal(back, pixels)


def test_an_odd_sized_source_round_trips_and_decodes_to_h264(tmp_path, photo):
    frames = [np.ascontiguousarray(photo[100 + t : 131 + t, 50:103]) for t in range(3)]  # 53×31
    clip = write_clip(tmp_path / "odd.mkv", frames)
    encode_video(clip, tmp_path / "odd.kmqv", k=16)
    with open_video(tmp_path / "odd.kmqv") as video:
        expected = [frame.to_array() for frame in video]
    decode_video(tmp_path / "odd.kmqv", tmp_path / "odd-back.mkv")
    assert all(np.array_equal(a, b) for (_, a), b in zip(read_frames(tmp_path / "odd-back.mkv"), expected))
    decode_video(tmp_path / "odd.kmqv", tmp_path / "odd.mp4")  # 4:2:0 needs even sides: padded
    assert read_frames(tmp_path / "odd.mp4")[0][1].shape == (32, 54, 3)


# ---------------------------------------------------------------- bad input


def test_not_a_video_is_one_error_line(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    before = {p.name for p in tmp_path.iterdir()}
    result = run_kmq("video", "encode", str(text), "-o", str(tmp_path / "out.kmqv"))
    assert_one_error_line(result, tmp_path, before)
    assert "not a video" in result.stderr


def test_a_truncated_mp4_is_refused_without_output(tmp_path, photo):
    clip = write_clip(tmp_path / "full.mp4", pan(photo, 20), codec="libx264", pix_fmt="yuv420p")
    data = clip.read_bytes()
    with pytest.raises(InputError, match="truncated|corrupt|not a video"):
        encode_video(_cut(tmp_path / "cut.mp4", data, len(data) * 2 // 3), tmp_path / "cut.kmqv")
    assert not (tmp_path / "cut.kmqv").exists()


def _cut(path: Path, data: bytes, size: int) -> Path:
    path.write_bytes(data[:size])
    return path


def test_a_truncated_kmqv_fails_at_the_damaged_frame_and_salvage_keeps_the_frames_before(tmp_path, coded):
    data = coded.read_bytes()
    with open_video(coded) as video:
        offsets = [offset for offset, _ in video._reader.packets()]
    cut = _cut(tmp_path / "cut.kmqv", data, offsets[7] + 25)
    before = {p.name for p in tmp_path.iterdir()}
    result = run_kmq("video", "decode", str(cut), "-o", str(tmp_path / "cut.mkv"))
    assert_one_error_line(result, tmp_path, before)
    assert "frame 7" in result.stderr and "--salvage" in result.stderr

    result = run_kmq("video", "decode", str(cut), "-o", str(tmp_path / "cut.mkv"), "--salvage")
    assert result.returncode == 0, result.stderr
    assert "7 frames" in result.stdout and "frame 7" in result.stderr
    assert len(read_frames(tmp_path / "cut.mkv")) == 7


def test_a_corrupted_kmqv_names_the_damaged_frame(tmp_path, coded):
    data = bytearray(coded.read_bytes())
    with open_video(coded) as video:
        offsets = [offset for offset, _ in video._reader.packets()]
    data[offsets[3] + 30] ^= 0x55
    damaged = tmp_path / "damaged.kmqv"
    damaged.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"frame 3 \(byte \d+\).*checksum"):
        decode_video(damaged, tmp_path / "damaged.mkv")
    assert not (tmp_path / "damaged.mkv").exists()
    assert decode_video(damaged, tmp_path / "damaged.mkv", salvage=True).frames == 3


def test_an_unwritable_output_is_one_error_line(tmp_path, clip):
    before = {p.name for p in tmp_path.iterdir()}
    result = run_kmq("video", "encode", str(clip), "-o", str(tmp_path / "missing" / "out.kmqv"))
    assert_one_error_line(result, tmp_path, before)
    result = run_kmq("video", "encode", str(clip), "-o", str(clip.with_suffix(".mkv")))
    assert_one_error_line(result, tmp_path, before)


def test_an_unknown_output_format_is_refused(tmp_path, coded):
    with pytest.raises(InputError, match="output format"):
        decode_video(coded, tmp_path / "out.avi")
    with pytest.raises(InputError, match=r"writes \.gif or \.apng"):
        export_video(coded, tmp_path / "out.mkv")


# ---------------------------------------------------------------- the shared clip


def test_the_shared_clip_encodes_above_the_per_frame_gif_quality(tmp_path, shared_clip):
    summary = encode_video(shared_clip, tmp_path / "bbb.kmqv", max_frames=36)
    assert summary.frames == 36 and summary.psnr > 27.1
    assert summary.bits_per_pixel < 2.0
    with open_video(tmp_path / "bbb.kmqv") as video:
        assert video.header.frame_rate == 24 and video.frame_count == 36
