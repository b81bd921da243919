"""The .kmq still-image format (codec/image.py, codec/framing.py): round trips, size, and distrust of input."""

from __future__ import annotations

import io
import shutil
import subprocess
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmq.codec import DEFAULT_MAX_PIXELS, decode_image, encode_image, image_info
from kmq.codec.framing import read_chunks, write_container
from kmq.codec.image import MAGIC, METHODS, pack_indices
from kmq.errors import FormatError, InputError, LimitError

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_image(k: int, shape=(13, 21), channels: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (k, channels), dtype=np.uint8)
    indices = rng.integers(0, k, shape, dtype=np.uint8)
    return palette, indices


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(chunk.kind, bytes(chunk.payload)) for chunk in read_chunks(memoryview(data), MAGIC, "test")]


def rebuilt(data: bytes, edit) -> bytes:
    """The file with its chunk list passed through ``edit``, checksums recomputed."""
    return write_container(MAGIC, edit(chunks_of(data)))


def with_payload(data: bytes, kind: bytes, payload: bytes) -> bytes:
    return rebuilt(data, lambda chunks: [(name, payload if name == kind else body) for name, body in chunks])


@pytest.fixture(scope="module")
def small_file() -> bytes:
    return encode_image(*random_image(12, (9, 11)))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 255, 256])
def test_round_trip_is_exact_for_every_method_and_palette_size(method, k):
    palette, indices = random_image(k)
    decoded = decode_image(encode_image(palette, indices, method=method))
    np.testing.assert_array_equal(decoded.palette, palette)
    np.testing.assert_array_equal(decoded.indices, indices)
    assert decoded.method == method


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (3, 5), (31, 17)])
def test_odd_sizes_round_trip(method, shape):
    palette, indices = random_image(6, shape)
    decoded = decode_image(encode_image(palette, indices, method=method))
    np.testing.assert_array_equal(decoded.indices, indices)
    assert (decoded.width, decoded.height) == (shape[1], shape[0])


@pytest.mark.parametrize("method", METHODS)
def test_rgba_palettes_round_trip(method):
    palette, indices = random_image(40, channels=4)
    decoded = decode_image(encode_image(palette, indices, method=method))
    np.testing.assert_array_equal(decoded.palette, palette)
    np.testing.assert_array_equal(decoded.indices, indices)


@pytest.mark.parametrize("method", METHODS)
def test_encoding_is_deterministic(method):
    palette, indices = random_image(30)
    assert encode_image(palette, indices, method=method) == encode_image(palette.copy(), indices.copy(), method=method)


def test_decoding_accepts_bytearray_and_memoryview(small_file):
    expected = decode_image(small_file).indices
    np.testing.assert_array_equal(decode_image(bytearray(small_file)).indices, expected)
    np.testing.assert_array_equal(decode_image(memoryview(small_file)).indices, expected)


def test_image_info_reads_the_header():
    palette, indices = random_image(20, (10, 30), channels=4)
    data = encode_image(palette, indices, method="deflate")
    info = image_info(data)
    assert (info.width, info.height, info.channels, info.k) == (30, 10, 4, 20)
    assert (info.bits_per_index, info.method, info.total_bytes) == (5, "deflate", len(data))
    assert info.payload_bytes == len(chunks_of(data)[2][1])


def test_stored_payload_is_the_packed_map():
    palette, indices = random_image(5, (3, 3))
    assert chunks_of(encode_image(palette, indices, method="stored"))[2][1] == pack_indices(indices, 3)


def test_packing_is_most_significant_bit_first():
    # 001 010 011 000 001, then one zero bit of padding
    assert pack_indices(np.array([[1, 2, 3, 0, 1]], np.uint8), 3).hex() == "2982"


def test_container_overhead_is_small():
    palette, indices = random_image(2, (1, 1))
    assert len(encode_image(palette, indices, method="stored")) <= 5 + 4 * 12 + 13 + 6 + 1


