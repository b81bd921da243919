// Canvas renderer: the last stage of the player. Keeps only the newest decoded frame and paints it
// on the next animation frame, stripe by stripe, with putImageData (exact pixels, no scaling in
// the canvas itself; CSS fits it to the page). Hands every pixel buffer back once it is painted
// or replaced.

export class CanvasRenderer {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{recycle?: (buffer: ArrayBuffer) => void, painted?: (frame: object, atMs: number) => void}} [options]
   *   painted: called after each paint with the frame and the wall-clock time in milliseconds
   */
  constructor(canvas, { recycle = () => {}, painted = () => {} } = {}) {
    this.canvas = canvas;
    this.context = canvas.getContext('2d');
    this.recycle = recycle;
    this.painted = painted;
    this.pending = null;
    this.request = 0;
    this.shown = null;
    this.destroyed = false;
  }

  /** Size the canvas for a stream (a new size clears it). */
  resize(width, height) {
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
  }

  /**
   * A decoded frame {width, height, parts: [{top, rows, rgba: ArrayBuffer}], ...}: shown on the
   * next animation frame.
   */
  render(frame) {
    if (this.destroyed) return;
    if (this.pending) this.release(this.pending); // never painted: a newer frame replaces it
    this.pending = frame;
    if (!this.request) this.request = requestAnimationFrame(() => this.paint());
  }

  paint() {
    this.request = 0;
    const frame = this.pending;
    this.pending = null;
    if (!frame || this.destroyed) return;
    this.resize(frame.width, frame.height);
    for (const part of frame.parts) {
      const image = new ImageData(new Uint8ClampedArray(part.rgba), frame.width, part.rows);
      this.context.putImageData(image, 0, part.top);
    }
    this.shown = { number: frame.number, keyframe: frame.keyframe, paletteSize: frame.paletteSize };
    this.painted(frame, performance.timeOrigin + performance.now());
    this.release(frame);
  }

  release(frame) {
    for (const part of frame.parts) this.recycle(part.rgba);
  }

  destroy() {
    this.destroyed = true;
    if (this.request) cancelAnimationFrame(this.request);
    this.request = 0;
    if (this.pending) this.release(this.pending);
    this.pending = null;
    this.context = null;
  }
}
