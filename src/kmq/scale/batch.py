"""Batch compression on Dask: many image files, a few per task, a manifest row per file, resumable."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmq.errors import InputError, KmqError, OutputError
from kmq.scale.inputs import BatchItem, plan_batch
from kmq.scale.manifest import (
    MANIFEST_NAME,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    ManifestRow,
    ManifestWriter,
    read_manifest,
)

__all__ = ["BatchSettings", "BatchSummary", "compress_files", "run_batch"]

_MAX_FILES_PER_TASK = 8
_TASKS_PER_THREAD = 8  # enough small tasks that the last ones finish together
_STOP_GRACE_S = 30.0  # how long a stopped run waits for the files already being written


@dataclass(frozen=True)
class BatchSettings:
    """How every file of a batch is compressed (the same for all; sent to the workers).

    Attributes
    ----------
    k : int
        Palette size, 2..256.
    format : {"kmq", "png"}
        Output format.
    max_pixels : int, optional
        Refuse larger inputs.
    force : bool
        Replace outputs that exist.
    """

    k: int = 64
    format: str = "kmq"
    max_pixels: int | None = None
    force: bool = False


@dataclass
class BatchSummary:
    """The outcome of :func:`run_batch`.

    Attributes
    ----------
    rows : list of ManifestRow
        One per input, in input order (also in OUTDIR/manifest.csv).
    manifest : Path
        The manifest file.
    workers : int
        Worker threads of the cluster that did the work.
    seconds : float
        Wall-clock time from the first task to the last result (cluster start-up excluded).
    interrupted : bool
        The run was stopped before every file was done; ``--resume`` continues it.
    startup_seconds : float
        Time to start or reach the cluster and load the kernels on its workers.
    planned : int
        Input files found.
    """

    rows: list[ManifestRow]
    manifest: Path
    workers: int
    seconds: float
    interrupted: bool = False
    startup_seconds: float = 0.0
    planned: int = 0

    def count(self, status: str) -> int:
        """Rows with this status ("ok", "skipped" or "failed")."""
        return sum(1 for row in self.rows if row.status == status)

    @property
    def failed(self) -> int:
        """Files that failed."""
        return self.count(STATUS_FAILED)

    @property
    def bytes_in(self) -> int:
        """Input bytes of the files compressed by this run."""
        return sum(row.bytes_in for row in self.rows if row.status == STATUS_OK)

    @property
    def bytes_out(self) -> int:
        """Output bytes of the files compressed by this run."""
        return sum(row.bytes_out for row in self.rows if row.status == STATUS_OK)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain values (for ``--json``)."""
        return {
            "files": self.planned,
            "compressed": self.count(STATUS_OK),
            "skipped": self.count(STATUS_SKIPPED),
            "failed": self.failed,
            "not_done": self.planned - len(self.rows),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(self.seconds, 3),
            "startup_seconds": round(self.startup_seconds, 3),
            "workers": self.workers,
            "interrupted": self.interrupted,
            "manifest": str(self.manifest),
        }

    def line(self) -> str:
        """A one-line summary for people."""
        compressed = self.count(STATUS_OK)
        text = f"{len(self.rows)} of {self.planned} files: {compressed} compressed, {self.count(STATUS_SKIPPED)} skipped (done before), {self.failed} failed"
        if compressed:
            share = self.bytes_out / self.bytes_in if self.bytes_in else math.inf
            rate = compressed / self.seconds if self.seconds > 0 else math.inf
            text += (
                f"; {self.bytes_in / 1e6:.1f} MB in, {self.bytes_out / 1e6:.1f} MB out ({share:.0%} of the input size)"
                f" in {self.seconds:.1f} s, {rate:.1f} files/s on {self.workers} worker{'s' if self.workers != 1 else ''}"
            )
        if self.interrupted:
            text += "; interrupted (run again with --resume to finish)"
        return text + f"; manifest: {self.manifest}"


# ---------------------------------------------------------------- on the workers


