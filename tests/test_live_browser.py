"""The player page in headless Chromium against a real `kmq live` server: it plays, exactly, and copes."""

from __future__ import annotations

import base64
import functools
import http.server
import shutil
import socket
import threading
import time
from importlib.resources import files

import numpy as np
import pytest

from kmq.codec.video import KmqvReader
from conftest import launch_chromium
from test_live_server import (  # noqa: F401 (live, secure: the fixtures)
    LiveProcess, RawViewer, live, newest_viewer_id, secure, viewer_stats,
)  # fmt: skip


pytestmark = pytest.mark.browser

#: Reads the canvas and the number of the frame it shows in one task, so the two always match.
CAPTURE = """() => {
  const canvas = document.getElementById('video');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let binary = '';
  for (let i = 0; i < data.length; i += 0x8000) binary += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
  return { number: window.kmqStats.frameNumber, width: canvas.width, height: canvas.height, pixels: btoa(binary) };
}"""


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser).

    One per module, closed at its end: Playwright's sync API keeps an event loop running in the
    main thread while it is open, which later tests that start their own loop must not meet.
    """
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


def wait_until(page, expression: str, timeout: float = 60.0) -> None:
    """Wait for a condition in the page (a deadline against hangs, not a measurement)."""
    page.wait_for_function(expression, timeout=timeout * 1000)


def stats(page) -> dict:
    return page.evaluate("() => ({ ...window.kmqStats })")


def open_player(browser, url: str):  # noqa: F811
    # The page's policy forbids eval, which Playwright's waiting on an expression uses.
    page = browser.new_page(bypass_csp=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.errors = errors
    return page


def test_the_page_plays_and_frames_decoded_grows(browser, live):  # noqa: F811
    page = open_player(browser, f"http://127.0.0.1:{live.port}/")
    try:
        wait_until(page, "window.kmqStats && window.kmqStats.framesDecoded >= 5")
        first = stats(page)
        wait_until(page, f"window.kmqStats.framesDecoded >= {first['framesDecoded'] + 30}")
        later = stats(page)
        assert later["state"] == "playing"
        assert (later["width"], later["height"]) == (256, 144)
        assert later["paletteSize"] == 32
        assert later["bytesReceived"] > first["bytesReceived"]
        assert later["latencyMs"] is not None and later["fps"] > 0 and later["ratio"] > 1
        assert later["keyframes"] >= 1 and later["errors"] == 0
        overlay = page.inner_text(".kmq-overlay")
        for word in ("fps", "bit/s", "vs raw RGB", "K=32", "latency"):
            assert word in overlay
        assert page.errors == []
    finally:
        page.close()


def test_the_player_says_where_each_frames_latency_goes_step_by_step(browser, live):  # noqa: F811
    page = open_player(browser, f"http://127.0.0.1:{live.port}/")
    try:
        wait_until(page, "window.kmqStats && window.kmqStats.framesRendered >= 20")
        steps = page.evaluate("() => window.kmqPlayer.latencySteps()")
        latency = stats(page)["latencyP50Ms"]
        assert list(steps) == ["encoded", "received", "decodeStarted", "decoded", "painted"]
        for step, figures in steps.items():
            # Server and page read the same wall clock; a millisecond of slack for its rounding.
            assert -1 <= figures["p50"] <= figures["p95"] <= 10_000, step
        assert steps["encoded"]["p50"] > 0 and steps["decoded"]["p50"] > 0
        assert sum(figures["p50"] for figures in steps.values()) <= 3 * latency
    finally:
        page.close()


def test_the_canvas_shows_exactly_the_frame_the_python_decoder_makes(browser, live):  # noqa: F811
    page = open_player(browser, f"http://127.0.0.1:{live.port}/")
    try:
        wait_until(page, "window.kmqStats && window.kmqStats.framesRendered >= 10")
        shot = page.evaluate(CAPTURE)
    finally:
        page.close()
    number = shot["number"]
    # The recorder flushes every 30 frames: wait until the frame shown is on disk.
    live.wait_for(lambda s: s["recording"]["frames"] >= number + 31, "the recording to reach the frame")
    with live.recording.open("rb") as stream:
        for frame in KmqvReader(stream).frames(salvage=True):
            if frame.number == number:
                expected = frame.to_array()
                break
        else:
            pytest.fail(f"frame {number} is not in the recording")
    pixels = np.frombuffer(base64.b64decode(shot["pixels"]), np.uint8).reshape(shot["height"], shot["width"], 4)
    assert np.array_equal(pixels[:, :, :3], expected)
    assert (pixels[:, :, 3] == 255).all()


def test_two_viewers_play_at_once_one_decoding_in_a_worker_one_on_the_page(browser, live):  # noqa: F811
    pages = [open_player(browser, f"http://127.0.0.1:{live.port}/{query}") for query in ("", "?worker=0")]
    try:
        for page in pages:
            wait_until(page, "window.kmqStats && window.kmqStats.framesDecoded >= 20")
        shots = [page.evaluate(CAPTURE) for page in pages]
        assert all(stats(page)["state"] == "playing" for page in pages)
        assert all(page.errors == [] for page in pages)
        assert len(pages[0].workers) == 1 and len(pages[1].workers) == 0
    finally:
        for page in pages:
            page.close()
    assert shots[0]["pixels"] != "" and shots[1]["pixels"] != ""


def test_the_player_decodes_on_the_page_when_its_worker_cannot_start(browser, live):  # noqa: F811
    page = browser.new_page(bypass_csp=True)
    page.route("**/static/decode-worker.js", lambda route: route.fulfill(status=404, body="gone"))
    try:
        page.goto(f"http://127.0.0.1:{live.port}/")
        wait_until(page, "window.kmqStats && window.kmqStats.framesDecoded >= 10")
        after = stats(page)
        assert after["state"] == "playing"
        assert "decoding on the page" in after["lastError"]
    finally:
        page.close()


def test_a_viewer_throttled_to_a_crawl_does_not_slow_the_browser_viewer(browser, live):  # noqa: F811
    crawler = RawViewer(live.port, receive_buffer=4096)
    crawler_id = max(viewer_stats(live.wait_for(lambda s: s["viewers"]["count"] >= 1, "viewers")))
    page = open_player(browser, f"http://127.0.0.1:{live.port}/")
    done = threading.Event()
    crawler.crawl(done, chunk=512)
    try:
        wait_until(page, "window.kmqStats && window.kmqStats.framesDecoded >= 10")
        before_page, before_server = stats(page), live.stats()
        end = live.wait_for(
            lambda s: viewer_stats(s)[crawler_id]["frames_dropped"] > 30, "the crawling viewer to fall behind"
        )
        after_page = stats(page)
        encoded = end["frames_encoded"] - before_server["frames_encoded"]
        decoded = after_page["framesDecoded"] - before_page["framesDecoded"]
        # The browser decoded (nearly) every frame the encoder made meanwhile: it may trail by the
        # frames in flight, and skips only if its own decoding falls behind (discardable frames
        # it passed over, or the server left out for it, and frames lost waiting for a keyframe).
        (page_id,) = set(viewer_stats(end)) - {crawler_id}
        left_out = viewer_stats(end)[page_id]["frames_skipped"] - viewer_stats(before_server)[page_id]["frames_skipped"]
        skipped = sum(after_page[key] - before_page[key] for key in ("framesDropped", "framesSkipped")) + left_out
        assert decoded + skipped >= encoded - end["viewers"]["queue_limit"]["in_flight"] - 2
        assert after_page["state"] == "playing"
    finally:
        done.set()
        crawler.close()
        page.close()


def test_players_created_and_destroyed_release_their_sockets_workers_and_memory(browser, live):  # noqa: F811
    page = open_player(browser, f"http://127.0.0.1:{live.port}/?overlay=0")
    session = page.context.new_cdp_session(page)
    session.send("Performance.enable")

    def churn() -> float:
        page.evaluate(
            """async () => {
              const { Player } = await import('/static/player.js');
              for (let round = 0; round < 5; round++) {
                const canvas = document.createElement('canvas');
                const player = new Player(canvas, `ws://${location.host}/ws`);
                while (player.stats.framesDecoded < 2) await new Promise((r) => setTimeout(r, 20));
                player.destroy();
              }
            }"""
        )
        session.send("HeapProfiler.collectGarbage")
        metrics = {item["name"]: item["value"] for item in session.send("Performance.getMetrics")["metrics"]}
        return metrics["JSHeapUsedSize"]

    try:
        wait_until(page, "window.kmqStats && window.kmqStats.framesDecoded >= 3")
        churn()  # the first round loads the modules and warms up
        first = churn()
        second = churn()
        third = churn()
        # Fifteen more players came and went: the heap did not keep what they held.
        assert third - first < 4 << 20, (first, second, third)
        live.wait_for(lambda s: s["viewers"]["count"] == 1, "the destroyed players' connections to close")
        assert len(page.workers) == 1  # only the page's own player
    finally:
        page.close()


#: What the browser does when its tab goes to the background or comes back (headless pages are
#: always shown): document.hidden changes and a visibilitychange event is fired.
SET_HIDDEN = """(hidden) => {
  Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
  Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (hidden ? 'hidden' : 'visible') });
  document.dispatchEvent(new Event('visibilitychange'));
}"""


def test_a_hidden_page_disconnects_and_plays_again_when_shown(browser, live):  # noqa: F811
    page = open_player(browser, f"http://127.0.0.1:{live.port}/")
    try:
        wait_until(page, "window.kmqStats && window.kmqStats.framesDecoded >= 5")
        ours = newest_viewer_id(live)
        page.evaluate(SET_HIDDEN, True)
        wait_until(page, "window.kmqStats.state === 'paused'")
        live.wait_for(lambda s: ours not in viewer_stats(s), "the hidden page's viewer to leave the server")
        wait_until(page, "document.querySelector('.kmq-state').textContent.includes('paused')")
        decoded = stats(page)["framesDecoded"]
        time.sleep(1.0)  # thirty frames' worth at 30 fps: none may come while hidden
        assert stats(page)["framesDecoded"] == decoded
        page.evaluate(SET_HIDDEN, False)
        wait_until(page, f"window.kmqStats.framesDecoded >= {decoded + 5}")
        after = stats(page)
        assert after["state"] == "playing" and after["reconnects"] == 0 and after["errors"] == 0
        assert page.errors == []
    finally:
        page.close()


def test_a_player_made_in_a_hidden_page_connects_only_once_it_is_shown(browser, live):  # noqa: F811
    page = browser.new_page(bypass_csp=True)
    try:
        # Hidden before the page's scripts run, as a tab opened in the background.
        page.add_init_script(f"({SET_HIDDEN})(true)")
        viewers = live.stats()["viewers"]["count"]
        page.goto(f"http://127.0.0.1:{live.port}/")
        wait_until(page, "window.kmqStats && window.kmqStats.state === 'paused'")
        time.sleep(1.0)
        assert stats(page)["bytesReceived"] == 0 and live.stats()["viewers"]["count"] <= viewers
        page.evaluate(SET_HIDDEN, False)
        wait_until(page, "window.kmqStats.framesDecoded >= 5")
    finally:
        page.close()


@pytest.fixture(scope="module")
def restartable(tmp_path_factory):
    """A free port for a server the test stops and starts again."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_player_shows_reconnecting_and_resumes_when_the_server_returns(browser, restartable):  # noqa: F811
    args = ("--size", "96x64", "--fps", "15", "-k", "8")
    server = LiveProcess(*args, port=restartable)
    page = open_player(browser, f"http://127.0.0.1:{restartable}/")
    try:
        wait_until(page, "window.kmqStats && window.kmqStats.framesDecoded >= 5")
        server.stop()
        wait_until(page, "window.kmqStats.state === 'reconnecting'")
        # The overlay repaints on its own clock, a moment after the state changes.
        wait_until(page, "document.querySelector('.kmq-state').textContent.includes('reconnecting')")
        decoded = stats(page)["framesDecoded"]
        server = LiveProcess(*args, port=restartable)
        wait_until(page, f"window.kmqStats.framesDecoded >= {decoded + 5}")
        after = stats(page)
        assert after["state"] == "playing" and after["reconnects"] >= 1
    finally:
        page.close()
        server.stop()


