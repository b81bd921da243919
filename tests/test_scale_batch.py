"""Batch compression on a real Dask LocalCluster of two worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kmq
from conftest import PHOTOS
from kmq.errors import InputError
from kmq.scale import read_manifest, run_batch

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """A local Dask cluster of two single-threaded worker processes on loopback, torn down even when a test fails."""
    from kmq.scale.cluster import connect

    with connect(workers=2) as dask_client:
        assert len(dask_client.nthreads()) == 2
        yield dask_client


@pytest.fixture
def photos(tmp_path) -> Path:
    """Small crops of real photographs in a folder tree: 2 at the top, 3 in sub/, 1 in sub/deeper/."""
    root = tmp_path / "photos"
    names = ["a.png", "b.jpg", "sub/c.png", "sub/d.jpg", "sub/e.png", "sub/deeper/f.png"]
    for name, photo in zip(names, ["grace_hopper", "astronaut", "coffee", "chelsea", "china", "flower"]):
        pixels = PHOTOS[photo]()
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[40:136, 60:188]).save(path, quality=92)
    return root


def _rows_by_name(outdir: Path) -> dict[str, kmq.scale.ManifestRow]:
    return {Path(row.input).name: row for row in read_manifest(outdir / "manifest.csv").values()}


def test_every_image_becomes_a_valid_output_in_a_mirrored_tree_with_a_manifest_row(client, photos, tmp_path):
    out = tmp_path / "out"
    summary = run_batch([photos], out, k=16, client=client)
    assert (summary.failed, summary.count("ok"), summary.interrupted) == (0, 6, False)
    rows = _rows_by_name(out)
    assert sorted(row.output for row in rows.values()) == ["a.kmq", "b.kmq", "sub/c.kmq", "sub/d.kmq", "sub/deeper/f.kmq", "sub/e.kmq"]
    for name, row in rows.items():
        coded = (out / row.output).read_bytes()
        decoded = kmq.decode_image(coded)
        original = kmq.load_image(photos.rglob(name).__next__())
        assert (decoded.width, decoded.height, row.width, row.height) == (128, 96, 128, 96)
        assert decoded.k <= 16 and row.bytes_out == len(coded)
        assert row.psnr == pytest.approx(kmq.psnr(original, decoded.to_array()), abs=1e-3)
        assert row.bits_per_pixel == pytest.approx(8 * len(coded) / (128 * 96), rel=1e-4)


def test_a_corrupt_file_is_a_failed_row_and_the_others_finish(client, photos, tmp_path):
    (photos / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    summary = run_batch([photos], tmp_path / "out", client=client)
    assert (summary.failed, summary.count("ok")) == (1, 6)
    broken = _rows_by_name(tmp_path / "out")["broken.jpg"]
    assert broken.status == "failed" and "broken.jpg" in broken.error
    assert not (tmp_path / "out" / "sub" / "broken.kmq").exists()


def test_png_format_writes_indexed_pngs(client, photos, tmp_path):
    run_batch([photos / "sub"], tmp_path / "out", k=8, format="png", client=client)
    for path in (tmp_path / "out").rglob("*.png"):
        with Image.open(path) as image:
            assert image.mode == "P" and len(image.getcolors()) <= 8
    assert len(list((tmp_path / "out").rglob("*.png"))) == 4


def test_resume_keeps_outputs_that_match_the_manifest_and_redoes_the_others(client, photos, tmp_path):
    out = tmp_path / "out"
    run_batch([photos], out, k=16, client=client)
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in out.rglob("*.kmq")}
    (out / "a.kmq").write_bytes((out / "a.kmq").read_bytes()[:-10])  # damaged after the run
    (out / "sub" / "c.kmq").unlink()  # lost
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photos / "b.jpg")  # the input changed

    summary = run_batch([photos], out, k=16, client=client, resume=True)
    statuses = {name: row.status for name, row in _rows_by_name(out).items()}
    assert statuses == {"a.png": "ok", "b.jpg": "ok", "c.png": "ok", "d.jpg": "skipped", "e.png": "skipped", "f.png": "skipped"}
    assert summary.count("skipped") == 3 and not summary.interrupted
    for path in out.rglob("*.kmq"):
        if path.name in ("d.kmq", "e.kmq", "f.kmq"):
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == before[path.name], "a valid output was encoded again"
        kmq.decode_image(path.read_bytes())


def test_resume_with_another_k_redoes_everything(client, photos, tmp_path):
    run_batch([photos / "sub"], tmp_path / "out", k=16, client=client)
    summary = run_batch([photos / "sub"], tmp_path / "out", k=32, client=client, resume=True)
    assert summary.count("ok") == 4 and summary.count("skipped") == 0


def test_an_outdir_holding_a_batch_needs_resume_or_force(client, photos, tmp_path):
    run_batch([photos / "sub" / "deeper"], tmp_path / "out", client=client)
    with pytest.raises(InputError, match="--resume"):
        run_batch([photos / "sub" / "deeper"], tmp_path / "out", client=client)
    assert run_batch([photos / "sub" / "deeper"], tmp_path / "out", client=client, force=True).count("ok") == 1


def test_a_stop_before_the_start_leaves_everything_for_resume(client, photos, tmp_path):
    import threading

    stop = threading.Event()
    stop.set()
    summary = run_batch([photos], tmp_path / "out", client=client, stop=stop)
    assert summary.interrupted and summary.rows == []
    assert [name for name in os.listdir(tmp_path / "out")] == ["manifest.csv"]
