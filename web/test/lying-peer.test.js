// A lying peer against the transfer machines (web/src/incoming.js,
// web/src/outgoing.js), with the shell's disk and hash work queued as
// receiving.js queues it: a block's digest is known only after the frames
// that follow it were taken.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { BLOCK, encodeFrame, decodeFrame, offerParts } from '../src/control.js';
import { Incoming } from '../src/incoming.js';
import { Outgoing } from '../src/outgoing.js';

const sha = (u8) => createHash('sha256').update(u8).digest('hex');
const ID = '0123456789abcdef';

/** A receiver whose shell queues writes and digests (as receiving.js). */
function receiver(sizes) {
  const inc = new Incoming();
  const disk = sizes.map((n) => new Uint8Array(n));
  const queue = [];
  const sent = [];
  const done = [];
  const act = (actions) => {
    for (const a of actions) {
      switch (a.t) {
        case 'send': sent.push(a.msg); break;
        case 'write': queue.push(() => disk[a.file].set(a.data, a.offset)); break;
        case 'digest': queue.push(() => act(inc.blockDigest(a.file, a.block, sha(a.data), a.data))); break;
        case 'readBack': queue.push(() => { inc.readBack(a.file, disk[a.file].subarray(a.from)); act(inc.readBackDone(a.file)); }); break;
        case 'fileDone': done.push(a); break;
        default: break;
      }
    }
  };
  for (const m of offerParts(ID, sizes.map((size, i) => ({ path: `f${i}`, size })))) act(inc.onMessage(m));
  act(inc.accept());
  const drain = () => { while (queue.length) queue.shift()(); };
  const frame = (file, offset, data) => act(inc.onData(decodeFrame(encodeFrame(file, offset, data))));
  return { inc, disk, sent, done, act, drain, frame };
}

test('a block sent again while its first copy is being hashed cannot replace the verified bytes on disk', () => {
  const good = new Uint8Array(1000).fill(0x41);
  const evil = new Uint8Array(1000).fill(0x45);
  const r = receiver([1000]);
  r.act(r.inc.onMessage({ kind: 'hashes', id: ID, file: 0, first: 0, sha256: [sha(good)] }));
  r.act(r.inc.onMessage({ kind: 'sent', id: ID, file: 0, sha256: sha(good) }));
  r.frame(0, 0, good); // lands; its digest is queued
  r.frame(0, 0, evil); // the same block again, before the digest is known
  r.drain();
  const ok = r.done.find((d) => d.ok);
  assert.ok(ok, 'the file was verified');
  // What the page shows as verified must be what is on disk.
  assert.equal(sha(r.disk[0]), ok.sha256, 'the file on disk is not the file whose SHA-256 was shown as verified');
});

test('a block sent again after it landed and was hashed, before the sender gave its digest, leaves disk and digest in step', () => {
  const size = 3 * BLOCK;
  const blocks = [0, 1, 2].map((k) => new Uint8Array(BLOCK).fill(0x30 + k));
  const whole = createHash('sha256');
  blocks.forEach((b) => whole.update(b));
  const r = receiver([size]);
  r.frame(0, 0, blocks[0].subarray(0, 65536));
  for (let o = 65536; o < BLOCK; o += 65536) r.frame(0, o, blocks[0].subarray(o, o + 65536));
  r.drain(); // written and hashed; the sender's digest is still to come
  const evil = new Uint8Array(BLOCK).fill(0x66);
  for (let o = 0; o < BLOCK; o += 65536) r.frame(0, o, evil.subarray(o, o + 65536));
  for (const k of [1, 2]) for (let o = 0; o < BLOCK; o += 65536) r.frame(0, k * BLOCK + o, blocks[k].subarray(o, o + 65536));
  r.act(r.inc.onMessage({ kind: 'hashes', id: ID, file: 0, first: 0, sha256: blocks.map(sha) }));
  r.act(r.inc.onMessage({ kind: 'sent', id: ID, file: 0, sha256: whole.digest('hex') }));
  r.drain();
  for (const d of r.done) assert.equal(sha(r.disk[0]), d.sha256, 'a file reported with a SHA-256 its disk copy does not have');
});