def test_a_wrong_token_is_refused_and_shown_as_such(browser):  # noqa: F811
    server = LiveProcess("--size", "64x48", "--fps", "10", "-k", "8", "--token", "right-token-1")
    try:
        wrong = open_player(browser, f"http://127.0.0.1:{server.port}/?token=wrong-token-9")
        right = open_player(browser, f"http://127.0.0.1:{server.port}/?token=right-token-1")
        wait_until(wrong, "window.kmqStats && window.kmqStats.state === 'refused'")
        wait_until(right, "window.kmqStats && window.kmqStats.framesDecoded >= 3")
        assert "wrong token" in stats(wrong)["detail"]
        assert stats(wrong)["framesDecoded"] == 0
        assert server.stats("right-token-1")["viewers"]["count"] == 1
        wrong.close()
        right.close()
    finally:
        server.stop()



#: A page of another site with kmq's player in it: the player's modules copied to the site, the
#: stream and the address that tells a refusal from the kmq server (STREAM, PROBE), no overlay.
EMBEDDING_PAGE = """<!doctype html>
<title>a site</title>
<canvas id="picture"></canvas>
<script type="module">
  import { Player } from '/js/kmq/player.js';
  window.player = new Player(document.getElementById('picture'), 'STREAM', { probeUrl: 'PROBE' });
</script>
"""


