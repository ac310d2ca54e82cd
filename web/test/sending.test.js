// The sender's shell (src/sending.js) in Node, on a fake link: what it does
// when the receiver goes silent. The machines are tested on their own in
// transfer-machines.test.js; the browser tests drive the real channel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sender } from '../src/sending.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A link whose channel takes everything at once (or drains slowly). */
function fakeLink() {
  const link = {
    open: true,
    channel: { bufferedAmount: 0 },
    controls: [],
    frames: 0,
    control(msg) { link.controls.push(msg); },
    data() { link.frames += 1; return Promise.resolve(); },
    ready: () => Promise.resolve(),
  };
  return link;
}

function sender(size, opts) {
  const events = [];
  const blob = new Blob([new Uint8Array(size).fill(7)]);
  // Counts the reads, to show what a break costs.
  const file = { size, name: 'a.bin', reads: 0, slice(a, b) { file.reads += 1; return blob.slice(a, b); } };
  const s = new Sender('00112233445566aa', [{ file, path: 'a.bin' }], { on: (e, d) => events.push([e, d]), ...opts });
  return { s, events, file };
}

test('a receiver that goes silent after the last byte stops the transfer with a clear reason', async () => {
  const { s, events } = sender(300_000, { stallMs: 300 });
  const link = fakeLink();
  s.setLink(link);
  s.onMessage({ kind: 'accept', id: s.id });
  // Every byte goes out; the receiver never confirms.
  await sleep(1500);
  const stopped = events.find(([e]) => e === 'stopped');
  assert.ok(stopped, `no stop after the receiver fell silent: ${events.map(([e]) => e).join(',')}`);
  assert.equal(stopped[1].by, 'us');
  assert.match(stopped[1].why, /^stalled: the receiver said nothing for 0\.3 s/);
  const cancel = link.controls.find((m) => m.kind === 'cancel');
  assert.ok(cancel, 'the receiver is told');
  assert.match(cancel.reason, /^stalled: /);
  s.finish();
});

test('a receiver still draining a full channel is not taken for silent', async () => {
  const { s, events } = sender(300_000, { stallMs: 300 });
  const link = fakeLink();
  link.channel.bufferedAmount = 5_000_000;
  // The channel drains a little every 100 ms: slow, not stalled.
  const drain = setInterval(() => { link.channel.bufferedAmount = Math.max(0, link.channel.bufferedAmount - 100_000); }, 100);
  s.setLink(link);
  s.onMessage({ kind: 'accept', id: s.id });
  await sleep(1200);
  clearInterval(drain);
  assert.equal(events.find(([e]) => e === 'stopped'), undefined, 'stopped while the channel was still draining');
  s.finish();
});

test('a confirmed transfer is not stopped later by the watchdog', async () => {
  const { s, events } = sender(1000, { stallMs: 300 });
  const link = fakeLink();
  s.setLink(link);
  s.onMessage({ kind: 'accept', id: s.id });
  for (let i = 0; i < 50 && !link.controls.some((m) => m.kind === 'sent'); i++) await sleep(20);
  const sent = link.controls.find((m) => m.kind === 'sent');
  assert.ok(sent);
  s.onMessage({ kind: 'got', id: s.id, file: 0, ok: true, sha256: sent.sha256 });
  await sleep(800);
  assert.deepEqual(events.map(([e]) => e).filter((e) => e !== 'progress'), ['accepted', 'confirmed', 'done']);
});

test('waiting for the person to accept is not a stall', async () => {
  const { s, events } = sender(1000, { stallMs: 200 });
  s.setLink(fakeLink());
  await sleep(700);
  assert.equal(events.length, 0);
  s.finish();
});

test('a new link whose receiver never says resume is a stall too', async () => {
  const { s, events } = sender(3_000_000, { stallMs: 300 });
  const first = fakeLink();
  // The first channel takes one block and then breaks.
  first.data = () => { first.open = false; return Promise.reject(Object.assign(new Error('gone'), { linkClosed: true })); };
  s.setLink(first);
  s.onMessage({ kind: 'accept', id: s.id });
  await sleep(100);
  const second = fakeLink();
  s.setLink(second);
  await sleep(1200);
  const stopped = events.find(([e]) => e === 'stopped');
  assert.ok(stopped, 'no stop while the receiver never resumed');
  assert.match(stopped[1].why, /^stalled: /);
  assert.equal(second.frames, 0, 'nothing is sent before the resume');
});

test('after a break mid-file the next link resumes where the receiver says, and the file completes', async () => {
  const { s, events, file } = sender(3_000_000, { stallMs: 5000 });
  const first = fakeLink();
  let taken = 0;
  first.data = () => {
    // One frame gets through, then the channel dies.
    if (taken++ === 0) return Promise.resolve();
    first.open = false;
    return Promise.reject(Object.assign(new Error('gone'), { linkClosed: true }));
  };
  s.setLink(first);
  s.onMessage({ kind: 'accept', id: s.id });
  await sleep(200);
  // Between the break and the next link nothing more is read: the block in
  // flight and the one read ahead, no more.
  assert.ok(file.reads <= 2, `${file.reads} blocks read after the channel broke`);
  const second = fakeLink();
  const offsets = [];
  second.data = (frame) => { offsets.push(new DataView(frame.buffer, frame.byteOffset).getUint32(4) * 2 ** 32 + new DataView(frame.buffer, frame.byteOffset).getUint32(8)); return Promise.resolve(); };
  s.setLink(second);
  s.onMessage({ kind: 'resume', id: s.id, files: [{ file: 0, have: [] }] });
  for (let i = 0; i < 100 && !second.controls.some((m) => m.kind === 'sent'); i++) await sleep(20);
  const sent = second.controls.find((m) => m.kind === 'sent');
  assert.ok(sent, `no sent on the new link; events ${events.map(([e, d]) => `${e}:${d?.why ?? ''}`).join(',')}`);
  assert.equal(offsets[0], 0, 'the new link starts from the first block the receiver lacks');
  s.onMessage({ kind: 'got', id: s.id, file: 0, ok: true, sha256: sent.sha256 });
  assert.ok(events.some(([e]) => e === 'done'));
});

