"""Fan-out: one encoded packet to every viewer, each through a bounded queue of its own.

Runs on the server's event loop. A viewer starts at a keyframe. A viewer that is behind is not
sent the discardable frames that wait in its queue before newer ones (no other frame needs
them); a viewer whose queue still fills up (a slow network, a stalled reader) loses what it had
queued and waits for the next keyframe, so it never holds more than its queue allows and never
slows the encoder or the other viewers.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kmq.errors import LimitError

__all__ = ["LivePacket", "Viewer", "FanOut"]

#: Per-viewer queue bounds: frames, and bytes (whichever is reached first).
DEFAULT_QUEUE_FRAMES = 6
DEFAULT_QUEUE_BYTES = 8 << 20
#: Frames a viewer that acknowledges what it decoded may have in flight (sent, not yet decoded).
#: This bounds the delay hidden in socket buffers and in a slow decoder, not just in the queue:
#: one frame decoding and two on their way (100 ms at 30 fps) keep a decoder busy across a
#: 50 ms round trip, and a decoder slower than the stream makes at most two frames wait before
#: it, not five.
DEFAULT_ACK_WINDOW = 3
#: Keyframes asked of the encoder for viewers come at most this often (seconds): viewers that
#: join or recover together share one, and no viewer can make the stream all keyframes.
DEFAULT_KEYFRAME_GAP = 0.5
#: A viewer that fell behind waits for a keyframe until this long (seconds) after the last one
#: before one is asked for it: a viewer that cannot keep up, and falls behind again and again,
#: then costs the encoder a keyframe every two seconds at most (a keyframe costs about twice a
#: delta frame), while a joining viewer still gets one within ``DEFAULT_KEYFRAME_GAP``.
DEFAULT_RECOVERY_GAP = 2.0


@dataclass(frozen=True)
class LivePacket:
    """One encoded frame as it goes to viewers: its capture-time record and its frame packet.

    Attributes
    ----------
    number : int
        Frame number in the stream.
    keyframe : bool
        Whether a viewer can start here.
    discardable : bool
        Whether no later frame needs this one (a viewer that is behind may go without it).
    timing : bytes
        The ``kmqt`` record sent just before the packet.
    packet : bytes
        The ``KMQF`` frame packet.
    """

    number: int
    keyframe: bool
    timing: bytes
    packet: bytes
    discardable: bool = False

    @property
    def size(self) -> int:
        """Bytes on the wire (both records)."""
        return len(self.timing) + len(self.packet)


class Viewer:
    """One connected viewer: its queue, its state and its counters.

    Attributes
    ----------
    id : int
        Number of the viewer since the server started.
    address : str
        Where it connects from.
    frames_sent, frames_dropped, bytes_sent : int
        Packets handed to its connection, packets it missed (queue overflow or waiting for a
        keyframe after falling behind), bytes handed to its connection.
    frames_skipped : int
        Discardable packets not sent because newer ones waited behind them.
    lag_events : int
        Times it fell behind and was moved to the next keyframe.
    """

    def __init__(self, fanout: FanOut, number: int, address: str) -> None:
        self._fanout = fanout
        self.id = number
        self.address = address
        self.joined = time.monotonic()
        self.queue: collections.deque[LivePacket] = collections.deque()
        self.queued_bytes = 0
        self.waiting = True
        self.started = False
        self.closed = False
        self.frames_sent = 0
        self.frames_dropped = 0
        self.frames_skipped = 0
        self.bytes_sent = 0
        self.lag_events = 0
        self.keyframe_requests = 0
        self._asked = False
        self._wakeup = asyncio.Event()
        self.acknowledging = False
        self.acknowledged = -1
        self._in_flight: collections.deque[int] = collections.deque()

    # -- the fan-out side

    def offer(self, packet: LivePacket) -> None:
        """Queue a packet for this viewer, or drop it when the viewer waits or has fallen behind."""
        if self.closed:
            return
        if self.waiting:
            if not packet.keyframe:
                if self.started:
                    self.frames_dropped += 1
                return
            self.waiting = False
            self._asked = False
        fanout = self._fanout
        if self.queue and self._full(packet):
            self._skip_discardable()
        if self.queue and self._full(packet):
            self._fall_behind()
            if not packet.keyframe:
                self.frames_dropped += 1
                return
            self.waiting = False
        self.queue.append(packet)
        self.queued_bytes += packet.size
        self.started = True
        if len(self.queue) > 1 or (self.acknowledging and len(self._in_flight) >= fanout.ack_window):
            # This packet has to wait (behind another, or for the viewer to decode what it has):
            # the viewer takes packets more slowly than they come.
            fanout.viewer_behind()
        self._wakeup.set()

    def _full(self, packet: LivePacket) -> bool:
        fanout = self._fanout
        return len(self.queue) >= fanout.queue_frames or self.queued_bytes + packet.size > fanout.queue_bytes

    def _skip_discardable(self) -> None:
        """Take the discardable packets out of the queue (the packet about to be queued follows them)."""
        kept = [packet for packet in self.queue if not packet.discardable]
        skipped = len(self.queue) - len(kept)
        if skipped:
            self.frames_skipped += skipped
            self.queue = collections.deque(kept)
            self.queued_bytes = sum(packet.size for packet in kept)

    def skip_to_keyframe(self) -> None:
        """The viewer asked to start again at a keyframe (its decoder fell behind)."""
        self.keyframe_requests += 1
        self._in_flight.clear()  # the viewer has let go of everything it was sent
        if not self.waiting:
            self._fall_behind()

    def acknowledge(self, number: int) -> None:
        """The viewer has decoded frame ``number`` (and everything it was sent before it)."""
        self.acknowledging = True
        self.acknowledged = max(self.acknowledged, number)
        while self._in_flight and self._in_flight[0] <= number:
            self._in_flight.popleft()
        self._wakeup.set()

    def _fall_behind(self) -> None:
        self.frames_dropped += len(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        self.waiting = True
        self._asked = False
        self.lag_events += 1

    def close(self) -> None:
        """Stop: the sender's wait ends and the queue is released."""
        self.closed = True
        self.queue.clear()
        self.queued_bytes = 0
        self._wakeup.set()

    # -- the connection side

    async def next(self) -> LivePacket | None:
        """The next packet to send; None once the viewer is closed."""
        window = self._fanout.ack_window
        while not self.closed:
            if self.queue and not (self.acknowledging and len(self._in_flight) >= window):
                packet = self.queue.popleft()
                self.queued_bytes -= packet.size
                if packet.discardable and self.queue:
                    # Behind: a newer frame waits, and no frame needs this one.
                    self.frames_skipped += 1
                    continue
                self._in_flight.append(packet.number)
                return packet
            if self.waiting and not self._asked:
                # Caught up, and waiting: only now ask for a keyframe, so a stalled viewer (whose
                # queue never drains) costs the others nothing.
                self._asked = True
                self._fanout.want_keyframe(recovering=self.lag_events > 0)
            self._wakeup.clear()
            await self._wakeup.wait()
        return None

    def sent(self, packet: LivePacket) -> None:
        """Count a packet handed to the connection."""
        self.frames_sent += 1
        self.bytes_sent += packet.size
        self._fanout.bytes_sent += packet.size

    def summary(self) -> dict[str, Any]:
        """This viewer's line of ``GET /stats``."""
        return {
            "id": self.id,
            "address": self.address,
            "seconds": round(time.monotonic() - self.joined, 1),
            "state": "waiting for keyframe" if self.waiting else "playing",
            "frames_sent": self.frames_sent,
            "frames_dropped": self.frames_dropped,
            "frames_skipped": self.frames_skipped,
            "bytes_sent": self.bytes_sent,
            "queued_frames": len(self.queue),
            "queued_bytes": self.queued_bytes,
            "in_flight": len(self._in_flight) if self.acknowledging else None,
            "fell_behind": self.lag_events,
            "keyframe_requests": self.keyframe_requests,
        }


