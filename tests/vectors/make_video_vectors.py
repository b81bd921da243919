"""Write the video test vectors: small .kmqv files and the frames they must decode to.

Run ``python tests/vectors/make_video_vectors.py`` from the repository root; it rewrites the
``video_*`` files and ``video_vectors.json`` beside itself. See README.md.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from kmq.codec.video import KmqvReader, KmqvWriter, parse_frame
from kmq.media.video_encoder import VideoEncoder

HERE = Path(__file__).resolve().parent


def moving_square(count: int, *, width: int = 40, height: int = 37, channels: int = 3) -> list[np.ndarray]:
    """A diagonal gradient under a square that moves right, with a colour that slowly warms.

    The height is not a multiple of 16, so the last block row is partial; the square crosses
    block edges; the warming makes palette updates.
    """
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(count):
        frame = np.zeros((height, width, channels), np.uint8)
        frame[:, :, 0] = (x * 255 // (width - 1)).astype(np.uint8)
        frame[:, :, 1] = (y * 255 // (height - 1)).astype(np.uint8)
        frame[:, :, 2] = 90
        top, left = 10, 3 + 5 * t
        frame[top : top + 12, left : left + 12] = (200 + 6 * t, 40, 60) + ((255,) if channels == 4 else ())
        if channels == 4:
            frame[:, :, 3] = 255
            frame[:, : 4 + t] = 0  # a transparent strip that widens
        frames.append(frame)
    return frames


def write_vector(name: str, frames: list[np.ndarray], **settings) -> dict:
    height, width, channels = frames[0].shape
    encoder = VideoEncoder(width, height, channels=channels, frame_rate=Fraction(25), **settings)
    stream = io.BytesIO()
    writer = KmqvWriter(stream, encoder.header)
    reconstructed = []
    for frame in frames:
        encoded = encoder.encode(frame)
        writer.write_packet(encoded.packet, number=encoded.number, pts=encoded.pts, keyframe=encoded.keyframe)
        reconstructed.append(encoded.reconstructed)
    writer.finish()
    data = stream.getvalue()
    (HERE / f"{name}.kmqv").write_bytes(data)
    (HERE / f"{name}.frames").write_bytes(b"".join(frame.tobytes() for frame in reconstructed))
    reader = KmqvReader(io.BytesIO(data))
    packets = [parse_frame(record, reader.header) for _, record in reader.packets()]
    return {
        "kind": "video",
        "file": f"{name}.kmqv",
        "frames_file": f"{name}.frames",
        "width": width,
        "height": height,
        "channels": channels,
        "frames": len(frames),
        "pts": [packet.pts for packet in packets],
        "time_base": [encoder.header.time_base.numerator, encoder.header.time_base.denominator],
        "keyframes": [packet.number for packet in packets if packet.keyframe],
        "palette_updates": [len(packet.palette_entries) for packet in packets],
        "discardable": [packet.number for packet in packets if packet.discardable],
    }


def main() -> None:
    vectors = [
        write_vector("video_square_k8", moving_square(7), k=8, keyint=5),
        write_vector("video_square_rgba_k6", moving_square(4, channels=4), k=6, keyint=3),
        write_vector("video_square_layers_k8", moving_square(8), k=8, keyint=6, temporal_layers=2),
    ]
    (HERE / "video_vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")
    for vector in vectors:
        print(
            vector["file"],
            f"{vector['frames']} frames, keyframes {vector['keyframes']}, discardable {vector['discardable']}",
        )


if __name__ == "__main__":
    main()
