// Video decoder: stream header and frame packets in, frames out (docs/FORMAT.md section 8.3).
// Holds the state a stream carries from frame to frame — the reference frame's palette and index
// map — and the frame last decoded, which it turns into RGBA pixels with one table look-up per
// pixel. A discardable frame is decoded and shown, but the reference frame stays.

import { FormatError, PacketParser, parseFramePacket, readRecord, TAG_FRAME } from './records.js';
import { decodeIndexData, IndexScratch, paddedLength, PAD_LEFT, unpad } from './index-decoder.js';

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Decodes frame packets one at a time. A delta frame needs its reference frame, number - 1 -
 * skipped, the last frame decoded that was not discardable; after a gap or a reset the decoder
 * refuses delta frames until the next keyframe (a live viewer waits for one).
 */
export class VideoDecoder {
  /** @param {object} [header] from parseStreamHeader */
  constructor(header = null) {
    this.header = null;
    this.scratch = new IndexScratch();
    if (header) this.setHeader(header);
  }

  /** Accept a stream header; a new header starts the stream afresh. */
  setHeader(header) {
    const sameSize = this.header && this.header.width === header.width && this.header.height === header.height;
    this.header = header;
    if (!sameSize) {
      // The reference frame's map, the frame last decoded's (when it was discardable), and one to
      // decode into: a frame that fails to decode changes neither of the other two.
      const length = paddedLength(header.width, header.height);
      this.maps = [new Uint8Array(length), new Uint8Array(length), new Uint8Array(length)];
    }
    this.referenceMap = this.maps[0];
    this.frameMap = this.maps[0];
    this.referencePalette = new Uint8Array(256 * header.channels);
    this.palette = new Uint8Array(256 * header.channels);
    this.paletteSize = 0;
    this.reset();
  }

  /** Forget the reference frame; the next packet must be a keyframe. */
  reset() {
    this.number = -1;
    this.ready = false;
  }

  /** The index map of the frame last decoded (padded, see index-decoder.js). */
  get map() {
    return this.frameMap;
  }

  /**
   * Decode one parsed frame packet (PacketParser output) or one frame record.
   * @param {object|Uint8Array} packet
   * @returns {{number: number, pts: number, keyframe: boolean, discardable: boolean, paletteSize: number}}
   */
  decode(packet) {
    const header = this.header;
    if (!header) throw new FormatError('a frame packet arrived before the stream header');
    if (packet instanceof Uint8Array) {
      const { tag, payload } = readRecord(packet, 'frame packet');
      if (tag !== TAG_FRAME) throw new FormatError(`frame packet has tag ${JSON.stringify(tag)}, expected "KMQF"`);
      packet = parseFramePacket(payload, header);
    }
    const what = `frame ${packet.number}`;
    const channels = header.channels;
    const size = packet.paletteSize;
    if (!packet.keyframe) {
      if (!this.ready) {
        throw new FormatError(`${what} is a delta frame and needs the frame before it (start at a keyframe)`);
      }
      const reference = packet.number - 1 - packet.skipped;
      if (reference !== this.number) {
        const last = `the last reference frame decoded is ${this.number}`;
        throw new FormatError(`${what} is coded against frame ${reference}, but ${last}: a frame is missing`);
      }
      if (size !== this.paletteSize) throw new FormatError(`${what} changes the palette size without a keyframe`);
    }
    const next = this.maps.find((map) => map !== this.referenceMap && map !== this.frameMap);
    try {
      const reference = packet.keyframe ? null : this.referenceMap;
      decodeIndexData(packet.indexData, header.width, header.height, size, reference, next, this.scratch);
    } catch (error) {
      if (error instanceof FormatError) throw new FormatError(`${what}: ${error.message}`);
      throw error;
    }
    // The frame is good: only now does it change the decoder's state. Its palette is the
    // reference frame's with this packet's updates.
    if (packet.keyframe) {
      this.palette.set(packet.colors);
    } else {
      this.palette.set(this.referencePalette);
      if (packet.mask) {
        let from = 0;
        for (let j = 0; j < size; j++) {
          if ((packet.mask[j >> 3] >> (j & 7)) & 1) {
            this.palette.set(packet.colors.subarray(from, from + channels), j * channels);
            from += channels;
          }
        }
      }
    }
    this.frameMap = next;
    if (!packet.discardable) {
      this.referenceMap = next;
      this.referencePalette.set(this.palette);
      this.paletteSize = size;
      this.number = packet.number;
      this.ready = true;
    }
    return {
      number: packet.number,
      pts: packet.pts,
      keyframe: packet.keyframe,
      discardable: packet.discardable,
      paletteSize: size,
    };
  }

