"""Live streaming at 1280×720 and 30 fps: encode time, source drops, viewers, latency, bandwidth.

Run: ``python benchmarks/bench_live.py [--seconds 60] [--runs 3] [--viewers 8] [--json OUT]``.

Each run streams two sources with the real ``kmq live`` command: ``testsrc`` (a pan and zoom
across a real photograph, so every pixel moves) and the shared clip
(../shared/media/bbb-480p-10s.mp4, scaled to 1280×720, played at 30 fps with ``--loop``); for each:

1. with no viewer: the server's encode time per frame (p50/p95 over the whole phase), the frames
   the source dropped because the encoder was behind, the encode rate, the CPU the server used;
2. with one headless Chromium page (Debian's /usr/bin/chromium, driven by Playwright) on the
   same machine: the same, what the page decoded, and the end-to-end latency read in the page
   (capture time to the frame being painted), and where it goes: the page times each frame's
   steps (encoded, received, decoding started, decoded, painted) against the capture time;
3. for the clip, with ``--viewers`` WebSocket viewers in another process that receive and
   acknowledge every frame without decoding it (what serving them costs the server), with
   ``--viewers`` Chromium pages (what they cost when they share the server's cores), and with
   ``--viewers`` pages at niceness 19 (viewers that take no CPU the server wants, as on other
   machines, but still real browsers: does the encoder keep its rate while they lag?);
4. the clip at 640×360 (a quarter of the pixels) with one page: the same latency figures where
   the server and the page together need well under the two cores, which separates the
   pipeline's own delay from waiting for a core;
5. the clip relayed as an IP camera would send it: H.264 at 1280×720 in MPEG-TS (encoded once
   beforehand by FFmpeg's libx264, 4 Mbit/s, a keyframe every 2 s), fed in real time by
   ``ffmpeg -re -c copy`` into ``kmq live --source -``, with one page: the server now decodes
   H.264 before it encodes (latency is counted from the decoded frame, as from a camera's).
6. the peer, live: Motion-JPEG q5 of the clip at 1280×720 and 30 fps, encoded by FFmpeg as the
   frames come and sent by a small WebSocket relay to one page, then to ``--viewers`` pages,
   each JPEG decoded by Chromium's own decoder and drawn on a canvas (live_mjpeg.py): its encode
   rate, the CPU of FFmpeg and the relay, Chromium's CPU and what the pages show, printed beside
   kmq's one-page and many-page phases of the clip.

Each phase runs a fresh server, warms it up, then measures for ``--seconds``; ``--phases``
picks some (for example ``relay/1_viewers``).

Bandwidth on the clip: what the live stream carried per second and per frame, against raw RGB
and against Motion-JPEG (``ffmpeg -c:v mjpeg -q:v 5``) of the very same 1280×720 frames (the
clip scaled by the same code the live source uses); kmq's bytes for those frames encoded once
in order, without drops or viewer keyframes, are printed too. Where the encoder's time goes at
1280×720 is measured apart, stage by stage, on the same two kinds of frames.

The machine's load average is printed before every phase: on a shared 2-core machine the
viewers, the server and other people's work all compete for the same cores.

Chromium runs as a user's browser would: run by root, it raises its compositor, I/O and audio
threads to niceness -8, which no browser of an ordinary user can, so here (as root) it starts
without the capability to (``setpriv``, dropping CAP_SYS_NICE) and its threads stay at 0 or above.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "media" / "bbb-480p-10s.mp4"
SIZE = (1280, 720)
#: The smaller size of the last phase (latency when the cores are not all taken).
SMALL = (640, 360)
FPS = 30
K = 64
CHROMIUM = "/usr/bin/chromium"


def user_chromium(folder: Path) -> str:
    """Chromium as an ordinary user's: as root, a wrapper that starts it without CAP_SYS_NICE."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return CHROMIUM
    wrapper = folder / "chromium-without-sys-nice"
    wrapper.write_text(f'#!/bin/sh\nexec {setpriv} --bounding-set -sys_nice --inh-caps -sys_nice {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_processes() -> list:
    """The Chromium processes this benchmark started that are still running (psutil processes)."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.name().startswith("chrom"):
                found.append(process)
        except psutil.Error:
            pass
    return found


def cpu_of(processes: list) -> float:
    """CPU seconds used so far by these processes (psutil processes; those that have ended count nothing)."""
    import psutil

    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def chromium_seconds() -> float:
    """CPU seconds used so far by the Chromium processes this benchmark started (those still running)."""
    return cpu_of(chromium_processes())


def renice_chromium(niceness: int) -> None:
    """Give the Chromium processes this niceness (19: they get only the CPU the server leaves them).

    Linux keeps a niceness per thread, so every thread of every process is set (threads started
    later inherit it from the thread that starts them); where the scheduler groups processes by
    session (autogroup) and Chromium runs in a session of its own, niceness counts only inside
    that group, so the group's niceness is set too. Going back to 0 needs root; elsewhere the
    pages stay at 19, which is why that phase runs last.
    """
    import psutil

    ours = _autogroup(os.getpid())
    for process in chromium_processes():
        group = _autogroup(process.pid)
        if group is not None and group != ours:
            try:
                Path(f"/proc/{process.pid}/autogroup").write_text(str(niceness))
            except OSError:
                pass
        try:
            threads = [thread.id for thread in process.threads()]
        except psutil.Error:
            continue
        for thread in threads:
            try:
                os.setpriority(os.PRIO_PROCESS, thread, niceness)
            except OSError:
                pass


def _autogroup(pid: int) -> str | None:
    """The scheduler's autogroup of a process ("/autogroup-N"), or None where there is none."""
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().split()[0]
    except (OSError, IndexError):
        return None


def missing(clip: Path) -> str | None:
    """What this machine lacks to run the browser benchmarks (the clip, Chromium, FFmpeg), or None."""
    if not clip.is_file():
        return f"no clip at {clip}"
    if not Path(CHROMIUM).is_file() or shutil.which("ffmpeg") is None:
        return "needs Debian's chromium at /usr/bin/chromium and ffmpeg"
    return None


def load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


# ---------------------------------------------------------------- the server


class Server:
    """``kmq live`` in a child process, as a user runs it (``feeder``: a command whose output is its standard input)."""

    def __init__(self, *args: str, feeder: list[str] | None = None) -> None:
        self.feeder = subprocess.Popen(feeder, stdout=subprocess.PIPE) if feeder else None
        self.proc = subprocess.Popen(
            # -q: only the addresses are printed, so an unread pipe never fills up.
            [sys.executable, "-m", "kmq", "-q", "live", "--port", "0", "-k", str(K), *args],
            stdin=self.feeder.stdout if self.feeder else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.port = 0
        for line in self.proc.stdout:
            found = re.match(r"stats\s+http://[^:]+:(\d+)/", line)
            if found:
                self.port = int(found.group(1))
                break
        if not self.port:
            raise RuntimeError("kmq live did not start")
        import psutil

        self.process = psutil.Process(self.proc.pid)

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=30) as response:
            return json.loads(response.read())

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        if self.feeder is not None:
            self.feeder.kill()
            self.feeder.wait()


class MjpegRelay(Server):
    """The peer's server (live_mjpeg.py: FFmpeg encoding Motion-JPEG, and a WebSocket relay) in a child process."""

    def __init__(self, clip: Path, size: tuple[int, int], fps: int) -> None:
        import psutil

        relay = Path(__file__).with_name("live_mjpeg.py")
        command = [sys.executable, str(relay), "--relay", str(clip), "--size", "{}x{}".format(*size), "--fps", str(fps)]
        self.feeder = None
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.proc.kill()
            raise RuntimeError("the Motion-JPEG relay did not start")
        self.port = int(line.split()[1])
        self.process = psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        """CPU seconds of the relay and its FFmpeg together."""
        return cpu_of([self.process, *self.process.children(recursive=True)])


# ---------------------------------------------------------------- viewers


class Viewers:
    """Player pages in one headless Chromium; collects what each one measures."""

    def __init__(self, browser, port: int, count: int) -> None:
        self.pages = []
        for _ in range(count):
            page = browser.new_page(bypass_csp=True, viewport={"width": 1280, "height": 720})
            page.goto(f"http://127.0.0.1:{port}/")
            self.pages.append(page)
        self.latencies: list[list[float]] = [[] for _ in self.pages]
        self._rendered = [0 for _ in self.pages]

    def wait_playing(self, timeout: float = 120.0) -> None:
        for page in self.pages:
            page.wait_for_function("window.kmqStats && window.kmqStats.framesRendered >= 3", timeout=timeout * 1000)
        self.start = [self.snapshot(page) for page in self.pages]
        self._rendered = [snapshot["framesRendered"] for snapshot in self.start]

    @staticmethod
    def snapshot(page) -> dict:
        return page.evaluate("() => ({ ...window.kmqStats, samples: window.kmqPlayer.latencySamples() })")

    def poll(self) -> None:
        """Keep the latency samples of the frames painted since the last poll (the page holds 300)."""
        for index, page in enumerate(self.pages):
            snapshot = self.snapshot(page)
            new = snapshot["framesRendered"] - self._rendered[index]
            self._rendered[index] = snapshot["framesRendered"]
            if new > 0:
                self.latencies[index].extend(snapshot["samples"][-min(new, len(snapshot["samples"])) :])

    def finish(self, seconds: float) -> list[dict]:
        self.poll()
        rows = []
        for index, page in enumerate(self.pages):
            end = self.snapshot(page)
            steps = page.evaluate("() => window.kmqPlayer.latencySteps()")
            start = self.start[index]
            samples = np.array(self.latencies[index]) if self.latencies[index] else np.array([np.nan])
            rows.append(
                {
                    "decoded_fps": (end["framesDecoded"] - start["framesDecoded"]) / seconds,
                    "painted_fps": (end["framesRendered"] - start["framesRendered"]) / seconds,
                    "skipped": end["framesDropped"] - start["framesDropped"],
                    "passed_over": end["framesSkipped"] - start["framesSkipped"],
                    "decode_ms": end["decodeMs"],
                    "latency_p50_ms": float(np.nanpercentile(samples, 50)),
                    "latency_p95_ms": float(np.nanpercentile(samples, 95)),
                    "latency_samples": int(np.isfinite(samples).sum()),
                    "latency_steps": steps,
                    "kbit_s": (end["bytesReceived"] - start["bytesReceived"]) * 8 / seconds / 1000,
                }
            )
        return rows

    def close(self) -> None:
        for page in self.pages:
            page.close()


def histogram_percentiles(before: dict, after: dict) -> tuple[float, float]:
    """p50 and p95 (ms) of the encode times between two /stats answers, from their 1 ms histograms."""
    counts = {int(ms): count - before.get(ms, 0) for ms, count in after.items()}
    values = np.repeat(np.array(sorted(counts), float) + 0.5, [counts[ms] for ms in sorted(counts)])
    if values.size == 0:
        return float("nan"), float("nan")
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def socket_viewers(port: int, count: int, seconds: float, settle: float) -> dict:
    """``count`` WebSocket viewers that receive and acknowledge every frame without decoding it.

    Counts what each receives during ``seconds`` after ``settle``; runs in its own process, so
    that its work is not the server's.
    """
    import asyncio

    import aiohttp

    frames = [0] * count
    received = [0] * count

    async def viewer(index: int, session) -> None:
        async with session.ws_connect(f"ws://127.0.0.1:{port}/ws", max_msg_size=0) as ws:
            start = time.monotonic() + settle
            end = start + seconds
            async for message in ws:
                now = time.monotonic()
                if now > end:
                    break
                data = message.data
                if message.type != aiohttp.WSMsgType.BINARY or data[:4] != b"KMQF":
                    continue
                await ws.send_str(json.dumps({"type": "ack", "frame": int.from_bytes(data[8:12], "little")}))
                if now >= start:
                    frames[index] += 1
                    received[index] += len(data)

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(viewer(index, session) for index in range(count)))

    asyncio.run(main())
    return {"frames": frames, "bytes": received}


