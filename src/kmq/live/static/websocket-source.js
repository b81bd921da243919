// Socket source: the first stage of the player. Opens the stream's WebSocket, hands every binary
// message (one record each) to its destination's write(), reconnects with a growing delay when the
// connection drops, and reports its state (connecting, open, reconnecting, refused, ended,
// paused). Paused, it holds no connection: the server forgets the viewer until it resumes.

const FIRST_RETRY_MS = 500;
const LONGEST_RETRY_MS = 5000;

export class WebSocketSource {
  /**
   * @param {string} url ws:// or wss:// address of the stream, with its token if any
   * @param {{onState?: (state: string, detail?: string) => void, probeUrl?: string}} [options]
   *   probeUrl: an HTTP address answering 401/403 when the token is wrong (the stats), asked when
   *   the socket is refused so that a bad token shows as such instead of as endless reconnecting.
   */
  constructor(url, { onState = () => {}, probeUrl = null } = {}) {
    this.url = url;
    this.onState = onState;
    this.probeUrl = probeUrl;
    this.destination = null;
    this.socket = null;
    this.retryMs = FIRST_RETRY_MS;
    this.timer = null;
    this.destroyed = false;
    this.paused = false;
    this.reconnects = 0;
    this.bytesReceived = 0;
    this.opened = false;
  }

  /** Start delivering messages to `destination.write(arrayBuffer)`; paused: only once resumed. */
  connect(destination, paused = false) {
    this.destination = destination;
    if (paused) {
      this.paused = true;
      this.onState('paused');
    } else {
      this.open();
    }
  }

  open() {
    if (this.destroyed || this.paused) return;
    this.onState('connecting');
    this.opened = false;
    const socket = new WebSocket(this.url);
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => {
      this.opened = true;
      this.retryMs = FIRST_RETRY_MS;
      this.onState('open');
    };
    socket.onmessage = (event) => {
      if (typeof event.data === 'string') return;
      this.bytesReceived += event.data.byteLength;
      this.destination.write(event.data);
    };
    socket.onclose = (event) => this.closed(socket, event);
    socket.onerror = () => {}; // onclose follows and decides
    this.socket = socket;
  }

  async closed(socket, event) {
    if (socket !== this.socket || this.destroyed) return;
    this.socket = null;
    if (this.destination && this.destination.disconnected) this.destination.disconnected();
    if (event.code === 1000 && event.reason === 'end of stream') {
      this.onState('ended', 'the stream has ended');
      this.retry(LONGEST_RETRY_MS);
      return;
    }
    if (!this.opened && this.probeUrl) {
      const refusal = await this.probe();
      if (this.destroyed || this.paused) return;
      if (refusal) {
        this.onState('refused', refusal);
        return;
      }
    }
    this.retry(this.retryMs);
    this.retryMs = Math.min(LONGEST_RETRY_MS, this.retryMs * 2);
  }

  retry(delay) {
    this.onState('reconnecting', `reconnecting in ${(delay / 1000).toFixed(1)} s`);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reconnects++;
      this.open();
    }, delay);
  }

  /** Why the server refuses us, when it does (HTTP 401/403 on the probe address). */
  async probe() {
    try {
      const response = await fetch(this.probeUrl, { cache: 'no-store' });
      if (response.status === 401 || response.status === 403) {
        const body = await response.json().catch(() => ({}));
        return `access refused: ${body.error || response.statusText}`;
      }
    } catch {
      // The server is not reachable at all: keep retrying.
    }
    return null;
  }

  /** Send a small JSON message to the server (acknowledgements, keyframe requests). */
  send(message) {
    const socket = this.socket;
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  /** Close the connection until resume(); what was on its way is dropped. */
  pause() {
    if (this.destroyed || this.paused) return;
    this.paused = true;
    this.hangUp('viewer paused');
    if (this.destination && this.destination.disconnected) this.destination.disconnected();
    this.retryMs = FIRST_RETRY_MS;
    this.onState('paused');
  }

  /** Connect again after pause(): the stream starts again at a keyframe. */
  resume() {
    if (this.destroyed || !this.paused) return;
    this.paused = false;
    this.open();
  }

  /** Close for good: no reconnection, no more messages. */
  destroy() {
    this.destroyed = true;
    this.hangUp('viewer left');
    this.destination = null;
  }

  /** Cancel a pending reconnection and close the socket, if any, without hearing from it again. */
  hangUp(reason) {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      socket.close(1000, reason);
    }
  }
}
