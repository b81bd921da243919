"""Still images side by side: kmq against scikit-learn, libimagequant, pngquant and Pillow.

Run: ``python benchmarks/bench_image.py [--quick] [--images N] [--repeat N] [--ks 16,64,256]``.

Eight photographs that installed packages ship (China resized to 768×512 with Lanczos, as in
the design notes) are quantized without dithering at each K by:

- kmq: ``kmq.quantize`` in process, file size of ``kmq.encode_image``;
- scikit-learn ``KMeans(n_clusters=K, n_init=1, random_state=0)`` on all pixels (the quality
  reference; slow, so timed once per image unless ``--sklearn-repeat`` says otherwise);
- libimagequant (PyPI ``imagequant``, ``dithering_level=0``), in process;
- the ``pngquant`` command (``--nofs --speed 1``), whole process;
- Pillow's ``quantize`` with MEDIANCUT and FASTOCTREE.

For each method and K it prints the mean PSNR over the photos, the median time per photo (wall
clock, and the thread's CPU time, which other processes on a shared machine disturb less), bits
per pixel on disk (PNG8 written by Pillow for the methods that do not write their own file), and
kmq's ratios to each peer: time ratio (peer / kmq, above 1 means kmq is faster) and PSNR
difference (kmq - peer). Then the speed check on China 768×512 at K=64 (kmq's
``quantize_pixels`` and libimagequant in process, interleaved), and the whole ``kmq compress``
command (numba cache warm) against the ``pngquant`` command with the sizes of their files.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

import kmq
from kmq.quant import quantize_pixels

KS = (16, 64, 256)
PEERS = ("sklearn", "libimagequant", "pngquant", "pillow-mediancut", "pillow-fastoctree")


def photos() -> dict[str, np.ndarray]:
    """The shipped photographs, H×W×3 uint8, China first."""
    import matplotlib.cbook
    import skimage.data
    import skimage.io
    from sklearn.datasets import load_sample_image

    china = Image.fromarray(load_sample_image("china.jpg")).resize((768, 512), Image.LANCZOS)
    images = {"china": np.asarray(china), "flower": load_sample_image("flower.jpg")}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        images[name] = getattr(skimage.data, name)()
    images["motorcycle"] = skimage.io.imread(Path(skimage.data.__file__).parent / "motorcycle_left.png")[..., :3]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        images["grace_hopper"] = np.asarray(Image.open(handle).convert("RGB"))
    return images


def psnr(image: np.ndarray, reconstruction: np.ndarray) -> float:
    error = np.mean((image.astype(np.float64) - reconstruction.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / error))


def png8_bytes(palette: np.ndarray, indices: np.ndarray) -> int:
    """Size of an indexed PNG of this palette and index map, as Pillow writes it."""
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.tell()


@dataclass
class Outcome:
    """One method on one photo at one K."""

    psnr: float
    wall: float
    cpu: float
    bits_per_pixel: float


@dataclass
class Tally:
    """Outcomes of one method at one K, photo by photo."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def mean_psnr(self) -> float:
        return statistics.fmean(o.psnr for o in self.outcomes.values())

    def median_wall(self) -> float:
        return statistics.median(o.wall for o in self.outcomes.values())

    def median_cpu(self) -> float:
        return statistics.median(o.cpu for o in self.outcomes.values())

    def mean_bits(self) -> float:
        return statistics.fmean(o.bits_per_pixel for o in self.outcomes.values())


