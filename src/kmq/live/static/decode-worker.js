// Decode worker: runs the frame decoder off the page's thread. Receives one record per message,
// answers each with exactly one message (header, frame with its RGBA pixels transferred, skipped,
// done or error), and reuses the pixel buffers the page sends back, so decoding allocates nothing
// frame after frame.

import { FrameDecoder } from './frame-decoder.js';

let decoder = null;
const spare = [];
let frameBytes = 0;

self.onmessage = ({ data }) => {
  if (data.type === 'init') {
    decoder = new FrameDecoder(data.options || {});
    return;
  }
  if (data.type === 'recycle') {
    if (data.buffer.byteLength === frameBytes && spare.length < 4) spare.push(data.buffer);
    return;
  }
  if (data.type === 'reset') {
    decoder.reset();
    return;
  }
  if (data.type !== 'record') return;
  let events;
  try {
    events = decoder.write(data.buffer);
  } catch (error) {
    self.postMessage({ kind: 'error', message: error.message, name: error.name });
    return;
  }
  for (const event of events) {
    if (event.kind === 'header') {
      const { width, height } = event.header;
      frameBytes = width * height * 4;
      spare.length = 0;
      self.postMessage(event);
      return;
    }
    if (event.kind === 'frame') {
      const buffer = spare.pop() || new ArrayBuffer(frameBytes);
      decoder.toRGBA(new Uint8ClampedArray(buffer));
      self.postMessage({ ...event, rgba: buffer }, [buffer]);
      return;
    }
    self.postMessage(event);
    return;
  }
  self.postMessage({ kind: 'done' });
};
