// Frame decoder: packet parser and video decoder joined, the stage that turns records into frames.
// Runs inside the decode worker (decode-worker.js) or on the page itself. Skips delta frames it
// cannot decode — after joining, after a gap in frame numbers — until the next keyframe.

import { PacketParser } from './records.js';
import { VideoDecoder } from './video-decoder.js';

export class FrameDecoder {
  /** @param {{maxPixels?: number}} [options] */
  constructor(options = {}) {
    this.decoder = new VideoDecoder();
    this.parser = new PacketParser(this, options);
    this.events = [];
    this.skipped = 0;
    this.gaps = 0;
  }

  /**
   * Take one record (one live message).
   * @param {ArrayBuffer|Uint8Array} message
   * @returns {Array<object>} what it produced: {kind: 'header', header}, {kind: 'frame', ...},
   *   {kind: 'skipped', number} (a delta frame waiting for a keyframe), or nothing
   */
  write(message) {
    this.events = [];
    this.parser.write(message);
    return this.events;
  }

  header(header) {
    this.decoder.setHeader(header);
    this.events.push({ kind: 'header', header });
  }

  frame(packet, bytes) {
    const decoder = this.decoder;
    if (!packet.keyframe && (!decoder.ready || packet.number !== decoder.number + 1)) {
      if (decoder.ready) {
        this.gaps++;
        decoder.reset();
      }
      this.skipped++;
      this.events.push({ kind: 'skipped', number: packet.number });
      return;
    }
    const started = performance.now();
    const frame = decoder.decode(packet);
    this.events.push({ kind: 'frame', ...frame, bytes, decodeMs: performance.now() - started });
  }

  /** Wait for a keyframe: the next delta frames are skipped. */
  reset() {
    this.decoder.reset();
  }

  /** The current frame as RGBA (see VideoDecoder.toRGBA). */
  toRGBA(out) {
    return this.decoder.toRGBA(out);
  }
}
