// Index decoder: the "cm" index data of docs/FORMAT.md section 5 — an adaptive binary range
// decoder with 16-bit probabilities, contexts from neighbour equalities, 16×16 inter blocks and
// their motion vectors — turned back into a palette-index map. Integer arithmetic on values below
// 2^32 only, so every browser gets the bytes the Python decoder gets.

import { FormatError } from './records.js';

const HALF = 32768;
const FLAG_LIMIT = 6;
const TREE_LIMIT = 4;
const FLAG_W = 0;
const FLAG_N = 128;
const FLAG_P = 256;
const FLAG_BLOCK = 288;
const TREE = 296;
// Motion contexts (mode 2), after the tree's: M + 0 / M + 1 "the predicted vector", M + 2 "the
// vector above", then the trees of dx + 16 and dy + 16 (section 5.7).
const MOTION_SAME = 0;
const MOTION_ABOVE = 2;
const MOTION_X = 4;
const MOTION_Y = 36;
const MOTION_CONTEXTS = 68;
const MOTION_BITS = 5;
const TOP = 16777216; // 2^24
const MODE_INTRA = 0;
const MODE_INTER = 1;
const MODE_MOTION = 2;
/** Side of the square blocks whose "changed" flag an inter-coded map sends. */
export const BLOCK_SIZE = 16;
/** Columns of zeros left of each row of a padded map (and one to its right). */
export const PAD_LEFT = 2;

/** ceil(log2 k), 0 for k = 1. */
export function indexBits(k) {
  return k <= 1 ? 0 : 32 - Math.clz32(k - 1);
}

/**
 * A padded index map: pixel (y, x) at y * (width + 3) + x + 2; two zero columns on the left, one
 * on the right, and a zero row after the last, read for every position above a stripe.
 */
export function paddedLength(width, height) {
  return (height + 1) * (width + 3);
}

/**
 * The binary range decoder of section 5.3, over bytes[start..end). `code` and `range` hold the
 * bits of unsigned 32-bit values in signed 32-bit integers, so the engine keeps them in machine
 * registers; unsigned comparisons flip the sign bit first.
 */
class RangeDecoder {
  constructor(bytes, start, end) {
    this.bytes = bytes;
    this.end = end;
    let code = 0;
    for (let i = 0; i < 4; i++) code = (code << 8) | (start + i < end ? bytes[start + i] : 0);
    this.pos = start + 4;
    this.code = code | 0;
    this.range = -1; // 0xFFFFFFFF
  }

  /** Decode one bit with context `ctx` and adapt it (section 5.2); decodeStripe writes this step out for each pixel decision. */
  bit(p0s, rates, ctx, limit) {
    const p0 = p0s[ctx];
    const rate = rates[ctx];
    // (range >>> 16) * p0 < 2^32: its bits, exactly, as a signed 32-bit integer.
    const bound = Math.imul(this.range >>> 16, p0);
    let range;
    let bit;
    if ((this.code ^ 0x80000000) < (bound ^ 0x80000000)) {
      range = bound;
      p0s[ctx] = p0 + ((65536 - p0) >> rate);
      bit = 0;
    } else {
      this.code = (this.code - bound) | 0;
      range = (this.range - bound) | 0;
      p0s[ctx] = p0 - (p0 >> rate);
      bit = 1;
    }
    if (rate < limit) rates[ctx] = rate + 1;
    // range < 2^24 (unsigned): shift in bytes; past the end read zeros and keep counting.
    while (range >>> 24 === 0) {
      const pos = this.pos++;
      this.code = (this.code << 8) | (pos < this.end ? this.bytes[pos] : 0);
      range <<= 8;
    }
    this.range = range;
    return bit;
  }
}

/**
 * Reusable work space of the decoder: probability tables, block flags and, for motion data, block
 * vectors and the moved reference map, grown on demand so that decoding frame after frame
 * allocates nothing.
 */
export class IndexScratch {
  constructor() {
    this.p0s = new Uint16Array(0);
    this.rates = new Uint8Array(0);
    this.flags = new Uint8Array(0);
    this.vectors = new Int8Array(0);
    this.moved = new Uint8Array(0);
  }

  tables(contexts) {
    if (this.p0s.length < contexts) {
      this.p0s = new Uint16Array(contexts);
      this.rates = new Uint8Array(contexts);
    }
    this.p0s.fill(HALF, 0, contexts);
    this.rates.fill(1, 0, contexts);
  }

  blockFlags(count) {
    if (this.flags.length < 2 * count) this.flags = new Uint8Array(2 * count);
    this.flags.fill(0);
  }

