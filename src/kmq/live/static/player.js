// Player: wires the stages together, jsmpeg-style — socket source -> decoder stage (packet parser
// and index decoders, in workers) -> canvas renderer — and keeps the numbers the overlay shows and
// the page exposes as window.kmqStats. destroy() releases everything it made.

import { WebSocketSource } from './websocket-source.js';
import { DecoderStage } from './decoder-stage.js';
import { CanvasRenderer } from './canvas-renderer.js';
import { Overlay } from './overlay.js';

/** Latency samples kept for the percentiles (frames). */
const LATENCY_SAMPLES = 300;
/** Window of the fps and bit-rate figures (milliseconds). */
const RATE_WINDOW_MS = 2000;
/** No frame for this long while playing shows as buffering (milliseconds). */
const STALL_MS = 2000;

/**
 * The steps of a frame's latency, each from the end of the one before: on the server (capture to
 * encoded: waiting for the encoder, encoding), on the way (encoded to received: the viewer's queue,
 * the frames in flight, the socket), waiting for the decoder, decoding, and waiting to be painted.
 */
const LATENCY_STEPS = ['encoded', 'received', 'decodeStarted', 'decoded', 'painted'];

function percentile(sorted, share) {
  if (!sorted.length) return null;
  const at = (sorted.length - 1) * share;
  const low = Math.floor(at);
  const high = Math.ceil(at);
  return sorted[low] + (sorted[high] - sorted[low]) * (at - low);
}

export class Player {
  /**
   * @param {HTMLCanvasElement} canvas where the video is drawn
   * @param {string} url the stream, ws://HOST:PORT/ws (with ?token=... when needed)
   * @param {{worker?: boolean, decoders?: number, overlay?: HTMLElement|null, probeUrl?: string|null,
   *   maxPixels?: number, pauseWhenHidden?: boolean}} [options]
   *   worker: decode in Web Workers (default true); decoders: stripes decoded at once (default:
   *   all cores but one, at most four); overlay: element to show the numbers in; probeUrl: address
   *   that answers 401/403 for a wrong token (the server's /stats); pauseWhenHidden: disconnect
   *   while the page is hidden (a background tab), so that it costs neither the viewer's CPU nor
   *   the server's bandwidth, and start again at a keyframe when it is shown (default true)
   */
  constructor(
    canvas,
    url,
    { worker = true, decoders, overlay = null, probeUrl = null, maxPixels, pauseWhenHidden = true } = {},
  ) {
    this.stats = {
      state: 'connecting',
      detail: '',
      width: 0,
      height: 0,
      channels: 0,
      paletteSize: 0,
      framesDecoded: 0,
      framesRendered: 0,
      framesDropped: 0,
      framesSkipped: 0,
      keyframes: 0,
      frameNumber: -1,
      fps: 0,
      bytesReceived: 0,
      bitsPerSecond: 0,
      ratio: null,
      latencyMs: null,
      latencyP50Ms: null,
      latencyP95Ms: null,
      decodeMs: 0,
      reconnects: 0,
      keyframesRequested: 0,
      errors: 0,
      lastError: '',
    };
    this.latencies = [];
    this.steps = [];
    this.arrivals = [];
    this.lastFrameAt = 0;
    this.source = new WebSocketSource(url, { probeUrl, onState: (state, detail) => this.sourceState(state, detail) });
    this.stage = new DecoderStage(this, {
      worker,
      decoders,
      maxPixels,
      requestKeyframe: () => this.requestKeyframe(),
      acknowledge: (number) => this.source.send({ type: 'ack', frame: number }),
    });
    this.renderer = new CanvasRenderer(canvas, {
      recycle: (buffer) => this.stage && this.stage.recycle(buffer),
      painted: (frame, atMs) => this.painted(frame, atMs),
    });
    this.overlay = overlay ? new Overlay(overlay, this.stats) : null;
    this.ticker = setInterval(() => this.tick(), 250);
    this.visibility = null;
    if (pauseWhenHidden && typeof document !== 'undefined') {
      this.visibility = () => (document.hidden ? this.pause() : this.resume());
      document.addEventListener('visibilitychange', this.visibility);
    }
    this.source.connect(this.stage, Boolean(this.visibility && document.hidden));
  }

  /** Disconnect until resume(): no frames arrive, none are decoded; the last one stays painted. */
  pause() {
    if (this.source) this.source.pause();
  }

  /** Connect again after pause(); the picture comes back with the next keyframe. */
  resume() {
    if (this.source) this.source.resume();
  }

  // -- from the socket source

  sourceState(state, detail = '') {
    const stats = this.stats;
    if (state === 'open') state = 'buffering';
    if (state === 'connecting' && stats.state === 'reconnecting') stats.reconnects++;
    stats.state = state;
    stats.detail = detail;
  }