def watch_phase(server: Server, browser, kind: str, viewers: int, seconds: float) -> dict:
    """Add the viewers (``pages``, ``pages-nice``, ``sockets``, or ``none``), let them settle, measure for ``seconds``.

    ``pages-nice`` runs the pages at niceness 19: they stand for viewers on other machines, which
    take no CPU from the server, while still being real browsers that decode what they can.
    """
    pages = Viewers(browser, server.port, viewers if kind.startswith("pages") else 0)
    sockets = None
    settle = 5.0
    try:
        if kind == "pages-nice":
            renice_chromium(19)
        if kind == "sockets":
            sockets = subprocess.Popen(
                [sys.executable, __file__, "--socket-viewers", *map(str, (server.port, viewers, seconds, settle))],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(settle)
        pages.wait_playing()
        before, cpu_before, load_before = server.stats(), server.cpu_seconds(), os.getloadavg()[0]
        browser_before, started = chromium_seconds(), time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(min(4.0, max(0.1, seconds - (time.monotonic() - started))))
            pages.poll()
        elapsed = time.monotonic() - started
        after, cpu_after, browser_after = server.stats(), server.cpu_seconds(), chromium_seconds()
        rows = pages.finish(elapsed)
        if sockets is not None:
            received = json.loads(sockets.communicate(timeout=seconds + 60)[0])
            rows = [
                {"decoded_fps": count / seconds, "kbit_s": size * 8 / seconds / 1000}
                for count, size in zip(received["frames"], received["bytes"])
            ]
    finally:
        pages.close()
        if kind == "pages-nice":
            renice_chromium(0)
        if sockets is not None and sockets.poll() is None:
            sockets.kill()
    frames = after["frames_encoded"] - before["frames_encoded"]
    captured = after["source"]["frames_captured"] - before["source"]["frames_captured"]
    encoded_bytes = after["encoder"]["bytes_encoded"] - before["encoder"]["bytes_encoded"]
    p50, p95 = histogram_percentiles(before["encoder"]["encode_ms_histogram"], after["encoder"]["encode_ms_histogram"])
    return {
        "kind": kind,
        "viewers": viewers,
        "seconds": elapsed,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "frames_captured": captured,
        "frames_encoded": frames,
        "source_dropped": after["source"]["frames_dropped"] - before["source"]["frames_dropped"],
        "left_out": after["viewers"]["frames_skipped_total"] - before["viewers"]["frames_skipped_total"],
        "discardable_share": (
            (after["encoder"]["discardable_frames"] - before["encoder"]["discardable_frames"])
            / max(1, after["frames_encoded"] - before["frames_encoded"])
        ),
        "encode_fps": frames / elapsed,
        "encode_ms_p50": p50,
        "encode_ms_p95": p95,
        "server_cores": (cpu_after - cpu_before) / elapsed,
        "browser_cores": (browser_after - browser_before) / elapsed,
        "stream_kbit_s": encoded_bytes * 8 / elapsed / 1000,
        "bytes_per_frame": encoded_bytes / max(frames, 1),
        "keyframes": after["encoder"]["keyframes"] - before["encoder"]["keyframes"],
        "capture_to_encode_ms": after["encoder"]["capture_to_encode_ms"],
        "pages": rows,
    }


def mjpeg_phase(browser, clip: Path, viewers: int, seconds: float) -> dict:
    """The peer: live Motion-JPEG of the clip (live_mjpeg.py) to ``viewers`` pages, measured for ``seconds``."""
    relay = MjpegRelay(clip, SIZE, FPS)
    pages = []
    try:
        deadline = time.monotonic() + 120
        while relay.stats()["count"] < 2 * FPS and time.monotonic() < deadline:
            time.sleep(0.5)
        for _ in range(viewers):
            page = browser.new_page(viewport={"width": SIZE[0], "height": SIZE[1]})
            page.goto(f"http://127.0.0.1:{relay.port}/")
            pages.append(page)
        for page in pages:
            page.wait_for_function("window.mjpegStats && window.mjpegStats.framesDecoded >= 3", timeout=120_000)
        snapshot = "() => ({ ...window.mjpegStats })"
        start = [page.evaluate(snapshot) for page in pages]
        before, cpu_before, load_before = relay.stats(), relay.cpu_seconds(), os.getloadavg()[0]
        browser_before, started = chromium_seconds(), time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        after, cpu_after, browser_after = relay.stats(), relay.cpu_seconds(), chromium_seconds()
        end = [page.evaluate(snapshot) for page in pages]
    finally:
        for page in pages:
            page.close()
        relay.stop()
    frames = after["count"] - before["count"]
    return {
        "kind": "mjpeg-pages",
        "viewers": viewers,
        "seconds": elapsed,
        "load_before": load_before,
        "encode_fps": frames / elapsed,
        "server_cores": (cpu_after - cpu_before) / elapsed,
        "browser_cores": (browser_after - browser_before) / elapsed,
        "stream_kbit_s": (after["bytes"] - before["bytes"]) * 8 / elapsed / 1000,
        "bytes_per_frame": (after["bytes"] - before["bytes"]) / max(frames, 1),
        "pages": [
            {
                "decoded_fps": (last["framesDecoded"] - first["framesDecoded"]) / elapsed,
                "passed_over": last["passedOver"] - first["passedOver"],
                "kbit_s": (last["bytesReceived"] - first["bytesReceived"]) * 8 / elapsed / 1000,
            }
            for first, last in zip(start, end)
        ],
    }


def run_phase(browser, args: list[str], seconds: float, kind: str, viewers: int, feeder: list[str] | None = None) -> dict:
    """A fresh ``kmq live``, warmed up, with its viewers, measured for ``seconds``."""
    server = Server(*args, feeder=feeder)
    try:
        # Warm-up: the encoder's first frames (and a first refit) are not what a stream runs at.
        deadline = time.monotonic() + 120
        while server.stats()["frames_encoded"] < 2 * FPS and time.monotonic() < deadline:
            time.sleep(0.5)
        return watch_phase(server, browser, kind, viewers, seconds)
    finally:
        server.stop()


# ---------------------------------------------------------------- bandwidth and stages


def clip_frames(clip: Path) -> list[np.ndarray]:
    """The clip's frames at 1280×720, scaled by the same code the live file source uses."""
    from kmq.media.video_source import VideoSource

    with VideoSource(clip, size=SIZE) as source:
        return [np.ascontiguousarray(frame.pixels[:, :, :3]) for frame in source]


def camera_stream(clip: Path, work: Path) -> Path:
    """The clip as an IP camera sends it: H.264 at 1280×720 and 30 fps in MPEG-TS (4 Mbit/s, a keyframe every 2 s).

    Its frames are those the other phases stream: every frame of the clip, once, at 30 a second.
    """
    out = work / "camera.ts"
    command = [
        "ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-an",
        "-vf", f"scale={SIZE[0]}:{SIZE[1]},setpts=N/({FPS}*TB)",
        "-r", str(FPS), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "4M",
        "-g", str(2 * FPS), "-f", "mpegts", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return out


def camera_feeder(stream: Path, output: str = "-") -> list[str]:
    """Sends the camera stream over and over in real time, unchanged, to ``output`` (default standard output)."""
    return ["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(stream), "-c", "copy", "-f", "mpegts", output]


def mjpeg_bytes(frames: list[np.ndarray], work: Path) -> int:
    """Motion-JPEG at q5 of exactly these frames (raw RGB piped into FFmpeg; the bare JPEG stream)."""
    out = work / "frames.mjpeg"
    command = [
        "ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE[0]}x{SIZE[1]}",
        "-r", str(FPS), "-i", "-", "-c:v", "mjpeg", "-q:v", "5", "-f", "mjpeg", str(out),
    ]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as ffmpeg:
        for frame in frames:
            ffmpeg.stdin.write(frame.tobytes())
        ffmpeg.stdin.close()
        ffmpeg.wait()
    return out.stat().st_size


def kmq_bytes(frames: list[np.ndarray], temporal_layers: int = 1) -> tuple[int, int]:
    """Bytes of kmq's packets for these frames encoded once, in order, as the live encoder is set up."""
    from fractions import Fraction

    from kmq.live.encoding import LIVE_TIME_BASE
    from kmq.media.video_encoder import VideoEncoder

    encoder = VideoEncoder(
        SIZE[0], SIZE[1], k=K, keyint=8 * FPS, frame_rate=Fraction(FPS), time_base=LIVE_TIME_BASE,
        temporal_layers=temporal_layers,
    )
    total = 0
    for number, frame in enumerate(frames):
        total += len(encoder.encode(frame, number * 1_000_000 // FPS).packet)
    return total, encoder.totals.keyframes


def testsrc_frames(count: int) -> list[np.ndarray]:
    from kmq.live.testsrc import TestPattern

    pattern = TestPattern(*SIZE)
    return [pattern.frame(number / FPS).copy() for number in range(count)]


# ---------------------------------------------------------------- report


def median_of(runs: list[dict], *path) -> float:
    """The median over runs of the figure at ``path`` (NaN when a run has none)."""
    values = []
    for run in runs:
        value = run
        for key in path:
            value = value[key]
        values.append(np.nan if value is None else value)
    return float(np.nanmedian(values)) if not np.isnan(values).all() else float("nan")


def page_median(runs: list[dict], source: str, phase: str, key: str, pick=statistics.median) -> float:
    """Median over runs of ``pick`` (median, min) over the pages of one phase."""
    return statistics.median(pick(page[key] for page in run[source][phase]["pages"]) for run in runs)


SERVER_FIGURES = (
    "encode_ms_p50", "encode_ms_p95", "encode_fps", "source_dropped", "frames_captured",
    "server_cores", "stream_kbit_s", "bytes_per_frame", "load_before", "left_out", "discardable_share",
)


def browser_ms_per_frame(result: dict) -> float:
    """What Chromium spends, all its processes together, on a frame one of its pages shows (ms of CPU)."""
    shown = sum(page["decoded_fps"] for page in result["pages"])
    return 1000 * result["browser_cores"] / shown if shown else float("nan")


def summarise(runs: list[dict]) -> dict:
    """Medians over runs of every figure the report prints, by source and phase."""
    table: dict = {}
    for source, phases in runs[0].items():
        for phase, result in phases.items():
            row = {key: median_of(runs, source, phase, key) for key in SERVER_FIGURES if key in result}
            if result["pages"]:
                row["viewer_fps"] = page_median(runs, source, phase, "decoded_fps")
                row["viewer_fps_slowest"] = page_median(runs, source, phase, "decoded_fps", min)
            if result["pages"] and result["kind"].startswith(("pages", "mjpeg")):
                row["browser_cores"] = median_of(runs, source, phase, "browser_cores")
                row["browser_ms_per_frame"] = statistics.median(browser_ms_per_frame(run[source][phase]) for run in runs)
            if result["pages"] and result["kind"].startswith("pages"):
                row["viewer_decode_ms"] = page_median(runs, source, phase, "decode_ms")
                row["viewer_passed_over"] = page_median(runs, source, phase, "passed_over")
                row["latency_p50_ms"] = page_median(runs, source, phase, "latency_p50_ms")
                row["latency_p95_ms"] = page_median(runs, source, phase, "latency_p95_ms")
            table[f"{source}/{phase}"] = row
    return table


def kbit(bytes_per_frame: float) -> str:
    return f"{bytes_per_frame * 8 * FPS / 1000:.0f}"


#: The steps of a frame's way from capture to paint, as the page measures them (player.js).
LATENCY_STEPS = (
    ("encoded", "capture to encoded (waiting for the encoder, encoding)"),
    ("received", "encoded to received (viewer queue, frames in flight, socket)"),
    ("decodeStarted", "received to decoding (the page's queue)"),
    ("decoded", "decoding (stripes in the worker)"),
    ("painted", "decoded to painted (next animation frame)"),
)


def latency_steps(runs: list[dict]) -> None:
    """Where the latency of the one-page phases goes, step by step (medians over runs of p50 and p95)."""
    phases = [(source, "1_viewers") for source in ("testsrc", "clip", "small", "relay") if "1_viewers" in runs[0].get(source, {})]
    if not phases:
        return
    names = {"small": f"clip {SMALL[1]}p", "relay": "relay"}
    print("\nwhere the latency goes with one page (ms from the step before, p50 / p95 over the last 300 frames):")
    print(f"  {'step':62}" + "".join(f"{names.get(source, source):>16}" for source, _ in phases))
    for step, label in LATENCY_STEPS:
        cells = ""
        for source, phase in phases:
            p50, p95 = (
                statistics.median(run[source][phase]["pages"][0]["latency_steps"][step][key] or np.nan for run in runs)
                for key in ("p50", "p95")
            )
            cells += f"{p50:>9.1f} /{p95:>5.0f}"
        print(f"  {label:62}{cells}")
    cells = ""
    for source, phase in phases:
        waits = [run[source][phase]["capture_to_encode_ms"] for run in runs]
        cells += f"{statistics.median(w['p50'] for w in waits):>9.1f} /{statistics.median(w['p95'] for w in waits):>5.0f}"
    print(f"  {'  of the first: capture to encoding (server)':62}{cells}")


def peer_report(table: dict, viewers: int) -> None:
    """kmq live beside live Motion-JPEG (live_mjpeg.py), with the same number of pages on the same cores."""
    columns = [
        (kmq, mjpeg, count)
        for kmq, mjpeg, count in (("clip/1_viewers", "mjpeg/1_viewers", 1), ("clip/pages", "mjpeg/pages", viewers))
        if kmq in table and mjpeg in table
    ]
    if not columns:
        return
    print(
        f"\nthe peer, live: Motion-JPEG q5 of the clip at {SIZE[0]}×{SIZE[1]} and {FPS} fps (FFmpeg encoding as the"
        " frames come, a WebSocket relay, Chromium's own JPEG decoder in the page), beside kmq live:"
    )
    print(f"{'':30}" + "".join(f"{'kmq':>10}{'MJPEG':>10}" for _ in columns))
    print(f"{'pages':30}" + "".join(f"{count:>10}{count:>10}" for _, _, count in columns))
    rows = [
        ("encode fps", "encode_fps", "{:.1f}"),
        ("server CPU (cores)", "server_cores", "{:.2f}"),
        ("Chromium CPU (cores)", "browser_cores", "{:.2f}"),
        ("page decoded fps", "viewer_fps", "{:.1f}"),
        ("  slowest page", "viewer_fps_slowest", "{:.1f}"),
        ("Chromium ms a frame shown", "browser_ms_per_frame", "{:.1f}"),
        ("stream kbit/s", "stream_kbit_s", "{:.0f}"),
    ]
    for label, key, fmt in rows:
        cells = "".join(f"{fmt.format(table[kmq][key]):>10}{fmt.format(table[mjpeg][key]):>10}" for kmq, mjpeg, _ in columns)
        print(f"{label:30}{cells}")
    print("(server CPU: kmq live, or FFmpeg and the relay together; 'a frame shown': Chromium's CPU, all its"
          " processes, over the frames its pages decoded and drew)")


def report(runs: list[dict], extra: dict, viewers: int, seconds: float) -> dict:
    table = summarise(runs)
    columns = [
        ("testsrc/0_viewers", "testsrc", "0"),
        ("testsrc/1_viewers", "testsrc", "1"),
        ("clip/0_viewers", "clip", "0"),
        ("clip/1_viewers", "clip", "1"),
        ("clip/sockets", "clip", f"{viewers} ws"),
        ("clip/pages", "clip", f"{viewers}"),
        ("clip/pages_nice", "clip", f"{viewers} nice"),
    ]
    columns = [column for column in columns if column[0] in table]
    print(f"\nkmq live, {SIZE[0]}×{SIZE[1]} at {FPS} fps, K={K}: medians of {len(runs)} run(s), {seconds:g} s a phase")
    print(f"{'':26}" + "".join(f"{source:>10}" for _, source, _ in columns) + "   target")
    print(f"{'viewers (pages)':26}" + "".join(f"{count:>10}" for _, _, count in columns))
    rows = [
        ("encode ms/frame p50", "encode_ms_p50", "{:.1f}", ""),
        ("encode ms/frame p95", "encode_ms_p95", "{:.1f}", "< 33"),
        ("encode fps", "encode_fps", "{:.1f}", "30"),
        ("source frames dropped", "source_dropped", "{:.0f}", "0"),
        ("  of frames captured", "frames_captured", "{:.0f}", ""),
        ("server CPU (cores)", "server_cores", "{:.2f}", ""),
        ("Chromium CPU (cores)", "browser_cores", "{:.2f}", ""),
        ("stream kbit/s", "stream_kbit_s", "{:.0f}", ""),
        ("  discardable frames", "discardable_share", "{:.0%}", ""),
        ("page decoded fps", "viewer_fps", "{:.1f}", ""),
        ("  slowest page", "viewer_fps_slowest", "{:.1f}", ""),
        ("page decode ms/frame", "viewer_decode_ms", "{:.1f}", ""),
        ("discardable: page skipped", "viewer_passed_over", "{:.0f}", ""),
        ("  server left out (all)", "left_out", "{:.0f}", ""),
        ("latency p50 ms (page)", "latency_p50_ms", "{:.0f}", ""),
        ("latency p95 ms (page)", "latency_p95_ms", "{:.0f}", "< 150"),
        ("load (1 min) at start", "load_before", "{:.1f}", ""),
    ]
    for label, key, fmt, target in rows:
        cells = "".join(
            f"{fmt.format(table[column][key]) if key in table[column] else '–':>10}" for column, _, _ in columns
        )
        print(f"{label:26}{cells}   {target}")
    print(f"('{viewers} ws': {viewers} WebSocket viewers in another process that receive and acknowledge every frame"
          " without decoding it; 'page': Chromium pages on the same 2 cores as the server;"
          f" '{viewers} nice': the pages at niceness 19, standing for viewers on other machines)")
    peer_report(table, viewers)
    latency_steps(runs)
    one_page = [
        ("small/1_viewers", f"the clip at {SMALL[0]}×{SMALL[1]} with one page"),
        ("relay/1_viewers", f"the clip relayed as H.264 {SIZE[0]}×{SIZE[1]} in MPEG-TS (standard input), one page"),
    ]
    for column, title in one_page:
        if column in table:
            row = table[column]
            print(
                f"\n{title}: latency p50 {row['latency_p50_ms']:.0f} ms, p95 {row['latency_p95_ms']:.0f} ms;"
                f" page {row['viewer_fps']:.1f} fps; encode p50 {row['encode_ms_p50']:.1f}, p95"
                f" {row['encode_ms_p95']:.1f} ms, {row['encode_fps']:.1f} fps, {row['source_dropped']:.0f} of"
                f" {row['frames_captured']:.0f} source frames dropped; server {row['server_cores']:.2f} + Chromium"
                f" {row['browser_cores']:.2f} cores"
            )
    raw = SIZE[0] * SIZE[1] * 3
    bandwidth = extra["bandwidth"]
    live = table.get("clip/1_viewers")
    print(f"\nbandwidth on the clip at K={K} ({bandwidth['frames']} frames of {SIZE[0]}×{SIZE[1]}), bytes per frame:")
    print(f"  raw RGB                          {raw:>10,}   1:1")
    mjpeg = bandwidth["mjpeg_per_frame"]
    ours = bandwidth["kmq_per_frame"]
    print(f"  Motion-JPEG q5 (same frames)     {mjpeg:>10,.0f}   1:{raw / mjpeg:.1f}   ({kbit(mjpeg)} kbit/s)")
    print(f"  kmq, the frames encoded once     {ours:>10,.0f}   1:{raw / ours:.1f}   ({kbit(ours)} kbit/s,"
          f" {bandwidth['kmq_keyframes']} keyframes; one temporal layer, as kmq live sends while its viewers keep up)")
    double = bandwidth["kmq_two_layers_per_frame"]
    print(f"  kmq, two temporal layers         {double:>10,.0f}   1:{raw / double:.1f}   ({kbit(double)} kbit/s,"
          " every other frame discardable: while a viewer is behind, or kmq live --temporal-layers 2)")
    if live is not None:
        print(f"  kmq live stream (1 viewer)       {live['bytes_per_frame']:>10,.0f}   1:{raw / live['bytes_per_frame']:.1f}   "
              f"({live['stream_kbit_s']:.0f} kbit/s as encoded, source drops included)")
    print(f"  targets: kmq at most 1/20 of raw RGB, and below Motion-JPEG q5 (kbit/s at {FPS} fps)")
    print(f"\nwhere the encoder's time goes at {SIZE[0]}×{SIZE[1]} (median ms a delta frame, in process, no viewers):")
    stages = extra["stages"]
    print(f"  {'stage':36}{'testsrc':>10}{'clip':>10}")
    for stage in stages["clip"]:
        print(f"  {stage:36}{stages['testsrc'][stage]:>10.1f}{stages['clip'][stage]:>10.1f}")
    print(f"\nload average (1/5/15 min): {extra['load_start']} at the start, {load()} at the end", end="")
    print(f"; {os.cpu_count()} cores")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each measured phase (default 60)")
    parser.add_argument("--runs", type=int, default=1, help="runs; the report gives medians (default 1)")
    parser.add_argument("--viewers", type=int, default=8, help="pages at once in the many-viewers phase (default 8)")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="default ../shared/media/bbb-480p-10s.mp4")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    parser.add_argument("--temporal-layers", choices=("auto", "1", "2"), default="auto", help="the servers' --temporal-layers (default auto, as kmq live)")
    parser.add_argument("--phases", default=None, metavar="SOURCE/PHASE,...", help="run only these phases (default: all)")
    # Internal: the WebSocket viewers of the "ws" phase, run in a process of their own.
    parser.add_argument("--socket-viewers", nargs=4, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.socket_viewers:
        port, count, seconds, settle = args.socket_viewers
        print(json.dumps(socket_viewers(int(port), int(count), float(seconds), float(settle))))
        return 0
    problem = missing(args.clip)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    phases = [
        ("testsrc", "0_viewers", "none", 0),
        ("testsrc", "1_viewers", "pages", 1),
        ("clip", "0_viewers", "none", 0),
        ("clip", "1_viewers", "pages", 1),
        ("clip", "sockets", "sockets", args.viewers),
        ("clip", "pages", "pages", args.viewers),
        ("small", "1_viewers", "pages", 1),
        ("relay", "1_viewers", "pages", 1),
        ("mjpeg", "1_viewers", "mjpeg-pages", 1),
        ("mjpeg", "pages", "mjpeg-pages", args.viewers),
        ("clip", "pages_nice", "pages-nice", args.viewers),  # last: its niceness may not be undone
    ]
    if args.phases:
        wanted = set(args.phases.split(","))
        unknown = wanted - {f"{source}/{phase}" for source, phase, _, _ in phases}
        if unknown:
            print(f"error: no phase {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        phases = [entry for entry in phases if f"{entry[0]}/{entry[1]}" in wanted]
    from playwright.sync_api import sync_playwright

    extra: dict = {"load_start": load()}
    print(f"load average at the start: {extra['load_start']}", flush=True)
    frames = clip_frames(args.clip)
    with tempfile.TemporaryDirectory() as work:
        mjpeg = mjpeg_bytes(frames, Path(work))
    kmq_total, keyframes = kmq_bytes(frames)
    two_layers, _ = kmq_bytes(frames, temporal_layers=2)
    extra["bandwidth"] = {
        "frames": len(frames),
        "mjpeg_per_frame": mjpeg / len(frames),
        "kmq_per_frame": kmq_total / len(frames),
        "kmq_keyframes": keyframes,
        "kmq_two_layers_per_frame": two_layers / len(frames),
    }
    from bench_video import stage_times  # the video benchmark's stage timer, on these frames

    extra["stages"] = {"clip": stage_times(frames[:90]), "testsrc": stage_times(testsrc_frames(90))}
    del frames
    print("bandwidth and stage times measured; streaming ...", flush=True)
    sources = {
        "testsrc": ["--source", "testsrc", "--size", f"{SIZE[0]}x{SIZE[1]}", "--fps", str(FPS)],
        "clip": ["--source", str(args.clip), "--loop", "--size", f"{SIZE[0]}x{SIZE[1]}", "--fps", str(FPS)],
        "small": ["--source", str(args.clip), "--loop", "--size", f"{SMALL[0]}x{SMALL[1]}", "--fps", str(FPS)],
        "relay": ["--source", "-"],
    }
    for source_args in sources.values():
        source_args += ["--temporal-layers", args.temporal_layers]
    runs = []
    with tempfile.TemporaryDirectory() as work, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=user_chromium(Path(work)), args=CHROMIUM_ARGS)
        feeder = camera_feeder(camera_stream(args.clip, Path(work))) if any(p[0] == "relay" for p in phases) else None
        try:
            for number in range(args.runs):
                run: dict = {source: {} for source, _, _, _ in phases}
                for source, phase, kind, viewers in phases:
                    print(f"run {number + 1}: {source}, {phase} (load {load()})", flush=True)
                    if source == "mjpeg":
                        run[source][phase] = mjpeg_phase(browser, args.clip, viewers, args.seconds)
                        continue
                    run[source][phase] = run_phase(
                        browser, sources[source], args.seconds, kind, viewers, feeder if source == "relay" else None
                    )
                runs.append(run)
                if args.json:
                    args.json.write_text(json.dumps({"runs": runs, "extra": extra}, indent=1))
        finally:
            browser.close()
    table = report(runs, extra, args.viewers, args.seconds)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "extra": extra, "medians": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