  /** Two rows of `blocks` vectors (dx, dy), zero: the block row above and this one. */
  blockVectors(blocks) {
    if (this.vectors.length < 4 * blocks) this.vectors = new Int8Array(4 * blocks);
    this.vectors.fill(0);
  }

  /** Room for the moved reference, a padded map of `length` bytes: its zero row now, the rest as it is built. */
  movedMap(length, stride) {
    if (this.moved.length < length) this.moved = new Uint8Array(length);
    this.moved.fill(0, length - stride, length);
  }
}

/**
 * The layout of index data (section 5.1): its mode and its stripes, each with the bytes of its
 * stream, checked against the data's length.
 * @param {Uint8Array} data the index data exactly
 * @param {number} height rows of the map
 * @returns {{mode: number, inter: boolean, rows: number,
 *   stripes: Array<{top: number, bottom: number, start: number, end: number}>}}
 *   mode 0 (intra), 1 (inter) or 2 (motion); inter: whether it needs the previous map (modes 1, 2)
 */
export function indexLayout(data, height) {
  if (data.length < 5) throw new FormatError(`index data: needs 5 bytes of header, ${data.length} given (truncated?)`);
  const mode = data[0];
  if (mode !== MODE_INTRA && mode !== MODE_INTER && mode !== MODE_MOTION) {
    throw new FormatError(`index data: unknown coding mode ${mode}`);
  }
  const rows = (data[1] | (data[2] << 8) | (data[3] << 16) | (data[4] << 24)) >>> 0;
  if (rows < 1 || rows > height) throw new FormatError(`index data: stripe height ${rows} outside 1..${height}`);
  const count = Math.ceil(height / rows);
  let offset = 5 + 4 * (count - 1);
  if (offset > data.length) throw new FormatError('index data: stripe lengths run past the data (truncated?)');
  const stripes = [];
  for (let s = 0; s < count; s++) {
    let end = data.length;
    if (s < count - 1) {
      const at = 5 + 4 * s;
      const size = (data[at] | (data[at + 1] << 8) | (data[at + 2] << 16) | (data[at + 3] << 24)) >>> 0;
      if (size > data.length - offset) {
        throw new FormatError(`index data: stripe ${s} needs ${size} bytes, ${data.length - offset} left (truncated?)`);
      }
      end = offset + size;
    }
    stripes.push({ top: s * rows, bottom: Math.min((s + 1) * rows, height), start: offset, end });
    offset = end;
  }
  return { mode, inter: mode !== MODE_INTRA, rows, stripes };
}

/**
 * One stripe of index data as index data of its own (a map of the stripe's rows, in one
 * stripe): it decodes to exactly those rows, since a stripe sees nothing above its first row (nor,
 * in mode 2, anything of the previous map outside its rows).
 * @param {Uint8Array} data the whole index data
 * @param {{mode: number}} layout from indexLayout
 * @param {{top: number, bottom: number, start: number, end: number}} stripe one of layout.stripes
 */
export function stripeAlone(data, layout, stripe) {
  const rows = stripe.bottom - stripe.top;
  const alone = new Uint8Array(5 + stripe.end - stripe.start);
  alone[0] = layout.mode;
  alone[1] = rows & 0xff;
  alone[2] = (rows >>> 8) & 0xff;
  alone[3] = (rows >>> 16) & 0xff;
  alone[4] = rows >>> 24;
  alone.set(data.subarray(stripe.start, stripe.end), 5);
  return alone;
}

/**
 * Decode index data into a padded map.
 * @param {Uint8Array} data the index data exactly
 * @param {number} width
 * @param {number} height
 * @param {number} k palette size, 1..256
 * @param {Uint8Array|null} reference the previous frame's padded map (needed for inter data)
 * @param {Uint8Array} out padded map to fill (paddedLength(width, height) bytes); may not be `reference`
 * @param {IndexScratch} [scratch]
 * @returns {boolean} whether the data was inter coded (mode 1 or 2)
 */
