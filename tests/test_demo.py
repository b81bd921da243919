"""`kmq demo`: the main job on the built-in photograph."""

from __future__ import annotations

import json

from conftest import run_kmq


def test_demo_writes_outputs_and_reports_sizes_on_disk(tmp_path):
    result = run_kmq("demo", "-o", str(tmp_path / "out"), "-k", "16,64", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    folder = tmp_path / "out"
    raw = (folder / "original.ppm").stat().st_size
    assert [row["k"] for row in report["rows"]] == [16, 64]
    for row in report["rows"]:
        coded = folder / f"k{row['k']:03d}.kmq"
        assert row["kmq_bytes"] == coded.stat().st_size
        assert row["reduction_vs_raw"] == raw / coded.stat().st_size
        assert row["bits_packed"] == {16: 4, 64: 6}[row["k"]]
        assert row["bits_per_pixel"] < row["bits_packed"]
        assert 20 < row["psnr"] < 60 and 0.5 < row["ssim"] <= 1.0
    assert report["rows"][1]["psnr"] > report["rows"][0]["psnr"]


def test_demo_prints_a_table(tmp_path):
    result = run_kmq("demo", "-o", str(tmp_path / "out"), "-k", "16")
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout and "smaller" in result.stdout
