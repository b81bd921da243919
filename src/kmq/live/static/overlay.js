// Overlay: the numbers a viewer wants over the picture — state (playing, buffering,
// reconnecting...), fps, bit rate, compression against raw RGB, palette size, end-to-end latency —
// redrawn a few times a second from the player's stats. Text only.

const STATE_TEXT = {
  connecting: 'connecting…',
  open: 'buffering…',
  buffering: 'buffering…',
  playing: 'live',
  stalled: 'buffering…',
  reconnecting: 'reconnecting…',
  refused: 'refused',
  ended: 'stream ended',
  paused: 'paused',
};

function rate(bitsPerSecond) {
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(2)} Mbit/s`;
  return `${(bitsPerSecond / 1e3).toFixed(0)} kbit/s`;
}

export class Overlay {
  /**
   * @param {HTMLElement} container the element the overlay is placed in (over the canvas)
   * @param {object} stats the player's stats object, read on each refresh
   */
  constructor(container, stats) {
    this.stats = stats;
    this.element = document.createElement('div');
    this.element.className = 'kmq-overlay';
    this.badge = document.createElement('span');
    this.badge.className = 'kmq-state';
    this.lines = document.createElement('pre');
    this.element.append(this.badge, this.lines);
    container.append(this.element);
    this.timer = setInterval(() => this.refresh(), 250);
    this.refresh();
  }

  refresh() {
    const s = this.stats;
    this.badge.textContent = STATE_TEXT[s.state] || s.state;
    this.badge.dataset.state = s.state;
    const p95 = s.latencyP95Ms ?? s.latencyMs;
    const latency = s.latencyMs == null ? '–' : `${s.latencyMs.toFixed(0)} ms (p95 ${p95.toFixed(0)})`;
    const lines = [
      s.width ? `${s.width}×${s.height}  K=${s.paletteSize || '–'}` : 'waiting for the stream',
      `${s.fps.toFixed(1)} fps   ${rate(s.bitsPerSecond)}`,
      `ratio ${s.ratio ? s.ratio.toFixed(1) : '–'}:1 vs raw RGB`,
      `latency ${latency}`,
      `decode ${s.decodeMs.toFixed(1)} ms   dropped ${s.framesDropped}   skipped ${s.framesSkipped}`,
    ];
    if (s.detail) lines.push(s.detail);
    this.lines.textContent = lines.join('\n');
  }

  destroy() {
    clearInterval(this.timer);
    this.element.remove();
    this.element = this.badge = this.lines = null;
  }
}