@pytest.fixture(scope="module")
def quantized_photo():
    from kmq.quant import quantize_pixels
    from PIL import Image

    datasets = pytest.importorskip("sklearn.datasets")
    photo = np.asarray(Image.fromarray(datasets.load_sample_image("china.jpg")).resize((768, 512), Image.BICUBIC))
    palette, indices = quantize_pixels(photo, 64)
    return photo, palette, indices


def test_context_model_beats_zlib_on_the_packed_map_of_a_photo(quantized_photo):
    _, palette, indices = quantized_photo
    cm = len(encode_image(palette, indices, method="cm"))
    assert cm < 0.75 * len(encode_image(palette, indices, method="deflate"))


@pytest.mark.skipif(shutil.which("pngquant") is None, reason="pngquant is not installed")
def test_a_photo_is_smaller_than_pngquants_png8_at_the_same_k(quantized_photo):
    from PIL import Image

    photo, palette, indices = quantized_photo
    source = io.BytesIO()
    Image.fromarray(photo).save(source, format="PNG")
    png8 = subprocess.run(
        ["pngquant", "--nofs", "--speed", "1", "64", "-"], input=source.getvalue(), capture_output=True, check=True
    ).stdout
    assert len(encode_image(palette, indices)) < 0.85 * len(png8)


# --- distrust of the input ------------------------------------------------------------------------


def test_every_truncation_is_a_format_error(small_file):
    for size in range(len(small_file)):
        with pytest.raises(FormatError):
            decode_image(small_file[:size])


@given(position=st.integers(0, 10_000), flip=st.integers(1, 255))
@SETTINGS
def test_any_corrupted_byte_is_a_format_error(small_file, position, flip):
    data = bytearray(small_file)
    data[position % len(data)] ^= flip
    with pytest.raises(FormatError):
        decode_image(bytes(data))


@given(
    method=st.sampled_from(METHODS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
)
@SETTINGS
def test_corrupt_index_data_with_a_valid_checksum_is_a_format_error_or_a_valid_image(method, edits):
    palette, indices = random_image(12, (9, 11))
    data = encode_image(palette, indices, method=method)
    payload = bytearray(chunks_of(data)[2][1])
    for position, flip in edits:
        payload[position % len(payload)] ^= flip
    try:
        decoded = decode_image(with_payload(data, b"DATA", bytes(payload)))
    except FormatError:
        return
    assert decoded.indices.shape == (9, 11) and decoded.indices.max() < 12


@given(data=st.binary(max_size=120))
@SETTINGS
def test_arbitrary_bytes_after_a_valid_signature_are_a_format_error(data):
    with pytest.raises(FormatError):
        decode_image(MAGIC + b"\x01" + data)


def test_trailing_bytes_are_a_format_error(small_file):
    with pytest.raises(FormatError, match="unexpected bytes"):
        decode_image(small_file + b"\0")


def test_wrong_signature_is_a_format_error(small_file):
    with pytest.raises(FormatError, match="signature"):
        decode_image(b"\x89PNG" + small_file[4:])


def test_unknown_version_is_a_format_error(small_file):
    with pytest.raises(FormatError, match="version 2"):
        decode_image(small_file[:4] + b"\x02" + small_file[5:])


def test_non_bytes_input_is_a_format_error():
    with pytest.raises(FormatError):
        decode_image("not bytes")  # type: ignore[arg-type]


def test_unknown_optional_chunks_are_skipped(small_file):
    data = rebuilt(small_file, lambda chunks: [chunks[0], (b"note", b"hello"), *chunks[1:], (b"xtra", b"")])
    np.testing.assert_array_equal(decode_image(data).indices, decode_image(small_file).indices)


def test_unknown_critical_chunks_are_refused(small_file):
    data = rebuilt(small_file, lambda chunks: [*chunks[:2], (b"NEWS", b"x"), chunks[2]])
    with pytest.raises(FormatError, match="critical"):
        decode_image(data)


def test_chunks_out_of_order_are_refused(small_file):
    with pytest.raises(FormatError, match="order"):
        decode_image(rebuilt(small_file, lambda chunks: [chunks[1], chunks[0], chunks[2]]))


def test_a_missing_chunk_is_refused(small_file):
    with pytest.raises(FormatError, match="missing"):
        decode_image(rebuilt(small_file, lambda chunks: chunks[:2]))


def test_a_repeated_chunk_is_refused(small_file):
    with pytest.raises(FormatError):
        decode_image(rebuilt(small_file, lambda chunks: [*chunks, chunks[2]]))


def head(width: int, height: int, channels: int = 3, k: int = 16, bits: int = 4, method: int = 2) -> bytes:
    return (
        width.to_bytes(4, "little") + height.to_bytes(4, "little") + bytes([channels])
        + k.to_bytes(2, "little") + bytes([bits, method])
    )  # fmt: skip


def test_a_huge_declared_size_is_a_limit_error_without_allocating(small_file):
    data = with_payload(small_file, b"HEAD", head(100_000, 100_000, k=12))
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match="100000x100000"):
            decode_image(data)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_the_pixel_limit_can_be_lowered(small_file):
    with pytest.raises(LimitError):
        decode_image(small_file, max_pixels=98)
    assert decode_image(small_file, max_pixels=99).indices.size == 99
    assert image_info(small_file, max_pixels=DEFAULT_MAX_PIXELS).width == 11


