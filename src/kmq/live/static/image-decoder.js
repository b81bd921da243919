// Still-image decoder: the .kmq container (docs/FORMAT.md sections 2-4) — signature, checksummed
// chunks, HEAD/PALT/DATA — with index maps stored packed, deflated (zlib, inflated by the
// browser's DecompressionStream) or coded "cm" (index-decoder.js).

import { crc32 } from './crc32.js';
import { DEFAULT_MAX_PIXELS, FormatError, LimitError } from './records.js';
import { decodeIndexData, indexBits, paddedLength, unpad } from './index-decoder.js';

const SIGNATURE = [0x8b, 0x4b, 0x4d, 0x51];
const METHODS = ['stored', 'deflate', 'cm'];

function u32(bytes, at) {
  return (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0;
}

/** Signature, version, then each chunk up to TAIL with its CRC checked (section 2). */
function readChunks(bytes) {
  if (bytes.length < 5 || SIGNATURE.some((value, i) => bytes[i] !== value)) {
    throw new FormatError('not a kmq image (wrong signature)');
  }
  if (bytes[4] !== 1) {
    throw new FormatError(`kmq image version ${bytes[4]} is not supported (this decoder reads version 1)`);
  }
  const chunks = [];
  let at = 5;
  for (;;) {
    if (bytes.length - at < 12) throw new FormatError('kmq image: truncated (no TAIL chunk)');
    const type = String.fromCharCode(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
    const length = u32(bytes, at + 4);
    if (length > bytes.length - at - 12) throw new FormatError(`kmq image: chunk ${type} is truncated`);
    const payload = bytes.subarray(at + 8, at + 8 + length);
    if (crc32(bytes, at + 8, at + 8 + length, crc32(bytes, at, at + 4)) !== u32(bytes, at + 8 + length)) {
      throw new FormatError(`kmq image: chunk ${type} is damaged (checksum mismatch)`);
    }
    at += 12 + length;
    if (type === 'TAIL') {
      if (length !== 0) throw new FormatError('kmq image: TAIL chunk is not empty');
      if (at !== bytes.length) throw new FormatError(`kmq image: ${bytes.length - at} bytes after the TAIL chunk`);
      return chunks;
    }
    chunks.push({ type, payload });
  }
}

/** Indices from a packed map, most significant bit first (section 4). */
function unpack(packed, width, height, bits, k) {
  const count = width * height;
  const indices = new Uint8Array(count);
  if (bits === 0) return indices;
  let bitPos = 0;
  for (let i = 0; i < count; i++) {
    let value = 0;
    for (let b = 0; b < bits; b++, bitPos++) value = (value << 1) | ((packed[bitPos >> 3] >> (7 - (bitPos & 7))) & 1);
    if (value >= k) throw new FormatError(`kmq image: index ${value} at pixel ${i} is not below k = ${k}`);
    indices[i] = value;
  }
  return indices;
}

/** Inflate a zlib stream, refusing any size but `expected`, a stream that does not end, or bytes after it. */
async function inflate(data, expected) {
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate'));
  const reader = stream.getReader();
  const out = new Uint8Array(expected + 1);
  let size = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (size + value.length > expected) {
        await reader.cancel();
        throw new FormatError(`kmq image: deflated data holds more than the ${expected} bytes of its map`);
      }
      out.set(value, size);
      size += value.length;
    }
  } catch (error) {
    if (error instanceof FormatError) throw error;
    throw new FormatError(`kmq image: deflated data is corrupt (${error.message})`);
  }
  if (size !== expected) {
    throw new FormatError(`kmq image: deflated data holds ${size} bytes, its map needs ${expected}`);
  }
  return out.subarray(0, expected);
}

/**
 * Decode a .kmq still image.
 * @param {Uint8Array} bytes the whole file
 * @param {{maxPixels?: number}} [options]
 * @returns {Promise<{width: number, height: number, channels: number, k: number, method: string,
 *   palette: Uint8Array, indices: Uint8Array}>}
 */
export async function decodeImage(bytes, { maxPixels = DEFAULT_MAX_PIXELS } = {}) {
  const seen = {};
  const order = ['HEAD', 'PALT', 'DATA'];
  let head = null;
  for (const chunk of readChunks(bytes)) {
    const place = order.indexOf(chunk.type);
    if (place < 0) {
      const first = chunk.type.charCodeAt(0);
      if (first >= 0x61 && first <= 0x7a) {
        if (!head) throw new FormatError('kmq image: the first chunk must be HEAD');
        continue;
      }
      throw new FormatError(`kmq image: unknown critical chunk ${chunk.type}`);
    }
    if (seen[chunk.type]) throw new FormatError(`kmq image: repeated ${chunk.type} chunk`);
    if (order.slice(0, place).some((type) => !seen[type])) {
      throw new FormatError(`kmq image: ${chunk.type} chunk out of order`);
    }
    seen[chunk.type] = chunk.payload;
    if (chunk.type === 'HEAD') head = parseHead(chunk.payload, maxPixels);
  }
  for (const type of order) if (!seen[type]) throw new FormatError(`kmq image: missing ${type} chunk`);
  const { width, height, channels, k, bits, method } = head;
  if (seen.PALT.length !== k * channels) {
    throw new FormatError(`kmq image: palette is ${seen.PALT.length} bytes, expected ${k * channels}`);
  }
  let indices;
  if (method === 'cm') {
    const padded = new Uint8Array(paddedLength(width, height));
    decodeIndexData(seen.DATA, width, height, k, null, padded);
    indices = unpad(padded, width, height);
  } else {
    const packedSize = Math.ceil((width * height * bits) / 8);
    let packed = seen.DATA;
    if (method === 'deflate') packed = await inflate(packed, packedSize);
    else if (packed.length !== packedSize) {
      throw new FormatError(`kmq image: stored map is ${packed.length} bytes, expected ${packedSize}`);
    }
    indices = unpack(packed, width, height, bits, k);
  }
  return { width, height, channels, k, method, palette: seen.PALT.slice(), indices };
}

function parseHead(payload, maxPixels) {
  if (payload.length !== 13) throw new FormatError(`kmq image: HEAD is ${payload.length} bytes, expected 13`);
  const width = u32(payload, 0);
  const height = u32(payload, 4);
  const channels = payload[8];
  const k = payload[9] | (payload[10] << 8);
  const bits = payload[11];
  const method = METHODS[payload[12]];
  if (width < 1 || height < 1) {
    throw new FormatError(`kmq image: size ${width}×${height}: both sides must be at least 1`);
  }
  if (width * height > maxPixels) {
    throw new LimitError(`kmq image: ${width}×${height} pixels exceed the limit of ${maxPixels}`);
  }
  if (channels !== 3 && channels !== 4) throw new FormatError(`kmq image: channels must be 3 or 4, got ${channels}`);
  if (k < 1 || k > 256) throw new FormatError(`kmq image: k must be 1..256, got ${k}`);
  if (bits !== indexBits(k)) throw new FormatError(`kmq image: ${bits} bits per index for k = ${k}`);
  if (method === undefined) throw new FormatError(`kmq image: unknown method ${payload[12]}`);
  return { width, height, channels, k, bits, method };
}