@pytest.fixture()
def site(tmp_path):
    """Another web site on this machine (a plain HTTP server of its own) with kmq's player modules copied into it."""
    shutil.copytree(files("kmq.live") / "static", tmp_path / "js" / "kmq")
    handler = functools.partial(QuietFiles, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.root = tmp_path
    server.address = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a folder's files without logging each request."""

    def log_message(self, *args) -> None:
        pass


def test_another_sites_page_embeds_the_player_from_copied_modules(browser, site):  # noqa: F811
    """The modules work from any site, worker included; here one of another origin on this machine."""
    token = "embedding-token-7"
    server = LiveProcess("--size", "96x64", "--fps", "15", "-k", "8", "--token", token)
    base = f"127.0.0.1:{server.port}"
    pages = []
    try:
        for name, given in (("right", token), ("wrong", "wrong-token-3")):
            page = EMBEDDING_PAGE.replace("STREAM", f"ws://{base}/ws?token={given}")
            (site.root / f"{name}.html").write_text(page.replace("PROBE", f"http://{base}/stats?token={given}"))
            pages.append(browser.new_page())
            pages[-1].goto(f"{site.address}/{name}.html")
        right, wrong = pages
        wait_until(right, "window.player && window.player.stats.framesDecoded >= 5")
        played = right.evaluate("() => ({ ...window.player.stats })")
        assert played["state"] == "playing" and played["errors"] == 0 and played["width"] == 96
        # Decoded in the site's own worker, from the copied modules.
        assert [worker.url for worker in right.workers] == [f"{site.address}/js/kmq/decode-worker.js"]
        # The server's refusal reaches a page of another origin as such, not as a dropped connection.
        wait_until(wrong, "window.player && window.player.stats.state === 'refused'")
        assert "wrong token" in wrong.evaluate("() => window.player.stats.detail")
    finally:
        for page in pages:
            page.close()
        server.stop()


def test_the_page_plays_over_https_and_wss(browser, secure):  # noqa: F811
    # The test certificate is self-signed: this browser context accepts it, as a user would once.
    context = browser.new_context(ignore_https_errors=True, bypass_csp=True)
    try:
        page = context.new_page()
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(f"https://127.0.0.1:{secure.port}/?token=tls-token-42")
        wait_until(page, "window.kmqStats && window.kmqStats.framesDecoded >= 5")
        assert stats(page)["state"] == "playing" and stats(page)["errors"] == 0
        assert sockets == [f"wss://127.0.0.1:{secure.port}/ws?token=tls-token-42"]
    finally:
        context.close()
