"""`kmq analyze`: the numbers, the files and the HTML page a user gets for a still image."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import launch_chromium, run_kmq

ALL_METHODS = "kmeans,hierarchical,mediancut,octree,minibatch"


@pytest.fixture(scope="module")
def small_photo_file(tmp_path_factory, photo) -> Path:
    """The test photograph at a third of its size, as a PNG."""
    path = tmp_path_factory.mktemp("analyze") / "small.png"
    Image.fromarray(np.ascontiguousarray(photo[::3, ::3])).save(path)
    return path


@pytest.fixture(scope="module")
def analyzed(small_photo_file, tmp_path_factory) -> tuple[Path, dict]:
    """`kmq analyze --json` run once with every method at two K."""
    folder = tmp_path_factory.mktemp("report") / "out"
    result = run_kmq(
        "analyze", str(small_photo_file), "-k", "8,32", "--methods", ALL_METHODS, "-o", str(folder), "--json"
    )
    assert result.returncode == 0, result.stderr
    return folder, json.loads(result.stdout)


def test_json_numbers_equal_the_metrics_api_on_the_coded_files(analyzed, small_photo_file):
    import kmq
    from kmq.analysis.metrics import bits_per_pixel, compression_ratio

    folder, summary = analyzed
    original = np.asarray(Image.open(small_photo_file).convert("RGB"))
    height, width = original.shape[:2]
    assert [(row["method"], row["k"]) for row in summary["rows"]] == [
        (method, k) for method in ALL_METHODS.split(",") for k in (8, 32)
    ]
    for row in summary["rows"]:
        coded = folder / "coded" / f"{row['method']}-k{row['k']:03d}.kmq"
        size = coded.stat().st_size
        restored = kmq.decode_image(coded.read_bytes())
        assert restored.k == row["colors"] <= row["k"]
        assert row["psnr"] == pytest.approx(kmq.psnr(original, restored.to_array()), rel=1e-12)
        assert row["ssim"] == pytest.approx(kmq.ssim(original, restored.to_array()), rel=1e-12)
        assert row["kmq_bytes"] == size
        assert row["bits_per_pixel_coded"] == pytest.approx(bits_per_pixel(size, width, height), rel=1e-12)
        assert row["bits_per_pixel_packed"] == math.ceil(math.log2(row["colors"]))
        assert row["reduction_vs_raw"] == pytest.approx(compression_ratio(width * height * 3, size), rel=1e-12)
        input_bytes = small_photo_file.stat().st_size
        assert row["reduction_vs_input"] == pytest.approx(compression_ratio(input_bytes, size), rel=1e-12)
        assert row["seconds"] > 0


def test_report_folder_holds_the_page_the_figures_and_the_same_json(analyzed):
    folder, summary = analyzed
    assert (folder / "report.html").is_file()
    for name in ("rate_distortion", "colour_space", "palettes", "k008", "k032"):
        with Image.open(folder / "figures" / f"{name}.png") as figure:
            assert figure.format == "PNG" and figure.width > 600
    assert json.loads((folder / "report.json").read_text()) == summary


def test_hierarchical_note_says_how_many_histogram_bins_were_clustered(analyzed):
    folder, summary = analyzed
    note = summary["methods"]["hierarchical"]["note"]
    assert "Ward linkage on" in note and "histogram bins" in note
    assert note in (folder / "report.html").read_text()


def test_page_is_self_contained(analyzed):
    page = (analyzed[0] / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') == 5


def open_in_chromium(page_path: Path, screenshot: Path) -> tuple[list[int], list[str], list[str]]:
    """Load a page in headless Chromium (Debian's, no download): image widths, console errors, requests."""
    sync_api = pytest.importorskip("playwright.sync_api")
    errors, requests = [], []
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_path.as_uri(), wait_until="load")
            widths = page.evaluate("Array.from(document.images, image => image.complete ? image.naturalWidth : 0)")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return widths, errors, requests


def assert_not_blank(screenshot: Path) -> None:
    """Text, tables and figures, not an empty page."""
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.05


@pytest.mark.browser
def test_report_opens_offline_in_headless_chromium(analyzed, tmp_path):
    widths, errors, requests = open_in_chromium(analyzed[0] / "report.html", tmp_path / "report.png")
    assert len(widths) == 5 and all(width > 0 for width in widths)
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests)
    assert_not_blank(tmp_path / "report.png")


def test_minibatch_is_skipped_with_a_reason_without_scikit_learn(monkeypatch, photo):
    import sys

    from kmq.analysis.compare import compare_methods

    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    comparison = compare_methods(np.ascontiguousarray(photo[::8, ::8]), (8,), ("kmeans", "minibatch"))
    assert comparison.methods == ["kmeans"]
    assert "scikit-learn is not installed" in comparison.skipped["minibatch"]


def test_analyze_prints_a_table_and_the_report_path(small_photo_file, tmp_path):
    folder = tmp_path / "r"
    result = run_kmq("analyze", str(small_photo_file), "-k", "16", "--methods", "kmeans,octree", "-o", str(folder))
    assert result.returncode == 0, result.stderr
    assert "PSNR" in result.stdout and "octree" in result.stdout
    assert str(folder / "report.html") in result.stdout.replace("\n", "")


@pytest.mark.parametrize(
    "arguments",
    [
        ("--methods", "kmeans,quadtree"),
        ("-k", "auto"),
        ("--target-psnr", "30"),
        ("-k", "1,8"),
    ],
    ids=["unknown method", "auto without a target", "target without auto", "K out of range"],
)
def test_bad_options_give_one_error_line(small_photo_file, tmp_path, arguments):
    result = run_kmq("analyze", str(small_photo_file), "-o", str(tmp_path / "r"), *arguments)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr


def test_a_missing_input_gives_one_error_line(tmp_path):
    result = run_kmq("analyze", str(tmp_path / "nothing.png"), "-o", str(tmp_path / "r"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "no such file" in result.stderr


def test_an_ignored_alpha_channel_is_reported(tmp_path):
    from kmq.analysis.report import analyze_image

    image = np.random.default_rng(3).integers(0, 256, (24, 32, 4), dtype=np.uint8)
    report = analyze_image(image, tmp_path / "r", ks=(4,), methods=("kmeans",))
    notice = "The image has transparency: the comparison uses its RGB channels and ignores alpha."
    assert report.summary()["notices"] == [notice]
    assert "ignores alpha" in (tmp_path / "r" / "report.html").read_text()
