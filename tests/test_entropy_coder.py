"""The index-map coder (codec/entropy.py): exact round trips, inter and motion coding, and distrust of its input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmq.codec.entropy import (
    BLOCK_SIZE,
    MAX_STRIPES,
    MOTION_RANGE,
    block_row_tops,
    decode_index_map,
    default_stripe_rows,
    encode_index_map,
    map_view,
    motion_reference,
    motion_vector_shape,
    padded_map,
)
from kmq.errors import FormatError, InputError, LimitError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def smooth_map(height: int, width: int, k: int, seed: int = 0) -> np.ndarray:
    """Regions of equal indices with noisy edges, like a quantized photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    field = np.sin(x / 7.0 + seed) + np.cos(y / 5.0) + 0.3 * rng.standard_normal((height, width))
    return (np.floor((field + 2.6) / 5.2 * k).clip(0, k - 1)).astype(np.uint8)


def round_trip(indices: np.ndarray, k: int, previous: np.ndarray | None = None, **options) -> np.ndarray:
    data = encode_index_map(indices, k, previous, **options)
    height, width = indices.shape
    return decode_index_map(data, width, height, k, previous)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256])
def test_intra_round_trip_is_exact_for_every_palette_size_class(k):
    indices = smooth_map(37, 41, k)
    np.testing.assert_array_equal(round_trip(indices, k), indices)


@pytest.mark.parametrize("k", [2, 17, 256])
def test_uniformly_random_indices_round_trip(k):
    indices = np.random.default_rng(k).integers(0, k, (29, 31), dtype=np.uint8)
    np.testing.assert_array_equal(round_trip(indices, k), indices)


@pytest.mark.parametrize("shape", [(1, 1), (1, 19), (23, 1), (2, 2), (17, 33), (BLOCK_SIZE + 1, BLOCK_SIZE - 1)])
def test_odd_sizes_round_trip(shape):
    indices = np.random.default_rng(1).integers(0, 5, shape, dtype=np.uint8)
    np.testing.assert_array_equal(round_trip(indices, 5), indices)


@given(
    indices=st.integers(1, 40).flatmap(
        lambda height: st.integers(1, 40).flatmap(
            lambda width: st.lists(st.integers(0, 9), min_size=height * width, max_size=height * width).map(
                lambda values: np.array(values, np.uint8).reshape(height, width)
            )
        )
    )
)
@SETTINGS
def test_any_small_map_round_trips(indices):
    np.testing.assert_array_equal(round_trip(indices, 10), indices)


@pytest.mark.parametrize("stripe_rows", [1, 5, 16, 40])
def test_stripes_round_trip(stripe_rows):
    indices = smooth_map(40, 30, 12)
    np.testing.assert_array_equal(round_trip(indices, 12, stripe_rows=stripe_rows), indices)


def test_photo_sized_maps_are_one_stripe():
    assert default_stripe_rows(768, 512) == 512
    assert default_stripe_rows(100, 1) == 1


