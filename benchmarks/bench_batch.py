"""Batch throughput on Dask: 1 and 2 worker processes against a plain loop, on 48 real photographs.

Run: ``python benchmarks/bench_batch.py [--runs 5] [--json]``. The 48 photographs are crops and
scales of eight that installed packages ship (scikit-learn, scikit-image, matplotlib), written
as JPEG to a temporary folder. Each configuration runs ``--runs`` times, interleaved so that a
change of machine load hits all of them alike; the table gives medians. Cluster start-up is
measured apart from throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

N_PHOTOS = 48


def source_photos() -> dict[str, np.ndarray]:
    """The eight shipped photographs, H×W×3 uint8."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    from kmq.media.demo import demo_photo_path
    from kmq.media.images import load_image

    return {
        "china": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"),
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "rocket": skimage.data.rocket(),
        "motorcycle_left": skimage.data.stereo_motorcycle()[0],
        "grace_hopper": load_image(demo_photo_path()),
    }


def _variants(pixels: np.ndarray) -> list[np.ndarray]:
    """Six different pictures from one photograph: the whole, two scales and three crops."""
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels)

    def scaled(factor: float) -> np.ndarray:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        return np.asarray(image.resize(size, Image.Resampling.LANCZOS))

    return [
        pixels,
        scaled(0.8),
        scaled(0.6),
        pixels[height // 8 : height - height // 8, width // 8 : width - width // 8],
        pixels[: 2 * height // 3, : 2 * width // 3],
        pixels[height // 3 :, width // 4 :],
    ]


def write_photos(folder: Path) -> list[Path]:
    """Write the 48 photographs as JPEG (quality 90) into ``folder/NAME/VARIANT.jpg``."""
    paths = []
    for name, pixels in source_photos().items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for number, variant in enumerate(_variants(pixels)):
            path = folder / name / f"v{number}.jpg"
            Image.fromarray(np.ascontiguousarray(variant)).save(path, quality=90)
            paths.append(path)
    assert len(paths) == N_PHOTOS
    return paths


def _load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def time_plain_loop(photos: Path, out: Path, k: int) -> tuple[float, float]:
    """Compress every photo in this process, one after the other; (wall seconds, CPU seconds)."""
    from kmq.scale.batch import BatchSettings, compress_files
    from kmq.scale.inputs import plan_batch

    items = plan_batch([photos], out)
    started, cpu = time.perf_counter(), time.process_time()
    rows = compress_files(items, BatchSettings(k=k), [None] * len(items))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert all(row.status == "ok" for row in rows), [row.error for row in rows if row.error]
    return wall, cpu


def time_cluster(client, photos: Path, out: Path, k: int) -> tuple[float, float]:
    """Compress every photo on ``client``'s local cluster; (wall seconds, CPU seconds of workers, scheduler and client)."""
    import psutil

    from kmq.scale.batch import run_batch

    workers = [psutil.Process(pid) for pid in client.run(os.getpid).values()]

    def cpu_now() -> float:
        return time.process_time() + sum(sum(worker.cpu_times()[:2]) for worker in workers)

    cpu = cpu_now()
    summary = run_batch([photos], out, k=k, client=client)
    cpu = cpu_now() - cpu
    assert summary.count("ok") == N_PHOTOS and summary.failed == 0
    return summary.seconds, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each configuration (default 5)")
    parser.add_argument("-k", type=int, default=64, help="palette size (default 64)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    from kmq.scale.cluster import connect, warm_kernels

    warm_kernels()
    root = Path(tempfile.mkdtemp(prefix="kmq-bench-batch-"))
    try:
        photos = root / "photos"
        paths = write_photos(photos)
        megabytes = sum(path.stat().st_size for path in paths) / 1e6
        megapixels = sum(np.prod(Image.open(path).size) for path in paths) / 1e6
        load_before = _load_average()
        startup: dict[int, list[float]] = {1: [], 2: []}
        times: dict[str, list[tuple[float, float]]] = {"loop": [], "1 worker": [], "2 workers": []}
        for run in range(args.runs):
            times["loop"].append(time_plain_loop(photos, root / f"loop-{run}", args.k))
            for workers, label in ((1, "1 worker"), (2, "2 workers")):
                # a fresh cluster each time, so that only its own processes are running and counted
                started = time.perf_counter()
                with connect(workers=workers) as client:
                    startup[workers].append(time.perf_counter() - started)
                    times[label].append(time_cluster(client, photos, root / f"{label}-{run}", args.k))
            for folder in root.glob(f"*-{run}"):
                shutil.rmtree(folder)
        load_after = _load_average()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    wall = {label: statistics.median(run[0] for run in runs) for label, runs in times.items()}
    cpu = {label: statistics.median(run[1] for run in runs) for label, runs in times.items()}
    speedup = wall["1 worker"] / wall["2 workers"]
    overhead_ms = 1000 * (wall["1 worker"] - wall["loop"]) / N_PHOTOS
    cpu_overhead_ms = 1000 * (cpu["1 worker"] - cpu["loop"]) / N_PHOTOS
    result = {
        "photos": N_PHOTOS,
        "megabytes": round(megabytes, 2),
        "megapixels": round(megapixels, 2),
        "k": args.k,
        "runs": args.runs,
        "cores": len(os.sched_getaffinity(0)),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "median_seconds": {label: round(value, 3) for label, value in wall.items()},
        "all_seconds": {label: [round(run[0], 3) for run in runs] for label, runs in times.items()},
        "images_per_second": {label: round(N_PHOTOS / value, 2) for label, value in wall.items()},
        "ms_per_image_loop": round(1000 * wall["loop"] / N_PHOTOS, 1),
        "cpu_ms_per_image": {label: round(1000 * value / N_PHOTOS, 1) for label, value in cpu.items()},
        "speedup_2_vs_1": round(speedup, 3),
        "overhead_ms_per_image_vs_loop": round(overhead_ms, 2),
        "cpu_overhead_ms_per_image_vs_loop": round(cpu_overhead_ms, 2),
        "startup_seconds": {f"{workers} worker{'s' if workers > 1 else ''}": round(statistics.median(values), 2) for workers, values in startup.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"kmq batch: {N_PHOTOS} photographs ({megabytes:.1f} MB JPEG, {megapixels:.1f} Mpixel), K={args.k}, "
              f"{result['cores']} cores, median of {args.runs} runs; load average before {load_before}, after {load_after}")
        print(f"{'configuration':<12} {'seconds':>8} {'images/s':>9} {'MB/s':>6} {'CPU ms/image':>13}  runs (s)")
        for label, value in wall.items():
            runs = " ".join(f"{run[0]:.2f}" for run in times[label])
            print(f"{label:<12} {value:8.2f} {N_PHOTOS / value:9.2f} {megabytes / value:6.2f} {1000 * cpu[label] / N_PHOTOS:13.1f}  {runs}")
        print(f"2 workers vs 1: {speedup:.2f}× (target >= 1.7×: {'met' if speedup >= 1.7 else 'NOT met'})")
        print(f"cluster overhead per image vs the plain loop: {overhead_ms:.1f} ms "
              f"(target < 10 ms: {'met' if overhead_ms < 10 else 'NOT met'}); "
              f"in CPU time (workers, scheduler and client together): {cpu_overhead_ms:.1f} ms per image")
        print(f"per-image cost in the plain loop: {result['ms_per_image_loop']} ms; "
              f"cluster start-up (median): {statistics.median(startup[1]):.1f} s (1 worker), {statistics.median(startup[2]):.1f} s (2 workers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