class FanOut:
    """Hands every packet to every viewer and asks the encoder for keyframes when viewers need them.

    Parameters
    ----------
    request_keyframe : callable
        Asks the encoder to make its next frame a keyframe (called from the event loop).
    max_viewers : int
        Viewers at once; more are refused.
    queue_frames, queue_bytes : int
        Bounds of each viewer's queue.
    ack_window : int
        Frames in flight to a viewer that acknowledges them; the rest wait in its queue.
    keyframe_gap : float
        Seconds between keyframes asked for on behalf of viewers.
    recovery_gap : float
        Seconds since the stream's last keyframe before one is asked for a viewer that fell
        behind (a viewer that joins asks at once).
    on_behind : callable, optional
        Called (on the event loop) whenever a packet for a viewer has to wait, behind another or
        for the viewer to acknowledge what it has in flight: that viewer is behind, and the
        encoder may make discardable frames for it to skip.
    """

    def __init__(
        self,
        request_keyframe: Callable[[], None],
        *,
        max_viewers: int = 32,
        queue_frames: int = DEFAULT_QUEUE_FRAMES,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        ack_window: int = DEFAULT_ACK_WINDOW,
        keyframe_gap: float = DEFAULT_KEYFRAME_GAP,
        recovery_gap: float = DEFAULT_RECOVERY_GAP,
        on_behind: Callable[[], None] | None = None,
    ) -> None:
        self._request_keyframe = request_keyframe
        self._on_behind = on_behind
        self.max_viewers = max_viewers
        self.queue_frames = max(1, queue_frames)
        self.queue_bytes = max(1, queue_bytes)
        self.ack_window = max(1, ack_window)
        self.keyframe_gap = keyframe_gap
        self.recovery_gap = recovery_gap
        self.viewers: dict[int, Viewer] = {}
        self.bytes_sent = 0
        self.joined = 0
        self.keyframes_requested = 0
        self._numbers = itertools.count(1)
        self._last_request = -float("inf")
        self._last_keyframe = -float("inf")
        self._pending: asyncio.TimerHandle | None = None
        self._pending_at = float("inf")
        self._departed_dropped = 0
        self._departed_skipped = 0

    def join(self, address: str) -> Viewer:
        """Add a viewer; it will start at the next keyframe, which is asked for now.

        Raises
        ------
        kmq.errors.LimitError
            When ``max_viewers`` are already watching.
        """
        if len(self.viewers) >= self.max_viewers:
            raise LimitError(f"this stream already has its {self.max_viewers} viewers")
        viewer = Viewer(self, next(self._numbers), address)
        self.viewers[viewer.id] = viewer
        self.joined += 1
        self.want_keyframe()
        return viewer

    def leave(self, viewer: Viewer) -> None:
        """Remove a viewer (in any state) and release its queue."""
        viewer.close()
        if self.viewers.pop(viewer.id, None) is not None:
            self._departed_dropped += viewer.frames_dropped
            self._departed_skipped += viewer.frames_skipped

    def publish(self, packet: LivePacket) -> None:
        """Offer a freshly encoded packet to every viewer (the same bytes to each)."""
        if packet.keyframe:
            self._last_keyframe = time.monotonic()
        for viewer in list(self.viewers.values()):
            viewer.offer(packet)

    def viewer_behind(self) -> None:
        """A viewer's packet waits behind another one."""
        if self._on_behind is not None:
            self._on_behind()

    def want_keyframe(self, *, recovering: bool = False) -> None:
        """Ask the encoder for a keyframe, at most once per ``keyframe_gap`` seconds.

        For a viewer that fell behind (``recovering``), not before ``recovery_gap`` seconds after
        the stream's last keyframe either; a keyframe that comes first serves it, and a request
        still pending then is dropped when no viewer waits any more.
        """
        now = time.monotonic()
        due = self._last_request + self.keyframe_gap
        if recovering:
            due = max(due, self._last_keyframe + self.recovery_gap)
        if self._pending is not None:
            if due >= self._pending_at:
                return
            self._pending.cancel()  # a joining viewer brings a later request forward
        if due <= now:
            self._ask()
        else:
            self._pending_at = due
            self._pending = asyncio.get_running_loop().call_later(due - now, self._ask_if_waited_for)

    def _ask_if_waited_for(self) -> None:
        if any(viewer.waiting for viewer in self.viewers.values()):
            self._ask()
        else:
            self._pending = None
            self._pending_at = float("inf")

    def _ask(self) -> None:
        self._pending = None
        self._pending_at = float("inf")
        self._last_request = time.monotonic()
        self.keyframes_requested += 1
        self._request_keyframe()

    def close(self) -> None:
        """Close every viewer's queue and cancel a pending keyframe request."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
            self._pending_at = float("inf")
        for viewer in list(self.viewers.values()):
            viewer.close()

    def summary(self) -> dict[str, Any]:
        """The viewers part of ``GET /stats``."""
        viewers = [viewer.summary() for viewer in self.viewers.values()]
        return {
            "count": len(viewers),
            "limit": self.max_viewers,
            "joined_total": self.joined,
            "queue_limit": {"frames": self.queue_frames, "bytes": self.queue_bytes, "in_flight": self.ack_window},
            "keyframes_requested": self.keyframes_requested,
            "frames_dropped_total": self._departed_dropped + sum(v["frames_dropped"] for v in viewers),
            "frames_skipped_total": self._departed_skipped + sum(v["frames_skipped"] for v in viewers),
            "list": viewers,
        }
