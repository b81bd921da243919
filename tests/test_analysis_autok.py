"""`-k auto`: the smallest K that reaches a PSNR or SSIM target, by bisection on K."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_kmq
from kmq.analysis.autok import smallest_k
from kmq.analysis.metrics import psnr, ssim
from kmq.errors import InputError


def _small(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[::3, ::3, :3])


def _quality_at(image: np.ndarray, k: int, measure) -> float:
    from kmq.quant import quantize_pixels

    palette, indices = quantize_pixels(image, k, dither="none", space="rgb", seed=0)
    return measure(image, palette[indices])


def test_psnr_target_is_reached_with_the_smallest_k(any_photo):
    image = _small(any_photo)
    choice = smallest_k(image, target_psnr=31.0)
    assert choice.reached and 2 < choice.k < 256
    assert psnr(image, choice.palette[choice.indices]) >= 31.0
    assert _quality_at(image, choice.k - 1, psnr) < 31.0


def test_ssim_target_is_reached_with_the_smallest_k(photo):
    image = _small(photo)
    choice = smallest_k(image, target_ssim=0.93)
    assert choice.reached and ssim(image, choice.palette[choice.indices]) >= 0.93
    assert _quality_at(image, choice.k - 1, ssim) < 0.93
    assert choice.scores[choice.k - 1] < 0.93  # the bisection itself tried K-1


def test_bisection_tries_few_palettes(photo):
    choice = smallest_k(_small(photo), target_psnr=30.0)
    assert len(choice.scores) <= 9  # 256 first, then halving a range of 255


def test_an_unreachable_target_gives_the_largest_k_and_says_so(photo):
    choice = smallest_k(_small(photo), target_psnr=90.0)
    assert not choice.reached and choice.k == 256 and list(choice.scores) == [256]
    assert choice.describe().startswith("no K up to 256 reaches PSNR 90 dB")


def test_exactly_one_target_is_required(photo):
    with pytest.raises(InputError):
        smallest_k(photo, target_psnr=30, target_ssim=0.9)
    with pytest.raises(InputError):
        smallest_k(photo)
    with pytest.raises(InputError):
        smallest_k(photo, target_ssim=1.5)


def test_compress_with_k_auto_writes_the_smallest_k_that_reaches_the_target(tmp_path, photo):
    import kmq

    image = _small(photo)
    source = tmp_path / "photo.png"
    Image.fromarray(image).save(source)
    result = run_kmq("compress", str(source), "--k", "auto", "--target-psnr", "32")
    assert result.returncode == 0, result.stderr
    assert "smallest K reaching PSNR 32 dB" in result.stdout
    restored = kmq.decode_image(source.with_suffix(".kmq").read_bytes())
    assert psnr(image, restored.to_array()) >= 32.0
    assert _quality_at(image, restored.k - 1, psnr) < 32.0


@pytest.mark.parametrize(
    "arguments",
    [("-k", "auto"), ("--target-psnr", "30"), ("-k", "auto", "--target-ssim", "2")],
    ids=["no target", "no auto", "bad ssim"],
)
def test_compress_refuses_inconsistent_auto_options(tmp_path, photo, arguments):
    source = tmp_path / "photo.png"
    Image.fromarray(_small(photo)).save(source)
    result = run_kmq("compress", str(source), *arguments)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert not source.with_suffix(".kmq").exists()


def test_analyze_with_k_auto_reports_every_k_the_bisection_tried(tmp_path, photo):
    source = tmp_path / "photo.png"
    Image.fromarray(_small(photo)).save(source)
    folder = tmp_path / "r"
    result = run_kmq(
        "analyze", str(source), "-k", "auto", "--target-psnr", "30", "--methods", "kmeans", "-o", str(folder), "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    tried = {step["k"]: step["psnr"] for step in summary["auto"]["tried"]}
    chosen = summary["auto"]["k"]
    assert tried[chosen] >= 30 > tried[chosen - 1]
    assert summary["ks"] == sorted(tried)
    rows = {row["k"]: row for row in summary["rows"]}
    assert rows[chosen]["psnr"] == pytest.approx(tried[chosen], abs=1e-9)
    assert "Automatic K" in (folder / "report.html").read_text()
