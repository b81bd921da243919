// Packet parser: checks and splits the records of a kmq video stream (docs/FORMAT.md section 8):
// the KMQV stream header, KMQF frame packets, the optional kmqt capture-time record of the live
// server, and, for whole .kmqv files, the walk over records back to back. Trusts nothing: every
// length is checked against the bytes present and every CRC is verified before a field is used.

import { crc32 } from './crc32.js';

/** Corrupt, truncated or unsupported data. */
export class FormatError extends Error {
  constructor(message) {
    super(message);
    this.name = 'FormatError';
  }
}

/** Data larger than a limit of this decoder (pixels per frame). */
export class LimitError extends FormatError {
  constructor(message) {
    super(message);
    this.name = 'LimitError';
  }
}

export const TAG_HEADER = 'KMQV';
export const TAG_FRAME = 'KMQF';
export const TAG_INDEX = 'KMQI';
export const TAG_END = 'KMQE';
export const TAG_TIMING = 'kmqt';
export const RECORD_OVERHEAD = 12;
export const HEADER_PAYLOAD = 32;
export const FRAME_FIXED = 16;
export const FLAG_KEYFRAME = 1;
export const FLAG_PALETTE_UPDATE = 2;
/** No later frame is coded against this one: a decoder keeps its reference frame, a viewer may skip it. */
export const FLAG_DISCARDABLE = 4;
/** Frames of more pixels are refused before anything is allocated (a browser holds several copies). */
export const DEFAULT_MAX_PIXELS = 1 << 25;
const MAX_SIDE = 65536;

/** @param {ArrayBuffer|ArrayBufferView} data */
export function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new FormatError(`expected bytes, got ${Object.prototype.toString.call(data)}`);
}

function tagOf(bytes, offset) {
  return String.fromCharCode(bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]);
}

function u32(bytes, offset) {
  return (bytes[offset] | (bytes[offset + 1] << 8) | (bytes[offset + 2] << 16) | (bytes[offset + 3] << 24)) >>> 0;
}

/** Whether a tag names an optional record (first letter lower case): a reader may skip it. */
export function isOptional(tag) {
  const first = tag.charCodeAt(0);
  return first >= 0x61 && first <= 0x7a;
}

/**
 * Check one whole record (one live message): tag, exact length, CRC-32.
 * @param {Uint8Array} bytes exactly one record
 * @param {string} [what] how errors name it
 * @returns {{tag: string, payload: Uint8Array}} the payload is a view into `bytes`
 */
export function readRecord(bytes, what = 'record') {
  if (bytes.length < RECORD_OVERHEAD) {
    throw new FormatError(`${what} is truncated: ${bytes.length} bytes, a record needs at least ${RECORD_OVERHEAD}`);
  }
  const length = u32(bytes, 4);
  if (bytes.length !== RECORD_OVERHEAD + length) {
    throw new FormatError(`${what} is ${bytes.length} bytes but declares a payload of ${length} (truncated or padded)`);
  }
  const stored = u32(bytes, 8 + length);
  if (crc32(bytes, 8, 8 + length, crc32(bytes, 0, 4)) !== stored) {
    throw new FormatError(`${what} is damaged: checksum mismatch`);
  }
  return { tag: tagOf(bytes, 0), payload: bytes.subarray(8, 8 + length) };
}

/**
 * Parse and validate a stream header payload (section 8.2).
 * @param {Uint8Array} payload
 * @param {{maxPixels?: number}} [options]
 */
