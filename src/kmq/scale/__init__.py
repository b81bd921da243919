"""Batch and chunked work on Dask: a local cluster by default, an existing one by address."""

from __future__ import annotations

from kmq.scale.batch import BatchSettings, BatchSummary, compress_files, run_batch
from kmq.scale.chunks import encode_video_chunked
from kmq.scale.inputs import BatchItem, plan_batch
from kmq.scale.manifest import ManifestRow, read_manifest
from kmq.scale.signals import graceful_stop

__all__ = [
    "BatchItem",
    "BatchSettings",
    "BatchSummary",
    "ManifestRow",
    "compress_files",
    "encode_video_chunked",
    "graceful_stop",
    "plan_batch",
    "read_manifest",
    "run_batch",
]
