"""The batch manifest: one row per input, readable after a kill at any moment."""

from __future__ import annotations

import math

import pytest

from kmq.errors import InputError
from kmq.scale.manifest import COLUMNS, ManifestRow, ManifestWriter, read_manifest


def _row(name: str, status: str = "ok", **changes) -> ManifestRow:
    values = dict(input=f"/in/{name}.jpg", output=f"{name}.kmq", status=status, k=64, format="kmq", width=4, height=3,
                  bytes_in=100, bytes_out=10, bits_per_pixel=6.6667, psnr=31.25, seconds=0.5,
                  input_sha256="a" * 64, output_sha256="b" * 64)
    values.update(changes)
    return ManifestRow(**values)


def test_rows_read_back_as_written(tmp_path):
    path = tmp_path / "manifest.csv"
    rows = [_row("a"), _row("b", status="failed", error='bad, "quoted" error', width=0), _row("c", psnr=math.inf)]
    with ManifestWriter(path) as writer:
        for row in rows:
            writer.append(row)
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert read_manifest(path) == {row.input: row for row in rows}


def test_a_line_cut_short_by_a_kill_is_ignored(tmp_path):
    path = tmp_path / "manifest.csv"
    writer = ManifestWriter(path)
    writer.append(_row("a"))
    writer.append(_row("b"))
    text = path.read_text()
    path.write_text(text[:-20])  # the process died in the middle of the second append
    assert list(read_manifest(path)) == ["/in/a.jpg"]


def test_rows_are_on_disk_as_soon_as_they_are_appended(tmp_path):
    path = tmp_path / "manifest.csv"
    writer = ManifestWriter(path, [_row("old")])
    writer.append(_row("new"))
    assert set(read_manifest(path)) == {"/in/old.jpg", "/in/new.jpg"}


def test_closing_keeps_one_row_per_input_the_latest_in_the_given_order(tmp_path):
    path = tmp_path / "manifest.csv"
    writer = ManifestWriter(path, [_row("a", status="failed"), _row("b")])
    writer.append(_row("a"))
    writer.close(["/in/a.jpg", "/in/b.jpg"])
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    assert [row.status for row in read_manifest(path).values()] == ["ok", "ok"]


def test_a_missing_manifest_reads_as_empty(tmp_path):
    assert read_manifest(tmp_path / "manifest.csv") == {}


def test_a_csv_that_is_not_a_manifest_is_an_input_error(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("name,size\nx,1\n")
    with pytest.raises(InputError, match="not a kmq batch manifest"):
        read_manifest(path)