  /** The current frame's indices as a plain height × width map. */
  indices(out) {
    return unpad(this.map, this.header.width, this.header.height, out);
  }

  /**
   * The current frame as RGBA pixels (alpha 255 for RGB streams), width × height × 4 bytes.
   * @param {Uint8ClampedArray|Uint8Array} [out] reused when given
   */
  toRGBA(out) {
    const { width, height } = this.header;
    if (!out) out = new Uint8ClampedArray(width * height * 4);
    const words = new Uint32Array(out.buffer, out.byteOffset, width * height);
    lookUp(this.map, width, height, this.colorTable(), words);
    return out;
  }

  /** The current frame's pixels as the stream has them: width × height × channels bytes. */
  toPixels(out) {
    const { width, height, channels } = this.header;
    if (!out) out = new Uint8Array(width * height * channels);
    const map = this.map;
    const palette = this.palette;
    const stride = width + 3;
    let i = 0;
    for (let y = 0; y < height; y++) {
      let at = y * stride + PAD_LEFT;
      for (let x = 0; x < width; x++) {
        const entry = map[at++] * channels;
        for (let c = 0; c < channels; c++) out[i++] = palette[entry + c];
      }
    }
    return out;
  }

  /** The current palette as a colour table (see colorTable). */
  colorTable() {
    return colorTable(this.palette, this.paletteSize, this.header.channels);
  }
}

/**
 * A palette as 32-bit words that lie in memory as R, G, B, A bytes, whatever the platform's byte
 * order (alpha 255 for RGB palettes): one store per pixel turns indices into RGBA.
 * @param {Uint8Array} palette size × channels bytes
 * @param {number} size entries
 * @param {number} channels 3 or 4
 */
export function colorTable(palette, size, channels) {
  const table = new Uint32Array(256);
  for (let j = 0; j < size; j++) {
    const at = j * channels;
    const alpha = channels === 4 ? palette[at + 3] : 255;
    table[j] = LITTLE_ENDIAN
      ? (palette[at] | (palette[at + 1] << 8) | (palette[at + 2] << 16) | (alpha << 24)) >>> 0
      : ((palette[at] << 24) | (palette[at + 1] << 16) | (palette[at + 2] << 8) | alpha) >>> 0;
  }
  return table;
}

/**
 * The palette look-up: RGBA words for each index of a padded map.
 * @param {Uint8Array} map padded map (index-decoder.js) of width × rows
 * @param {number} width
 * @param {number} rows
 * @param {Uint32Array} table from colorTable
 * @param {Uint32Array} words width × rows words to fill
 */
export function lookUp(map, width, rows, table, words) {
  const stride = width + 3;
  for (let y = 0; y < rows; y++) {
    const from = y * stride + PAD_LEFT;
    const to = y * width;
    let x = 0;
    // Four pixels a step: about twice as fast in V8 as one a step.
    for (; x + 4 <= width; x += 4) {
      const at = from + x;
      const i = to + x;
      words[i] = table[map[at]];
      words[i + 1] = table[map[at + 1]];
      words[i + 2] = table[map[at + 2]];
      words[i + 3] = table[map[at + 3]];
    }
    for (; x < width; x++) words[to + x] = table[map[from + x]];
  }
}

/**
 * Decode a whole stream given as records (a .kmqv file's, or live messages), calling `onFrame`
 * with the decoder after each frame.
 * @param {Iterable<Uint8Array>} records the header record first
 * @param {(decoder: VideoDecoder, frame: object) => void} onFrame
 */
export function decodeRecords(records, onFrame) {
  const decoder = new VideoDecoder();
  const parser = new PacketParser({
    header: (header) => decoder.setHeader(header),
    frame: (packet) => onFrame(decoder, decoder.decode(packet)),
  });
  for (const record of records) parser.write(record);
  return decoder;
}