def compress_files(
    items: Sequence[BatchItem],
    settings: BatchSettings,
    previous: Sequence[ManifestRow | None],
    stop_file: str | None = None,
) -> list[ManifestRow]:
    """Compress a few files; runs as one Dask task. A file that fails becomes a "failed" row.

    Parameters
    ----------
    items : sequence of BatchItem
        The files of this task.
    settings : BatchSettings
        K, format and limits.
    previous : sequence of ManifestRow or None
        For ``--resume``: each file's row from an earlier run, or None. A successful row whose
        input and output still have the recorded content hashes (and the same K and format) is
        returned as "skipped" without encoding anything; any other existing output is replaced.
    stop_file : str, optional
        When this file exists the run is stopping: no further file is begun.

    Returns
    -------
    list of ManifestRow
        One row per item begun, in order (fewer than ``items`` after a stop).
    """
    from kmq.scale.cluster import one_kernel_thread

    one_kernel_thread()
    rows = []
    for item, row in zip(items, previous):
        if stop_file is not None and os.path.exists(stop_file):
            break
        rows.append(_compress_file(item, settings, row))
    return rows


def _compress_file(item: BatchItem, settings: BatchSettings, previous: ManifestRow | None) -> ManifestRow:
    started = time.perf_counter()
    try:
        if previous is not None and _still_valid(previous, item, settings):
            return previous.skipped()
        return _encode_file(item, settings, force=settings.force or previous is not None, started=started)
    except Exception as exc:  # one bad file is a row, never the end of the batch
        return _failed_row(item, settings, exc, seconds=time.perf_counter() - started)


def _failed_row(item: BatchItem, settings: BatchSettings, error: BaseException, *, seconds: float = 0.0) -> ManifestRow:
    message = str(error) if isinstance(error, KmqError) else f"{type(error).__name__}: {error}"
    return ManifestRow(
        input=item.input,
        output=item.relative,
        status=STATUS_FAILED,
        k=settings.k,
        format=settings.format,
        bytes_in=item.size,
        seconds=seconds,
        error=" ".join(message.split()),  # one line, so a cut-off manifest line is always the last one
    )


def _still_valid(previous: ManifestRow, item: BatchItem, settings: BatchSettings) -> bool:
    if not previous.succeeded or (previous.k, previous.format, previous.output) != (settings.k, settings.format, item.relative):
        return False
    try:
        return _file_sha256(item.output) == previous.output_sha256 and _file_sha256(item.input) == previous.input_sha256
    except OSError:
        return False


