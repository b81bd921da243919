// Decode worker: runs a stripe decoder off the page's thread. Each job is one stripe of one frame
// (see decoder-stage.js); the answer carries the stripe's RGBA rows back, transferred, and the
// page hands the buffers back for reuse, so decoding allocates nothing frame after frame.

import { StripeDecoder } from './stripe-decoder.js';

const decoder = new StripeDecoder();

self.onmessage = ({ data: job }) => {
  if (job.type === 'reset') {
    decoder.reset();
    return;
  }
  try {
    const rgba = decoder.decode(job);
    self.postMessage({ frame: job.frame, stripe: job.stripe, rgba }, [rgba]);
  } catch (error) {
    const answer = { frame: job.frame, stripe: job.stripe, rgba: job.rgba, error: `${error.name}: ${error.message}` };
    self.postMessage(answer, [job.rgba]);
  }
};