export function parseStreamHeader(payload, { maxPixels = DEFAULT_MAX_PIXELS } = {}) {
  if (payload.length < 1) throw new FormatError('stream header is empty');
  if (payload[0] !== 1) throw new FormatError(`kmq video version ${payload[0]} is not supported (this reader knows 1)`);
  if (payload.length !== HEADER_PAYLOAD) {
    throw new FormatError(`stream header payload is ${payload.length} bytes, expected ${HEADER_PAYLOAD}`);
  }
  const channels = payload[1];
  const k = payload[2] | (payload[3] << 8);
  const width = u32(payload, 4);
  const height = u32(payload, 8);
  const timeBase = [u32(payload, 12), u32(payload, 16)];
  const rate = [u32(payload, 20), u32(payload, 24)];
  if (u32(payload, 28) !== 0) throw new FormatError('stream header has reserved bits set');
  if (channels !== 3 && channels !== 4) {
    throw new FormatError(`stream header: channels must be 3 or 4, got ${channels}`);
  }
  if (k < 2 || k > 256) throw new FormatError(`stream header: K must be from 2 to 256, got ${k}`);
  if (width < 1 || height < 1 || width > MAX_SIDE || height > MAX_SIDE) {
    throw new FormatError(`stream header: frame size ${width}×${height} is invalid`);
  }
  if (timeBase[0] === 0 || timeBase[1] === 0 || (rate[0] !== 0 && rate[1] === 0)) {
    const given = `${timeBase[0]}/${timeBase[1]} or rate ${rate[0]}/${rate[1]}`;
    throw new FormatError(`stream header has an invalid time base ${given}`);
  }
  if (width * height > maxPixels) {
    throw new LimitError(`video frames of ${width}×${height} exceed the limit of ${maxPixels} pixels`);
  }
  return { version: 1, channels, k, width, height, timeBase, frameRate: rate[0] ? rate : null };
}

/** The largest frame payload a valid stream with this header can hold (as the Python reader). */
export function maxFramePayload(header) {
  return FRAME_FIXED + 32 + 256 * header.channels + 4 * header.width * header.height + 65536;
}

/**
 * Split a frame packet payload into its fields (section 8.3). `discardable`: no later frame is
 * coded against this one; `skipped`: a delta frame is coded against frame number - 1 - skipped.
 * @param {Uint8Array} payload
 * @param {object} header from parseStreamHeader
 * @param {string} [what]
 */
