// Decoder stage on the page: between the socket source and the renderer. Parses each record
// (packet parser), keeps the stream's state (the reference frame's palette and number), and hands
// the stripes of each frame's index map to stripe decoders — in Web Workers, several at once when
// the machine has the cores — then passes the frame's RGBA stripes on. Frames it cannot decode yet
// (after joining, after a gap) are skipped to the next keyframe, and so are frames that pile up
// when decoding falls behind, so delay never builds up here. Discardable frames (no later frame is
// coded against them) go first: one with a newer frame queued behind it is passed over, undecoded,
// and costs nothing else. Every frame packet it is done with is acknowledged to the server,
// decoded or not, once every frame before it is done with too (acknowledgements are cumulative).

import { FormatError, PacketParser, asBytes, parseTiming, readRecord, TAG_TIMING } from './records.js';
import { indexLayout, stripeAlone } from './index-decoder.js';
import { StripeDecoder } from './stripe-decoder.js';
import { colorTable } from './video-decoder.js';

/** Frame packets waiting to be decoded before the stage passes over the discardable ones (then skips to a keyframe). */
const MAX_BACKLOG = 8;
/** Capture times remembered for frames not decoded yet. */
const MAX_TIMINGS = 256;
/** Spare pixel buffers kept per stripe size. */
const MAX_SPARE = 4;

/** Wall-clock milliseconds, on the clock the server's capture times use. */
function wallMs() {
  return performance.timeOrigin + performance.now();
}

function tagOf(bytes) {
  return bytes.length >= 4 ? String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]) : '';
}

/** The frame number of a frame packet: the payload's first field, after 8 bytes of record head. */
function numberOf(bytes) {
  return bytes.length >= 12 ? (bytes[8] | (bytes[9] << 8) | (bytes[10] << 16) | (bytes[11] << 24)) >>> 0 : -1;
}

/** Decoders to run at once: all but one core, at most four (enough for 1080p's seven stripes). */
function defaultDecoders() {
  const cores = (typeof navigator !== 'undefined' && navigator.hardwareConcurrency) || 2;
  return Math.max(1, Math.min(4, cores - 1));
}

/** A stripe decoder on the page's own thread, with a worker's interface. */
class InlineDecoder {
  constructor(answer) {
    this.decoder = new StripeDecoder();
    this.answer = answer;
  }

  postMessage(message) {
    // Answered as a separate task, so that the page can paint and read its socket in between.
    setTimeout(() => {
      if (message.type === 'reset') {
        this.decoder.reset();
        return;
      }
      this.answer({ frame: message.frame, stripes: message.jobs.map((job) => this.decoder.answer(job)) });
    }, 0);
  }

  terminate() {
    this.answer = () => {};
  }
}

export class DecoderStage {
  /**
   * @param {object} destination receives header(h), frame(f), skipped(number), discarded(number),
   *   error(message); skipped: a frame not decodable (its reference is missing), the stage waits
   *   for a keyframe; discarded: a discardable frame passed over because a newer one was queued
   * @param {{worker?: boolean, decoders?: number, maxPixels?: number, requestKeyframe?: () => void,
   *   acknowledge?: (n: number) => void}} [options]
   *   worker: decode in Web Workers (default) or on the page; decoders: how many at once
   */
  constructor(destination, options = {}) {
    const { worker = true, decoders, maxPixels, requestKeyframe = () => {}, acknowledge = () => {} } = options;
    this.destination = destination;
    this.requestKeyframe = requestKeyframe;
    this.acknowledge = acknowledge;
    this.useWorkers = worker;
    this.maxDecoders = Math.max(1, decoders || defaultDecoders());
    this.decoders = [];
    const parsed = { header: (h) => this.started(h), frame: (packet, bytes) => this.arrived(packet, bytes) };
    this.parser = new PacketParser(parsed, { maxPixels });
    this.queue = [];
    this.timings = new Map();
    this.spare = new Map();
    this.inflight = null;
    // Frame packets received and not yet done with, and those done with but not acknowledged yet.
    this.open = new Set();
    this.finished = [];
    this.frameIds = 0;
    this.waiting = false;
    this.dropped = 0;
    this.discarded = 0;
    this.destroyed = false;
    this.header = null;
    this.forget();
  }