def timed(run: Callable[[], object], repeat: int) -> tuple[object, float, float]:
    """The result of ``run`` and the medians of its wall-clock and thread CPU times."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.thread_time()
        result = run()
        cpus.append(time.thread_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return result, statistics.median(walls), statistics.median(cpus)


def run_kmq(image: np.ndarray, k: int, repeat: int) -> Outcome:
    quantized, wall, cpu = timed(lambda: kmq.quantize(image, k=k), repeat)
    size = len(kmq.encode_image(quantized))
    return Outcome(psnr(image, quantized.palette[quantized.indices]), wall, cpu, 8 * size / image[..., 0].size)


def run_sklearn(image: np.ndarray, k: int, repeat: int) -> Outcome:
    from sklearn.cluster import KMeans

    pixels = image.reshape(-1, 3).astype(np.float64)
    model, wall, cpu = timed(lambda: KMeans(n_clusters=k, n_init=1, random_state=0).fit(pixels), repeat)
    palette = np.clip(np.rint(model.cluster_centers_), 0, 255).astype(np.uint8)
    indices = model.labels_.reshape(image.shape[:2])
    return Outcome(psnr(image, palette[indices]), wall, cpu, 8 * png8_bytes(palette, indices) / indices.size)


def run_libimagequant(image: np.ndarray, k: int, repeat: int) -> Outcome:
    import imagequant

    rgba = Image.fromarray(image).convert("RGBA")
    result, wall, cpu = timed(
        lambda: imagequant.quantize_pil_image(rgba, dithering_level=0, max_colors=k), repeat
    )
    buffer = io.BytesIO()
    result.save(buffer, format="PNG", optimize=True)
    reconstruction = np.asarray(result.convert("RGB"))
    return Outcome(psnr(image, reconstruction), wall, cpu, 8 * buffer.tell() / image[..., 0].size)


def run_pngquant(image: np.ndarray, k: int, repeat: int, folder: Path) -> Outcome | None:
    if shutil.which("pngquant") is None:
        return None
    source, target = folder / "in.png", folder / "out.png"
    Image.fromarray(image).save(source)
    command = ["pngquant", "--nofs", "--speed", "1", "--force", "--output", str(target), str(k), str(source)]
    walls = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True)
        walls.append(time.perf_counter() - start)
    reconstruction = np.asarray(Image.open(target).convert("RGB"))
    wall = statistics.median(walls)
    # A whole process: its CPU time is not this thread's, so the wall clock stands for both.
    return Outcome(psnr(image, reconstruction), wall, wall, 8 * target.stat().st_size / image[..., 0].size)


def run_pillow(method: Image.Quantize) -> Callable[[np.ndarray, int, int], Outcome]:
    def run(image: np.ndarray, k: int, repeat: int) -> Outcome:
        source = Image.fromarray(image)
        result, wall, cpu = timed(lambda: source.quantize(colors=k, method=method, dither=Image.Dither.NONE), repeat)
        buffer = io.BytesIO()
        result.save(buffer, format="PNG", optimize=True)
        reconstruction = np.asarray(result.convert("RGB"))
        return Outcome(psnr(image, reconstruction), wall, cpu, 8 * buffer.tell() / image[..., 0].size)

    return run


def compare(images: dict[str, np.ndarray], ks: tuple[int, ...], args: argparse.Namespace) -> dict:
    """Every method on every photo at every K."""
    runners: dict[str, Callable] = {
        "kmq": run_kmq,
        "sklearn": run_sklearn,
        "libimagequant": run_libimagequant,
        "pillow-mediancut": run_pillow(Image.Quantize.MEDIANCUT),
        "pillow-fastoctree": run_pillow(Image.Quantize.FASTOCTREE),
    }
    results: dict[int, dict[str, Tally]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for k in ks:
            results[k] = {name: Tally() for name in ("kmq", *PEERS)}
            for name, image in images.items():
                for method, run in runners.items():
                    if method == "sklearn" and (args.skip_sklearn or k in args.skip_sklearn_k):
                        continue
                    repeat = args.sklearn_repeat if method == "sklearn" else args.repeat
                    results[k][method].outcomes[name] = run(image, k, repeat)
                outcome = run_pngquant(image, k, args.repeat, Path(folder))
                if outcome is not None:
                    results[k]["pngquant"].outcomes[name] = outcome
                print(f"  K={k:3d} {name} done", file=sys.stderr, flush=True)
    return results


def print_table(results: dict[int, dict[str, Tally]]) -> None:
    header = (
        f"{'K':>4}  {'method':<18} {'PSNR dB':>8} {'wall ms':>9} {'cpu ms':>8} {'bpp':>6}"
        f"   {'kmq faster x':>12} {'kmq PSNR +dB':>12}"
    )
    print(header)
    print("-" * len(header))
    for k, tallies in results.items():
        ours = tallies["kmq"]
        for method, tally in tallies.items():
            if not tally.outcomes:
                continue
            ratio = difference = ""
            if method != "kmq":
                # Compare on the photos both methods ran.
                shared = [name for name in tally.outcomes if name in ours.outcomes]
                own_time = statistics.median(ours.outcomes[n].wall for n in shared)
                ratio = f"{statistics.median(tally.outcomes[n].wall for n in shared) / own_time:12.2f}"
                own_psnr = statistics.fmean(ours.outcomes[n].psnr for n in shared)
                difference = f"{own_psnr - statistics.fmean(tally.outcomes[n].psnr for n in shared):+12.3f}"
            print(
                f"{k:>4}  {method:<18} {tally.mean_psnr():8.3f} {1000 * tally.median_wall():9.1f}"
                f" {1000 * tally.median_cpu():8.1f} {tally.mean_bits():6.3f}   {ratio:>12} {difference:>12}"
            )
        print()


def speed_check(image: np.ndarray, k: int, repeat: int) -> None:
    """kmq's quantize_pixels and libimagequant in one process, interleaved, medians."""
    import imagequant

    rgba = Image.fromarray(image).convert("RGBA")
    quantize_pixels(image, k)
    ours_wall, ours_cpu, theirs_wall, theirs_cpu = [], [], [], []
    for _ in range(repeat):
        _, wall, cpu = timed(lambda: quantize_pixels(image, k), 1)
        ours_wall.append(wall)
        ours_cpu.append(cpu)
        _, wall, cpu = timed(lambda: imagequant.quantize_pil_image(rgba, dithering_level=0, max_colors=k), 1)
        theirs_wall.append(wall)
        theirs_cpu.append(cpu)
    ours, theirs = statistics.median(ours_wall), statistics.median(theirs_wall)
    print(f"Speed check, China {image.shape[1]}x{image.shape[0]}, K={k}, median of {repeat} interleaved runs:")
    print(f"  kmq quantize_pixels  wall {1000 * ours:7.1f} ms   cpu {1000 * statistics.median(ours_cpu):7.1f} ms")
    print(f"  libimagequant        wall {1000 * theirs:7.1f} ms   cpu {1000 * statistics.median(theirs_cpu):7.1f} ms")
    print(
        f"  kmq is {theirs / ours:.2f}x faster (wall), "
        f"{statistics.median(theirs_cpu) / statistics.median(ours_cpu):.2f}x (cpu); the target is 5x or more"
    )


