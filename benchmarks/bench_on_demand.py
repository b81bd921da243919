"""What ``kmq live --on-demand`` saves, and what it costs a viewer.

Run: ``python benchmarks/bench_on_demand.py [--seconds 20] [--visits 5] [--json OUT]``.

For each source — the test pattern at 1280×720, the shared clip scaled to 1280×720
(../shared/media/bbb-480p-10s.mp4, looped), and the clip relayed as an IP camera sends it (H.264
at 1280×720 and 30 fps in MPEG-TS over UDP, a keyframe every 2 s, encoded once by FFmpeg's libx264
and fed in real time by ``ffmpeg -re -c copy``) — two ``kmq live`` servers in turn, one always
open and one with ``--on-demand 1``, side by side:

- the server's CPU over ``--seconds`` with nobody watching (the on-demand server's source closed);
- a viewer's wait from connecting to its first frame (always a keyframe): joining the
  always-open server, which makes a keyframe for it, and waking the on-demand one, whose source
  is opened again first (a file from its start; a stream by listening again, then FFmpeg's
  probing and the stream's next keyframe); median and worst over ``--visits`` visits, each one
  after the source has been closed (or, always open, unwatched) for a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_live import DEFAULT_CLIP, FPS, SIZE, Server, camera_feeder, camera_stream, load

#: Seconds without a viewer before the on-demand server closes its source.
DELAY = 1.0


async def _first_frame(port: int) -> float:
    """Seconds from connecting to the first frame packet."""
    import aiohttp

    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.ws_connect(f"ws://127.0.0.1:{port}/ws", max_msg_size=0) as ws:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data[:4] == b"KMQF":
                return time.monotonic() - started
    raise RuntimeError("the stream ended before its first frame")


def first_frame_wait(port: int) -> float:
    return asyncio.run(asyncio.wait_for(_first_frame(port), 60))


def wait_until(server: Server, condition, what: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = server.stats()
        if condition(stats):
            return stats
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def measure(args: list[str], on_demand: bool, seconds: float, visits: int) -> dict:
    """One server: its CPU with nobody watching, then ``visits`` viewers' waits for a first frame."""
    server = Server(*args, *(["--on-demand", str(DELAY)] if on_demand else []))
    try:
        # Warm: the encoder's first frames, and for on demand the source closed.
        wait_until(server, lambda s: s["frames_encoded"] >= 2 * FPS or s["source"]["idle"], "the first frames")
        if on_demand:
            wait_until(server, lambda s: s["source"]["idle"], "the source closed")
        else:
            time.sleep(2 * DELAY)
        before, started = server.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cores = (server.cpu_seconds() - before) / (time.monotonic() - started)
        waits = []
        for _ in range(visits):
            waits.append(first_frame_wait(server.port))
            if on_demand:
                wait_until(server, lambda s: s["source"]["idle"] and not s["viewers"]["count"], "the source closed")
            time.sleep(1.0)
        stats = server.stats()
        return {"idle_cores": cores, "first_frame_s": waits, "wakes": stats["source"]["wakes"], "load": load()}
    finally:
        server.stop()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU measured with nobody watching (default 20)")
    parser.add_argument("--visits", type=int, default=5, help="viewers timed, one after another (default 5)")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="default ../shared/media/bbb-480p-10s.mp4")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    args = parser.parse_args(argv)
    if not args.clip.exists():
        print(f"error: the clip {args.clip} is not there", file=sys.stderr)
        return 2
    size = ["--size", f"{SIZE[0]}x{SIZE[1]}", "--fps", str(FPS)]
    results: dict = {}
    print(f"load average at the start: {load()}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        port = free_udp_port()
        stream = camera_stream(args.clip, Path(work))
        feeder = subprocess.Popen(camera_feeder(stream, f"udp://127.0.0.1:{port}?pkt_size=1316"))
        sources = {
            "testsrc": ["--source", "testsrc", *size],
            "clip": ["--source", str(args.clip), "--loop", *size],
            "relay (UDP)": ["--source", f"udp://127.0.0.1:{port}", "--loop"],
        }
        try:
            for name, source_args in sources.items():
                for on_demand in (False, True):
                    print(f"{name}, {'on demand' if on_demand else 'always open'} (load {load()})", flush=True)
                    results.setdefault(name, {})["on_demand" if on_demand else "always"] = measure(
                        source_args, on_demand, args.seconds, args.visits
                    )
        finally:
            feeder.kill()
            feeder.wait()
    print(f"\nkmq live --on-demand {DELAY:g} against always open, {SIZE[0]}×{SIZE[1]} at {FPS} fps,"
          f" {args.seconds:g} s unwatched, {args.visits} visits")
    print(f"{'':44}" + "".join(f"{name:>14}" for name in results))
    rows = [
        ("server CPU, nobody watching: always open", "always", "cores"),
        ("  on demand (source closed)", "on_demand", "cores"),
        ("first frame, joining (always open), s", "always", "median"),
        ("  worst", "always", "max"),
        ("first frame, waking (on demand), s", "on_demand", "median"),
        ("  worst", "on_demand", "max"),
    ]
    for label, which, figure in rows:
        cells = ""
        for name in results:
            result = results[name][which]
            value = {
                "cores": result["idle_cores"],
                "median": statistics.median(result["first_frame_s"]),
                "max": max(result["first_frame_s"]),
            }[figure]
            cells += f"{value:>14.3f}" if figure == "cores" else f"{value:>14.2f}"
        print(f"{label:44}{cells}")
    print(f"load average at the end: {load()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