def _encode_file(item: BatchItem, settings: BatchSettings, *, force: bool, started: float) -> ManifestRow:
    from kmq.analysis.metrics import psnr
    from kmq.media.files import atomic_output, check_output
    from kmq.media.images import load_image
    from kmq.media.still import encode_image, quantize

    output = Path(item.output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {output.parent}: {exc.strerror or exc}") from None
    check_output(output, force=force, inputs=(item.input,))
    input_sha256 = _file_sha256(item.input)
    pixels = load_image(item.input, max_pixels=settings.max_pixels)
    quantized = quantize(pixels, settings.k)
    data = quantized.to_png8() if settings.format == "png" else encode_image(quantized)
    with atomic_output(output, force=force, inputs=(item.input,)) as stream:
        stream.write(data)
    return ManifestRow(
        input=item.input,
        output=item.relative,
        status=STATUS_OK,
        k=settings.k,
        format=settings.format,
        width=quantized.width,
        height=quantized.height,
        bytes_in=os.path.getsize(item.input),
        bytes_out=len(data),
        bits_per_pixel=8.0 * len(data) / (quantized.width * quantized.height),
        psnr=psnr(pixels, quantized.to_array()),
        seconds=time.perf_counter() - started,
        input_sha256=input_sha256,
        output_sha256=hashlib.sha256(data).hexdigest(),
    )


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- on the client


def run_batch(
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    *,
    k: int = 64,
    format: str = "kmq",
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    resume: bool = False,
    force: bool = False,
    max_pixels: int | None = None,
    files_per_task: int | None = None,
    progress: Callable[[int, int, list[ManifestRow]], None] | None = None,
    stop: threading.Event | None = None,
) -> BatchSummary:
    """Compress many images on a Dask cluster into ``outdir``, mirroring the input tree.

    Every output is written atomically; OUTDIR/manifest.csv gets one row per input as results
    arrive (see :class:`~kmq.scale.manifest.ManifestRow`). A file that fails is a row with its
    error and does not stop the others.

    Parameters
    ----------
    inputs : sequence of path-like
        Files, folders (recursive) or glob patterns; see :func:`~kmq.scale.inputs.plan_batch`.
    outdir : path-like
        Output folder, created if needed.
    k : int
        Palette size, 2..256.
    format : {"kmq", "png"}
        Output format.
    workers : int, optional
        Worker processes of the local cluster (default: one per core).
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``) instead of a local cluster.
        Its workers must see the inputs and ``outdir`` at the same paths (a shared file system).
    client : distributed.Client, optional
        Use this client as it is (neither ``workers`` nor ``scheduler`` then).
    resume : bool
        Continue an earlier run into ``outdir``: inputs whose output still matches the manifest
        (content hashes, K and format) are skipped; the rest are (re)done.
    force : bool
        Start afresh in an ``outdir`` that holds a manifest, replacing existing outputs.
    max_pixels : int, optional
        Refuse larger inputs (default ``KMQ_MAX_PIXELS`` or the documented limit).
    files_per_task : int, optional
        Files per Dask task (default: chosen from the number of files and workers).
    progress : callable, optional
        Called as ``progress(total_files, total_bytes, rows)`` once with no rows before the
        work starts, then with the rows of each finished task.
    stop : threading.Event, optional
        When set, no new task starts; the files being written are finished and recorded (for a
        while) and the run returns with ``interrupted`` set.

    Returns
    -------
    BatchSummary

    Raises
    ------
    kmq.errors.InputError
        No inputs, a bad option, an ``outdir`` holding an earlier batch without ``resume`` or
        ``force``, or an unreachable scheduler.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 256:
        raise InputError(f"K must be a whole number from 2 to 256; got {k!r}")
    settings = BatchSettings(k=k, format=format, max_pixels=max_pixels, force=force)
    if scheduler and workers is not None:
        raise InputError("--workers sets the size of the local cluster; with --scheduler, start workers on the cluster's machines")
    if resume and force:
        raise InputError("--resume keeps the outputs of an earlier run and --force replaces them; choose one")
    out_root = Path(outdir)
    if out_root.exists() and not out_root.is_dir():
        raise InputError(f"output folder {out_root} is a file")
    manifest_path = out_root / MANIFEST_NAME
    if manifest_path.exists() and not (resume or force):
        raise InputError(f"{out_root} holds an earlier batch ({MANIFEST_NAME}); use --resume to continue it or --force to redo it")
    items = plan_batch(inputs, out_root, format=settings.format)
    earlier = read_manifest(manifest_path) if resume else {}
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_root}: {exc.strerror or exc}") from None
    _remove_stale_parts(out_root, items)
    total_bytes = sum(item.size for item in items)
    if progress is not None:
        progress(len(items), total_bytes, [])

    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if client is None:
            from kmq.scale.cluster import connect

            client = stack.enter_context(connect(scheduler, workers=workers))
        from kmq.scale.cluster import total_threads

        threads = total_threads(client)
        startup = time.perf_counter() - started
        writer = stack.enter_context(ManifestWriter(manifest_path, earlier.values()))
        started = time.perf_counter()
        _run_tasks(client, items, settings, earlier, writer, threads, files_per_task, progress, stop)
        seconds = time.perf_counter() - started
        order = [item.input for item in items]
        writer.close(order)
    done = {row.input: row for row in writer.rows.values()}
    rows = [done[name] for name in order if name in done and _touched(done[name], earlier)]
    return BatchSummary(
        rows=rows,
        manifest=manifest_path,
        workers=threads,
        seconds=seconds,
        interrupted=len(rows) < len(items),
        startup_seconds=startup,
        planned=len(items),
    )


def _touched(row: ManifestRow, earlier: dict[str, ManifestRow]) -> bool:
    """The row was produced by this run (an earlier row not yet redone does not count)."""
    return earlier.get(row.input) is not row


def _run_tasks(
    client: Any,
    items: list[BatchItem],
    settings: BatchSettings,
    earlier: dict[str, ManifestRow],
    writer: ManifestWriter,
    threads: int,
    files_per_task: int | None,
    progress: Callable[[int, int, list[ManifestRow]], None] | None,
    stop: threading.Event | None,
) -> None:
    """Keep a bounded window of tasks in flight and record each result, until done or stopped."""
    from distributed import wait

    tasks = _tasks(items, threads, files_per_task)
    window = max(2, 2 * threads)
    pending: dict[Any, list[BatchItem]] = {}
    run_id = uuid.uuid4().hex[:8]
    # Dask cannot take back a task a worker has begun, so the workers are told to stop instead:
    # they finish the file in hand and begin no other, and every output written gets its row.
    stop_file = writer.path.parent / f".kmq-batch-stop-{run_id}"
    next_task = 0
    deadline: float | None = None
    total_bytes = sum(item.size for item in items)
    try:
        while True:
            if deadline is None and stop is not None and stop.is_set():
                deadline = time.monotonic() + _STOP_GRACE_S
                stop_file.touch()
            while deadline is None and next_task < len(tasks) and len(pending) < window:
                chunk = tasks[next_task]
                previous = [earlier.get(item.input) for item in chunk]
                key = f"kmq-batch-{run_id}-{next_task}"
                pending[client.submit(compress_files, chunk, settings, previous, str(stop_file), key=key, pure=False)] = chunk
                next_task += 1
            if not pending:
                return
            if deadline is not None and time.monotonic() > deadline:
                client.cancel(list(pending))
                return
            try:
                done = wait(list(pending), timeout=0.25, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                continue
            for future in done:
                rows = _task_rows(future, pending.pop(future), settings, stopping=deadline is not None)
                for row in rows:
                    writer.append(row)
                if progress is not None:
                    progress(len(items), total_bytes, rows)
    finally:
        stop_file.unlink(missing_ok=True)


def _task_rows(future: Any, chunk: list[BatchItem], settings: BatchSettings, *, stopping: bool) -> list[ManifestRow]:
    """The rows a task returned, or a failed row per file when the task itself was lost."""
    try:
        return list(future.result())
    except Exception as exc:
        if stopping:  # lost to the stop itself (e.g. Ctrl-C reached the workers): not done, not failed
            return []
        return [_failed_row(item, settings, exc) for item in chunk]  # a worker died (out of memory, killed)


def _tasks(items: list[BatchItem], threads: int, files_per_task: int | None) -> list[list[BatchItem]]:
    """Group files into tasks: largest first, so the last tasks to finish are the short ones."""
    per_task = files_per_task or max(1, min(_MAX_FILES_PER_TASK, len(items) // (threads * _TASKS_PER_THREAD)))
    ordered = sorted(items, key=lambda item: item.size, reverse=True)
    return [ordered[start : start + per_task] for start in range(0, len(ordered), per_task)]


def _remove_stale_parts(out_root: Path, items: list[BatchItem]) -> None:
    """Delete temporary files left by a run killed while writing (``.NAME.XXXX.part``, see atomic_output)."""
    expected: dict[str, set[str]] = {}
    for item in items:
        output = Path(item.output)
        expected.setdefault(str(output.parent), set()).add(output.name)
    pattern = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.part$")
    for folder, names in expected.items():
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                match = pattern.match(entry.name)
                if match and match["name"] in names and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
