"""Stopping long work cleanly: the first SIGTERM or Ctrl-C asks the work to stop, a second one aborts."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["graceful_stop"]


@contextlib.contextmanager
def graceful_stop() -> Iterator[threading.Event]:
    """Turn the first SIGTERM or SIGINT into a request to stop (an event); a second one aborts.

    Only in the main thread; elsewhere the event is never set by a signal.

    Yields
    ------
    threading.Event
        Set when a stop was requested; pass it to :func:`kmq.scale.run_batch` or :func:`kmq.scale.encode_video_chunked`.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
