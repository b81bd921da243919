// Decoder stage on the page: between the socket source and the renderer. Queues records for the
// decode worker (one in flight at a time), keeps the capture times of the live server's kmqt
// records, and when decoding falls behind skips to the newest keyframe instead of letting delay
// build up. With {worker: false} it decodes on the page's own thread instead.

import { FrameDecoder } from './frame-decoder.js';
import { asBytes, parseTiming, readRecord, TAG_TIMING } from './records.js';

/** Frame packets waiting to be decoded before the stage skips ahead to a keyframe. */
const MAX_BACKLOG = 8;
/** Capture times remembered for frames not decoded yet. */
const MAX_TIMINGS = 256;

function tagOf(bytes) {
  return bytes.length >= 4 ? String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]) : '';
}

/** The frame number of a frame packet: the payload's first field, after 8 bytes of record head. */
function numberOf(bytes) {
  return bytes.length >= 12 ? (bytes[8] | (bytes[9] << 8) | (bytes[10] << 16) | (bytes[11] << 24)) >>> 0 : -1;
}

export class DecoderStage {
  /**
   * @param {object} destination receives header(h), frame(f), skipped(), error(message)
   * @param {{worker?: boolean, maxPixels?: number, requestKeyframe?: () => void, acknowledge?: (n: number) => void}} options
   */
  constructor(destination, { worker = true, maxPixels, requestKeyframe = () => {}, acknowledge = () => {} } = {}) {
    this.destination = destination;
    this.requestKeyframe = requestKeyframe;
    this.acknowledge = acknowledge;
    this.queue = [];
    this.busy = false;
    this.waiting = false;
    this.timings = new Map();
    this.dropped = 0;
    this.destroyed = false;
    const options = { maxPixels };
    if (worker) {
      this.worker = new Worker(new URL('./decode-worker.js', import.meta.url), { type: 'module', name: 'kmq-decoder' });
      this.worker.onmessage = ({ data }) => this.answered(data);
      this.worker.onerror = (event) => {
        event.preventDefault();
        this.destination.error(`decoder worker failed: ${event.message || 'unknown error'}`);
      };
      this.worker.postMessage({ type: 'init', options });
    } else {
      this.inline = new FrameDecoder(options);
    }
  }

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
      const number = numberOf(bytes);
      if (this.waiting) {
        if (!keyframe) {
          this.dropped++;
          this.acknowledge(number); // done with it: the server may send the next
          return;
        }
        this.waiting = false;
      }
      this.queue.push({ bytes, keyframe, frame: true, number });
      this.trimBacklog();
    } else {
      this.queue.push({ bytes, keyframe: false, frame: false });
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

  /** Fell behind: start again at the newest queued keyframe, or wait for the next one. */
  trimBacklog() {
    const frames = this.queue.reduce((count, item) => count + (item.frame ? 1 : 0), 0);
    if (frames <= MAX_BACKLOG) return;
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
    this.acknowledge(Math.max(...dropped.map((item) => item.number)));
    if (keep < 0) {
      this.waiting = true;
      this.requestKeyframe();
    }
  }

  pump() {
    if (this.busy || this.destroyed || this.queue.length === 0) return;
    const item = this.queue.shift();
    this.current = item;
    if (this.worker) {
      this.busy = true;
      // Copied out of the socket's buffer only when it is a view into a larger one.
      const bytes = item.bytes;
      const buffer = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes.buffer : bytes.slice().buffer;
      this.worker.postMessage({ type: 'record', buffer }, [buffer]);
      return;
    }
    let events = [];
    try {
      events = this.inline.write(item.bytes);
    } catch (error) {
      this.answered({ kind: 'error', message: error.message });
    }
    for (const event of events) {
      if (event.kind === 'frame') {
        const rgba = this.inline.toRGBA(this.spare());
        this.answered({ ...event, rgba: rgba.buffer }, true);
      } else {
        this.answered(event, true);
      }
    }
    // Decode the rest after the browser has had a turn (painting, socket messages).
    if (this.queue.length) setTimeout(() => this.pump(), 0);
  }

  spare() {
    const spare = this.spareBuffer;
    this.spareBuffer = null;
    const size = this.inline.decoder.header.width * this.inline.decoder.header.height * 4;
    return spare && spare.byteLength === size ? new Uint8ClampedArray(spare) : new Uint8ClampedArray(size);
  }

  answered(event, inline = false) {
    if (this.destroyed) return;
    if (!inline) this.busy = false;
    if (event.kind === 'header') {
      this.destination.header(event.header);
    } else if (event.kind === 'frame') {
      const timing = this.timings.get(event.number);
      this.timings.delete(event.number);
      for (const number of this.timings.keys()) if (number < event.number) this.timings.delete(number);
      this.acknowledge(event.number);
      this.destination.frame({ ...event, captureMs: timing ? timing.captureMs : null, sentMs: timing ? timing.sentMs : null });
    } else if (event.kind === 'skipped') {
      this.acknowledge(event.number);
      this.destination.skipped(event.number);
    } else if (event.kind === 'error') {
      this.destination.error(event.message);
      // A damaged packet: start again at a keyframe.
      this.waiting = true;
      const numbers = [this.current, ...this.queue].filter((item) => item && item.frame).map((item) => item.number);
      if (numbers.length) this.acknowledge(Math.max(...numbers));
      this.queue = this.queue.filter((item) => !item.frame);
      if (this.worker) this.worker.postMessage({ type: 'reset' });
      else this.inline.reset();
      this.requestKeyframe();
    }
    if (!inline) this.pump();
  }

  /** A pixel buffer the renderer is done with. */
  recycle(buffer) {
    if (this.destroyed || !buffer) return;
    if (this.worker) this.worker.postMessage({ type: 'recycle', buffer }, [buffer]);
    else this.spareBuffer = buffer;
  }

  /** The connection dropped: what is queued belongs to the old one. */
  disconnected() {
    this.queue = [];
    this.waiting = false;
    this.timings.clear();
  }

  destroy() {
    this.destroyed = true;
    this.queue = [];
    this.timings.clear();
    if (this.worker) {
      this.worker.onmessage = this.worker.onerror = null;
      this.worker.terminate();
      this.worker = null;
    }
    this.inline = null;
    this.destination = null;
  }
}
