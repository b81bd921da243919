"""Video side by side: kmq against FFmpeg's GIF (global and per-frame palettes), Motion-JPEG and H.264.

Run: ``python benchmarks/bench_video.py [--clip PATH] [--runs 3] [--json OUT]``. Every method
encodes the same clip (by default ../shared/media/bbb-480p-10s.mp4) at K=64 without dithering.
Sizes are bytes on disk; PSNR is over all frames together (the mean squared error of every RGB
sample against the source frames, decoded through the same PyAV conversion); encode speed is
frames per second of wall time for the whole job (source decoding included), the median of
``--runs`` runs interleaved so that changes of machine load hit every method alike. Then kmq
alone: 1280×720 input (the clip scaled up, in process and from a pre-scaled file), where its
time goes (wall time per stage, and the CPU time of all its threads per frame, which other
work on a shared machine does not inflate), and the peak memory of encoding the clip and the
clip looped ten times. The load average before and after is printed: on a busy machine, wall
times say more about the neighbours than about the code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "media" / "bbb-480p-10s.mp4"
K = 64
LOOPS = 10

FFMPEG_METHODS = {
    "GIF-64 global palette": (
        ".gif",
        ["-vf", f"split[a][b];[a]palettegen=max_colors={K}[p];[b][p]paletteuse=dither=none"],
    ),
    "GIF-64 per-frame palettes": (
        ".gif",
        ["-vf", f"split[a][b];[a]palettegen=max_colors={K}:stats_mode=single[p];[b][p]paletteuse=dither=none:new=1"],
    ),
    "Motion-JPEG q5": (".avi", ["-c:v", "mjpeg", "-q:v", "5"]),
    "H.264 crf 23": (".mp4", ["-c:v", "libx264", "-crf", "23"]),
}


def frames_of(path: Path) -> Iterator[np.ndarray]:
    """Every frame of a video as RGB, through PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def psnr_against(source: Path, frames: Iterator[np.ndarray]) -> tuple[float, int]:
    """PSNR over all frames (one mean squared error over every sample) and the frames compared."""
    squared = 0.0
    samples = 0
    count = 0
    for reference, test in zip(frames_of(source), frames):
        difference = reference.astype(np.int32) - test
        squared += float(np.einsum("ijk,ijk->", difference, difference, dtype=np.float64))
        samples += difference.size
        count += 1
    return 10.0 * np.log10(255.0**2 / (squared / samples)), count


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def run_ffmpeg(clip: Path, out: Path, arguments: list[str]) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), *arguments, str(out)], check=True)


def kmq_encode(clip: Path, out: Path, **options) -> object:
    from kmq.media.video import encode_video

    return encode_video(clip, out, k=K, force=True, **options)


def count_frames(path: Path) -> int:
    return sum(1 for _ in frames_of(path))


# ---------------------------------------------------------------- side by side


def side_by_side(clip: Path, work: Path, runs: int, frames: int) -> list[dict]:
    """Each method ``runs`` times, interleaved; sizes, PSNR and median encode speed."""
    from kmq.media.video import open_video

    jobs: dict[str, Callable[[], object]] = {}
    outputs: dict[str, Path] = {}
    for name, (suffix, arguments) in FFMPEG_METHODS.items():
        outputs[name] = work / (name.split()[0].lower() + "-" + str(len(outputs)) + suffix)
        jobs[name] = lambda out=outputs[name], arguments=arguments: run_ffmpeg(clip, out, arguments)
    outputs["kmq K=64"] = work / "kmq.kmqv"
    summaries = []
    jobs["kmq K=64"] = lambda: summaries.append(kmq_encode(clip, outputs["kmq K=64"]))
    kmq_encode(clip, work / "warm-up.kmqv", max_frames=3)  # compile and load once, outside the timings
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(runs):
        for name, job in jobs.items():
            seconds[name].append(timed(job))
    rows = []
    for name, out in outputs.items():
        if name.startswith("kmq"):
            summary = summaries[-1]
            with open_video(out) as video:
                psnr, compared = psnr_against(clip, (frame.to_array() for frame in video))
            assert abs(psnr - summary.psnr) < 0.01, "the decoder disagrees with the encoder"
            extra = {"keyframes": summary.keyframes, "refits": summary.refits, "bits_per_pixel": summary.bits_per_pixel}
        else:
            psnr, compared = psnr_against(clip, frames_of(out))
            extra = {}
        rows.append(
            {
                "method": name,
                "bytes": out.stat().st_size,
                "psnr_db": psnr,
                "frames_compared": compared,
                "encode_seconds": statistics.median(seconds[name]),
                "encode_fps": frames / statistics.median(seconds[name]),
                "runs_seconds": seconds[name],
                **extra,
            }
        )
    return rows