export function decodeIndexData(data, width, height, k, reference, out, scratch = new IndexScratch()) {
  if (!(k >= 1 && k <= 256)) throw new FormatError(`index data: k must be 1..256, got ${k}`);
  if (out.length !== paddedLength(width, height)) throw new Error('index data: output map has the wrong size');
  const layout = indexLayout(data, height);
  const { mode, inter } = layout;
  if (inter && !reference) {
    throw new FormatError('index data is inter coded: the previous frame is needed to decode it');
  }
  // Mode 1 starts from the previous map, so unchanged blocks need no work; mode 2 writes each
  // block row's moved reference into `out` before decoding its pixels.
  if (mode === MODE_INTER) out.set(reference);
  if (mode === MODE_MOTION) scratch.movedMap(out.length, width + 3);
  const bits = indexBits(k);
  for (const { top, bottom, start, end } of layout.stripes) {
    const previous = inter ? reference : out;
    const read = decodeStripe(data, start, end, out, previous, mode, width, height, k, bits, top, bottom, scratch);
    const leftOver = end - read;
    if (leftOver !== 0) {
      const problem = leftOver < 0 ? 'ends early' : `has ${leftOver} bytes left over`;
      throw new FormatError(`index data: the stripe at row ${top} ${problem} (corrupt data)`);
    }
  }
  return inter;
}

/** One component of a block's vector: 5 bits of it plus 16 on a tree of contexts from `base` (section 5.7). */
function vectorPart(rd, p0s, rates, base) {
  let node = 1;
  for (let i = 0; i < MOTION_BITS; i++) node = (node << 1) | rd.bit(p0s, rates, base + node, TREE_LIMIT);
  return node - (1 << MOTION_BITS) - 16;
}

/** Runs of blocks with one vector shorter than this many pixels are copied pixel by pixel (a bulk copy costs a view). */
const BULK_RUN = 48;

/**
 * Rows y0..y1-1 of the moved reference (section 5.7): each block's pixels from `previous` at its
 * vector's offset, clamped to the stripe's rows and the frame's columns; written to `moved`, then
 * to `frame` (an unchanged block is the reference; a changed block's pixels are decoded over it).
 * The rows start as `previous`'s (padding included), so blocks that do not move — most of a still
 * camera's picture — cost one bulk copy; neighbouring blocks with the same vector move as one
 * run, and the columns of a run that stay inside the frame are copied in bulk.
 */
function moveRows(previous, vectors, at, moved, frame, width, y0, y1, top, bottom) {
  const stride = width + 3;
  const blocks = Math.ceil(width / BLOCK_SIZE);
  moved.set(previous.subarray(y0 * stride, y1 * stride), y0 * stride);
  for (let b = 0; b < blocks; ) {
    const dx = vectors[at + 2 * b];
    const dy = vectors[at + 2 * b + 1];
    let e = b + 1;
    while (e < blocks && vectors[at + 2 * e] === dx && vectors[at + 2 * e + 1] === dy) e++;
    if (dx === 0 && dy === 0) {
      b = e; // in place: already copied
      continue;
    }
    const x0 = b * BLOCK_SIZE;
    const x1 = Math.min(e * BLOCK_SIZE, width);
    // Columns whose source column x + dx lies inside the frame: [inX0, inX1).
    const inX0 = Math.min(Math.max(x0, -dx), x1);
    const inX1 = Math.max(Math.min(x1, width - dx), inX0);
    const bulk = inX1 - inX0 >= BULK_RUN;
    for (let y = y0; y < y1; y++) {
      const row = y * stride + PAD_LEFT;
      const source = Math.min(Math.max(y + dy, top), bottom - 1) * stride + PAD_LEFT;
      for (let x = x0; x < inX0; x++) moved[row + x] = previous[source + Math.min(Math.max(x + dx, 0), width - 1)];
      if (bulk) {
        moved.set(previous.subarray(source + inX0 + dx, source + inX1 + dx), row + inX0);
      } else {
        for (let x = inX0; x < inX1; x++) moved[row + x] = previous[source + x + dx];
      }
      for (let x = inX1; x < x1; x++) moved[row + x] = previous[source + Math.min(Math.max(x + dx, 0), width - 1)];
    }
    b = e;
  }
  frame.set(moved.subarray(y0 * stride, y1 * stride), y0 * stride);
}

/** 1 when two indices (0..255) are equal, else 0, without a branch: contexts are built of many such tests, hard to predict. */
function same(a, b) {
  return ((a ^ b) - 1) >>> 31;
}

