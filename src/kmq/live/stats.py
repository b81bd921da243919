"""Running measures of a live stream: recent durations as percentiles, and event rates over a window."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

__all__ = ["RecentTimes", "TimeHistogram", "RateMeter"]


class RecentTimes:
    """The last ``size`` durations (seconds), summarised as milliseconds at chosen percentiles.

    Safe to add to from one thread while another reads.

    Examples
    --------
    >>> times = RecentTimes(4)
    >>> for seconds in (0.010, 0.020, 0.030, 0.040, 0.050):
    ...     times.add(seconds)
    >>> times.summary()["p50"]
    35.0
    """

    def __init__(self, size: int = 300) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one duration."""
        with self._lock:
            self._values.append(seconds)

    def summary(self) -> dict[str, float | int | None]:
        """``count``, and ``p50``, ``p95``, ``max`` in milliseconds (None before the first value)."""
        with self._lock:
            values = np.array(self._values)
        if values.size == 0:
            return {"count": 0, "p50": None, "p95": None, "max": None}
        p50, p95 = np.percentile(values, [50, 95]) * 1000.0
        return {
            "count": int(values.size),
            "p50": round(float(p50), 2),
            "p95": round(float(p95), 2),
            "max": round(float(values.max()) * 1000.0, 2),
        }


class TimeHistogram:
    """Every duration since the start, in 1 ms bins up to ``limit_ms`` (longer ones in the last bin).

    Fixed memory however long the stream runs, and percentiles over all of it to within 1 ms.

    Examples
    --------
    >>> histogram = TimeHistogram()
    >>> for ms in range(1, 101):
    ...     histogram.add(ms / 1000)
    >>> histogram.summary()["p95"]
    95.5
    """

    def __init__(self, limit_ms: int = 2000) -> None:
        self._counts = np.zeros(limit_ms + 1, np.int64)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one duration."""
        index = min(int(seconds * 1000.0), len(self._counts) - 1)
        with self._lock:
            self._counts[index] += 1

    def summary(self) -> dict[str, float | int | None]:
        """``count``, and ``p50`` and ``p95`` in milliseconds (bin centres; None before the first value)."""
        with self._lock:
            counts = self._counts.copy()
        total = int(counts.sum())
        if total == 0:
            return {"count": 0, "p50": None, "p95": None}
        cumulative = np.cumsum(counts)
        found = {}
        for name, share in (("p50", 0.5), ("p95", 0.95)):
            found[name] = float(np.searchsorted(cumulative, share * total)) + 0.5
        return {"count": total, **found}

    def bins(self) -> dict[int, int]:
        """The non-empty bins: whole milliseconds -> how many durations fell in them."""
        with self._lock:
            counts = self._counts.copy()
        return {int(ms): int(counts[ms]) for ms in np.flatnonzero(counts)}


class RateMeter:
    """Events and their sizes over the last ``window`` seconds: events per second and bytes per second.

    Examples
    --------
    >>> meter = RateMeter(window=10.0)
    >>> meter.add(1000, now=0.0); meter.add(1000, now=0.5); meter.add(1000, now=1.0)
    >>> meter.rate(now=1.0)
    (2.0, 2000.0)
    """

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._events: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def add(self, size: int = 0, *, now: float | None = None) -> None:
        """Count one event of ``size`` bytes."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._events.append((now, size))
            self._trim(now)

    def rate(self, *, now: float | None = None) -> tuple[float, float]:
        """(events per second, bytes per second) between the first event in the window and the last.

        The first event opens the interval and its size is not counted, so a steady stream of
        equal events reads as exactly its rate.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._events) < 2:
                return 0.0, 0.0
            span = self._events[-1][0] - self._events[0][0]
            if span <= 0:
                return 0.0, 0.0
            count = len(self._events) - 1
            size = sum(size for _, size in self._events) - self._events[0][1]
        return count / span, size / span

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window:
            self._events.popleft()