test('a receiver that claims in `resume` to hold blocks never sent is refused as unexpected, not reported as our own failure', () => {
  const out = new Outgoing(ID, [{ path: 'a', size: 8 * BLOCK }]);
  out.onMessage({ kind: 'accept', id: ID });
  const b = out.next();
  out.digested(b.file, b.block, sha(new Uint8Array(1)));
  // Only block 0 went out; the peer says it holds blocks 0..8.
  assert.throws(() => out.onMessage({ kind: 'resume', id: ID, files: [{ file: 0, have: [[0, 8]] }] }), (e) => e.kind === 'unexpected');
});

// --- memory a peer controls ------------------------------------------------------
import v8 from 'node:v8';
import vm from 'node:vm';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');
const heap = () => { gc(); gc(); return process.memoryUsage().heapUsed; };
const MiB = 1024 * 1024;

test('digests a sender announces for blocks it never sends do not grow the receiving page without bound', () => {
  const inc = new Incoming();
  const size = Number.MAX_SAFE_INTEGER; // "8 PiB": the user accepted it
  for (const m of offerParts(ID, [{ path: 'huge', size }])) inc.onMessage(m);
  inc.accept();
  const before = heap();
  const digest = (n) => n.toString(16).padStart(64, '0');
  let refused = null;
  for (let first = 0; first < 1 << 20 && !refused; first += 256) {
    try {
      inc.onMessage({ kind: 'hashes', id: ID, file: 0, first, sha256: Array.from({ length: 256 }, (_, k) => digest(first + k)) });
    } catch (e) { refused = e; }
  }
  const grown = (heap() - before) / MiB;
  assert.ok(grown < 16, `a million digests of blocks never sent (64 MiB of messages) held ${grown.toFixed(0)} MiB of the page's memory`);
  // Kept alive through the measurement.
  assert.equal(inc.files.length, 1);
});

test('receiving a terabyte verifies its blocks on bounded memory (no per-block digest or mark kept)', () => {
  const inc = new Incoming();
  const blocks = 1 << 20; // 1 TiB
  for (const m of offerParts(ID, [{ path: 'disk.img', size: blocks * BLOCK }])) inc.onMessage(m);
  inc.accept();
  const digest = (n) => n.toString(16).padStart(64, '0');
  const before = heap();
  // As the shell: the sender's digests a little ahead of the data, our
  // digest of each block as it lands (not held: read back at the end).
  for (let first = 0; first < blocks; first += 64) {
    inc.onMessage({ kind: 'hashes', id: ID, file: 0, first, sha256: Array.from({ length: 64 }, (_, k) => digest(first + k)) });
    for (let b = first; b < first + 64; b++) inc.blockDigest(0, b, digest(b));
  }
  const grown = (heap() - before) / MiB;
  assert.equal(inc.state, 'receiving');
  assert.ok(grown < 16, `a terabyte's blocks held ${grown.toFixed(0)} MiB of the page's memory once verified`);
});

test('a receiver that wants one block many times gets it once, and the sender\'s queue stays bounded', () => {
  const out = new Outgoing(ID, [{ path: 'a', size: 2 * BLOCK }]);
  out.onMessage({ kind: 'accept', id: ID });
  const b = out.next();
  out.digested(b.file, b.block, sha(new Uint8Array(1)));
  for (let k = 0; k < 1000; k++) out.onMessage({ kind: 'want', id: ID, file: 0, blocks: Array(256).fill(0) });
  const sent = [];
  for (let n = out.next(); n; n = out.next()) sent.push(n.block);
  assert.deepEqual(sent, [0, 1], '256 000 copies of block 0 wanted in 1000 messages: it goes again once');
});

