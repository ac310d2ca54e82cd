// File transfer over an RTCDataChannel: fixed-size chunks, backpressure on
// bufferedAmount, SHA-256 computed while streaming on both sides, progress
// with speed and time left.

import { sha256 } from '@noble/hashes/sha2.js';

export const CHUNK = 16 * 1024;
const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;

export const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');

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

function waitLow(channel) {
  if (channel.bufferedAmount <= LOW_WATER) return Promise.resolve();
  return new Promise((resolve) => {
    channel.bufferedAmountLowThreshold = LOW_WATER;
    channel.addEventListener('bufferedamountlow', () => resolve(), { once: true });
  });
}

/** Send `file` (a Blob) over `channel`; resolves with its SHA-256 hex. */
export async function sendFile(channel, file, onProgress) {
  const hash = sha256.create();
  const progress = new Progress(file.size, onProgress);
  let offset = 0;
  while (offset < file.size) {
    const slice = new Uint8Array(await file.slice(offset, offset + CHUNK * 64).arrayBuffer());
    for (let i = 0; i < slice.length; i += CHUNK) {
      const chunk = slice.subarray(i, i + CHUNK);
      if (channel.bufferedAmount > HIGH_WATER) await waitLow(channel);
      if (channel.readyState !== 'open') throw new Error('the connection to your peer was lost');
      channel.send(chunk);
      hash.update(chunk);
      offset += chunk.length;
      progress.update(offset);
    }
  }
  progress.update(offset, true);
  return hex(hash.digest());
}

/** Receives chunks until `size` bytes have arrived. */
export class Receiver {
  constructor(meta, onProgress) {
    this.meta = meta;
    this.parts = [];
    this.received = 0;
    this.hash = sha256.create();
    this.progress = new Progress(meta.size, onProgress);
  }

  push(data) {
    const u8 = new Uint8Array(data);
    this.parts.push(u8);
    this.hash.update(u8);
    this.received += u8.length;
    this.progress.update(this.received, this.received >= this.meta.size);
    return this.received >= this.meta.size;
  }

  finish() {
    return {
      blob: new Blob(this.parts, { type: this.meta.type || 'application/octet-stream' }),
      sha256: hex(this.hash.digest()),
    };
  }
}