  // -- from the decoder stage

  header(header) {
    const stats = this.stats;
    stats.width = header.width;
    stats.height = header.height;
    stats.channels = header.channels;
    stats.state = 'buffering';
    this.renderer.resize(header.width, header.height);
  }

  frame(frame) {
    const stats = this.stats;
    const now = performance.now();
    stats.framesDecoded++;
    stats.keyframes += frame.keyframe ? 1 : 0;
    stats.paletteSize = frame.paletteSize;
    stats.decodeMs = stats.decodeMs ? 0.9 * stats.decodeMs + 0.1 * frame.decodeMs : frame.decodeMs;
    if (this.source && !this.source.paused) {
      // (A frame that was decoding when the player paused still comes, and is shown.)
      stats.state = 'playing';
      stats.detail = '';
    }
    this.lastFrameAt = now;
    this.arrivals.push([now, frame.bytes]);
    this.renderer.render({ ...frame, width: stats.width, height: stats.height });
  }

  /** A frame lost: not decodable, the stage waits for a keyframe. */
  skipped() {
    this.stats.framesDropped++;
  }

  /** A discardable frame passed over to catch up (nothing else is lost): counted apart. */
  discarded() {
    this.stats.framesSkipped++;
  }

  error(message) {
    this.stats.errors++;
    this.stats.lastError = message;
    console.warn(`kmq player: ${message}`);
  }

  requestKeyframe() {
    this.stats.keyframesRequested++;
    this.source.send({ type: 'keyframe' });
  }

  // -- from the renderer

  painted(frame, atMs) {
    const stats = this.stats;
    stats.framesRendered++;
    stats.frameNumber = frame.number;
    if (frame.captureMs != null) {
      stats.latencyMs = atMs - frame.captureMs;
      this.latencies.push(stats.latencyMs);
      if (this.latencies.length > LATENCY_SAMPLES) this.latencies.shift();
    }
    if (frame.receivedMs != null) {
      const times = [frame.captureMs, frame.sentMs, frame.receivedMs, frame.startedMs, frame.decodedMs, atMs];
      this.steps.push(times.slice(1).map((time, i) => time - times[i]));
      if (this.steps.length > LATENCY_SAMPLES) this.steps.shift();
    }
  }

  // -- figures

  tick() {
    const stats = this.stats;
    const now = performance.now();
    while (this.arrivals.length && this.arrivals[0][0] < now - RATE_WINDOW_MS) this.arrivals.shift();
    const arrivals = this.arrivals;
    const span = arrivals.length > 1 ? (arrivals[arrivals.length - 1][0] - arrivals[0][0]) / 1000 : 0;
    stats.fps = span > 0 ? (arrivals.length - 1) / span : 0;
    const bytes = arrivals.slice(1).reduce((sum, item) => sum + item[1], 0);
    stats.bitsPerSecond = span > 0 ? (8 * bytes) / span : 0;
    stats.ratio = stats.bitsPerSecond > 0 ? (stats.fps * stats.width * stats.height * 24) / stats.bitsPerSecond : null;
    stats.bytesReceived = this.source ? this.source.bytesReceived : stats.bytesReceived;
    stats.framesDropped = Math.max(stats.framesDropped, this.stage ? this.stage.dropped : 0);
    const sorted = this.latencies.slice().sort((a, b) => a - b);
    stats.latencyP50Ms = percentile(sorted, 0.5);
    stats.latencyP95Ms = percentile(sorted, 0.95);
    if (stats.state === 'playing' && now - this.lastFrameAt > STALL_MS) stats.state = 'stalled';
  }

  /** The latency samples (milliseconds, capture to paint) of the last frames painted. */
  latencySamples() {
    return this.latencies.slice();
  }

  /**
   * Where the latency of the last frames painted went: for each step (LATENCY_STEPS), the
   * milliseconds from the step before, p50 and p95.
   */
  latencySteps() {
    const steps = {};
    LATENCY_STEPS.forEach((step, i) => {
      const sorted = this.steps.map((times) => times[i]).sort((a, b) => a - b);
      steps[step] = { p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95) };
    });
    return steps;
  }

  /** Stop and release the socket, the worker, the timers and the overlay. */
  destroy() {
    clearInterval(this.ticker);
    if (this.visibility) document.removeEventListener('visibilitychange', this.visibility);
    this.visibility = null;
    this.source.destroy();
    this.stage.destroy();
    this.renderer.destroy();
    if (this.overlay) this.overlay.destroy();
    this.source = this.stage = this.renderer = this.overlay = null;
    this.latencies = [];
    this.steps = [];
    this.arrivals = [];
    this.stats.state = 'closed';
  }
}
