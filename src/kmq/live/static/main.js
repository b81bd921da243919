// Page entry: builds the player for the stream of the server that served this page, reading
// ?token=... (and ?worker=0 to decode on the page's thread, ?decoders=N to decode N stripes at
// once, ?pauseWhenHidden=0 to keep playing in a background tab) from the page's own address,
// and exposes it as window.kmqPlayer and its numbers as window.kmqStats.

import { Player } from './player.js';

const params = new URLSearchParams(location.search);
const token = params.get('token');
const query = token ? `?token=${encodeURIComponent(token)}` : '';
const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
const player = new Player(document.getElementById('video'), `${scheme}://${location.host}/ws${query}`, {
  worker: params.get('worker') !== '0',
  decoders: Number(params.get('decoders')) || undefined,
  overlay: params.get('overlay') === '0' ? null : document.getElementById('stage'),
  probeUrl: `/stats${query}`,
  pauseWhenHidden: params.get('pauseWhenHidden') !== '0',
});
window.kmqPlayer = player;
window.kmqStats = player.stats;
