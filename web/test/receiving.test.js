// The receiver's shell (src/receiving.js) in Node, on a fake link and a
// fake disk: its silence limit against its own slow work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { BLOCK, encodeFrame, MAX_PAYLOAD, offerParts, WINDOW } from '../src/control.js';
import { Receiver } from '../src/receiving.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha = (u8) => createHash('sha256').update(u8).digest('hex');
const ID = '0123456789abcdef';

test('a receiver reading a file back to hash it is busy, not stalled, while the sender waits', async () => {
  const events = [];
  const r = new Receiver({ on: (e, d) => events.push([e, d]), stallMs: 300 });
  const size = 20 * BLOCK;
  const data = randomBytes(size);
  const disk = new Uint8Array(size);
  const sent = [];
  try {
    r.sink = {
      write: async (file, offset, bytes) => { disk.set(bytes, offset); },
      close: async () => {},
      abort: async () => {},
      // A slow disk: each MiB read back takes 200 ms.
      async* read(file, from) {
        for (let o = from; o < size; o += BLOCK) {
          await sleep(200);
          yield disk.slice(o, Math.min(size, o + BLOCK));
        }
      },
    };
    r.setLink({ open: true, control: (m) => sent.push(m) });
    for (const m of offerParts(ID, [{ path: 'big', size }])) r.onMessage(m);
    r.run(() => r.machine.accept());
    // Every block before any digest (as after a resume), acked as the
    // window asks, so more land than the receiver holds for hashing.
    const acked = () => Math.max(0, ...sent.filter((m) => m.kind === 'ack').map((m) => m.bytes));
    for (let o = 0; o < size; o += MAX_PAYLOAD) {
      while (o + MAX_PAYLOAD > acked() + WINDOW) await sleep(5);
      r.onFrame(encodeFrame(0, o, data.subarray(o, o + MAX_PAYLOAD)));
    }
    await sleep(50);
    const digests = [];
    for (let b = 0; b < 20; b++) digests.push(sha(data.subarray(b * BLOCK, (b + 1) * BLOCK)));
    r.onMessage({ kind: 'hashes', id: ID, file: 0, first: 0, sha256: digests });
    r.onMessage({ kind: 'sent', id: ID, file: 0, sha256: sha(data) });
    // The sender now says nothing until `got`; the receiver reads back.
    for (let i = 0; i < 100 && !events.some(([e]) => e === 'done' || e === 'stopped'); i++) await sleep(50);
    const stopped = events.find(([e]) => e === 'stopped');
    assert.equal(stopped, undefined, `stopped: ${stopped?.[1]?.why}`);
    assert.ok(events.some(([e]) => e === 'done'), 'done');
    const got = sent.find((m) => m.kind === 'got');
    assert.deepEqual(got, { kind: 'got', id: ID, file: 0, ok: true, sha256: sha(data) });
  } finally {
    clearInterval(r.stallTimer);
  }
});

test('a receiver whose sender goes silent mid-file stops with `stalled`', async () => {
  const events = [];
  const r = new Receiver({ on: (e, d) => events.push([e, d]), stallMs: 300 });
  const sent = [];
  try {
    r.sink = { write: async () => {}, close: async () => {}, abort: async () => {}, async* read() {} };
    r.setLink({ open: true, control: (m) => sent.push(m) });
    for (const m of offerParts(ID, [{ path: 'big', size: 4 * BLOCK }])) r.onMessage(m);
    r.run(() => r.machine.accept());
    r.onFrame(encodeFrame(0, 0, new Uint8Array(MAX_PAYLOAD)));
    for (let i = 0; i < 40 && !events.some(([e]) => e === 'stopped'); i++) await sleep(50);
    const stopped = events.find(([e]) => e === 'stopped');
    assert.ok(stopped, 'no stop');
    assert.equal(stopped[1].error?.kind, 'stalled');
    assert.match(sent.find((m) => m.kind === 'cancel')?.reason ?? '', /^stalled: /);
  } finally {
    clearInterval(r.stallTimer);
  }
});

test('a disk that stops taking writes is caught, and the page hears the stop', async () => {
  const events = [];
  const r = new Receiver({ on: (e, d) => events.push([e, d]), stallMs: 300 });
  const sent = [];
  try {
    // The first write never returns.
    r.sink = { write: () => new Promise(() => {}), close: async () => {}, abort: async () => {}, async* read() {} };
    r.setLink({ open: true, control: (m) => sent.push(m) });
    for (const m of offerParts(ID, [{ path: 'big', size: 4 * BLOCK }])) r.onMessage(m);
    r.run(() => r.machine.accept());
    const block = new Uint8Array(MAX_PAYLOAD);
    for (let o = 0; o < BLOCK; o += MAX_PAYLOAD) r.onFrame(encodeFrame(0, o, block));
    for (let i = 0; i < 80 && !events.some(([e]) => e === 'stopped'); i++) await sleep(50);
    assert.match(sent.find((m) => m.kind === 'cancel')?.reason ?? '', /^stalled: /, 'the sender is told');
    const stopped = events.find(([e]) => e === 'stopped');
    assert.ok(stopped, 'the page never heard the stop');
    assert.equal(stopped[1].error?.kind, 'stalled');
  } finally {
    clearInterval(r.stallTimer);
  }
});
