"""The peer of ``kmq live`` in bench_live.py: Motion-JPEG encoded live by FFmpeg, decoded by the browser.

What a developer builds with FFmpeg to show a camera in a browser without a video element's
buffering: ``ffmpeg -c:v mjpeg -q:v 5 -f mpjpeg`` encodes each frame as it comes, a small relay
sends each JPEG to every WebSocket viewer (a viewer with two frames in flight misses the next
one, as kmq's window does), and the page decodes it with the browser's own JPEG decoder
(``createImageBitmap``: libjpeg-turbo, C with SIMD) and draws it on a canvas.

The relay runs in a process of its own (``python live_mjpeg.py --relay CLIP``, started by
bench_live's ``MjpegRelay``), with FFmpeg as its child, so that the CPU both take is measured
together as the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

#: Frames a viewer may have in flight (sent, not yet acknowledged), as kmq live's window.
WINDOW = 2

#: The viewer page: each JPEG decoded by the browser and drawn; ``window.mjpegStats`` for the benchmark.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Motion-JPEG</title></head>
<body style="margin:0;background:#000"><canvas width="WIDTH" height="HEIGHT"></canvas>
<script>
const context = document.querySelector('canvas').getContext('2d');
const stats = (window.mjpegStats = { framesDecoded: 0, bytesReceived: 0, passedOver: 0 });
const socket = new WebSocket(`ws://${location.host}/ws`);
socket.binaryType = 'arraybuffer';
let busy = false;
let waiting = null;
async function show(data) {
  busy = true;
  while (data) {
    const bitmap = await createImageBitmap(new Blob([data], { type: 'image/jpeg' }));
    context.drawImage(bitmap, 0, 0);
    bitmap.close();
    stats.framesDecoded += 1;
    socket.send('ack');
    data = waiting;
    waiting = null;
  }
  busy = false;
}
socket.onmessage = (event) => {
  stats.bytesReceived += event.data.byteLength;
  if (!busy) return show(event.data);
  if (waiting) { stats.passedOver += 1; socket.send('ack'); }
  waiting = event.data;
};
</script></body></html>
"""


def ffmpeg_command(clip: Path, size: tuple[int, int], fps: int) -> list[str]:
    """FFmpeg playing the clip over and over at ``fps`` (its frames, retimed, as kmq live plays them), encoding MJPEG q5.

    The ``realtime`` filter paces the frames to their times; an encoder that falls behind just
    sends fewer a second, which the relay counts.
    """
    return [
        "ffmpeg", "-loglevel", "error", "-stream_loop", "-1", "-i", str(clip), "-an",
        "-vf", f"setpts=N/({fps}*TB),scale={size[0]}:{size[1]},realtime",
        "-r", str(fps), "-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-",
    ]  # fmt: skip


def read_parts(stream) -> Iterator[bytes]:
    """The JPEGs of a multipart stream as FFmpeg's mpjpeg muxer writes it (boundary, headers, body)."""
    while True:
        length = None
        line = stream.readline()
        while line in (b"\r\n", b"\n"):
            line = stream.readline()
        if not line:
            return
        # The boundary line, then headers up to an empty line.
        while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
            found = re.match(rb"content-length:\s*(\d+)", line.strip().lower())
            if found:
                length = int(found.group(1))
        if length is None:
            return
        body = stream.read(length)
        if len(body) < length:
            return
        yield body


def relay(clip: Path, size: tuple[int, int], fps: int) -> None:
    """Serve the page and the stream on a free loopback port (printed as ``port N``) until SIGINT or SIGTERM."""
    from aiohttp import WSMsgType, web

    frames = {"count": 0, "bytes": 0}
    viewers: dict[int, dict] = {}
    sending: set[asyncio.Future] = set()  # the event loop keeps only weak references to tasks

    async def page(_request):
        return web.Response(text=PAGE.replace("WIDTH", str(size[0])).replace("HEIGHT", str(size[1])), content_type="text/html")

    async def stats(_request):
        return web.json_response({**frames, "viewers": [{k: v[k] for k in ("sent", "missed")} for v in viewers.values()]})

    async def stream(request):
        ws = web.WebSocketResponse(max_msg_size=1024, compress=False)
        await ws.prepare(request)
        viewer = viewers[id(ws)] = {"ws": ws, "in_flight": 0, "sent": 0, "missed": 0}
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT and message.data == "ack":
                    viewer["in_flight"] = max(0, viewer["in_flight"] - 1)
        finally:
            viewers.pop(id(ws), None)
        return ws

    async def send(viewer: dict, data: bytes) -> None:
        try:
            await viewer["ws"].send_bytes(data)
        except (ConnectionError, RuntimeError):
            pass

    def arrived(data: bytes) -> None:
        frames["count"] += 1
        frames["bytes"] += len(data)
        for viewer in viewers.values():
            if viewer["in_flight"] >= WINDOW:
                viewer["missed"] += 1
                continue
            viewer["in_flight"] += 1
            viewer["sent"] += 1
            task = asyncio.ensure_future(send(viewer, data))
            sending.add(task)
            task.add_done_callback(sending.discard)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        encoder = subprocess.Popen(ffmpeg_command(clip, size, fps), stdout=subprocess.PIPE)

        def pump() -> None:
            for data in read_parts(encoder.stdout):
                loop.call_soon_threadsafe(arrived, data)

        threading.Thread(target=pump, daemon=True).start()
        app = web.Application()
        app.add_routes([web.get("/", page), web.get("/ws", stream), web.get("/stats", stats)])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"port {runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        await stop.wait()
        encoder.kill()
        encoder.wait()
        await runner.cleanup()

    asyncio.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--relay", type=Path, required=True, metavar="CLIP")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    relay(args.relay, (width, height), args.fps)
