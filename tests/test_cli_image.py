"""The `kmq compress | decompress | info` commands, as a user runs them."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_error_line, run_kmq


def test_compress_writes_a_kmq_file_that_decompresses_to_the_quantized_image(tmp_path, photo_file):
    result = run_kmq("compress", str(photo_file), "-k", "32")
    assert result.returncode == 0, result.stderr
    coded = photo_file.with_suffix(".kmq")
    assert coded.is_file() and "bits/pixel" in result.stdout

    out = tmp_path / "restored.png"
    result = run_kmq("decompress", str(coded), "-o", str(out))
    assert result.returncode == 0, result.stderr

    import kmq

    expected = kmq.decode_image(coded.read_bytes()).to_array()
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), expected)
    assert len(np.unique(expected.reshape(-1, 3), axis=0)) <= 32


def test_info_reports_size_k_and_ratios_as_json(tmp_path, photo_file):
    assert run_kmq("compress", str(photo_file), "-k", "64").returncode == 0
    coded = photo_file.with_suffix(".kmq")
    result = run_kmq("info", str(coded), "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    width, height = Image.open(photo_file).size
    assert (facts["width"], facts["height"], facts["k"]) == (width, height, 64)
    assert facts["bits_index_packed" if "bits_index_packed" in facts else "bits_per_index_packed"] == 6
    assert facts["file_bytes"] == coded.stat().st_size
    assert facts["bits_per_pixel"] == pytest.approx(8 * coded.stat().st_size / (width * height))
    assert facts["ratio_vs_raw_rgb"] == pytest.approx(width * height * 3 / coded.stat().st_size)


def test_png_format_writes_an_indexed_png_any_viewer_opens(tmp_path, photo_file):
    out = tmp_path / "small.png"
    result = run_kmq("compress", str(photo_file), "-k", "16", "-o", str(out))
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.mode == "P"
        assert len(image.getcolors(256)) <= 16


def test_png8_of_an_rgba_image_keeps_transparency(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = np.arange(30) * 8
    rgba[..., 3] = 255
    rgba[5:10, 5:10, 3] = 0
    source = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(source)
    out = tmp_path / "alpha8.png"
    assert run_kmq("compress", str(source), "-k", "8", "--format", "png", "-o", str(out)).returncode == 0
    with Image.open(out) as image:
        assert image.mode == "P" and "transparency" in image.info
        restored = np.asarray(image.convert("RGBA"))
    assert (restored[5:10, 5:10, 3] == 0).all() and (restored[12:, :, 3] == 255).all()


@pytest.mark.parametrize(
    "mode, suffix",
    [("L", ".png"), ("RGB", ".jpg"), ("RGBA", ".webp"), ("P", ".gif"), ("RGB", ".tif"), ("RGB", ".bmp"), ("I;16", ".png"), ("LA", ".png")],
)
def test_every_common_input_mode_and_format_compresses(tmp_path, photo, mode, suffix):
    source = tmp_path / f"input{suffix}"
    image = Image.fromarray(photo[:64, :80])
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(grey)
    elif mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(128)
    else:
        image = image.convert(mode)
    image.save(source)
    result = run_kmq("compress", str(source), "-k", "16")
    assert result.returncode == 0, result.stderr
    assert source.with_suffix(".kmq").stat().st_size > 0


def test_missing_input_is_one_error_line(tmp_path):
    before = {p.name for p in tmp_path.iterdir()}
    assert_one_error_line(run_kmq("compress", str(tmp_path / "nope.png")), tmp_path, before)


def test_a_file_that_is_not_an_image_is_refused(tmp_path):
    source = tmp_path / "notes.png"
    source.write_text("this is not a picture\n")
    before = {p.name for p in tmp_path.iterdir()}
    assert_one_error_line(run_kmq("compress", str(source)), tmp_path, before)


def test_a_truncated_image_is_refused(tmp_path, photo_file):
    data = photo_file.read_bytes()
    source = tmp_path / "cut.png"
    source.write_bytes(data[: len(data) // 2])
    photo_file.unlink()
    before = {p.name for p in tmp_path.iterdir()}
    assert_one_error_line(run_kmq("compress", str(source)), tmp_path, before)


@pytest.mark.parametrize("k", ["1", "300", "many"])
def test_k_out_of_range_is_refused(tmp_path, photo_file, k):
    before = {p.name for p in tmp_path.iterdir()}
    assert_one_error_line(run_kmq("compress", str(photo_file), "-k", k), tmp_path, before)


def test_an_existing_output_is_kept_without_force(tmp_path, photo_file):
    out = tmp_path / "photo.kmq"
    out.write_bytes(b"precious")
    before = {p.name for p in tmp_path.iterdir()}
    assert_one_error_line(run_kmq("compress", str(photo_file)), tmp_path, before)
    assert out.read_bytes() == b"precious"
    assert run_kmq("compress", str(photo_file), "--force").returncode == 0
    assert out.read_bytes() != b"precious"


def test_the_input_is_never_overwritten(tmp_path, photo_file):
    original = photo_file.read_bytes()
    before = {p.name for p in tmp_path.iterdir()}
    result = run_kmq("compress", str(photo_file), "-o", str(photo_file), "--format", "png", "--force")
    assert_one_error_line(result, tmp_path, before)
    assert photo_file.read_bytes() == original


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    source = tmp_path / "bomb.png"
    source.write_bytes(_png_header_only(100_000, 100_000))
    before = {p.name for p in tmp_path.iterdir()}
    result = run_kmq("compress", str(source))
    assert_one_error_line(result, tmp_path, before)
    assert "limit" in result.stderr


def test_the_pixel_limit_is_configurable(tmp_path, photo_file):
    before = {p.name for p in tmp_path.iterdir()}
    assert_one_error_line(run_kmq("compress", str(photo_file), "--max-pixels", "1000"), tmp_path, before)
    assert_one_error_line(run_kmq("compress", str(photo_file), env={"KMQ_MAX_PIXELS": "1000"}), tmp_path, before)


def test_a_corrupt_kmq_file_is_one_error_line(tmp_path, photo_file):
    assert run_kmq("compress", str(photo_file), "-k", "16").returncode == 0
    coded = photo_file.with_suffix(".kmq")
    data = bytearray(coded.read_bytes())
    data[len(data) // 2] ^= 0xFF
    coded.write_bytes(bytes(data))
    before = {p.name for p in tmp_path.iterdir()}
    assert_one_error_line(run_kmq("decompress", str(coded)), tmp_path, before)
    assert_one_error_line(run_kmq("info", str(tmp_path / "missing.kmq")), tmp_path, before)


def test_unknown_option_is_one_error_line(tmp_path):
    before = {p.name for p in tmp_path.iterdir()}
    assert_one_error_line(run_kmq("compress", "--no-such-flag"), tmp_path, before)
