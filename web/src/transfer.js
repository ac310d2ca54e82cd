// Sending a file over an RTCDataChannel in the framing of ./framing.js:
// {"t":"file"}, binary chunks with backpressure on bufferedAmount, {"t":"end"}
// with the SHA-256 computed while streaming. Progress with speed and time
// left. The receiving side is FileReceiver (./framing.js).

import { sha256 } from '@noble/hashes/sha2.js';
import { encodeControl, FramingError, hex, STALL_MS } from './framing.js';
import { sanitizeName } from './names.js';

export { hex };
export const CHUNK = 16 * 1024;
const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;

/** Progress reporting: bytes done, rate over the last seconds, time left. */
export class Progress {
  constructor(total, report) {
    this.total = total;
    this.report = report;
    this.started = performance.now();
    this.samples = [[this.started, 0]];
    this.lastReport = 0;
  }

  update(done, force = false) {
    const now = performance.now();
    if (!force && now - this.lastReport < 100) return;
    this.lastReport = now;
    this.samples.push([now, done]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 3000) this.samples.shift();
    const [t0, d0] = this.samples[0];
    const rate = now > t0 ? ((done - d0) * 1000) / (now - t0) : 0;
    const left = rate > 0 ? (this.total - done) / rate : Infinity;
    this.report({ done, total: this.total, rate, secondsLeft: left });
  }
}

const lost = () => new Error('the connection to your peer was lost');

/**
 * Resolves once the channel has drained below `level` (with level 0: sent
 * everything); rejects if it closes, or with `stalled` if nothing drains for
 * `stallMs`.
 */
export function drained(channel, level = LOW_WATER, stallMs = STALL_MS) {
  return new Promise((resolve, reject) => {
    let last = channel.bufferedAmount;
    let since = performance.now();
    const check = () => {
      if (channel.readyState !== 'open') return done(lost());
      if (channel.bufferedAmount <= level) return done();
      if (channel.bufferedAmount !== last) {
        last = channel.bufferedAmount;
        since = performance.now();
      } else if (performance.now() - since > stallMs) {
        return done(new FramingError('stalled', `nothing could be sent for ${Math.round(stallMs / 1000)} s`));
      }
      return undefined;
    };
    const timer = setInterval(check, 250);
    const onLow = () => check();
    const onClose = () => check();
    channel.bufferedAmountLowThreshold = Math.min(level, LOW_WATER);
    channel.addEventListener('bufferedamountlow', onLow);
    channel.addEventListener('close', onClose);
    function done(err) {
      clearInterval(timer);
      channel.removeEventListener('bufferedamountlow', onLow);
      channel.removeEventListener('close', onClose);
      if (err) reject(err);
      else resolve();
    }
    check();
  });
}

/** Sends `file` (a Blob with a name) over `channel`; resolves with its
 * SHA-256 hex once the `end` frame is queued. */
export async function sendFile(channel, file, onProgress, { stallMs = STALL_MS } = {}) {
  if (channel.readyState !== 'open') throw lost();
  const hash = sha256.create();
  const progress = new Progress(file.size, onProgress);
  channel.send(encodeControl({ t: 'file', name: sanitizeName(file.name), size: file.size }));
  let offset = 0;
  while (offset < file.size) {
    const slice = new Uint8Array(await file.slice(offset, offset + CHUNK * 64).arrayBuffer());
    if (slice.length === 0) throw new Error('the file could not be read to the end');
    for (let i = 0; i < slice.length; i += CHUNK) {
      const chunk = slice.subarray(i, i + CHUNK);
      if (channel.bufferedAmount > HIGH_WATER) await drained(channel, LOW_WATER, stallMs);
      if (channel.readyState !== 'open') throw lost();
      channel.send(chunk);
      hash.update(chunk);
      offset += chunk.length;
      progress.update(offset);
    }
  }
  const sum = hex(hash.digest());
  channel.send(encodeControl({ t: 'end', sha256: sum }));
  progress.update(offset, true);
  return sum;
}
