"""Write the codec's test vectors: small coded files and the arrays they must decode to.

Run from the repository root: ``python tests/vectors/make_vectors.py``. The maps are drawn by
integer arithmetic alone (no random generator whose stream could change between library
versions), so running it again gives the same files until the format itself changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kmq.codec.entropy import encode_index_map, map_view, motion_reference, padded_map
from kmq.codec.image import encode_image

HERE = Path(__file__).resolve().parent


def noise(height: int, width: int, seed: int) -> np.ndarray:
    """Pseudo-random 32-bit values from an integer hash of (seed, y, x)."""
    y, x = np.mgrid[:height, :width].astype(np.uint64)
    value = (y * np.uint64(73856093)) ^ (x * np.uint64(19349663)) ^ np.uint64(seed * 83492791)
    value = (value * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    value ^= value >> np.uint64(15)
    return ((value * np.uint64(0x85EBCA77)) & np.uint64(0xFFFFFFFF)).astype(np.int64)


def blobs(height: int, width: int, k: int, seed: int) -> np.ndarray:
    """Smooth regions with ragged edges, like a quantized photograph."""
    y, x = np.mgrid[:height, :width]
    field = (x * 7 + y * 3) // 9 + ((x - width // 2) ** 2 + (y - height // 3) ** 2) // (5 * (width + height))
    jitter = noise(height, width, seed) % 5 == 0
    return ((field + jitter) % k).astype(np.uint8)


def palette(k: int, channels: int, seed: int) -> np.ndarray:
    return (noise(k, channels, seed) % 256).astype(np.uint8)


def image_vectors():
    """(name, palette, indices, method)."""
    yield "tiny_k1", palette(1, 3, 1), np.zeros((1, 1), np.uint8), "cm"
    yield "gradient_k5", palette(5, 3, 2), blobs(23, 37, 5, 2), "cm"
    yield "blobs_k64_rgba", palette(64, 4, 3), blobs(48, 80, 64, 3), "cm"
    yield "noise_k256", palette(256, 3, 4), (noise(30, 40, 4) % 256).astype(np.uint8), "cm"
    yield "blobs_k64_stored", palette(64, 3, 5), blobs(17, 19, 64, 5), "stored"
    yield "blobs_k64_deflate", palette(64, 3, 5), blobs(17, 19, 64, 5), "deflate"
    yield "blobs_k12_stored", palette(12, 4, 6), blobs(9, 13, 12, 6), "stored"


# The vectors of frame3_motion: 5 block rows (at rows 0, 16 | 20, 36 | 40: stripes of 20) × 5
# blocks. Every way of coding a vector occurs (the predicted one, the one above, explicit), with
# both range limits, pointing past the frame's left and right edges and past the stripes' tops
# and bottoms.
MOTION = [
    [(-16, -16), (-16, -16), (0, 0), (7, 3), (15, 15)],
    [(-16, -16), (2, -16), (0, 0), (0, 0), (15, 15)],
    [(0, 0), (0, 0), (-3, 15), (-3, 15), (15, -16)],
    [(-16, 0), (0, 0), (-3, 15), (5, -9), (5, -9)],
    [(1, 1), (-16, 15), (-16, 15), (0, 0), (15, -16)],
]


def moved(previous: np.ndarray, vectors: np.ndarray, stripe_rows: int) -> np.ndarray:
    """``previous`` with each block moved by its vector, as mode 2 predicts it."""
    padded = padded_map(*previous.shape)
    map_view(padded)[...] = previous
    return map_view(motion_reference(padded, vectors, stripe_rows, padded_map(*previous.shape))).copy()


def index_map_vectors():
    """(name, indices, k, previous name or None, stripe rows, vectors or None): a short inter-coded sequence."""
    k = 20
    frame0 = blobs(50, 70, k, 7)
    frame1 = frame0.copy()
    frame1[12:30, 20:41] = blobs(18, 21, k, 8)  # a changed area across block edges
    frame1[45:, 66:] = 3  # and a corner in the last, partial blocks
    vectors = np.array(MOTION, np.int8)
    frame3 = moved(frame1, vectors, 20)
    frame3[2:6, 20:27] = blobs(4, 7, k, 10)  # changes in a few blocks; the others are their vector's
    frame3[37, 40:60] = (frame3[37, 40:60] + 1) % k
    frame3[45:, 64:] = 7
    yield "frame0_intra", frame0, k, None, 20, None
    yield "frame1_inter", frame1, k, "frame0_intra", 20, None
    yield "frame2_unchanged", frame1, k, "frame1_inter", 20, None
    yield "frame3_motion", frame3, k, "frame2_unchanged", 20, vectors
    yield "single_stripe_k2", (blobs(33, 47, 2, 9)), 2, None, 33, None


def main() -> None:
    manifest = []
    for name, colours, indices, method in image_vectors():
        (HERE / f"{name}.kmq").write_bytes(encode_image(colours, indices, method=method))
        (HERE / f"{name}.palette").write_bytes(colours.tobytes())
        (HERE / f"{name}.indices").write_bytes(indices.tobytes())
        height, width = indices.shape
        manifest.append(
            dict(name=name, kind="image", file=f"{name}.kmq", width=width, height=height,
                 k=len(colours), channels=colours.shape[1], method=method,
                 palette=f"{name}.palette", indices=f"{name}.indices")
        )  # fmt: skip
    maps = {}
    for name, indices, k, previous, stripe_rows, vectors in index_map_vectors():
        maps[name] = indices
        reference = maps[previous] if previous else None
        coded = encode_index_map(indices, k, reference, stripe_rows=stripe_rows, vectors=vectors)
        (HERE / f"{name}.cm").write_bytes(coded)
        (HERE / f"{name}.indices").write_bytes(indices.tobytes())
        if vectors is not None:
            (HERE / f"{name}.vectors").write_bytes(vectors.tobytes())
        height, width = indices.shape
        manifest.append(
            dict(name=name, kind="index_data", file=f"{name}.cm", width=width, height=height, k=k,
                 previous=f"{previous}.indices" if previous else None, stripe_rows=stripe_rows,
                 vectors=f"{name}.vectors" if vectors is not None else None, indices=f"{name}.indices")
        )  # fmt: skip
    (HERE / "vectors.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