@pytest.mark.parametrize(
    "fields",
    [
        dict(width=0, height=5),
        dict(width=11, height=9, channels=2),
        dict(width=11, height=9, k=0, bits=0),
        dict(width=11, height=9, k=300, bits=9),
        dict(width=11, height=9, k=12, bits=3),
        dict(width=11, height=9, k=12, method=3),
    ],
)
def test_inconsistent_header_fields_are_format_errors(small_file, fields):
    with pytest.raises(FormatError):
        decode_image(with_payload(small_file, b"HEAD", head(**fields)))


def test_a_palette_of_the_wrong_length_is_a_format_error(small_file):
    with pytest.raises(FormatError, match="PALT"):
        decode_image(with_payload(small_file, b"PALT", b"\0" * 35))


def test_a_stored_index_beyond_the_palette_is_a_format_error():
    palette, indices = random_image(5, (2, 4))
    data = encode_image(palette, indices, method="stored")
    with pytest.raises(FormatError, match="outside the palette"):
        decode_image(with_payload(data, b"DATA", b"\xff\xff\xff"))


def test_a_deflate_stream_that_inflates_too_far_is_a_format_error():
    palette, indices = random_image(5, (2, 4))
    data = encode_image(palette, indices, method="deflate")
    with pytest.raises(FormatError, match="deflate"):
        decode_image(with_payload(data, b"DATA", zlib.compress(b"\0" * 1_000_000)))


@pytest.mark.parametrize(
    "palette, indices",
    [
        (np.zeros((0, 3), np.uint8), np.zeros((2, 2), np.uint8)),
        (np.zeros((257, 3), np.uint8), np.zeros((2, 2), np.uint8)),
        (np.zeros((4, 2), np.uint8), np.zeros((2, 2), np.uint8)),
        (np.zeros((4, 3), np.float32), np.zeros((2, 2), np.uint8)),
        (np.zeros((4, 3), np.uint8), np.full((2, 2), 4, np.uint8)),
        (np.zeros((4, 3), np.uint8), np.zeros((2, 2), np.int32)),
        (np.zeros((4, 3), np.uint8), np.zeros((0, 2), np.uint8)),
    ],
)
def test_unusable_arrays_are_input_errors(palette, indices):
    with pytest.raises(InputError):
        encode_image(palette, indices)


def test_an_unknown_method_is_an_input_error():
    with pytest.raises(InputError, match="method"):
        encode_image(*random_image(4), method="lzma")
