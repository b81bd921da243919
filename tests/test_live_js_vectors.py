"""The browser's JavaScript decoder against the shared test vectors, run in headless Chromium: bit-exact."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path

import pytest

from test_live_browser import browser  # noqa: F401 (the fixture)

TESTS = Path(__file__).resolve().parent
STATIC = TESTS.parent / "src" / "kmq" / "live" / "static"
ORIGIN = "http://kmq.test"
FOLDERS = {"/static/": STATIC, "/vectors/": TESTS / "vectors", "/js/": TESTS / "js"}

pytestmark = pytest.mark.browser


def serve_from_disk(route) -> None:
    """Answer the page's requests from the source tree (no server: Playwright fulfils them)."""
    path = route.request.url[len(ORIGIN) :].split("?")[0]
    for prefix, folder in FOLDERS.items():
        if path.startswith(prefix):
            file = (folder / path[len(prefix) :]).resolve()
            if file.is_relative_to(folder) and file.is_file():
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                if file.suffix == ".js":
                    kind = "text/javascript"
                route.fulfill(status=200, body=file.read_bytes(), headers={"Content-Type": kind})
                return
    if path == "/":
        page = "<!doctype html><title>kmq vectors</title>"
        route.fulfill(status=200, body=page, headers={"Content-Type": "text/html"})
        return
    route.fulfill(status=404, body="not found")


@pytest.fixture(scope="module")
def results(browser):  # noqa: F811
    page = browser.new_page()
    try:
        page.route(f"{ORIGIN}/**", serve_from_disk)
        page.goto(f"{ORIGIN}/")
        found = page.evaluate("async () => (await import('/js/vectors.js')).runVectors()")
    finally:
        page.close()
    return {result["name"]: result["problems"] for result in found}


def all_vector_names() -> list[str]:
    listed = json.loads((TESTS / "vectors" / "vectors.json").read_text())
    video = json.loads((TESTS / "vectors" / "video_vectors.json").read_text())
    return [entry["name"] for entry in listed] + [entry["file"] for entry in video]


@pytest.mark.parametrize("name", all_vector_names())
def test_the_javascript_decoder_reproduces_each_vector_exactly(results, name):
    assert name in results
    assert results[name] == []