// Open (see docs/PROTOCOL.md, "Integrity as it arrives"): the data channel
// has no flow control from the receiving page, so a sender faster than
// the receiver's disk fills the page with blocks waiting to be written.
test('a sender faster than the receiver\'s disk does not fill the receiving page', async () => {
  const { Receiver } = await import('../src/receiving.js');
  const events = [];
  const r = new Receiver({ on: (e) => events.push(e) });
  try {
    const pending = []; // the disk holds on to the writes it has not done yet
    r.sink = { write: () => new Promise((res) => pending.push(res)), close: async () => {}, abort: async () => {}, read: async function* () {} };
    r.setLink({ open: true, control: () => {} });
    const blocks = 256;
    for (const m of offerParts(ID, [{ path: 'big', size: blocks * BLOCK }])) r.onMessage(m);
    r.run(() => r.machine.accept());
    const before = process.memoryUsage().arrayBuffers;
    const chunk = new Uint8Array(65536);
    for (let b = 0; b < blocks && r.state === 'receiving'; b++) {
      for (let o = 0; o < BLOCK; o += 65536) r.onFrame(encodeFrame(0, b * BLOCK + o, chunk));
    }
    await new Promise((res) => setTimeout(res, 50));
    heap();
    const held = (process.memoryUsage().arrayBuffers - before) / MiB;
    assert.ok(held < 64 || r.state !== 'receiving', `${held.toFixed(0)} MiB of blocks wait for a disk that does not keep up`);
    pending.forEach((res) => res());
  } finally {
    clearInterval(r.stallTimer);
  }
});

test('an offer whose names add up past 16 MiB is refused as it arrives, before the page holds it', async () => {
  const { MAX_OFFER_PATH_BYTES, ControlError } = await import('../src/control.js');
  // 4000 paths of 4000 bytes: 16 MB of names, in parts the receiver
  // takes one by one (a lying sender skips offerParts' own check).
  const long = (i) => `${String(i).padStart(8, '0')}/${'x'.repeat(3991)}`;
  const inc = new Incoming();
  let refused = null;
  const parts = 1000;
  for (let p = 0; p < parts && !refused; p++) {
    const files = Array.from({ length: 8 }, (_, k) => ({ path: long(p * 8 + k), size: 1 }));
    try {
      inc.onMessage({ kind: 'files', id: ID, part: p, parts, count: parts * 8, total: parts * 8, files });
    } catch (e) {
      refused = { e, p };
    }
  }
  assert.ok(refused, 'an offer of 32 MB of names was taken');
  assert.ok(refused.e instanceof ControlError && refused.e.kind === 'bad_name', String(refused.e));
  assert.ok(refused.p * 8 * 4000 <= MAX_OFFER_PATH_BYTES + 8 * 4000, `refused only at part ${refused.p}`);
  // The sender's own paging refuses the same offer with a clear error.
  const files = Array.from({ length: 4200 }, (_, i) => ({ path: long(i), size: 1 }));
  assert.throws(() => offerParts(ID, files), (e) => e.kind === 'bad_name' && /16 MiB/.test(e.message));
  // Just under the limit goes.
  assert.equal(offerParts(ID, files.slice(0, 4000)).length > 0, true);
});

// The window counts the bytes of frames, but a frame that starts a block
// makes the page allocate the whole block, and landed blocks are held for
// the whole-file hash: a sender spreading itself over many files must not
// turn a small window into a large heap.
const buffers = () => { gc(); gc(); return process.memoryUsage().arrayBuffers; };

test('one-byte frames starting a block in each of many files do not allocate a block per file', () => {
  const files = 256;
  const { inc, frame, drain } = receiver(Array(files).fill(BLOCK));
  const before = buffers();
  for (let i = 0; i < files; i++) {
    frame(i, 0, new Uint8Array(1));
    drain();
    inc.consumed(1);
  }
  const grown = (buffers() - before) / MiB;
  assert.equal(inc.state, 'receiving');
  assert.ok(grown < 32, `${files} bytes of frames made the page hold ${grown.toFixed(0)} MiB of partial blocks`);
});

test('blocks held for the whole-file hash are bounded across files, not per file', () => {
  const files = 16;
  const { inc, frame, drain } = receiver(Array(files).fill(17 * BLOCK));
  const before = buffers();
  const chunk = new Uint8Array(65536);
  for (let i = 0; i < files; i++) {
    // Every block but the first: none can be hashed in order, all wait.
    for (let b = 1; b <= 16; b++) {
      for (let o = 0; o < BLOCK; o += chunk.length) frame(i, b * BLOCK + o, chunk);
      drain();
      inc.consumed(BLOCK);
    }
  }
  const grown = (buffers() - before) / MiB;
  assert.equal(inc.state, 'receiving');
  assert.ok(grown < 64, `${files} files of held blocks grew the page by ${grown.toFixed(0)} MiB`);
});
