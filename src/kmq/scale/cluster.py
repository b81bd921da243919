"""Dask clusters for kmq: a local one that starts and stops by itself, or an existing one by address."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
from distributed.diagnostics.plugin import WorkerPlugin

from kmq.errors import InputError

__all__ = ["connect", "local_worker_count", "one_kernel_thread", "total_threads", "warm_kernels"]

_CONNECT_TIMEOUT_S = 15.0
_LOCAL_CLUSTER_CONFIG = {
    # one task per worker at a time: the others wait on the scheduler, and a worker that finishes
    # early is not left idle behind a queue of its own
    "distributed.scheduler.worker-saturation": 1.0,
    # Dask's default makes glibc hand every freed block over 64 KiB back to the system at once;
    # quantizing allocates and frees large arrays all the time, and that costs ~40% more CPU
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}
_WORKERS_TIMEOUT_S = 60.0


def local_worker_count() -> int:
    """One worker process per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def warm_kernels(*, video: bool = False) -> None:
    """Run every numba kernel of the still-image path (and with ``video``, of the video encoder) once.

    The kernels are compiled with ``cache=True``; calling this once in the client before
    workers start fills the on-disk cache, so each worker process loads the compiled code
    instead of compiling it again.
    """
    import numpy as np

    from kmq.analysis.metrics import psnr
    from kmq.media.still import decode_image, encode_image, quantize

    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    quantized = quantize(pixels, 4)
    decode_image(encode_image(quantized))
    quantized.to_png8()
    psnr(pixels, quantized.to_array())
    if video:
        from kmq.codec.video import VideoDecoder
        from kmq.media.video_encoder import VideoEncoder

        # a small frame and one large enough to be sampled; two frames each for the delta path
        for height, width in ((24, 32), (264, 256)):
            frame = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
            encoder = VideoEncoder(width, height, k=8)
            decoder = VideoDecoder(encoder.header_bytes)
            for shift in (0, 1):
                decoder.decode(encoder.encode(np.roll(frame, shift, axis=1)).packet)


def one_kernel_thread() -> None:
    """Run the numba kernels called from this thread on one core.

    A Dask worker process gets one core: parallelism comes from running one worker per core,
    and kernels that also spread over every core would only compete with the other workers.
    """
    import numba

    numba.set_num_threads(1)


class _WarmKernels(WorkerPlugin):
    """A Dask worker plugin: each worker, including one that joins later, loads the kernels once.

    Workers of a local cluster also ignore Ctrl-C: the terminal sends it to every process of
    the command, and only the client should react (by finishing the files being written).
    """

    name = "kmq-warm-kernels"

    def __init__(self, *, ignore_interrupts: bool = False, video: bool = False) -> None:
        self.ignore_interrupts = ignore_interrupts
        self.video = video

    def setup(self, worker: Any) -> None:
        if self.ignore_interrupts and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        warm_kernels(video=self.video)


@contextlib.contextmanager
def connect(scheduler: str | None = None, *, workers: int | None = None, video: bool = False) -> Iterator[Any]:
    """A Dask client on an existing cluster, or on a local one started (and stopped) for the caller.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``. Without it a local
        cluster of worker processes (one thread each) starts on 127.0.0.1.
    workers : int, optional
        Worker processes of the local cluster (default: one per core). Not allowed with
        ``scheduler``: the workers of an existing cluster are started on its machines.
    video : bool
        Also load the video encoder's kernels on every worker.

    Yields
    ------
    distributed.Client
        Connected, with at least one worker, and every worker's kernels loaded.

    Raises
    ------
    kmq.errors.InputError
        The scheduler cannot be reached or has no worker.
    """
    from distributed import Client, LocalCluster

    if scheduler and workers is not None:
        raise InputError("--workers sets the size of the local cluster; with --scheduler, start workers on the cluster's machines")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    with contextlib.ExitStack() as stack:
        if scheduler:
            try:
                client = stack.enter_context(Client(scheduler, timeout=_CONNECT_TIMEOUT_S))
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        else:
            # Fill the kernel cache while the worker processes start; they load it only afterwards.
            with ThreadPoolExecutor(1) as pool, dask.config.set(_LOCAL_CLUSTER_CONFIG):
                warming = pool.submit(warm_kernels, video=video)
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=workers or local_worker_count(),
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        # Dask serves health routes over HTTP even without a dashboard; a port from the OS
                        dashboard_address="127.0.0.1:0",
                        scheduler_kwargs={"dashboard": False},
                        silence_logs=logging.ERROR,
                    )
                )
                warming.result()
            client = stack.enter_context(Client(cluster))
        try:
            client.wait_for_workers(1, timeout=_WORKERS_TIMEOUT_S)
        except TimeoutError:
            raise InputError(f"the Dask scheduler at {scheduler} has no worker (start one with `dask worker {scheduler}`)") from None
        client.register_plugin(_WarmKernels(ignore_interrupts=not scheduler, video=video))
        yield client


def total_threads(client: Any) -> int:
    """Threads of all workers of ``client``'s cluster (at least 1)."""
    return max(1, sum(client.nthreads().values()))
