"""The fan-out alone: one packet to every viewer, keyframe starts, bounded queues, skips, the in-flight window."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from kmq.errors import LimitError
from kmq.live.fanout import FanOut, LivePacket


def packet(number: int, keyframe: bool = False, size: int = 100, discardable: bool = False) -> LivePacket:
    return LivePacket(number=number, keyframe=keyframe, timing=b"t" * 32, packet=bytes(size), discardable=discardable)


def layered(number: int) -> LivePacket:
    """Frame ``number`` of a two-layer stream starting at a keyframe at 0: odd frames discardable."""
    return packet(number, keyframe=number == 0, discardable=number % 2 == 1)


def run(coroutine):
    """Run a scenario on an event loop of its own thread, whatever loop this thread may have."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Requests:
    """Counts the keyframes the fan-out asks the encoder for."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


async def drain(viewer, count: int) -> list[LivePacket]:
    return [await asyncio.wait_for(viewer.next(), 1) for _ in range(count)]


def test_every_viewer_gets_the_same_packet_objects_from_a_keyframe_on():
    async def scenario():
        fanout = FanOut(Requests())
        first, second = fanout.join("a"), fanout.join("b")
        sent = [packet(0), packet(1, keyframe=True), packet(2), packet(3)]
        for item in sent:
            fanout.publish(item)
        got_first, got_second = await drain(first, 3), await drain(second, 3)
        assert got_first == sent[1:] and all(a is b for a, b in zip(got_first, got_second))
        # Before its first keyframe a viewer has nothing to miss: nothing counts as dropped.
        assert first.frames_dropped == 0

    run(scenario())


def test_joining_asks_for_a_keyframe_but_not_more_often_than_the_gap():
    async def scenario():
        requests = Requests()
        fanout = FanOut(requests, keyframe_gap=0.2)
        fanout.join("a")
        fanout.join("b")
        fanout.join("c")
        assert requests.count == 1
        await asyncio.sleep(0.3)
        assert requests.count == 2  # the later joiners' request, once the gap has passed

    run(scenario())


def test_the_viewer_limit_refuses_one_more():
    async def scenario():
        fanout = FanOut(Requests(), max_viewers=2)
        fanout.join("a")
        fanout.join("b")
        with pytest.raises(LimitError):
            fanout.join("c")

    run(scenario())


def test_a_viewer_that_falls_behind_skips_to_the_next_keyframe_with_a_bounded_queue():
    async def scenario():
        requests = Requests()
        fanout = FanOut(requests, queue_frames=4, keyframe_gap=0, recovery_gap=0)
        viewer = fanout.join("slow")
        fanout.publish(packet(0, keyframe=True))
        for number in range(1, 20):
            fanout.publish(packet(number))
            assert len(viewer.queue) <= 4
        # Never read: the four queued, the one that overflowed the queue and the fifteen after it.
        assert viewer.waiting and viewer.lag_events == 1 and viewer.frames_dropped == 20
        asked = requests.count
        # Caught up with an empty queue: only now is a keyframe asked for.
        task = asyncio.create_task(viewer.next())
        await asyncio.sleep(0)
        assert requests.count == asked + 1
        fanout.publish(packet(20))
        fanout.publish(packet(21, keyframe=True))
        assert (await asyncio.wait_for(task, 1)).number == 21

    run(scenario())


def test_a_viewer_that_fell_behind_waits_the_recovery_gap_after_the_last_keyframe():
    async def scenario():
        requests = Requests()
        fanout = FanOut(requests, queue_frames=2, keyframe_gap=0, recovery_gap=0.3)
        viewer = fanout.join("slow")
        assert requests.count == 1  # joining asks at once

        async def fall_behind(numbers):
            """Publish without reading until the viewer waits; then it reads again (asking)."""
            for number in numbers:
                fanout.publish(packet(number, keyframe=number in keyframes))
            assert viewer.waiting
            task = asyncio.create_task(viewer.next())
            await asyncio.sleep(0.1)
            return task

        keyframes = {0, 4, 8, 9}
        task = await fall_behind(range(4))
        assert requests.count == 1  # the last keyframe is too recent
        await asyncio.sleep(0.3)
        assert requests.count == 2
        fanout.publish(packet(4, keyframe=True))
        assert (await asyncio.wait_for(task, 1)).number == 4

        # Falling behind again: a keyframe of the stream's own, before the gap is up, serves it
        # and the pending request lapses.
        task = await fall_behind(range(5, 8))
        fanout.publish(packet(8, keyframe=True))
        assert (await asyncio.wait_for(task, 1)).number == 8
        await asyncio.sleep(0.4)
        assert requests.count == 2

        # A viewer that joins meanwhile is not held back by a recovering one's wait.
        task = await fall_behind(range(9, 13))
        assert requests.count == 2
        fanout.join("new")
        assert requests.count == 3
        task.cancel()

    run(scenario())


def test_a_queue_is_bounded_in_bytes_as_well():
    async def scenario():
        fanout = FanOut(Requests(), queue_frames=100, queue_bytes=1000)
        viewer = fanout.join("slow")
        fanout.publish(packet(0, keyframe=True, size=300))
        for number in range(1, 10):
            fanout.publish(packet(number, size=300))
            assert viewer.queued_bytes <= 1000

    run(scenario())


def test_a_viewer_that_acknowledges_has_at_most_its_window_in_flight():
    async def scenario():
        fanout = FanOut(Requests(), queue_frames=50, ack_window=3)
        viewer = fanout.join("a")
        viewer.acknowledge(-1)
        fanout.publish(packet(0, keyframe=True))
        for number in range(1, 6):
            fanout.publish(packet(number))
        assert [p.number for p in await drain(viewer, 3)] == [0, 1, 2]
        blocked = asyncio.create_task(viewer.next())
        await asyncio.sleep(0.05)
        assert not blocked.done()
        viewer.acknowledge(0)
        assert (await asyncio.wait_for(blocked, 1)).number == 3

    run(scenario())


def test_by_default_an_acknowledging_viewer_has_at_most_100_ms_of_30_fps_frames_in_flight():
    async def scenario():
        fanout = FanOut(Requests())
        viewer = fanout.join("a")
        viewer.acknowledge(-1)
        fanout.publish(packet(0, keyframe=True))
        for number in range(1, fanout.queue_frames):
            fanout.publish(packet(number))
        sent = []
        while True:
            waiting = asyncio.create_task(viewer.next())
            await asyncio.sleep(0.01)
            if not waiting.done():
                waiting.cancel()
                break
            sent.append(waiting.result().number)
        assert len(sent) / 30 <= 0.1  # frames waiting in front of the viewer's decoder are latency
        viewer.acknowledge(sent[0])
        assert (await asyncio.wait_for(viewer.next(), 1)).number == len(sent)

    run(scenario())


def test_a_viewer_that_is_behind_is_not_sent_discardable_frames_that_newer_ones_wait_behind():
    async def scenario():
        fanout = FanOut(Requests(), queue_frames=50, ack_window=2)
        viewer = fanout.join("a")
        viewer.acknowledge(-1)
        fanout.publish(layered(0))
        fanout.publish(layered(1))
        # Caught up, the viewer is sent discardable frames as well.
        sent = [p.number for p in await drain(viewer, 2)]
        # Then it is behind: 2..8 wait for acknowledgements, and the discardable frames among
        # them with a newer frame behind them are skipped.
        for number in range(2, 9):
            fanout.publish(layered(number))
        while len(sent) < 6:
            viewer.acknowledge(sent[-2])  # the viewer decoded the older of its two frames
            sent.append((await asyncio.wait_for(viewer.next(), 1)).number)
        assert sent == [0, 1, 2, 4, 6, 8]
        assert viewer.frames_skipped == 3 and viewer.frames_dropped == 0 and not viewer.waiting
        viewer.acknowledge(8)  # caught up again
        fanout.publish(layered(9))  # discardable, with nothing behind it: sent
        assert (await asyncio.wait_for(viewer.next(), 1)).number == 9
        assert fanout.summary()["frames_skipped_total"] == 3

    run(scenario())


def test_a_packet_that_has_to_wait_behind_another_reports_its_viewer_behind():
    async def scenario():
        behind = Requests()
        fanout = FanOut(Requests(), on_behind=behind)
        viewer = fanout.join("a")
        fanout.publish(packet(0, keyframe=True))
        await drain(viewer, 1)
        fanout.publish(packet(1))  # taken before the next one comes: keeping up
        await drain(viewer, 1)
        assert behind.count == 0
        fanout.publish(packet(2))
        fanout.publish(packet(3))  # 2 still waits
        assert behind.count == 1
        # A viewer that acknowledges: a packet that must wait for its window is behind too.
        behind = Requests()
        fanout = FanOut(Requests(), on_behind=behind, ack_window=2)
        viewer = fanout.join("b")
        viewer.acknowledge(-1)
        for number in range(2):
            fanout.publish(packet(number, keyframe=number == 0))
            await drain(viewer, 1)
        assert behind.count == 0
        fanout.publish(packet(2))  # two in flight, none acknowledged: 2 waits
        assert behind.count == 1

    run(scenario())


def test_a_full_queue_gives_up_its_discardable_frames_before_falling_behind():
    async def scenario():
        requests = Requests()
        fanout = FanOut(requests, queue_frames=4, keyframe_gap=0)
        viewer = fanout.join("a")
        # 0 1 2 3 fill the queue; 4 finds it full: 1 and 3 go. 6 finds it full again: 5 goes.
        for number in range(7):
            fanout.publish(layered(number))
        assert [p.number for p in viewer.queue] == [0, 2, 4, 6]
        assert viewer.frames_skipped == 3 and viewer.lag_events == 0 and viewer.frames_dropped == 0
        # Only reference frames left, and full: the viewer falls behind to a keyframe.
        fanout.publish(layered(7))
        assert viewer.waiting and viewer.lag_events == 1 and viewer.frames_dropped == 5

    run(scenario())


def test_leaving_releases_the_queue_and_ends_the_senders_wait():
    async def scenario():
        fanout = FanOut(Requests())
        viewer = fanout.join("a")
        fanout.publish(packet(0, keyframe=True))
        waiting = asyncio.create_task(drain(viewer, 2))
        await asyncio.sleep(0)
        fanout.leave(viewer)
        assert (await asyncio.wait_for(waiting, 1))[1] is None
        assert not fanout.viewers and viewer.queued_bytes == 0
        fanout.publish(packet(1))
        assert not viewer.queue

    run(scenario())