/** One stripe (sections 5.6, 5.7); returns the position after the last byte read. */
function decodeStripe(bytes, start, end, frame, previous, mode, width, height, k, bits, top, bottom, scratch) {
  const stride = width + 3;
  const inter = mode !== MODE_INTRA;
  const motion = mode === MODE_MOTION;
  const motionBase = TREE + (k << bits);
  const contexts = motionBase + (motion ? MOTION_CONTEXTS : 0);
  scratch.tables(contexts);
  const p0s = scratch.p0s;
  const rates = scratch.rates;
  const span = inter ? BLOCK_SIZE : width;
  const blocks = Math.ceil(width / span);
  scratch.blockFlags(blocks + 1);
  // Two rows of block flags, each with a zero after its last block (the "above right" of the last).
  let above = scratch.flags.subarray(0, blocks + 1);
  let changed = scratch.flags.subarray(blocks + 1, 2 * (blocks + 1));
  if (!inter) changed.fill(1);
  // Two rows of vectors, (dx, dy) per block, at offsets `vectorsAbove` and `vectorsHere`.
  let vectorsAbove = 0;
  let vectorsHere = 2 * blocks;
  if (motion) scratch.blockVectors(blocks);
  const vectors = scratch.vectors;
  // What P, PW, PN, PNE read: the previous map, or in mode 2 the moved one.
  const ref = motion ? scratch.moved : previous;
  const rd = new RangeDecoder(bytes, start, end);
  // The pixels' decisions keep the decoder's state in these locals, which the engine holds in
  // registers, and each writes out RangeDecoder.bit's step: through the object (its fields in
  // memory) the pixels decode 10-15% slower. Block flags and vectors go through the object.
  let code = rd.code;
  let range = rd.range;
  let pos = rd.pos;
  const zeroRow = height * stride;
  for (let y = top; y < bottom; y++) {
    const row = y * stride;
    const up = y > top ? row - stride : zeroRow;
    const up2 = y - 1 > top ? row - 2 * stride : zeroRow;
    if (inter && (y - top) % BLOCK_SIZE === 0) {
      rd.code = code;
      rd.range = range;
      rd.pos = pos;
      const swap = above;
      above = changed;
      changed = swap;
      if (motion) {
        vectorsAbove = vectorsHere;
        vectorsHere = 2 * blocks - vectorsHere;
        for (let b = 0; b < blocks; b++) {
          const aboveX = vectors[vectorsAbove + 2 * b];
          const aboveY = vectors[vectorsAbove + 2 * b + 1];
          // Predicted: the left block's vector; the first block takes the one above it.
          const predictedX = b > 0 ? vectors[vectorsHere + 2 * b - 2] : aboveX;
          const predictedY = b > 0 ? vectors[vectorsHere + 2 * b - 1] : aboveY;
          const agree = predictedX === aboveX && predictedY === aboveY ? 1 : 0;
          let dx;
          let dy;
          if (rd.bit(p0s, rates, motionBase + MOTION_SAME + agree, FLAG_LIMIT)) {
            dx = predictedX;
            dy = predictedY;
          } else if (!agree && rd.bit(p0s, rates, motionBase + MOTION_ABOVE, FLAG_LIMIT)) {
            dx = aboveX;
            dy = aboveY;
          } else {
            dx = vectorPart(rd, p0s, rates, motionBase + MOTION_X);
            dy = vectorPart(rd, p0s, rates, motionBase + MOTION_Y);
          }
          vectors[vectorsHere + 2 * b] = dx;
          vectors[vectorsHere + 2 * b + 1] = dy;
        }
        moveRows(previous, vectors, vectorsHere, ref, frame, width, y, Math.min(y + BLOCK_SIZE, bottom), top, bottom);
      }
      for (let b = 0; b < blocks; b++) {
        const left = b > 0 ? changed[b - 1] : 0;
        changed[b] = rd.bit(p0s, rates, FLAG_BLOCK + (left | (above[b] << 1) | (above[b + 1] << 2)), FLAG_LIMIT);
      }
      code = rd.code;
      range = rd.range;
      pos = rd.pos;
    }
    for (let b = 0; b < blocks; b++) {
      if (!changed[b]) continue;
      const x0 = b * span + PAD_LEFT;
      const x1 = Math.min(x0 + span, width + PAD_LEFT);
      for (let col = x0; col < x1; col++) {
        const here = row + col;
        const w = frame[here - 1];
        const n = frame[up + col];
        let p = -1;
        if (inter) {
          p = ref[here];
          const t =
            same(w, ref[here - 1]) |
            (same(n, ref[up + col]) << 1) |
            (same(frame[up + col + 1], ref[up + col + 1]) << 2) |
            (same(p, w) << 3) |
            (same(p, n) << 4);
          const cx = FLAG_P + t;
          const p0 = p0s[cx];
          const rate = rates[cx];
          const bound = Math.imul(range >>> 16, p0);
          let bit = 0;
          if ((code ^ 0x80000000) < (bound ^ 0x80000000)) {
            range = bound;
            p0s[cx] = p0 + ((65536 - p0) >> rate);
          } else {
            code = (code - bound) | 0;
            range = (range - bound) | 0;
            p0s[cx] = p0 - (p0 >> rate);
            bit = 1;
          }
          if (rate < FLAG_LIMIT) rates[cx] = rate + 1;
          while (range >>> 24 === 0) {
            code = (code << 8) | (pos < end ? bytes[pos] : 0);
            pos++;
            range <<= 8;
          }
          if (bit) {
            frame[here] = p;
            continue;
          }
        }
        const nw = frame[up + col - 1];
        const ne = frame[up + col + 1];
        const c =
          same(w, n) |
          (same(w, nw) << 1) |
          (same(w, ne) << 2) |
          (same(n, ne) << 3) |
          (same(n, nw) << 4) |
          (same(w, frame[here - 2]) << 5) |
          (same(n, frame[up2 + col]) << 6);
        if (w !== p) {
          const cx = FLAG_W + c;
          const p0 = p0s[cx];
          const rate = rates[cx];
          const bound = Math.imul(range >>> 16, p0);
          let bit = 0;
          if ((code ^ 0x80000000) < (bound ^ 0x80000000)) {
            range = bound;
            p0s[cx] = p0 + ((65536 - p0) >> rate);
          } else {
            code = (code - bound) | 0;
            range = (range - bound) | 0;
            p0s[cx] = p0 - (p0 >> rate);
            bit = 1;
          }
          if (rate < FLAG_LIMIT) rates[cx] = rate + 1;
          while (range >>> 24 === 0) {
            code = (code << 8) | (pos < end ? bytes[pos] : 0);
            pos++;
            range <<= 8;
          }
          if (bit) {
            frame[here] = w;
            continue;
          }
        }
        if (n !== w && n !== p) {
          const cx = FLAG_N + c;
          const p0 = p0s[cx];
          const rate = rates[cx];
          const bound = Math.imul(range >>> 16, p0);
          let bit = 0;
          if ((code ^ 0x80000000) < (bound ^ 0x80000000)) {
            range = bound;
            p0s[cx] = p0 + ((65536 - p0) >> rate);
          } else {
            code = (code - bound) | 0;
            range = (range - bound) | 0;
            p0s[cx] = p0 - (p0 >> rate);
            bit = 1;
          }
          if (rate < FLAG_LIMIT) rates[cx] = rate + 1;
          while (range >>> 24 === 0) {
            code = (code << 8) | (pos < end ? bytes[pos] : 0);
            pos++;
            range <<= 8;
          }
          if (bit) {
            frame[here] = n;
            continue;
          }
        }
        const base = TREE + (w << bits);
        let node = 1;
        let value = 0;
        for (let level = bits - 1; level >= 0; level--) {
          if ((value | (1 << level)) >= k) {
            node <<= 1;
            continue;
          }
          const cx = base + node;
          const p0 = p0s[cx];
          const rate = rates[cx];
          const bound = Math.imul(range >>> 16, p0);
          let bit = 0;
          if ((code ^ 0x80000000) < (bound ^ 0x80000000)) {
            range = bound;
            p0s[cx] = p0 + ((65536 - p0) >> rate);
          } else {
            code = (code - bound) | 0;
            range = (range - bound) | 0;
            p0s[cx] = p0 - (p0 >> rate);
            bit = 1;
          }
          if (rate < TREE_LIMIT) rates[cx] = rate + 1;
          while (range >>> 24 === 0) {
            code = (code << 8) | (pos < end ? bytes[pos] : 0);
            pos++;
            range <<= 8;
          }
          node = (node << 1) | bit;
          value |= bit << level;
        }
        frame[here] = value;
      }
    }
  }
  return pos;
}

/**
 * Copy a padded map into a plain height × width map.
 * @param {Uint8Array} padded
 * @param {number} width
 * @param {number} height
 * @param {Uint8Array} [out]
 */
export function unpad(padded, width, height, out = new Uint8Array(width * height)) {
  const stride = width + 3;
  for (let y = 0; y < height; y++) {
    const at = y * stride + PAD_LEFT;
    out.set(padded.subarray(at, at + width), y * width);
  }
  return out;
}

/** The padded form of a plain height × width map (for reference maps given from outside). */
export function pad(indices, width, height, out = new Uint8Array(paddedLength(width, height))) {
  const stride = width + 3;
  for (let y = 0; y < height; y++) out.set(indices.subarray(y * width, (y + 1) * width), y * stride + PAD_LEFT);
  return out;
}