# ---------------------------------------------------------------- kmq at 1280×720


def at_720p(clip: Path, work: Path, runs: int) -> dict:
    """Encode speed on 1280×720 input, and where the time goes."""
    from kmq.media.video_encoder import VideoEncoder
    from kmq.media.video_source import VideoSource

    scaled = work / "clip-720p.mp4"
    run_ffmpeg(clip, scaled, ["-vf", "scale=1280:720", "-c:v", "libx264", "-crf", "16", "-preset", "fast"])
    in_process = []
    from_file = []
    cpu_ms = []
    for _ in range(runs):
        started = time.process_time()
        summary = kmq_encode(clip, work / "720-a.kmqv", size=(1280, 720))
        cpu_ms.append(1000 * (time.process_time() - started) / summary.frames)
        in_process.append(summary.fps)
        from_file.append(kmq_encode(scaled, work / "720-b.kmqv").fps)

    def source_fps(path: Path, size: tuple[int, int] | None) -> float:
        started = time.perf_counter()
        with VideoSource(path, size=size) as source:
            count = sum(1 for _ in source)
        return count / (time.perf_counter() - started)

    decode_scale = statistics.median(source_fps(clip, (1280, 720)) for _ in range(runs))
    decode_file = statistics.median(source_fps(scaled, None) for _ in range(runs))
    # The encoder alone, on frames already in memory (the first 48, in order).
    with VideoSource(clip, size=(1280, 720), max_frames=48) as source:
        frames = [frame.pixels for frame in source]
    encoder_fps = []
    for _ in range(runs):
        encoder = VideoEncoder(1280, 720, k=K, frame_rate=24)
        started = time.perf_counter()
        for frame in frames:
            encoder.encode(frame)
        encoder_fps.append(len(frames) / (time.perf_counter() - started))
    stage_ms = stage_times(frames)
    return {
        "encode_fps_scaling_in_process": statistics.median(in_process),
        "encode_fps_from_720p_file": statistics.median(from_file),
        "cpu_ms_per_frame_all_threads": statistics.median(cpu_ms),
        "source_decode_and_scale_fps": decode_scale,
        "source_decode_720p_file_fps": decode_file,
        "encoder_only_fps": statistics.median(encoder_fps),
        "encoder_stage_ms": stage_ms,
    }


def stage_times(frames: list[np.ndarray]) -> dict[str, float]:
    """Median milliseconds per frame of each encoder stage (delta frames only)."""
    from kmq.media import video_encoder

    timings: dict[str, list[float]] = {}
    originals = {}

    def wrap(owner, name, label):
        original = getattr(owner, name)
        originals[(owner, name)] = original

        def measured(*args, **kwargs):
            started = time.perf_counter()
            result = original(*args, **kwargs)
            timings.setdefault(label, []).append(1000 * (time.perf_counter() - started))
            return result

        setattr(owner, name, measured)

    wrap(video_encoder.VideoEncoder, "_histogram", "histogram (sampled)")
    wrap(video_encoder.VideoEncoder, "_continue_palette", "k-means from last palette")
    wrap(video_encoder.VideoEncoder, "_map", "indices and motion search")
    wrap(video_encoder.entropy, "encode_padded_map", "entropy coding")
    try:
        encoder = video_encoder.VideoEncoder(frames[0].shape[1], frames[0].shape[0], k=K, frame_rate=24)
        total = []
        for frame in frames:
            started = time.perf_counter()
            encoder.encode(frame)
            total.append(1000 * (time.perf_counter() - started))
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)
    stages = {label: statistics.median(values[1:]) for label, values in timings.items()}
    stages["whole frame"] = statistics.median(total[1:])
    return stages


# ---------------------------------------------------------------- memory


