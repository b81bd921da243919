"""Index-map coding side by side: kmq's context model against zlib and pngquant's PNG8, and its speed.

Run: ``python benchmarks/bench_codec.py [--runs 5] [--json OUT]``. Six photographs that installed
packages ship (China resized to 768×512 as in the design notes) are quantized by
``kmq.quant.quantize_pixels`` at K = 16, 64, 256 without dithering. Sizes are whole files in bits
per pixel: ``.kmq`` with the context model (cm) and with zlib level 9 on the packed map
(deflate); pngquant's PNG8 of the same photo at the same K (``--nofs --speed 1``), and, since
pngquant picks its own palette and map, cm on pngquant's own map too (the same map under both
coders). Speed is Mpixel/s of one core (one stripe, one thread), the median of ``--runs`` runs
timed by the thread's CPU time (so that other processes on a shared machine count less);
then inter frames of the shared video clip (palette of the first frame kept for the next ones,
as a warm-started palette does), and an unchanged frame.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from kmq.codec import decode_image, decode_index_map, encode_image, encode_index_map
from kmq.quant import quantize_pixels, remap

CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "bbb-480p-10s.mp4"
KS = (16, 64, 256)


def photos() -> dict[str, np.ndarray]:
    """The shipped photographs, H×W×3 uint8."""
    import matplotlib.cbook
    import skimage.data
    import sklearn.datasets

    china = Image.fromarray(sklearn.datasets.load_sample_image("china.jpg")).resize((768, 512), Image.BICUBIC)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        hopper = np.asarray(Image.open(file).convert("RGB"))
    return {
        "china768": np.asarray(china),
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "rocket": skimage.data.rocket(),
        "grace_hopper": hopper,
    }


def pngquant(photo: np.ndarray, k: int) -> bytes | None:
    if shutil.which("pngquant") is None:
        return None
    source = io.BytesIO()
    Image.fromarray(photo).save(source, format="PNG")
    command = ["pngquant", "--nofs", "--speed", "1", str(k), "-"]
    return subprocess.run(command, input=source.getvalue(), capture_output=True, check=True).stdout


def png8_arrays(png: bytes) -> tuple[np.ndarray, np.ndarray]:
    image = Image.open(io.BytesIO(png))
    indices = np.asarray(image)
    colours = int(indices.max()) + 1
    return np.array(image.getpalette()[: 3 * colours], np.uint8).reshape(colours, 3), indices


def median_seconds(function, runs: int) -> float:
    """Median CPU seconds of this thread over ``runs`` calls (the coding runs in this thread)."""
    times = []
    for _ in range(runs):
        start = time.thread_time()
        function()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def still_rows(runs: int) -> list[dict]:
    rows = []
    for name, photo in photos().items():
        for k in KS:
            palette, indices = quantize_pixels(photo, k)
            pixels = indices.size
            cm = encode_image(palette, indices, method="cm")
            row = dict(photo=name, k=k, pixels=pixels, cm_bpp=8 * len(cm) / pixels,
                       deflate_bpp=8 * len(encode_image(palette, indices, method="deflate")) / pixels)  # fmt: skip
            png = pngquant(photo, k)
            if png is not None:
                row["png8_bpp"] = 8 * len(png) / pixels
                row["cm_on_png8_map_bpp"] = 8 * len(encode_image(*png8_arrays(png))) / pixels
            height = indices.shape[0]
            coded = encode_index_map(indices, len(palette), stripe_rows=height)
            encode = median_seconds(lambda: encode_index_map(indices, len(palette), stripe_rows=height), runs)
            decode = median_seconds(lambda: decode_index_map(coded, indices.shape[1], height, len(palette)), runs)
            decode_file = median_seconds(lambda: decode_image(cm), runs)
            row.update(encode_mpx_s=pixels / encode / 1e6, decode_mpx_s=pixels / decode / 1e6,
                       decode_file_mpx_s=pixels / decode_file / 1e6)  # fmt: skip
            rows.append(row)
            print(
                f"{name:13s} K={k:3d}  cm {row['cm_bpp']:.3f}  deflate {row['deflate_bpp']:.3f}  "
                f"png8 {row.get('png8_bpp', float('nan')):.3f}  "
                f"cm(png8 map) {row.get('cm_on_png8_map_bpp', float('nan')):.3f} bpp"
                f"   encode {row['encode_mpx_s']:5.1f}  decode {row['decode_mpx_s']:5.1f} Mpx/s",
                flush=True,
            )
    return rows


def clip_maps(k: int, frames: int) -> list[np.ndarray]:
    import av

    with av.open(str(CLIP)) as container:
        images = [frame.to_ndarray(format="rgb24") for _, frame in zip(range(frames), container.decode(video=0))]
    palette, first = quantize_pixels(images[0], k)
    return [first] + [remap(image, palette) for image in images[1:]]


def inter_rows(runs: int) -> dict:
    if not CLIP.is_file():
        print(f"(no clip at {CLIP}: inter frames skipped)")
        return {}
    maps = clip_maps(64, 48)
    height, width = maps[0].shape
    sizes, encode_times, decode_times = [], [], []
    for previous, current in zip(maps, maps[1:]):
        coded = encode_index_map(current, 64, previous, stripe_rows=height)
        sizes.append(len(coded))
        encode_times.append(median_seconds(lambda: encode_index_map(current, 64, previous, stripe_rows=height), runs))
        decode_times.append(median_seconds(lambda: decode_index_map(coded, width, height, 64, previous), runs))
    unchanged = encode_index_map(maps[-1], 64, maps[-1], stripe_rows=height)
    unchanged_decode = median_seconds(lambda: decode_index_map(unchanged, width, height, 64, maps[-1]), runs)
    intra = len(encode_index_map(maps[0], 64))
    pixels = width * height
    result = dict(
        frame=f"{width}x{height}", k=64, intra_bytes=intra, inter_bytes_mean=statistics.mean(sizes),
        inter_encode_mpx_s=pixels / statistics.median(encode_times) / 1e6,
        inter_decode_mpx_s=pixels / statistics.median(decode_times) / 1e6,
        unchanged_bytes=len(unchanged), unchanged_decode_mpx_s=pixels / unchanged_decode / 1e6,
    )  # fmt: skip
    print(
        f"clip {width}x{height} K=64: keyframe {intra} B, inter frames {result['inter_bytes_mean']:.0f} B on average "
        f"(encode {result['inter_encode_mpx_s']:.0f}, decode {result['inter_decode_mpx_s']:.0f} Mpx/s); "
        f"unchanged frame {len(unchanged)} B (decode {result['unchanged_decode_mpx_s']:.0f} Mpx/s)"
    )
    return result


def summary(rows: list[dict]) -> None:
    for k in KS:
        chosen = [row for row in rows if row["k"] == k]
        pixels = sum(row["pixels"] for row in chosen)

        def mean(key: str) -> float:
            return sum(row[key] * row["pixels"] for row in chosen) / pixels if key in chosen[0] else float("nan")

        print(
            f"all K={k:3d}: cm {mean('cm_bpp'):.3f}  deflate {mean('deflate_bpp'):.3f}  png8 {mean('png8_bpp'):.3f}  "
            f"cm(png8 map) {mean('cm_on_png8_map_bpp'):.3f} bpp;  cm/png8 {mean('cm_bpp') / mean('png8_bpp'):.2f}  "
            f"speed: encode {statistics.median(r['encode_mpx_s'] for r in chosen):.1f}, "
            f"decode {statistics.median(r['decode_mpx_s'] for r in chosen):.1f} Mpx/s (median over photos)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    warm_up = np.zeros((2, 2), np.uint8)  # compile (or load) the kernels before timing
    decode_index_map(encode_index_map(warm_up, 2, warm_up), 2, 2, 2, warm_up)
    rows = still_rows(args.runs)
    summary(rows)
    video = inter_rows(args.runs)
    if args.json:
        args.json.write_text(json.dumps(dict(stills=rows, video=video), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