test('a receiver that stops acknowledging leaves the sender at the window, then stalled', async () => {
  const { s, events } = sender(24 * 1024 * 1024, { stallMs: 400 });
  const link = fakeLink();
  s.setLink(link);
  s.onMessage({ kind: 'accept', id: s.id });
  // However slow this machine is at reading and hashing 16 MiB.
  for (let i = 0; i < 300 && !events.some(([e]) => e === 'stopped'); i++) await sleep(50);
  assert.equal(link.frames * 65536, 16 * 1024 * 1024, 'the sender stopped at the window');
  const stopped = events.find(([e]) => e === 'stopped');
  assert.ok(stopped, 'no stop while the window stayed shut');
  assert.match(stopped[1].why, /^stalled: /);
});

test('acks open the window as they come, and the file completes', async () => {
  const { s, events } = sender(24 * 1024 * 1024 + 5, { stallMs: 5000 });
  const link = fakeLink();
  let bytes = 0;
  link.data = (frame) => {
    bytes += frame.length - 12;
    // The receiver acks every 4 MiB it takes.
    if (bytes % (4 * 1024 * 1024) === 0) queueMicrotask(() => s.onMessage({ kind: 'ack', id: s.id, bytes }));
    return Promise.resolve();
  };
  s.setLink(link);
  s.onMessage({ kind: 'accept', id: s.id });
  for (let i = 0; i < 200 && !link.controls.some((m) => m.kind === 'sent'); i++) await sleep(20);
  assert.equal(bytes, 24 * 1024 * 1024 + 5);
  assert.equal(events.find(([e]) => e === 'stopped'), undefined);
  s.finish();
});

test('a receiver reading a finished file back to hash it, while the window is shut on the next file, is not taken for silent', async () => {
  const { decodeFrame } = await import('../src/control.js');
  const MiB = 1 << 20;
  const sizes = [25 * MiB, 20 * MiB];
  const events = [];
  const files = sizes.map((size, i) => ({ file: new Blob([new Uint8Array(size)]), path: `f${i}` }));
  const s = new Sender('00112233445566aa', files, { on: (e, d) => events.push([e, d]), stallMs: 200 });
  const link = fakeLink();
  let bytes = 0;
  link.data = (frame) => { bytes += decodeFrame(frame).data.length; return Promise.resolve(); };
  s.setLink(link);
  s.onMessage({ kind: 'accept', id: s.id });
  // The receiver acks all it gets until file 1's `sent`; then it reads
  // file 1 back (25 MiB: half a second at the 50 MB/s allowed for) and
  // says nothing while the sender fills the window with file 2.
  let acked = 0;
  const acker = setInterval(() => {
    if (link.controls.some((m) => m.kind === 'sent' && m.file === 0)) return;
    if (bytes > acked) s.onMessage({ kind: 'ack', id: s.id, bytes: (acked = bytes) });
  }, 10);
  try {
    for (let i = 0; i < 500 && !s.machine.windowFull; i++) await sleep(10);
    assert.ok(s.machine.windowFull, 'the window never shut');
    await sleep(500);
    assert.equal(events.find(([e]) => e === 'stopped'), undefined, 'stopped while the receiver was reading back a 25 MiB file');
    // A receiver that stays silent is still caught.
    await sleep(1500);
    assert.ok(events.find(([e]) => e === 'stopped'), 'never stopped');
  } finally {
    clearInterval(acker);
    s.finish();
  }
});

test('a link replaced while a block is being read: the old pump takes nothing from the new channel', async () => {
  const { s, events, file } = sender(4 * 1024 * 1024, { stallMs: 5000 });
  // Reads wait for the test to let them through.
  const gates = [];
  const slice = file.slice;
  file.slice = (a, b) => {
    const blob = slice(a, b);
    return { arrayBuffer: () => new Promise((res) => gates.push(() => res(blob.arrayBuffer()))) };
  };
  const first = fakeLink();
  s.setLink(first);
  s.onMessage({ kind: 'accept', id: s.id });
  await sleep(20);
  // The old pump waits on its first read; the channel breaks, a new one
  // opens and the receiver says it holds nothing.
  first.open = false;
  const second = fakeLink();
  const offsets = [];
  second.data = (frame) => { offsets.push(Number(new DataView(frame.buffer, frame.byteOffset).getBigUint64(4))); return Promise.resolve(); };
  s.setLink(second);
  s.onMessage({ kind: 'resume', id: s.id, files: [] });
  // Let every read through, as they come.
  for (let i = 0; i < 200 && !second.controls.some((m) => m.kind === 'sent'); i++) {
    while (gates.length) gates.shift()();
    await sleep(10);
  }
  const blocks = new Set(offsets.filter((o) => o % (1024 * 1024) === 0));
  assert.deepEqual([...blocks].sort((x, y) => x - y), [0, 1, 2, 3].map((k) => k * 1024 * 1024), 'every block goes on the new channel');
  assert.ok(second.controls.some((m) => m.kind === 'sent'), `no sent; ${events.map(([e, d]) => `${e}:${d?.why ?? ''}`).join(',')}`);
  s.finish();
});
