"""`kmq batch` as a user runs it: a local cluster that starts and stops by itself, and a kill half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import kmq
from conftest import PHOTOS, run_kmq
from kmq.scale import read_manifest


def _write_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` different crops of real photographs, ``size`` = (height, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [PHOTOS[name]() for name in sorted(PHOTOS)]
    paths = []
    for number in range(count):
        pixels = sources[number % len(sources)]
        top, left = 7 * number % (pixels.shape[0] - size[0]), 11 * number % (pixels.shape[1] - size[1])
        path = folder / f"photo{number:02d}.png"
        Image.fromarray(pixels[top : top + size[0], left : left + size[1]]).save(path)
        paths.append(path)
    return paths


def _assert_complete_outputs(out: Path) -> None:
    leftovers = [path.name for path in out.rglob("*") if path.name.endswith(".part")]
    assert not leftovers, f"half-written files left behind: {leftovers}"
    for path in out.rglob("*.kmq"):
        kmq.decode_image(path.read_bytes())  # raises on a truncated or corrupt file


def test_batch_starts_a_local_cluster_and_exits_1_when_a_file_fails(tmp_path):
    _write_photos(tmp_path / "in", 3, (64, 80))
    (tmp_path / "in" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run_kmq("batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-k", "16", "--workers", "2")
    assert result.returncode == 1, result.stderr
    assert "4 of 4 files: 3 compressed, 0 skipped (done before), 1 failed" in result.stdout
    assert "Traceback" not in result.stderr
    rows = {Path(row.input).name: row for row in read_manifest(tmp_path / "out" / "manifest.csv").values()}
    assert rows["corrupt.png"].status == "failed" and rows["corrupt.png"].error
    assert {rows[f"photo0{n}.png"].status for n in range(3)} == {"ok"}
    _assert_complete_outputs(tmp_path / "out")


def test_batch_with_bad_usage_prints_one_error_line_and_exits_2(tmp_path):
    result = run_kmq("batch", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_batch_killed_half_way_resumes_without_encoding_anything_twice(tmp_path):
    _write_photos(tmp_path / "in", 12, (288, 352))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "kmq", "-q", "batch", str(tmp_path / "in"), "-o", str(out), "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            done = [row for row in read_manifest(out / "manifest.csv").values()] if (out / "manifest.csv").exists() else []
            if len(done) >= 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1, stderr
    first = read_manifest(out / "manifest.csv")
    assert 2 <= len(first) < 12, "the kill should land half-way through the batch"
    assert {row.status for row in first.values()} == {"ok"}
    _assert_complete_outputs(out)
    written = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in out.glob("*.kmq")}
    assert len(written) == len(first), "every output on disk has its manifest row"

    result = run_kmq("batch", str(tmp_path / "in"), "-o", str(out), "--workers", "1", "--resume")
    assert result.returncode == 0, result.stderr
    second = read_manifest(out / "manifest.csv")
    assert len(second) == 12 and {row.status for row in second.values()} == {"ok", "skipped"}
    assert {name for name, row in second.items() if row.status == "skipped"} == set(first)
    _assert_complete_outputs(out)
    for path in out.glob("*.kmq"):
        if path.name in written:
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == written[path.name], f"{path.name} was encoded twice"
    assert len(list(out.glob("*.kmq"))) == 12


def test_python_m_kmq_scale_tells_how_to_start_a_scheduler_and_workers():
    result = subprocess.run([sys.executable, "-m", "kmq.scale"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "dask scheduler" in result.stdout and "dask worker tcp://" in result.stdout and "--scheduler" in result.stdout


def test_batch_help_tells_how_to_use_other_machines():
    result = run_kmq("batch", "--help")
    assert result.returncode == 0 and "dask worker" in result.stdout and "python -m kmq.scale" in result.stdout
