// Decode worker: runs a stripe decoder off the page's thread. Each message is one frame's stripes
// for this worker (see decoder-stage.js); the answer carries their RGBA rows back, transferred,
// and the page hands the buffers back for reuse, so decoding allocates nothing frame after frame.

import { StripeDecoder } from './stripe-decoder.js';

const decoder = new StripeDecoder();

self.onmessage = ({ data: message }) => {
  if (message.type === 'reset') {
    decoder.reset();
    return;
  }
  // One message a frame: its stripes for this worker, answered together.
  const stripes = message.jobs.map((job) => decoder.answer(job));
  self.postMessage({ frame: message.frame, stripes }, stripes.map((stripe) => stripe.rgba));
};
