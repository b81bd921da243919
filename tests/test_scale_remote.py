"""`kmq batch --scheduler` against a Dask scheduler and worker started as separate processes on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import kmq
from conftest import PHOTOS, run_kmq
from kmq.scale import read_manifest


def _dask_command() -> list[str]:
    dask = Path(sys.executable).with_name("dask")
    if dask.is_file():
        return [str(dask)]
    found = shutil.which("dask")
    if found is None:
        pytest.skip("the `dask` command is not installed")
    return [found]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def scheduler_address(tmp_path):
    """A `dask scheduler` and one `dask worker` process on 127.0.0.1, on a port the OS picked."""
    dask = _dask_command()
    scheduler_file = tmp_path / "scheduler.json"
    logs = open(tmp_path / "dask.log", "w")
    processes = []
    try:
        processes.append(
            subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0", "--no-dashboard",
                 "--scheduler-file", str(scheduler_file)],
                stdout=logs,
                stderr=subprocess.STDOUT,
            )
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            assert processes[0].poll() is None, (tmp_path / "dask.log").read_text()
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        processes.append(
            subprocess.Popen(
                [*dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                 "--no-dashboard"],
                stdout=logs,
                stderr=subprocess.STDOUT,
            )
        )
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)
        logs.close()


def test_batch_runs_on_an_existing_scheduler_and_its_workers(scheduler_address, tmp_path):
    assert scheduler_address.startswith("tcp://127.0.0.1:")
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("coffee", "chelsea", "grace_hopper"):
        Image.fromarray(PHOTOS[name]()[:80, :96]).save(folder / f"{name}.png")
    out = tmp_path / "out"
    result = run_kmq("batch", str(folder), "-o", str(out), "-k", "16", "--scheduler", scheduler_address)
    assert result.returncode == 0, result.stderr
    assert "3 compressed" in result.stdout and "on 1 worker" in result.stdout
    rows = read_manifest(out / "manifest.csv")
    assert {row.status for row in rows.values()} == {"ok"} and len(rows) == 3
    for row in rows.values():
        assert kmq.decode_image((out / row.output).read_bytes()).k <= 16


def test_workers_option_with_a_scheduler_is_bad_usage(scheduler_address, tmp_path):
    Image.fromarray(PHOTOS["coffee"]()[:32, :32]).save(tmp_path / "a.png")
    result = run_kmq("batch", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--scheduler", scheduler_address, "--workers", "2")
    assert result.returncode == 2 and result.stderr.startswith("error: --workers")