_MEASURE_RSS = """
import resource, sys
from kmq.media.video import encode_video
summary = encode_video(sys.argv[1], sys.argv[2], k=64, force=True)
print(summary.frames, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory(clip: Path, work: Path) -> dict:
    """Peak resident memory of encoding the clip, and the clip looped ten times, each in a fresh process."""
    looped = work / "looped.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(LOOPS - 1), "-i", str(clip), "-c", "copy", str(looped)],
        check=True,
    )
    result = {}
    for label, path in (("clip", clip), ("looped", looped)):
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE_RSS, str(path), str(work / f"rss-{label}.kmqv")],
            check=True,
            capture_output=True,
            text=True,
        )
        frames, kilobytes = done.stdout.split()
        result[label] = {"frames": int(frames), "peak_rss_mb": int(kilobytes) / 1024}
    result["ratio"] = result["looped"]["peak_rss_mb"] / result["clip"]["peak_rss_mb"]
    return result


# ---------------------------------------------------------------- report


def side_by_side_checks(rows: list[dict]) -> list[tuple[str, bool, str]]:
    """Print the side-by-side table; return the targets that compare kmq with the others."""
    by_name = {row["method"]: row for row in rows}
    kmq = by_name["kmq K=64"]
    per_frame = by_name["GIF-64 per-frame palettes"]
    mjpeg = by_name["Motion-JPEG q5"]
    gif_global = by_name["GIF-64 global palette"]
    print(f"{'method':<28}{'size MB':>10}{'× per-frame GIF':>17}{'PSNR dB':>10}{'encode fps':>12}")
    for row in rows:
        print(
            f"{row['method']:<28}{row['bytes'] / 1e6:>10.2f}{row['bytes'] / per_frame['bytes']:>17.3f}"
            f"{row['psnr_db']:>10.2f}{row['encode_fps']:>12.1f}"
        )
    return [
        (
            "PSNR >= per-frame GIF",
            kmq["psnr_db"] >= per_frame["psnr_db"],
            f"{kmq['psnr_db']:.2f} vs {per_frame['psnr_db']:.2f} dB",
        ),
        (
            "size <= 0.35 × per-frame GIF",
            kmq["bytes"] <= 0.35 * per_frame["bytes"],
            f"{kmq['bytes'] / per_frame['bytes']:.3f}×",
        ),
        (
            "smaller than Motion-JPEG q5",
            kmq["bytes"] < mjpeg["bytes"],
            f"{kmq['bytes'] / 1e6:.2f} vs {mjpeg['bytes'] / 1e6:.2f} MB",
        ),
        (
            "encode >= 3× global-palette GIF",
            kmq["encode_fps"] >= 3 * gif_global["encode_fps"],
            f"{kmq['encode_fps'] / gif_global['encode_fps']:.1f}×",
        ),
    ]


def print_report(rows: list[dict], hd: dict | None, memory: dict | None) -> list[tuple[str, bool, str]]:
    checks = side_by_side_checks(rows) if rows else []
    if hd:
        print("\nkmq on 1280×720 input:")
        for key, value in hd.items():
            if isinstance(value, dict):
                print("  " + key.replace("_", " ") + ": " + ", ".join(f"{k} {v:.1f}" for k, v in value.items()))
            else:
                print(f"  {key.replace('_', ' ')}: {value:.1f}")
        fps = hd["encode_fps_scaling_in_process"]
        checks.append(("1280×720 >= 30 fps", fps >= 30, f"{fps:.1f} fps (scaled in process)"))
    if memory:
        print(
            f"\npeak RSS: clip {memory['clip']['peak_rss_mb']:.0f} MB ({memory['clip']['frames']} frames), "
            f"looped ×{LOOPS} {memory['looped']['peak_rss_mb']:.0f} MB ({memory['looped']['frames']} frames)"
        )
        checks.append(("memory looped <= 1.2× clip", memory["ratio"] <= 1.2, f"{memory['ratio']:.3f}×"))
    print("\ntargets:")
    for label, passed, detail in checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {label:<34} {detail}")
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="video to encode (default: the shared clip)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per method (default 3)")
    parser.add_argument(
        "--parts",
        default="side,hd,memory",
        help="comma-separated parts to run: side (side by side), hd (1280×720), memory (default: all)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if not args.clip.is_file():
        print(f"error: clip not found: {args.clip}", file=sys.stderr)
        return 2
    if shutil.which("ffmpeg") is None:
        print("error: the ffmpeg command is needed", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kmq-bench-video-"))
    try:
        frames = count_frames(args.clip)
        print(
            f"{args.clip.name}: {frames} frames; {args.runs} runs per method, medians; {os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.2f}\n"
        )
        parts = {part.strip() for part in args.parts.split(",")}
        rows = side_by_side(args.clip, work, args.runs, frames) if "side" in parts else []
        hd = at_720p(args.clip, work, args.runs) if "hd" in parts else None
        memory = peak_memory(args.clip, work) if "memory" in parts else None
        checks = print_report(rows, hd, memory)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
        if args.json:
            args.json.write_text(
                json.dumps({"rows": rows, "hd": hd, "memory": memory, "targets": checks}, indent=2, default=str)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
