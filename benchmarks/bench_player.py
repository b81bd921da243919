"""What decoding costs the viewer: kmq's JavaScript decoder against the browser's own JPEG decoder.

Run: ``python benchmarks/bench_player.py [--frames 90] [--runs 3] [--json OUT]``.

kmq puts the decoding on the client: a live viewer's page turns each frame packet into RGBA
pixels in JavaScript (docs/FORMAT.md, src/kmq/live/static/). This measures that work per frame
at 1280×720, K = 64, on the frames ``kmq live`` streams — the shared clip scaled by the live
source's own code, and the test pattern — encoded as the live server encodes them for viewers
that keep up (one temporal layer, a keyframe every 8 s), in headless Debian Chromium
(/usr/bin/chromium, driven by Playwright), on the page's thread, one frame after another: parse
and check the packet, decode the index map, look each index up in the palette into an RGBA
buffer a canvas can take.

Side by side, in the same page and run:

- Motion-JPEG at q5 of the very same frames (``ffmpeg -c:v mjpeg -q:v 5``, what a camera or an
  MJPEG stream sends): the browser's native decoder (libjpeg-turbo, C with SIMD), each JPEG
  decoded to a paintable bitmap with ``createImageBitmap`` (awaited, one at a time);
- kmq's Python decoder (``kmq.codec.video.VideoDecoder``, NumPy and numba) in this process, as
  ``kmq watch`` and ``kmq video decode`` use it.

Times are the median over ``--runs`` passes of each pass's mean milliseconds per frame (every
frame, keyframes included, as a viewer decodes them); the table also gives the kmq delta frames'
median. Bytes per frame are printed beside them: the JPEG decoder does less work per pixel, on
four times the bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_live import (  # noqa: E402 (the live benchmark's frames and settings)
    CHROMIUM, CHROMIUM_ARGS, DEFAULT_CLIP, FPS, K, SIZE, clip_frames, missing, testsrc_frames,
)

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "src" / "kmq" / "live" / "static"
ORIGIN = "http://kmq.bench"

#: Decodes every kmq frame (to RGBA) and every JPEG (to a bitmap) ``runs`` times after one pass
#: to warm up; returns each pass's mean milliseconds per frame, and the median kmq delta frame.
PAGE = """async ({ runs }) => {
  const { VideoDecoder } = await import('/static/video-decoder.js');
  const { parseStreamHeader, readRecord } = await import('/static/records.js');
  const load = async (name) => {
    const bytes = new Uint8Array(await (await fetch(`/data/${name}.bin`)).arrayBuffer());
    const spans = await (await fetch(`/data/${name}.json`)).json();
    return spans.map(([at, size]) => bytes.subarray(at, at + size));
  };
  const [header, ...packets] = await load('kmq');
  const jpegs = (await load('jpeg')).map((bytes) => new Blob([bytes], { type: 'image/jpeg' }));
  const stream = parseStreamHeader(readRecord(header).payload);
  const rgba = new Uint8ClampedArray(stream.width * stream.height * 4);
  const result = { kmq: [], jpeg: [], delta: [] };
  for (let run = 0; run <= runs; run++) {
    const decoder = new VideoDecoder(stream);
    let total = 0;
    for (const packet of packets) {
      const started = performance.now();
      const frame = decoder.decode(packet);
      decoder.toRGBA(rgba);
      const ms = performance.now() - started;
      total += ms;
      if (run > 0 && !frame.keyframe) result.delta.push(ms);
    }
    const jpegStarted = performance.now();
    for (const blob of jpegs) {
      const bitmap = await createImageBitmap(blob);
      bitmap.close();
    }
    if (run > 0) {
      result.kmq.push(total / packets.length);
      result.jpeg.push((performance.now() - jpegStarted) / jpegs.length);
    }
  }
  result.delta.sort((a, b) => a - b);
  result.delta = result.delta[result.delta.length >> 1];
  return result;
}"""


def kmq_records(frames: list[np.ndarray]) -> list[bytes]:
    """The stream header and frame packets ``kmq live`` would send for these frames (no drops)."""
    from kmq.live.encoding import LIVE_TIME_BASE
    from kmq.media.video_encoder import VideoEncoder

    encoder = VideoEncoder(
        SIZE[0], SIZE[1], k=K, keyint=8 * FPS, frame_rate=Fraction(FPS), time_base=LIVE_TIME_BASE, temporal_layers=1
    )
    return [encoder.header_bytes] + [
        encoder.encode(frame, number * 1_000_000 // FPS).packet for number, frame in enumerate(frames)
    ]


def jpeg_files(frames: list[np.ndarray], work: Path) -> list[bytes]:
    """Each frame as a JPEG at q5, by FFmpeg's Motion-JPEG encoder (raw RGB piped in)."""
    command = [
        "ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE[0]}x{SIZE[1]}",
        "-r", str(FPS), "-i", "-", "-c:v", "mjpeg", "-q:v", "5", str(work / "%05d.jpg"),
    ]  # fmt: skip
    with subprocess.Popen(command, stdin=subprocess.PIPE) as ffmpeg:
        for frame in frames:
            ffmpeg.stdin.write(frame.tobytes())
        ffmpeg.stdin.close()
        ffmpeg.wait()
    return [path.read_bytes() for path in sorted(work.glob("*.jpg"))]