  /** Forget the reference frame: the next frame decoded must be a keyframe. */
  forget() {
    this.ready = false;
    this.number = -1;
    this.rows = 0;
    for (const decoder of this.decoders) decoder.postMessage({ type: 'reset' });
  }

  // -- from the socket source

  /** One record from the socket source. */
  write(message) {
    if (this.destroyed) return;
    const bytes = asBytes(message);
    const tag = tagOf(bytes);
    if (tag === TAG_TIMING) {
      this.remember(bytes);
      return;
    }
    if (tag === 'KMQF') {
      // Flags byte of the packet: 8 bytes of record head, then 12 bytes into the payload.
      const keyframe = bytes.length > 20 && (bytes[20] & 1) === 1;
      const discardable = bytes.length > 20 && (bytes[20] & 4) === 4;
      const number = numberOf(bytes);
      const timing = this.timings.get(number);
      if (timing) timing.receivedMs = wallMs();
      this.open.add(number);
      if (this.waiting) {
        if (!keyframe) {
          this.dropped++;
          this.done(number); // the server may send the next
          return;
        }
        this.waiting = false;
      }
      this.queue.push({ bytes, keyframe, discardable, frame: true, number });
      this.trimBacklog();
    } else {
      this.queue.push({ bytes, keyframe: false, discardable: false, frame: false, number: -1 });
    }
    this.pump();
  }

  remember(bytes) {
    try {
      const timing = parseTiming(readRecord(bytes, 'capture-time record').payload);
      this.timings.set(timing.number, timing);
      if (this.timings.size > MAX_TIMINGS) this.timings.delete(this.timings.keys().next().value);
    } catch {
      // An optional record: a damaged one costs only its latency figure.
    }
  }

  /**
   * Fell behind: pass over the queued discardable frames that have a newer frame behind them; if
   * that is not enough, start again at the newest queued keyframe, or wait for the next one.
   */
  trimBacklog() {
    let frames = this.queue.reduce((count, item) => count + (item.frame ? 1 : 0), 0);
    if (frames <= MAX_BACKLOG) return;
    const newest = this.queue.findLastIndex((item) => item.frame);
    const passed = this.queue.filter((item, i) => item.frame && item.discardable && i < newest);
    if (passed.length) {
      this.queue = this.queue.filter((item) => !passed.includes(item));
      this.passOver(passed.map((item) => item.number));
      frames -= passed.length;
      if (frames <= MAX_BACKLOG) return;
    }
    let keep = -1;
    for (let i = this.queue.length - 1; i >= 0; i--) {
      if (this.queue[i].keyframe) {
        keep = i;
        break;
      }
    }
    const dropped = this.queue.filter((item, i) => item.frame && (keep < 0 || i < keep));
    if (!dropped.length) return;
    this.queue = this.queue.filter((item) => !dropped.includes(item));
    this.dropped += dropped.length;
    // Acknowledged as done with, so that the server's window of frames in flight moves on.
    this.done(...dropped.map((item) => item.number));
    if (keep < 0) {
      this.waiting = true;
      this.requestKeyframe();
    }
  }

  /** Discardable frames left undecoded: counted apart from the frames dropped, and acknowledged. */
  passOver(numbers) {
    this.discarded += numbers.length;
    // Acknowledged as done with, so that the server's window of frames in flight moves on.
    this.done(...numbers);
    for (const number of numbers) this.destination.discarded(number);
  }

  /**
   * Done with these frame packets (decoded, passed over, dropped or skipped). Acknowledgements are
   * cumulative, "done with every frame up to n", so a frame done with while an older one is still
   * queued or decoding is acknowledged once that one is done too: the server's window of frames in
   * flight then counts what waits here, and a viewer that is behind lets frames wait at the server,
   * which passes over discardable ones, rather than here.
   */
  done(...numbers) {
    for (const number of numbers) {
      if (this.open.delete(number)) this.finished.push(number);
    }
    let oldest = Infinity;
    for (const number of this.open) oldest = Math.min(oldest, number);
    let last = -1;
    for (const number of this.finished) if (number < oldest) last = Math.max(last, number);
    if (last < 0) return;
    this.finished = this.finished.filter((number) => number > oldest);
    this.acknowledge(last);
  }

