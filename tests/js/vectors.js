// Test page module: runs the browser's decoder (src/kmq/live/static) over the shared test vectors
// (tests/vectors) and reports, for each, whether it reproduced the expected bytes exactly, whether
// every truncated copy was refused as corrupt, and whether damaged copies (checksums matching)
// were decoded or refused, never anything else. Served by the test at /static/ and /vectors/.

import { decodeImage } from '/static/image-decoder.js';
import { decodeIndexData, IndexScratch, indexLayout, pad, paddedLength, stripeAlone, unpad } from '/static/index-decoder.js';
import { crc32 } from '/static/crc32.js';
import { fileRecords, FormatError, readRecord, TAG_FRAME, TAG_HEADER } from '/static/records.js';
import { decodeRecords } from '/static/video-decoder.js';

async function load(name) {
  const response = await fetch(`/vectors/${name}`);
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function firstDifference(actual, expected) {
  if (actual.length !== expected.length) return `length ${actual.length}, expected ${expected.length}`;
  for (let i = 0; i < actual.length; i++) if (actual[i] !== expected[i]) return `byte ${i}: ${actual[i]}, expected ${expected[i]}`;
  return null;
}

async function refusedWhenCut(data, decode) {
  const accepted = [];
  for (let size = 0; size < data.length; size++) {
    try {
      await decode(data.subarray(0, size));
      accepted.push(size);
    } catch (error) {
      if (!(error instanceof FormatError)) return `cut to ${size} bytes: ${error.name}: ${error.message}`;
    }
  }
  return accepted.length ? `accepted when cut to ${accepted.slice(0, 5).join(', ')} bytes` : null;
}

async function imageVector(entry) {
  const data = await load(entry.file);
  const image = await decodeImage(data);
  const problems = [
    firstDifference(image.palette, await load(entry.palette)),
    firstDifference(image.indices, await load(entry.indices)),
    image.method === entry.method ? null : `method ${image.method}`,
    await refusedWhenCut(data, (cut) => decodeImage(cut)),
  ].filter(Boolean);
  return { name: entry.name, problems };
}

/**
 * Damaged copies (one byte inverted at each of up to 400 places, the layout's bytes among them):
 * each is decoded or refused as corrupt, never anything else (a RangeError, say, or a hang).
 */
function survivesDamage(data, decode) {
  const step = Math.max(1, Math.floor(data.length / 400));
  for (let at = 0; at < data.length; at += step) {
    const damaged = data.slice();
    damaged[at] ^= 0xff;
    try {
      decode(damaged);
    } catch (error) {
      if (!(error instanceof FormatError)) return `byte ${at} inverted: ${error.name}: ${error.message}`;
    }
  }
  return null;
}

// One work space for every index vector, as a player reuses one frame after frame, filled with
// junk before each decoding: nothing left in it by maps decoded before may show through.
const scratch = new IndexScratch();

function dirtied() {
  for (const array of [scratch.p0s, scratch.rates, scratch.flags, scratch.vectors, scratch.moved]) array.fill(0x55);
  return scratch;
}

async function indexVector(entry) {
  const { width, height, k } = entry;
  const data = await load(entry.file);
  const expected = await load(entry.indices);
  const plainPrevious = entry.previous ? await load(entry.previous) : null;
  const previous = plainPrevious ? pad(plainPrevious, width, height) : null;
  const decode = (bytes) => {
    const out = new Uint8Array(paddedLength(width, height));
    decodeIndexData(bytes, width, height, k, previous, out, dirtied());
    return unpad(out, width, height);
  };
  const problems = [];
  try {
    problems.push(firstDifference(decode(data), expected));
  } catch (error) {
    problems.push(`${error.name}: ${error.message}`);
  }
  problems.push(await refusedWhenCut(data, decode));
  problems.push(survivesDamage(data, decode));
  // Each stripe alone, as the player's workers decode it: the stripe's rows, against the previous
  // map's same rows.
  const layout = indexLayout(data, height);
  for (const stripe of layout.stripes) {
    const rows = stripe.bottom - stripe.top;
    const part = (map) => map.subarray(stripe.top * width, stripe.bottom * width);
    const out = new Uint8Array(paddedLength(width, rows));
    const before = plainPrevious ? pad(part(plainPrevious), width, rows) : null;
    try {
      decodeIndexData(stripeAlone(data, layout, stripe), width, rows, k, before, out, dirtied());
      const difference = firstDifference(unpad(out, width, rows), part(expected));
      if (difference) problems.push(`the stripe at row ${stripe.top} alone: ${difference}`);
    } catch (error) {
      problems.push(`the stripe at row ${stripe.top} alone: ${error.name}: ${error.message}`);
    }
  }
  return { name: entry.name, problems: problems.filter(Boolean) };
}

function videoFrames(bytes, records) {
  const frames = [];
  const keyframes = [];
  const pts = [];
  decodeRecords(records(bytes), (decoder, frame) => {
    frames.push(decoder.toPixels());
    pts.push(frame.pts);
    if (frame.keyframe) keyframes.push(frame.number);
  });
  return { frames, keyframes, pts };
}

async function videoVector(entry) {
  const data = await load(entry.file);
  const expected = await load(entry.frames_file);
  const size = entry.width * entry.height * entry.channels;
  const problems = [];
  const check = (label, result) => {
    if (result.frames.length !== entry.frames) problems.push(`${label}: ${result.frames.length} frames, expected ${entry.frames}`);
    result.frames.forEach((pixels, i) => {
      const difference = firstDifference(pixels, expected.subarray(i * size, (i + 1) * size));
      if (difference) problems.push(`${label}: frame ${i}: ${difference}`);
    });
    if (JSON.stringify(result.keyframes) !== JSON.stringify(entry.keyframes)) problems.push(`${label}: keyframes ${result.keyframes}`);
    if (JSON.stringify(result.pts) !== JSON.stringify(entry.pts)) problems.push(`${label}: pts ${result.pts}`);
  };
  // As a file: the records back to back.
  check('file', videoFrames(data, (bytes) => [...fileRecords(bytes)].map((item) => item.record)));
  // As a live stream: the same records, one message each, through the packet parser.
  check('live', videoFrames(data, (bytes) => [...fileRecords(bytes)].map((item) => item.record.slice())));
  // Cut anywhere: every frame decoded before the damage is right, and when frames are missing the
  // damage is reported (a cut inside the keyframe index, after the last frame, loses none).
  for (let cut = 0; cut < data.length - 1; cut += 7) {
    const decoded = [];
    let failed = false;
    try {
      const records = [...fileRecords(data.subarray(0, cut))].map((item) => item.record);
      if (!records.length || String.fromCharCode(...records[0].subarray(0, 4)) !== TAG_HEADER) throw new FormatError('no header');
      readRecord(records[0]);
      decodeRecords(records, (decoder) => decoded.push(decoder.toPixels()));
    } catch (error) {
      if (!(error instanceof FormatError)) problems.push(`cut to ${cut}: ${error.name}: ${error.message}`);
      failed = true;
    }
    if (!failed && decoded.length < entry.frames) problems.push(`cut to ${cut} bytes was not reported`);
    decoded.forEach((pixels, i) => {
      if (firstDifference(pixels, expected.subarray(i * size, (i + 1) * size))) problems.push(`cut to ${cut}: frame ${i} differs`);
    });
  }
  // Damaged inside a frame packet whose checksum still matches (as a server could send): decoded or
  // refused as corrupt, never anything else.
  const records = [...fileRecords(data)].map((item) => item.record);
  records.forEach((record, r) => {
    if (String.fromCharCode(...record.subarray(0, 4)) !== TAG_FRAME) return;
    const end = record.length - 4;
    const problem = survivesDamage(record.subarray(8, end), (payload) => {
      const damaged = record.slice();
      damaged.set(payload, 8);
      new DataView(damaged.buffer).setUint32(end, crc32(damaged, 8, end, crc32(damaged, 0, 4)), true);
      decodeRecords(records.map((other, i) => (i === r ? damaged : other)), () => {});
    });
    if (problem) problems.push(`frame record ${r}: ${problem}`);
  });
  return { name: entry.file, problems };
}

/** Every vector of tests/vectors: [{name, problems: [...]}]; no problems means bit-exact. */
export async function runVectors() {
  const listed = JSON.parse(new TextDecoder().decode(await load('vectors.json')));
  const video = JSON.parse(new TextDecoder().decode(await load('video_vectors.json')));
  const results = [];
  for (const entry of listed) results.push(await (entry.kind === 'image' ? imageVector(entry) : indexVector(entry)));
  for (const entry of video) results.push(await videoVector(entry));
  return results;
}