def python_decode_ms(records: list[bytes], runs: int) -> float:
    """kmq's Python decoder: the median over runs of the mean milliseconds per frame, to an RGB array."""
    from kmq.codec.video import VideoDecoder

    means = []
    for run in range(runs + 1):
        decoder = VideoDecoder(records[0])
        started = time.perf_counter()
        for record in records[1:]:
            decoder.feed(record).to_array()
        if run > 0:
            means.append(1000 * (time.perf_counter() - started) / (len(records) - 1))
    return statistics.median(means)


def blobs(parts: list[bytes]) -> tuple[bytes, str]:
    """Parts back to back, and where each one lies (JSON [[offset, size], ...])."""
    spans = []
    offset = 0
    for part in parts:
        spans.append([offset, len(part)])
        offset += len(part)
    return b"".join(parts), json.dumps(spans)


def in_chromium(records: list[bytes], jpegs: list[bytes], runs: int) -> dict:
    """The page's figures (see PAGE) for one source, in a fresh headless Chromium."""
    from playwright.sync_api import sync_playwright

    kmq_bin, kmq_spans = blobs(records)
    jpeg_bin, jpeg_spans = blobs(jpegs)
    data = {"kmq.bin": kmq_bin, "kmq.json": kmq_spans, "jpeg.bin": jpeg_bin, "jpeg.json": jpeg_spans}

    def serve(route) -> None:
        path = route.request.url[len(ORIGIN) :]
        name = path.split("/", 2)[-1]
        if path.startswith("/static/") and (STATIC / name).is_file():
            route.fulfill(status=200, body=(STATIC / name).read_bytes(), headers={"Content-Type": "text/javascript"})
        elif path.startswith("/data/") and name in data:
            route.fulfill(status=200, body=data[name], headers={"Content-Type": "application/octet-stream"})
        elif path == "/":
            route.fulfill(status=200, body="<!doctype html><title>kmq</title>", headers={"Content-Type": "text/html"})
        else:
            route.fulfill(status=404, body="not found")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route(f"{ORIGIN}/**", serve)
            page.goto(f"{ORIGIN}/")
            return page.evaluate(PAGE, {"runs": runs})
        finally:
            browser.close()


def measure(name: str, frames: list[np.ndarray], runs: int) -> dict:
    records = kmq_records(frames)
    with tempfile.TemporaryDirectory() as work:
        jpegs = jpeg_files(frames, Path(work))
    page = in_chromium(records, jpegs, runs)
    return {
        "source": name,
        "frames": len(frames),
        "kmq_bytes": sum(map(len, records[1:])) / len(frames),
        "jpeg_bytes": sum(map(len, jpegs)) / len(jpegs),
        "kmq_js_ms": statistics.median(page["kmq"]),
        "kmq_js_delta_ms": page["delta"],
        "jpeg_ms": statistics.median(page["jpeg"]),
        "kmq_python_ms": python_decode_ms(records, runs),
    }


def report(rows: list[dict]) -> None:
    width = 12
    print(f"\n{'1280x720, ms a frame':<40}" + "".join(f"{row['source']:>{width}}" for row in rows))
    lines = [
        ("kmq bytes a frame", "kmq_bytes", "{:,.0f}"),
        ("MJPEG q5 bytes a frame", "jpeg_bytes", "{:,.0f}"),
        ("kmq, JavaScript (to RGBA)", "kmq_js_ms", "{:.1f}"),
        ("  delta frames, median", "kmq_js_delta_ms", "{:.1f}"),
        ("MJPEG q5, browser (createImageBitmap)", "jpeg_ms", "{:.1f}"),
        ("kmq JavaScript / browser JPEG", None, "{:.2f}x"),
        ("kmq, Python decoder (to RGB)", "kmq_python_ms", "{:.1f}"),
    ]
    for label, key, form in lines:
        values = [row["kmq_js_ms"] / row["jpeg_ms"] if key is None else row[key] for row in rows]
        print(f"{label:<40}" + "".join(f"{form.format(value):>{width}}" for value in values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=90, help="frames of each source (default 90: 3 s)")
    parser.add_argument("--runs", type=int, default=3, help="timed passes; the report gives medians (default 3)")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="default ../shared/media/bbb-480p-10s.mp4")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    problem = missing(args.clip)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    print(f"{args.frames} frames a source, {args.runs} runs, medians; load average {os.getloadavg()[0]:.2f}")
    sources = {"clip": lambda: clip_frames(args.clip)[: args.frames], "testsrc": lambda: testsrc_frames(args.frames)}
    rows = [measure(name, frames(), args.runs) for name, frames in sources.items()]
    report(rows)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