def test_large_maps_are_split_into_stripes_of_at_least_a_quarter_megapixel():
    rows = default_stripe_rows(1920, 1080)
    assert 1 < -(-1080 // rows) <= 8
    assert rows * 1920 >= 1 << 18


@pytest.mark.parametrize(
    "width, height", [(1920, 1080), (1280, 720), (3840, 2160), (1000, 700), (800, 700), (100_000, 7), (4096, 17), (9, 9)]
)
def test_default_stripes_are_whole_blocks_so_blocks_tile_the_frame_from_its_top(width, height):
    rows = default_stripe_rows(width, height)
    assert rows == height or rows % BLOCK_SIZE == 0
    assert 1 <= -(-height // rows) <= MAX_STRIPES
    assert block_row_tops(height, rows).tolist() == [*range(0, height, BLOCK_SIZE), height]


def test_block_rows_restart_at_each_stripe_top():
    assert block_row_tops(50, 20).tolist() == [0, 16, 20, 36, 40, 50]


def test_multi_stripe_map_round_trips():
    indices = smooth_map(700, 800, 64)
    assert default_stripe_rows(800, 700) < 700
    np.testing.assert_array_equal(round_trip(indices, 64), indices)


def test_inter_round_trip_with_changes_everywhere():
    previous = smooth_map(50, 70, 32, seed=1)
    current = previous.copy()
    rng = np.random.default_rng(2)
    changed = rng.random(current.shape) < 0.1
    current[changed] = rng.integers(0, 32, changed.sum())
    np.testing.assert_array_equal(round_trip(current, 32, previous), current)


@pytest.mark.parametrize("stripe_rows", [7, 16, 33])
def test_inter_round_trip_with_stripes(stripe_rows):
    previous = smooth_map(60, 45, 20, seed=3)
    current = np.roll(previous, 3, axis=1)
    np.testing.assert_array_equal(round_trip(current, 20, previous, stripe_rows=stripe_rows), current)


def test_unchanged_frame_costs_a_few_bytes():
    frame = smooth_map(720, 1280, 64)
    assert len(encode_index_map(frame, 64, frame)) <= 32


def test_one_changed_block_costs_little_more_than_an_unchanged_frame():
    previous = smooth_map(480, 640, 64)
    current = previous.copy()
    current[100:108, 200:208] = (current[100:108, 200:208] + 1) % 64
    unchanged = len(encode_index_map(previous, 64, previous))
    assert len(encode_index_map(current, 64, previous)) < unchanged + 80


def test_inter_coding_beats_intra_on_a_slowly_changing_frame():
    previous = smooth_map(120, 160, 64)
    current = previous.copy()
    current[40:60, 50:90] = smooth_map(20, 40, 64, seed=9)
    assert len(encode_index_map(current, 64, previous)) < len(encode_index_map(current, 64)) / 4


def test_encoding_is_deterministic():
    indices = smooth_map(64, 64, 64)
    assert encode_index_map(indices, 64) == encode_index_map(indices.copy(), 64)


def test_inter_data_without_the_previous_frame_is_refused():
    frame = smooth_map(20, 20, 8)
    data = encode_index_map(frame, 8, frame)
    with pytest.raises(FormatError, match="previous frame"):
        decode_index_map(data, 20, 20, 8)


def test_intra_data_ignores_a_previous_frame():
    frame = smooth_map(20, 20, 8)
    data = encode_index_map(frame, 8)
    np.testing.assert_array_equal(decode_index_map(data, 20, 20, 8, np.zeros_like(frame)), frame)


def test_every_truncation_is_reported_as_format_error():
    frame = smooth_map(24, 24, 16)
    data = encode_index_map(frame, 16, stripe_rows=8)
    for size in range(len(data)):
        with pytest.raises(FormatError):
            decode_index_map(data[:size], 24, 24, 16)


def test_trailing_bytes_are_reported_as_format_error():
    frame = smooth_map(24, 24, 16)
    with pytest.raises(FormatError):
        decode_index_map(encode_index_map(frame, 16) + b"\0", 24, 24, 16)


@given(position=st.integers(0, 10_000), value=st.integers(0, 255), stripe_rows=st.sampled_from([8, 24]))
@SETTINGS
def test_corrupt_bytes_give_format_error_or_a_valid_map(position, value, stripe_rows):
    frame = smooth_map(24, 24, 10)
    data = bytearray(encode_index_map(frame, 10, stripe_rows=stripe_rows))
    data[position % len(data)] ^= value or 1
    try:
        decoded = decode_index_map(bytes(data), 24, 24, 10)
    except FormatError:
        return
    assert decoded.shape == (24, 24) and decoded.max() < 10


@given(data=st.binary(max_size=200), k=st.integers(1, 256))
@SETTINGS
def test_arbitrary_bytes_never_raise_anything_but_format_error(data, k):
    try:
        decoded = decode_index_map(data, 13, 11, k)
    except FormatError:
        return
    assert decoded.shape == (11, 13) and int(decoded.max()) < k


def test_a_huge_declared_size_is_refused_before_allocation():
    with pytest.raises(LimitError):
        decode_index_map(b"\0" * 16, 100_000, 100_000, 16)


def test_a_size_above_a_custom_limit_is_refused():
    frame = smooth_map(20, 20, 8)
    with pytest.raises(LimitError):
        decode_index_map(encode_index_map(frame, 8), 20, 20, 8, max_pixels=399)


@pytest.mark.parametrize("k", [0, 257, 2.5, True])
def test_palette_size_outside_1_to_256_is_refused(k):
    with pytest.raises(InputError):
        encode_index_map(np.zeros((2, 2), np.uint8), k)


def test_an_index_not_below_k_is_refused():
    with pytest.raises(InputError, match="0..3"):
        encode_index_map(np.array([[0, 4]], np.uint8), 4)


def test_a_previous_frame_of_another_shape_is_refused():
    with pytest.raises(InputError, match="shape"):
        encode_index_map(np.zeros((4, 4), np.uint8), 2, np.zeros((4, 5), np.uint8))


def test_a_map_that_is_not_two_dimensional_is_refused():
    with pytest.raises(InputError, match="2-D"):
        encode_index_map(np.zeros((2, 2, 3), np.uint8), 2)


def test_any_integer_dtype_is_accepted():
    indices = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.testing.assert_array_equal(round_trip(indices, 12), indices)


@pytest.mark.parametrize("stripe_rows", [0, 21, 2.0])
def test_stripe_heights_outside_the_map_are_refused(stripe_rows):
    with pytest.raises(InputError, match="stripe_rows"):
        encode_index_map(np.zeros((20, 4), np.uint8), 2, stripe_rows=stripe_rows)


# --- motion (mode 2) ------------------------------------------------------------------------------


def moved(previous: np.ndarray, vectors: np.ndarray, stripe_rows: int) -> np.ndarray:
    """``previous`` with each block moved by its vector: what mode 2 predicts."""
    padded = padded_map(*previous.shape)
    map_view(padded)[...] = previous
    return map_view(motion_reference(padded, vectors, stripe_rows, padded_map(*previous.shape))).copy()


@given(
    height=st.integers(1, 45),
    width=st.integers(1, 45),
    k=st.sampled_from([1, 2, 5, 17, 256]),
    stripe_fraction=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
@SETTINGS
def test_motion_round_trip_with_random_vectors(height, width, k, stripe_fraction, seed):
    stripe_rows = 1 + int(stripe_fraction * (height - 1))
    rng = np.random.default_rng(seed)
    previous = rng.integers(0, k, (height, width), dtype=np.uint8)
    low, high = MOTION_RANGE
    vectors = rng.integers(low, high + 1, motion_vector_shape(height, width, stripe_rows), dtype=np.int8)
    # The moved previous map with changes here and there: unchanged and changed blocks both.
    current = moved(previous, vectors, stripe_rows)
    changed = rng.random(current.shape) < rng.choice([0.0, 0.01, 0.3])
    current[changed] = rng.integers(0, k, changed.sum())
    data = encode_index_map(current, k, previous, stripe_rows=stripe_rows, vectors=vectors)
    assert data[0] == 2
    np.testing.assert_array_equal(decode_index_map(data, width, height, k, previous), current)


@pytest.mark.parametrize("stripe_rows", [7, 16, 20, 60])
def test_motion_round_trip_of_a_photo_like_map_with_stripes(stripe_rows):
    previous = smooth_map(60, 45, 20, seed=4)
    shape = motion_vector_shape(60, 45, stripe_rows)
    vectors = np.random.default_rng(stripe_rows).integers(-16, 16, shape, dtype=np.int8)
    current = smooth_map(60, 45, 20, seed=5)
    np.testing.assert_array_equal(round_trip(current, 20, previous, stripe_rows=stripe_rows, vectors=vectors), current)


def test_each_motion_coded_stripe_decodes_alone_from_the_previous_maps_same_rows():
    height, width, k, stripe_rows = 50, 40, 12, 20
    previous = smooth_map(height, width, k, seed=6)
    vectors = np.random.default_rng(6).integers(-16, 16, motion_vector_shape(height, width, stripe_rows), dtype=np.int8)
    current = moved(previous, vectors, stripe_rows)
    current[10:30, 5:9] = 0
    data = encode_index_map(current, k, previous, stripe_rows=stripe_rows, vectors=vectors)
    count = -(-height // stripe_rows)
    lengths = [int.from_bytes(data[5 + 4 * i : 9 + 4 * i], "little") for i in range(count - 1)]
    start = 5 + 4 * (count - 1)
    ends = [start + sum(lengths[: i + 1]) for i in range(count - 1)] + [len(data)]
    for stripe, end in enumerate(ends):
        top, bottom = stripe * stripe_rows, min((stripe + 1) * stripe_rows, height)
        alone = bytes([2]) + (bottom - top).to_bytes(4, "little") + data[start:end]
        decoded = decode_index_map(alone, width, bottom - top, k, previous[top:bottom])
        np.testing.assert_array_equal(decoded, current[top:bottom])
        start = end


def test_a_uniformly_moved_map_costs_a_few_bytes_in_mode_2():
    previous = smooth_map(120, 160, 64)
    dx, dy = 5, -3
    rows = np.clip(np.arange(120) + dy, 0, 119)
    columns = np.clip(np.arange(160) + dx, 0, 159)
    current = previous[np.ix_(rows, columns)]
    vectors = np.zeros(motion_vector_shape(120, 160, default_stripe_rows(160, 120)), np.int8)
    vectors[...] = dx, dy
    motion = encode_index_map(current, 64, previous, vectors=vectors)
    assert len(motion) < 32
    assert len(motion) < len(encode_index_map(current, 64, previous)) / 100
    np.testing.assert_array_equal(decode_index_map(motion, 160, 120, 64, previous), current)


def test_zero_vectors_cost_next_to_nothing_over_mode_1():
    previous = smooth_map(40, 50, 16, seed=7)
    current = previous.copy()
    current[5:25, 10:30] = smooth_map(20, 20, 16, seed=8)
    vectors = np.zeros(motion_vector_shape(40, 50, 16), np.int8)
    motion = encode_index_map(current, 16, previous, stripe_rows=16, vectors=vectors)
    assert motion[0] == 2
    assert len(motion) <= len(encode_index_map(current, 16, previous, stripe_rows=16)) + 4
    np.testing.assert_array_equal(decode_index_map(motion, 50, 40, 16, previous), current)


@pytest.mark.parametrize("component", [MOTION_RANGE[0] - 1, MOTION_RANGE[1] + 1, 127, -128])
def test_motion_vectors_out_of_range_are_refused(component):
    frame = smooth_map(20, 20, 8)
    vectors = np.zeros(motion_vector_shape(20, 20, 20), np.int16)
    vectors[1, 0, 1] = component
    with pytest.raises(InputError, match="motion vector"):
        encode_index_map(frame, 8, frame, vectors=vectors)


@pytest.mark.parametrize("shape", [(2, 2), (1, 2, 2), (2, 1, 2), (2, 2, 1), (3, 2, 2), (2, 2, 2, 1)])
def test_motion_vectors_of_the_wrong_shape_are_refused(shape):
    frame = smooth_map(20, 20, 8)  # one stripe: 2 block rows of 2 blocks
    with pytest.raises(InputError, match="motion vectors"):
        encode_index_map(frame, 8, frame, stripe_rows=20, vectors=np.zeros(shape, np.int8))


def test_motion_vectors_that_are_not_integers_are_refused():
    frame = smooth_map(20, 20, 8)
    with pytest.raises(InputError, match="motion vectors"):
        encode_index_map(frame, 8, frame, stripe_rows=20, vectors=np.zeros((2, 2, 2)))


def test_motion_vectors_without_a_previous_frame_are_refused():
    frame = smooth_map(20, 20, 8)
    with pytest.raises(InputError, match="previous"):
        encode_index_map(frame, 8, vectors=np.zeros((2, 2, 2), np.int8))


def test_motion_data_without_the_previous_frame_is_refused():
    frame = smooth_map(20, 20, 8)
    data = encode_index_map(frame, 8, frame, vectors=np.ones((2, 2, 2), np.int8))
    assert data[0] == 2
    with pytest.raises(FormatError, match="previous frame"):
        decode_index_map(data, 20, 20, 8)


def test_every_truncation_of_motion_data_is_reported_as_format_error():
    previous = smooth_map(24, 24, 16)
    vectors = np.random.default_rng(3).integers(-16, 16, motion_vector_shape(24, 24, 8), dtype=np.int8)
    current = smooth_map(24, 24, 16, seed=3)
    data = encode_index_map(current, 16, previous, stripe_rows=8, vectors=vectors)
    for size in range(len(data)):
        with pytest.raises(FormatError):
            decode_index_map(data[:size], 24, 24, 16, previous)


def test_an_unknown_mode_is_refused():
    frame = smooth_map(20, 20, 8)
    data = bytearray(encode_index_map(frame, 8, frame))
    data[0] = 3
    with pytest.raises(FormatError, match="mode 3"):
        decode_index_map(bytes(data), 20, 20, 8, frame)