  /** The connection dropped: what is queued belongs to the old one. */
  disconnected() {
    this.queue = [];
    this.waiting = false;
    this.open.clear();
    this.finished = [];
    this.timings.clear();
  }

  // -- parsing, one record at a time

  pump() {
    while (!this.inflight && !this.destroyed && this.queue.length) {
      const item = this.queue.shift();
      try {
        this.parser.write(item.bytes);
      } catch (error) {
        if (!(error instanceof FormatError)) throw error;
        this.failed(error.message, item.frame ? [item.number] : []);
      }
    }
  }

  /** A stream header: a new stream, perhaps of another size. */
  started(header) {
    this.header = header;
    this.spare.clear();
    this.forget();
    this.destination.header(header);
  }

  /** A parsed frame packet: skip it, pass over it, or send its stripes to the decoders. */
  arrived(packet, bytes) {
    const header = this.header;
    // A delta frame is coded against the reference frame number - 1 - skipped (the frames between
    // are discardable ones, decoded or not).
    const follows =
      this.ready && packet.number - 1 - packet.skipped === this.number && packet.paletteSize === this.paletteSize;
    if (!packet.keyframe && !follows) {
      // Not decodable (joined mid-stream, or a gap): wait for a keyframe.
      if (this.ready) this.forget();
      this.done(packet.number);
      this.destination.skipped(packet.number);
      return;
    }
    if (packet.discardable && this.queue.some((item) => item.frame)) {
      // Behind: a newer frame is queued, and no frame needs this one.
      this.passOver([packet.number]);
      return;
    }
    const layout = indexLayout(packet.indexData, header.height);
    if (!packet.keyframe && layout.rows !== this.rows) {
      // Each decoder holds only its own stripes' previous rows: a new layout needs a keyframe.
      throw new FormatError(`frame ${packet.number} changes the stripe layout without a keyframe`);
    }
    const palette = this.nextPalette(packet);
    const table = colorTable(palette, packet.paletteSize, header.channels);
    this.ensureDecoders(layout.stripes.length);
    const id = ++this.frameIds;
    const remaining = layout.stripes.length;
    const started = performance.now();
    const timing = this.timings.get(packet.number);
    if (timing) timing.startedMs = wallMs();
    this.inflight = { id, packet, bytes, palette, layout, parts: [], remaining, error: null, started };
    const { width } = header;
    const reference = !packet.discardable;
    // One message a decoder a frame, with its stripes (and the buffers they carry, transferred).
    const messages = this.decoders.map(() => ({ frame: id, jobs: [], transfer: [] }));
    layout.stripes.forEach((stripe, index) => {
      const rows = stripe.bottom - stripe.top;
      const data = stripeAlone(packet.indexData, layout, stripe);
      const rgba = this.buffer(width * rows * 4);
      const k = packet.paletteSize;
      const { inter } = layout;
      // reference: false for a discardable frame, which leaves the stripe's reference map as it is.
      const message = messages[index % messages.length];
      message.jobs.push({ stripe: index, top: stripe.top, rows, width, k, inter, reference, data, table, rgba });
      message.transfer.push(data.buffer, rgba);
    });
    messages.forEach(({ frame, jobs, transfer }, i) => {
      if (jobs.length) this.decoders[i].postMessage({ frame, jobs }, transfer);
    });
  }

  /** The frame's palette: the keyframe's, or the reference frame's with this packet's updates. */
  nextPalette(packet) {
    const channels = this.header.channels;
    if (packet.keyframe) return packet.colors.slice();
    const palette = this.palette.slice();
    if (packet.mask) {
      let from = 0;
      for (let j = 0; j < packet.paletteSize; j++) {
        if ((packet.mask[j >> 3] >> (j & 7)) & 1) {
          palette.set(packet.colors.subarray(from, from + channels), j * channels);
          from += channels;
        }
      }
    }
    return palette;
  }

