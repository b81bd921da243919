// Stripe decoder: decodes one stripe of a frame's index map and looks up its colours, keeping
// each stripe's reference map (the last frame decoded that was not discardable) for the next
// inter-coded frame. Stripes are independent (docs/FORMAT.md 5.1), so several of these, in several
// workers, decode one frame in parallel.

import { FormatError } from './records.js';
import { decodeIndexData, IndexScratch, paddedLength } from './index-decoder.js';
import { lookUp } from './video-decoder.js';

export class StripeDecoder {
  constructor() {
    this.stripes = new Map();
    this.scratch = new IndexScratch();
  }

  /** Forget every stripe's reference map (a new stream, or a failed frame). */
  reset() {
    this.stripes.clear();
  }

  /**
   * Decode one stripe into RGBA rows.
   * @param {{stripe: number, top: number, rows: number, width: number, k: number, inter: boolean,
   *   reference: boolean, data: Uint8Array, table: Uint32Array, rgba: ArrayBuffer}} job
   *   inter: whether the data needs the stripe's reference map (modes 1 and 2); reference: whether
   *   the frame becomes the reference (false for a discardable frame, whose map is decoded into
   *   scratch and the reference kept);
   *   data: the stripe as index data of its own (index-decoder.js stripeAlone); table: the frame's
   *   palette as 32-bit words laid out R, G, B, A; rgba: width × rows × 4 bytes to fill
   * @returns {ArrayBuffer} job.rgba, filled
   */
  decode(job) {
    const { stripe, top, rows, width, k } = job;
    let state = this.stripes.get(stripe);
    const known = state && state.top === top && state.rows === rows && state.width === width;
    if (job.inter && !known) {
      throw new FormatError(`the stripe at row ${top} is inter coded but its reference frame is not here`);
    }
    if (!known) {
      const length = paddedLength(width, rows);
      state = { top, rows, width, map: new Uint8Array(length), next: new Uint8Array(length) };
    }
    this.stripes.delete(stripe); // put back only once decoded: a failed stripe needs a keyframe
    decodeIndexData(job.data, width, rows, k, job.inter ? state.map : null, state.next, this.scratch);
    // A reference frame's map becomes the stripe's reference; a discardable frame's stays in
    // scratch, to be written over by the next frame.
    const decoded = state.next;
    if (job.reference) [state.map, state.next] = [state.next, state.map];
    if (known || job.reference) this.stripes.set(stripe, state);
    lookUp(decoded, width, rows, job.table, new Uint32Array(job.rgba, 0, width * rows));
    return job.rgba;
  }

  /**
   * decode(), as the decoder stage takes the answer: {stripe, rgba}, or on failure {stripe, rgba,
   * error} with the job's buffer given back unfilled.
   */
  answer(job) {
    try {
      return { stripe: job.stripe, rgba: this.decode(job) };
    } catch (error) {
      return { stripe: job.stripe, rgba: job.rgba, error: `${error.name}: ${error.message}` };
    }
  }
}
