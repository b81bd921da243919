"""The browser's JavaScript decoder against the shared test vectors, run in headless Chromium: bit-exact."""

from __future__ import annotations

import base64
import json
import mimetypes
from fractions import Fraction
from pathlib import Path

import numpy as np
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


# ---------------------------------------------------------------- the player's decoder stage

#: Feeds records to a decoder stage, each frame record once the one before is done with ("paced",
#: as a viewer that keeps up gets them), or all at once (a viewer that is behind, so that they
#: queue), and reports what the stage made of each; "order" has its frames and acknowledgements
#: as they came.
STAGE = """async ({ records, decoders, worker, paced }) => {
  const { DecoderStage } = await import('/static/decoder-stage.js');
  const messages = records.map((text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0)));
  const result = { frames: [], skipped: [], discarded: [], errors: [], acks: [], keyframeRequests: 0, order: [] };
  let header = null;
  let seen = 0;
  const stage = new DecoderStage({
    header: (h) => { header = h; },
    frame: (frame) => {
      const pixels = new Uint8Array(header.width * header.height * 4);
      for (const part of frame.parts) {
        pixels.set(new Uint8Array(part.rgba), part.top * header.width * 4);
        stage.recycle(part.rgba);
      }
      let binary = '';
      for (let i = 0; i < pixels.length; i += 0x8000) binary += String.fromCharCode.apply(null, pixels.subarray(i, i + 0x8000));
      result.frames.push({ number: frame.number, discardable: frame.discardable, pixels: btoa(binary) });
      result.order.push(['frame', frame.number]);
      seen++;
    },
    skipped: (number) => { result.skipped.push(number); seen++; },
    discarded: (number) => { result.discarded.push(number); seen++; },
    error: (message) => { result.errors.push(message); seen++; },
  }, {
    decoders,
    worker,
    acknowledge: (number) => { result.acks.push(number); result.order.push(['ack', number]); },
    requestKeyframe: () => { result.keyframeRequests++; },
  });
  const deadline = Date.now() + 20000;
  // Every frame record ends up decoded, reported, or dropped while the stage waits for a keyframe.
  const until = async (count) => {
    while (seen + stage.dropped < count && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 2));
  };
  let frames = 0;
  for (const message of messages) {
    stage.write(message);
    if (String.fromCharCode(...message.subarray(0, 4)) === 'KMQF') frames++;
    if (paced) await until(frames);
  }
  await until(frames);
  await new Promise((resolve) => setTimeout(resolve, 20)); // nothing more comes
  result.workers = stage.decoders.length;
  result.stageDiscarded = stage.discarded;
  result.stageDropped = stage.dropped;
  stage.destroy();
  return result;
}"""

DECODERS = [(3, True), (1, True), (2, False)]


def coded(records: list[bytes]) -> list[str]:
    return [base64.b64encode(record).decode() for record in records]


def run_stage(page, header: bytes, frames: list[bytes], decoders: int, worker: bool, *, paced: bool) -> dict:  # noqa: F811
    """What a decoder stage in ``page`` made of a header and frame records (see STAGE)."""
    arguments = {"records": coded([header, *frames]), "decoders": decoders, "worker": worker, "paced": paced}
    return page.evaluate(STAGE, arguments)


def striped_stream() -> tuple[list[bytes], list[np.ndarray]]:
    """A small stream coded in five stripes, with changes, motion and palette updates: its records and frames."""
    from kmq.codec.entropy import encode_index_map, motion_vector_shape
    from kmq.codec.video import StreamHeader, VideoDecoder, pack_frame

    rng = np.random.default_rng(7)
    width, height, k = 72, 50, 12
    header = StreamHeader(width=width, height=height, k=k, time_base=Fraction(1, 30))
    palette = rng.integers(0, 256, (k, 3), dtype=np.uint8)
    indices = (np.add.outer(np.arange(height) // 6, np.arange(width) // 9) % k).astype(np.uint8)
    records = [header.to_bytes()]
    previous = None
    vector_shape = motion_vector_shape(height, width, 11)
    for number in range(6):
        changed = None
        vectors = None
        if number:
            indices = indices.copy()
            if number >= 3:
                # Motion coded (mode 2): the picture pans, with vectors that follow it, then random ones.
                indices = np.roll(indices, 2, axis=1)
                vectors = np.full(vector_shape, (-2, 0), np.int8)
                if number == 5:
                    vectors = rng.integers(-16, 16, vector_shape, dtype=np.int8)
            indices[number * 8 : number * 8 + 9, 5 + number : 40] = rng.integers(0, k, (9, 35 - number))
            changed = np.zeros(k, bool)
            changed[[number, number + 5]] = True
            palette = palette.copy()
            palette[changed] = rng.integers(0, 256, (2, 3))
        data = encode_index_map(indices, k, previous, stripe_rows=11, vectors=vectors)
        record = pack_frame(number, number, keyframe=number == 0, palette=palette, changed=changed, index_data=data)
        records.append(record)
        previous = indices
    decoder = VideoDecoder(header)
    return records, [decoder.feed(record).to_array() for record in records[1:]]


@pytest.fixture(scope="module")
def page(browser):  # noqa: F811
    page = browser.new_page()
    page.route(f"{ORIGIN}/**", serve_from_disk)
    page.goto(f"{ORIGIN}/")
    yield page
    page.close()


@pytest.mark.parametrize(("decoders", "worker"), DECODERS)
def test_the_players_decoder_stage_decodes_stripes_in_parallel_exactly(page, decoders, worker):
    records, expected = striped_stream()
    found = run_stage(page, records[0], records[1:], decoders, worker, paced=False)
    assert found["errors"] == [] and found["skipped"] == [] and found["discarded"] == []
    assert found["workers"] == decoders
    assert [frame["number"] for frame in found["frames"]] == list(range(len(expected)))
    for frame, pixels in zip(found["frames"], expected):
        rgba = np.frombuffer(base64.b64decode(frame["pixels"]), np.uint8).reshape(*pixels.shape[:2], 4)
        assert np.array_equal(rgba[:, :, :3], pixels)
        assert (rgba[:, :, 3] == 255).all()
