"""The finding the report exists to show: k-means ahead of Ward clustering at equal K, said honestly."""

from __future__ import annotations

import numpy as np

from kmq.analysis.compare import compare_methods


def test_kmeans_is_ahead_of_hierarchical_on_every_real_photo(any_photo):
    comparison = compare_methods(np.ascontiguousarray(any_photo[:, :, :3]), (8, 16, 64), ("kmeans", "hierarchical"))
    gaps = {k: comparison.trial("kmeans", k).psnr - comparison.trial("hierarchical", k).psnr for k in comparison.ks}
    assert all(gap > 0 for gap in gaps.values()), gaps
    assert comparison.findings()[0].startswith("k-means is ahead of hierarchical (Ward) clustering on PSNR at every K")


def test_findings_name_every_k_where_kmeans_is_not_ahead(any_photo):
    # a third of the size: smaller images are where k-means meets its poorer local optima
    image = np.ascontiguousarray(any_photo[::3, ::3, :3])
    comparison = compare_methods(image, (8, 16, 64), ("kmeans", "hierarchical"))
    psnr = {(method, k): comparison.trial(method, k).psnr for method in comparison.methods for k in comparison.ks}
    behind = [k for k in comparison.ks if psnr["kmeans", k] <= psnr["hierarchical", k]]
    sentences = comparison.findings()
    for k in comparison.ks:
        said = any(f"is not behind k-means at K = {k}:" in sentence for sentence in sentences)
        assert said == (k in behind), (k, sentences)
    assert any("k-means is ahead" in sentence for sentence in sentences) == (len(behind) < len(comparison.ks))


def test_findings_say_so_when_hierarchical_is_not_behind():
    # two flat colours: every method finds them exactly, so k-means is not ahead
    image = np.zeros((16, 16, 3), np.uint8)
    image[8:] = (200, 30, 90)
    comparison = compare_methods(image, (2,), ("kmeans", "hierarchical"))
    assert comparison.findings() == [
        "On this image hierarchical (Ward) clustering is not behind k-means at K = 2: lossless against lossless."
    ]