export function parseFramePacket(payload, header, what = 'frame packet') {
  if (payload.length > maxFramePayload(header)) {
    throw new FormatError(`${what} is ${payload.length} bytes, more than a frame of this size can need`);
  }
  if (payload.length < FRAME_FIXED) throw new FormatError(`${what} is truncated (${payload.length} bytes)`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const number = view.getUint32(0, true);
  const pts = view.getBigInt64(4, true);
  const flags = payload[12];
  const skipped = payload[13];
  const size = payload[14] | (payload[15] << 8);
  if ((flags & ~(FLAG_KEYFRAME | FLAG_PALETTE_UPDATE | FLAG_DISCARDABLE)) !== 0) {
    throw new FormatError(`${what} has unknown flags 0x${flags.toString(16)}`);
  }
  if (size < 1 || size > header.k) {
    throw new FormatError(`${what} has a palette of ${size} entries, the stream allows 1..${header.k}`);
  }
  const keyframe = (flags & FLAG_KEYFRAME) !== 0;
  const update = (flags & FLAG_PALETTE_UPDATE) !== 0;
  const discardable = (flags & FLAG_DISCARDABLE) !== 0;
  // A keyframe is always a reference; a delta frame's reference, number - 1 - skipped, is a frame
  // of the stream.
  if (keyframe && (discardable || skipped !== 0)) {
    throw new FormatError(`${what} is a keyframe marked discardable or coded after skipped frames`);
  }
  if (skipped !== 0 && skipped >= number) {
    throw new FormatError(`${what} is frame ${number} and claims ${skipped} skipped frames before it`);
  }
  if (keyframe && update) throw new FormatError(`${what} is a keyframe with a palette update flag`);
  const channels = header.channels;
  let offset = FRAME_FIXED;
  let mask = null;
  let count = 0;
  if (keyframe) {
    count = size;
  } else if (update) {
    const maskBytes = (size + 7) >> 3;
    if (payload.length < offset + maskBytes) {
      throw new FormatError(`${what} is truncated: its palette section runs past its end`);
    }
    mask = payload.subarray(offset, offset + maskBytes);
    for (let j = 0; j < maskBytes * 8; j++) {
      if ((mask[j >> 3] >> (j & 7)) & 1) {
        if (j >= size) throw new FormatError(`${what} updates palette entries beyond its ${size}`);
        count++;
      }
    }
    offset += maskBytes;
  }
  const colorBytes = count * channels;
  if (payload.length < offset + colorBytes) {
    throw new FormatError(`${what} is truncated: its palette section runs past its end`);
  }
  return {
    number,
    pts: Number(pts),
    ptsExact: pts,
    keyframe,
    discardable,
    skipped,
    paletteSize: size,
    mask,
    colors: payload.subarray(offset, offset + colorBytes),
    indexData: payload.subarray(offset + colorBytes),
  };
}

/**
 * The live server's optional capture-time record `kmqt` (docs/FORMAT.md section 8.7):
 * u32 frame number, i64 capture time and i64 send time, microseconds since the Unix epoch.
 */
export function parseTiming(payload) {
  if (payload.length < 20) throw new FormatError(`capture-time record is ${payload.length} bytes, expected 20`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return {
    number: view.getUint32(0, true),
    captureMs: Number(view.getBigInt64(4, true)) / 1000,
    sentMs: Number(view.getBigInt64(12, true)) / 1000,
  };
}

/**
 * The records of a whole .kmqv file, in order, up to its keyframe index (section 8.6).
 * @param {Uint8Array} bytes the file
 * @returns {Generator<{offset: number, record: Uint8Array}>} each record's bytes, unchecked
 */
export function* fileRecords(bytes) {
  let offset = 0;
  while (offset < bytes.length) {
    if (bytes.length - offset < 8) throw new FormatError(`record at byte ${offset} is truncated`);
    const tag = tagOf(bytes, offset);
    const length = u32(bytes, offset + 4);
    if (length > bytes.length - offset - RECORD_OVERHEAD) {
      throw new FormatError(`record at byte ${offset} is truncated`);
    }
    if (tag === TAG_INDEX || tag === TAG_END) return;
    yield { offset, record: bytes.subarray(offset, offset + RECORD_OVERHEAD + length) };
    offset += RECORD_OVERHEAD + length;
  }
  throw new FormatError(`the file ends at byte ${offset} without its keyframe index (cut short)`);
}

/**
 * Packet parser stage of the player: takes one message (one record) at a time with write() and
 * hands the parsed header, frame packet or capture time to its destination.
 */
export class PacketParser {
  /**
   * @param {{header(h: object): void, frame(p: object, bytes: number): void, timing?(t: object): void}} destination
   * @param {{maxPixels?: number}} [options]
   */
  constructor(destination, options = {}) {
    this.destination = destination;
    this.options = options;
    this.header = null;
  }

  /** @param {ArrayBuffer|Uint8Array} message one record */
  write(message) {
    const bytes = asBytes(message);
    const what = bytes.length >= 4 ? `record ${tagOf(bytes, 0)}` : 'record';
    const { tag, payload } = readRecord(bytes, what);
    if (tag === TAG_HEADER) {
      this.header = parseStreamHeader(payload, this.options);
      this.destination.header(this.header);
    } else if (tag === TAG_FRAME) {
      if (!this.header) throw new FormatError('a frame packet arrived before the stream header');
      this.destination.frame(parseFramePacket(payload, this.header), bytes.length);
    } else if (tag === TAG_TIMING) {
      if (this.destination.timing) this.destination.timing(parseTiming(payload));
    } else if (!isOptional(tag)) {
      throw new FormatError(`unknown record ${JSON.stringify(tag)} in the stream`);
    }
  }
}