def command_check(image: np.ndarray, k: int, repeat: int) -> None:
    """The whole ``kmq compress`` process against the whole ``pngquant`` process."""
    kmq_command = shutil.which("kmq") or shutil.which("kmq", path=str(Path(sys.executable).parent))
    if kmq_command is None or shutil.which("pngquant") is None:
        print("Command check skipped: `kmq` or `pngquant` is not on PATH")
        return
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "china.png"
        Image.fromarray(image).save(source)
        ours_file, theirs_file = Path(folder) / "china.kmq", Path(folder) / "china-pngquant.png"
        ours = [kmq_command, "-q", "compress", str(source), "-k", str(k), "-o", str(ours_file), "-f"]
        theirs = ["pngquant", "--nofs", "--speed", "1", "--force", "--output", str(theirs_file), str(k), str(source)]
        subprocess.run(ours, check=True)  # warms the numba cache
        times = {"kmq": [], "pngquant": []}
        for _ in range(repeat):
            for name, command in (("kmq", ours), ("pngquant", theirs)):
                start = time.perf_counter()
                subprocess.run(command, check=True, env={**os.environ})
                times[name].append(time.perf_counter() - start)
        pixels = image.shape[0] * image.shape[1]
        ours_time, theirs_time = statistics.median(times["kmq"]), statistics.median(times["pngquant"])
        print(f"Whole process, China at K={k}, median of {repeat} runs (numba cache warm):")
        print(f"  kmq compress  {1000 * ours_time:7.1f} ms   .kmq  {8 * ours_file.stat().st_size / pixels:.3f} bpp")
        print(f"  pngquant      {1000 * theirs_time:7.1f} ms   PNG8  {8 * theirs_file.stat().st_size / pixels:.3f} bpp")
        ratio = ours_time / theirs_time
        print(f"  kmq takes {ratio:.2f}x pngquant's time; the target is 3x or less ({'met' if ratio <= 3 else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 photos, K = 16 and 64, 3 runs, no sklearn at K=256")
    parser.add_argument("--images", type=int, default=8, help="how many photos (up to 8)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing (medians)")
    parser.add_argument("--ks", default=",".join(map(str, KS)), help="palette sizes, comma separated")
    parser.add_argument("--sklearn-repeat", type=int, default=1, help="runs per scikit-learn timing")
    parser.add_argument("--skip-sklearn", action="store_true", help="leave scikit-learn out (it is slow)")
    parser.add_argument("--speed-repeat", type=int, default=11, help="interleaved runs of the speed check")
    args = parser.parse_args(argv)
    ks = tuple(int(k) for k in args.ks.split(","))
    args.skip_sklearn_k = ()
    if args.quick:
        args.images, args.repeat, ks, args.speed_repeat = min(args.images, 6), 3, (16, 64), 7
    images = dict(list(photos().items())[: max(1, args.images)])
    kmq.quantize(images["china"], k=16)  # compile or load the numba kernels before timing
    print(f"{len(images)} photos: {', '.join(images)}; no dithering; {args.repeat} runs per timing\n")
    print_table(compare(images, ks, args))
    speed_check(images["china"], 64, args.speed_repeat)
    print()
    command_check(images["china"], 64, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