  ensureDecoders(stripes) {
    const wanted = Math.min(this.maxDecoders, stripes);
    while (this.decoders.length < wanted) {
      let decoder;
      if (this.useWorkers) {
        const name = `kmq-decoder-${this.decoders.length}`;
        decoder = new Worker(new URL('./decode-worker.js', import.meta.url), { type: 'module', name });
        decoder.onmessage = ({ data }) => this.answered(data);
        decoder.onerror = (event) => {
          event.preventDefault();
          this.workerFailed(event.message || 'unknown error');
        };
      } else {
        decoder = new InlineDecoder((answer) => this.answered(answer));
      }
      this.decoders.push(decoder);
    }
  }

  /** A worker could not run (its script failed to load, say): decode on the page from now on. */
  workerFailed(message) {
    if (this.destroyed || !this.useWorkers) return;
    for (const decoder of this.decoders) decoder.terminate();
    this.decoders = [];
    this.useWorkers = false;
    const frame = this.inflight;
    this.inflight = null;
    this.failed(`decoder worker failed (${message}); decoding on the page instead`, frame ? [frame.packet.number] : []);
    this.pump();
  }

  buffer(size) {
    const spare = this.spare.get(size);
    return spare && spare.length ? spare.pop() : new ArrayBuffer(size);
  }

  /** A pixel buffer the renderer is done with. */
  recycle(buffer) {
    if (this.destroyed || !buffer || buffer.byteLength === 0) return;
    const spare = this.spare.get(buffer.byteLength) || [];
    if (spare.length < MAX_SPARE) spare.push(buffer);
    this.spare.set(buffer.byteLength, spare);
  }

  // -- answers from the decoders

  /** A decoder's answer: {frame, stripes: [{stripe, rgba, error?}]}, the stripes of the frame it was sent. */
  answered(answer) {
    const frame = this.inflight;
    if (this.destroyed || !frame || answer.frame !== frame.id) {
      for (const { rgba } of answer.stripes) this.recycle(rgba); // stripes of a frame given up on
      return;
    }
    for (const done of answer.stripes) {
      if (done.error) frame.error = frame.error || done.error;
      const stripe = frame.layout.stripes[done.stripe];
      frame.parts.push({ top: stripe.top, rows: stripe.bottom - stripe.top, rgba: done.rgba });
      frame.remaining--;
    }
    if (frame.remaining > 0) return;
    this.inflight = null;
    const { packet } = frame;
    if (frame.error) {
      for (const part of frame.parts) this.recycle(part.rgba);
      this.failed(`frame ${packet.number}: ${frame.error}`, [packet.number]);
    } else {
      if (!packet.discardable) {
        // A reference frame: the next delta frames are coded against it.
        this.palette = frame.palette;
        this.paletteSize = packet.paletteSize;
        this.number = packet.number;
        this.rows = frame.layout.rows;
        this.ready = true;
      }
      const timing = this.timings.get(packet.number);
      for (const number of this.timings.keys()) if (number <= packet.number) this.timings.delete(number);
      this.destination.frame({
        number: packet.number,
        pts: packet.pts,
        keyframe: packet.keyframe,
        discardable: packet.discardable,
        paletteSize: packet.paletteSize,
        bytes: frame.bytes,
        decodeMs: performance.now() - frame.started,
        parts: frame.parts,
        captureMs: timing ? timing.captureMs : null,
        sentMs: timing ? timing.sentMs : null,
        receivedMs: timing ? timing.receivedMs : null,
        startedMs: timing ? timing.startedMs : null,
        decodedMs: timing ? wallMs() : null,
      });
      this.done(packet.number);
    }
    this.pump();
  }

  /** A damaged packet (or one this stage cannot use): start again at a keyframe. */
  failed(message, numbers) {
    this.destination.error(message);
    this.forget();
    this.waiting = true;
    const queued = this.queue.filter((item) => item.frame).map((item) => item.number);
    this.done(...numbers, ...queued);
    this.queue = this.queue.filter((item) => !item.frame);
    this.requestKeyframe();
  }

  destroy() {
    this.destroyed = true;
    this.queue = [];
    this.timings.clear();
    this.spare.clear();
    this.inflight = null;
    for (const decoder of this.decoders) {
      decoder.onmessage = decoder.onerror = null;
      decoder.terminate();
    }
    this.decoders = [];
    this.destination = null;
  }
}
