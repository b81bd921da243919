"""The shared test vectors (tests/vectors/): decoding gives the expected arrays, encoding the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kmq.codec import decode_image, decode_index_map, encode_image, encode_index_map
from kmq.codec.entropy import motion_vector_shape
from kmq.errors import FormatError

VECTORS = Path(__file__).resolve().parent / "vectors"
MANIFEST = json.loads((VECTORS / "vectors.json").read_text())
IMAGES = [entry for entry in MANIFEST if entry["kind"] == "image"]
INDEX_DATA = [entry for entry in MANIFEST if entry["kind"] == "index_data"]


def raw(name: str, *shape: int) -> np.ndarray:
    return np.fromfile(VECTORS / name, np.uint8).reshape(shape)


def previous_of(entry: dict) -> np.ndarray | None:
    return raw(entry["previous"], entry["height"], entry["width"]) if entry["previous"] else None


def vectors_of(entry: dict) -> np.ndarray | None:
    """The motion vectors a mode-2 vector was coded with: (block rows, blocks, 2) int8."""
    if not entry.get("vectors"):
        return None
    shape = motion_vector_shape(entry["height"], entry["width"], entry["stripe_rows"])
    return np.fromfile(VECTORS / entry["vectors"], np.int8).reshape(shape)


def test_the_manifest_covers_images_and_inter_and_motion_coded_index_data():
    assert {entry["method"] for entry in IMAGES} == {"cm", "deflate", "stored"}
    modes = {(VECTORS / entry["file"]).read_bytes()[0] for entry in INDEX_DATA}
    assert modes == {0, 1, 2}
    for entry in INDEX_DATA:
        mode = (VECTORS / entry["file"]).read_bytes()[0]
        assert (mode == 2) == (vectors_of(entry) is not None)
        assert (mode != 0) == (entry["previous"] is not None)


@pytest.mark.parametrize("entry", IMAGES, ids=lambda entry: entry["name"])
def test_image_vector_decodes_to_its_arrays(entry):
    decoded = decode_image((VECTORS / entry["file"]).read_bytes())
    np.testing.assert_array_equal(decoded.palette, raw(entry["palette"], entry["k"], entry["channels"]))
    np.testing.assert_array_equal(decoded.indices, raw(entry["indices"], entry["height"], entry["width"]))
    assert decoded.method == entry["method"]


@pytest.mark.parametrize("entry", IMAGES, ids=lambda entry: entry["name"])
def test_image_vector_is_what_the_encoder_writes(entry):
    palette = raw(entry["palette"], entry["k"], entry["channels"])
    indices = raw(entry["indices"], entry["height"], entry["width"])
    assert encode_image(palette, indices, method=entry["method"]) == (VECTORS / entry["file"]).read_bytes()


@pytest.mark.parametrize("entry", INDEX_DATA, ids=lambda entry: entry["name"])
def test_index_data_vector_decodes_to_its_map(entry):
    data = (VECTORS / entry["file"]).read_bytes()
    decoded = decode_index_map(data, entry["width"], entry["height"], entry["k"], previous_of(entry))
    np.testing.assert_array_equal(decoded, raw(entry["indices"], entry["height"], entry["width"]))


@pytest.mark.parametrize("entry", INDEX_DATA, ids=lambda entry: entry["name"])
def test_index_data_vector_is_what_the_encoder_writes(entry):
    indices = raw(entry["indices"], entry["height"], entry["width"])
    coded = encode_index_map(
        indices, entry["k"], previous_of(entry), stripe_rows=entry["stripe_rows"], vectors=vectors_of(entry)
    )
    assert coded == (VECTORS / entry["file"]).read_bytes()


@pytest.mark.parametrize("entry", [entry for entry in INDEX_DATA if entry["previous"]], ids=lambda entry: entry["name"])
def test_inter_coded_index_data_vector_without_its_previous_map_is_refused(entry):
    data = (VECTORS / entry["file"]).read_bytes()
    with pytest.raises(FormatError, match="previous frame"):
        decode_index_map(data, entry["width"], entry["height"], entry["k"])


@pytest.mark.parametrize("entry", INDEX_DATA, ids=lambda entry: entry["name"])
def test_index_data_vector_cut_short_is_corrupt(entry):
    data = (VECTORS / entry["file"]).read_bytes()
    for size in range(len(data)):
        with pytest.raises(FormatError):
            decode_index_map(data[:size], entry["width"], entry["height"], entry["k"], previous_of(entry))
