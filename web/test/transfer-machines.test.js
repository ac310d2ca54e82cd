// The sender's and the receiver's state machines (web/src/outgoing.js,
// web/src/incoming.js) driven against each other in memory: the sealed
// messages and the data frames pass through control.js's codecs, and the
// test plays the path (it can drop, corrupt or cut) and the shell.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { ACK_EVERY, BLOCK, ControlError, decodeFrame, encodeFrame, MAX_PAYLOAD, WINDOW } from '../src/control.js';
import { Incoming } from '../src/incoming.js';
import { Outgoing } from '../src/outgoing.js';

const sha = (u8) => createHash('sha256').update(u8).digest('hex');

/** Sender and receiver with the shell's duties done synchronously. */
function wire(contents, { corrupt = () => false, held } = {}) {
  const files = contents.map((c, i) => ({ path: c.path ?? `f${i}.bin`, size: c.data.length }));
  const out = new Outgoing('0123456789abcdef', files);
  const inc = new Incoming();
  const disk = contents.map((c) => new Uint8Array(c.data.length));
  const sentBytes = { n: 0 };
  const wholes = contents.map(() => createHash('sha256'));
  const log = [];
  const toSender = [];
  const toReceiver = [];
  let channelUp = true;
  const frames = [];
  const seal = (m) => JSON.parse(JSON.stringify(m)); // through JSON, as sealed
  function onIncoming(actions) {
    for (const a of actions) {
      log.push(a.t);
      switch (a.t) {
        case 'send': toSender.push(seal(a.msg)); break;
        case 'write': disk[a.file].set(a.data, a.offset); break;
        case 'digest': onIncoming(inc.blockDigest(a.file, a.block, sha(a.data), held === 0 ? undefined : a.data)); break;
        case 'readBack': inc.readBack(a.file, disk[a.file].subarray(a.from)); onIncoming(inc.readBackDone(a.file)); break;
        default: break;
      }
    }
  }
  function onOutgoing(actions) {
    for (const a of actions) {
      log.push(`out:${a.t}`);
      if (a.t === 'send') toReceiver.push(seal(a.msg));
    }
  }
  /** Sends up to `limit` blocks through the channel (if up). */
  function pump(limit = Infinity) {
    for (let n = 0; n < limit; n++) {
      const b = out.next();
      if (!b) break;
      const data = contents[b.file].data.subarray(b.offset, b.offset + b.length);
      if (b.first) {
        onOutgoing(out.digested(b.file, b.block, sha(data)));
        wholes[b.file].update(data);
        if (b.block === out.files[b.file].blocks - 1) onOutgoing(out.whole(b.file, wholes[b.file].digest('hex')));
      }
      for (let o = 0; o < data.length; o += MAX_PAYLOAD) {
        let chunk = data.subarray(o, o + MAX_PAYLOAD);
        if (corrupt(b, o)) { chunk = Uint8Array.from(chunk); chunk[0] ^= 1; }
        sentBytes.n += chunk.length;
        if (channelUp) frames.push(encodeFrame(b.file, b.offset + o, chunk));
      }
    }
    onOutgoing(out.flushHashes());
  }
  function deliver() {
    let moved = true;
    while (moved) {
      moved = false;
      while (frames.length) {
        moved = true;
        const f = decodeFrame(frames.shift());
        onIncoming(inc.onData(f));
        // The shell is finished with the frame once its write is done.
        onIncoming(inc.consumed(f.data.length));
      }
      while (toReceiver.length) { moved = true; onIncoming(inc.onMessage(toReceiver.shift())); }
      while (toSender.length) { moved = true; onOutgoing(out.onMessage(toSender.shift())); }
    }
  }
  /** The channel breaks: everything in flight either way is lost; then a
   * new one opens and both sides are told. */
  function reconnect() {
    frames.length = 0;
    toSender.length = 0;
    toReceiver.length = 0;
    onOutgoing(out.onChannel());
    onIncoming(inc.onChannel());
  }
  /** Pumps and delivers, as acks open the window, until the receiver is
   * done (at most 100 rounds). */
  function untilDone() {
    for (let rounds = 0; inc.state !== 'done' && rounds < 100; rounds++) {
      deliver();
      pump();
    }
    deliver();
  }
  return { out, inc, disk, log, pump, deliver, untilDone, sentBytes, frames, cut: (up) => { channelUp = up; if (!up) frames.length = 0; }, reconnect, toReceiver, toSender, onIncoming, onOutgoing };
}

function offerAndAccept(w) {
  for (const m of w.out.offer()) w.onIncoming(w.inc.onMessage(JSON.parse(JSON.stringify(m))));
  w.onIncoming(w.inc.accept());
  w.deliver();
}

test('several files, empty ones too, arrive and are confirmed on both sides', () => {
  const contents = [randomBytes(3 * BLOCK + 17), new Uint8Array(0), randomBytes(100), randomBytes(BLOCK)]
    .map((data, i) => ({ path: `dir/f${i}`, data }));
  const w = wire(contents);
  offerAndAccept(w);
  assert.equal(w.out.state, 'sending');
  w.pump();
  w.deliver();
  assert.equal(w.inc.state, 'done');
  assert.equal(w.out.state, 'done');
  contents.forEach((c, i) => assert.equal(sha(w.disk[i]), sha(c.data)));
  assert.equal(w.sentBytes.n, contents.reduce((n, c) => n + c.data.length, 0), 'nothing sent twice');
  assert.deepEqual(w.inc.progress(), { done: w.out.total, total: w.out.total, files: 4, count: 4 });
});

test('a corrupt chunk is caught when its block lands and only that block is sent again', () => {
  const contents = [{ data: randomBytes(5 * BLOCK) }];
  let once = true;
  const w = wire(contents, { corrupt: (b, o) => b.block === 2 && o === MAX_PAYLOAD * 3 && once && !(once = false) });
  offerAndAccept(w);
  w.pump();
  w.deliver();
  w.pump(); // the wanted block
  w.deliver();
  assert.equal(w.inc.state, 'done');
  assert.equal(sha(w.disk[0]), sha(contents[0].data));
  assert.equal(w.sentBytes.n, 6 * BLOCK, 'five blocks and one again');
  assert.equal(w.log.filter((t) => t === 'send').length >= 1, true);
});

test('digests that arrive after the data, with blocks no longer held, are checked by reading back', () => {
  const contents = [{ data: randomBytes(4 * BLOCK + 5) }];
  const w = wire(contents, { held: 0 });
  offerAndAccept(w);
  w.pump();
  // Data first, then the sealed messages: nothing is held for the hash.
  while (w.frames.length) w.onIncoming(w.inc.onData(decodeFrame(w.frames.shift())));
  w.deliver();
  assert.ok(w.log.includes('readBack'));
  assert.equal(w.inc.state, 'done');
  assert.equal(w.out.state, 'done');
});

test('a cut channel resumes from what landed: only the lost blocks come again', () => {
  const contents = [{ data: randomBytes(6 * BLOCK) }, { data: randomBytes(2 * BLOCK) }];
  const w = wire(contents);
  offerAndAccept(w);
  w.pump(3);
  w.deliver();
  w.cut(false);
  w.pump(2); // lost on the way
  w.cut(true);
  w.onIncoming(w.inc.resume());
  w.deliver();
  w.pump();
  w.deliver();
  assert.equal(w.inc.state, 'done');
  contents.forEach((c, i) => assert.equal(sha(w.disk[i]), sha(c.data)));
  assert.equal(w.sentBytes.n, 8 * BLOCK + 2 * BLOCK, 'the two lost blocks, no more');
});

test('decline and cancel stop both sides; a lying sender is caught', () => {
  {
    const w = wire([{ data: randomBytes(10) }]);
    for (const m of w.out.offer()) w.onIncoming(w.inc.onMessage(m));
    w.onIncoming(w.inc.decline());
    w.deliver();
    assert.equal(w.out.state, 'stopped');
    assert.equal(w.inc.state, 'stopped');
    assert.equal(w.out.next(), null);
  }
  {
    const w = wire([{ data: randomBytes(3 * BLOCK) }]);
    offerAndAccept(w);
    w.pump(1);
    w.onOutgoing(w.out.cancel('stopped by the sender'));
    w.deliver();
    assert.equal(w.inc.state, 'stopped');
    assert.deepEqual(w.inc.onData(decodeFrame(encodeFrame(0, BLOCK, new Uint8Array(10)))), [], 'late data after a cancel is dropped');
  }
  {
    const w = wire([{ data: randomBytes(2 * BLOCK) }]);
    offerAndAccept(w);
    w.onIncoming(w.inc.cancel('stopped by the receiver'));
    w.deliver();
    assert.equal(w.out.state, 'stopped');
  }
  {
    // Two digests for one block; data beyond the size; a frame across blocks.
    const w = wire([{ data: randomBytes(2 * BLOCK) }]);
    offerAndAccept(w);
    const a = 'a'.repeat(64);
    w.inc.onMessage({ kind: 'hashes', id: '0123456789abcdef', file: 0, first: 0, sha256: [a] });
    assert.throws(() => w.inc.onMessage({ kind: 'hashes', id: '0123456789abcdef', file: 0, first: 0, sha256: ['b'.repeat(64)] }), ControlError);
    assert.throws(() => w.inc.onData({ file: 0, offset: 2 * BLOCK - 5, data: new Uint8Array(10) }), (e) => e.kind === 'size_exceeded');
    assert.throws(() => w.inc.onData({ file: 0, offset: BLOCK - 5, data: new Uint8Array(10) }), (e) => e.kind === 'bad_frame');
    assert.throws(() => w.inc.onData({ file: 1, offset: 0, data: new Uint8Array(1) }), (e) => e.kind === 'bad_frame');
    assert.throws(() => w.inc.onData({ file: 0, offset: 7, data: new Uint8Array(1) }), (e) => e.kind === 'bad_frame', 'not the continuation of a block');
  }
});

test('an offer is checked whole: parts in order, counts and totals that add up', () => {
  const files = Array.from({ length: 900 }, (_, i) => ({ path: `deep/${'x'.repeat(60)}/${i}.txt`, size: i }));
  const out = new Outgoing('0123456789abcdef', files);
  const parts = out.offer();
  assert.ok(parts.length > 1, 'a large offer is paged');
  for (const p of parts) assert.ok(JSON.stringify(p).length < 32 * 1024);
  const inc = new Incoming();
  let offer;
  for (const p of parts) for (const a of inc.onMessage(p)) if (a.t === 'offer') offer = a.offer;
  assert.equal(offer.count, 900);
  assert.equal(offer.files[899].parts.join('/'), `deep/${'x'.repeat(60)}/899.txt`);
  // Lies: a total that does not add up; a part out of order.
  const lie = new Incoming();
  const [one] = new Outgoing('0123456789abcdef', [{ path: 'a', size: 5 }]).offer();
  assert.throws(() => lie.onMessage({ ...one, total: 6 }), (e) => e.kind === 'bad_size');
  const early = new Incoming();
  assert.throws(() => early.onMessage(parts[1]), (e) => e.kind === 'unexpected');
});

test('a break loses messages either way, and the transfer still completes exactly', () => {
  // The accept is lost: the offer goes again and is answered again.
  {
    const contents = [{ data: randomBytes(2 * BLOCK + 3) }];
    const w = wire(contents);
    for (const m of w.out.offer()) w.onIncoming(w.inc.onMessage(JSON.parse(JSON.stringify(m))));
    w.onIncoming(w.inc.accept());
    w.reconnect(); // the accept was in flight
    w.deliver();
    assert.equal(w.out.state, 'sending');
    w.pump();
    w.deliver();
    assert.equal(w.inc.state, 'done');
  }
  // Hashes, `sent` and the `got` are lost: announced and confirmed again.
  {
    const contents = [{ data: randomBytes(BLOCK + 9) }, { data: randomBytes(3 * BLOCK) }];
    const w = wire(contents);
    offerAndAccept(w);
    w.pump(2); // the first file whole
    while (w.frames.length) w.onIncoming(w.inc.onData(decodeFrame(w.frames.shift())));
    w.deliver(); // hashes, sent: the first file is complete; its got...
    assert.equal(w.inc.files[0].done, true);
    w.out.files[0].got = null; // ...as if the got had been lost
    w.out.gotCount = 0;
    w.out.acked = 0;
    w.pump(1);
    w.reconnect();
    w.deliver();
    w.pump();
    w.deliver();
    assert.equal(w.inc.state, 'done');
    assert.equal(w.out.state, 'done');
    contents.forEach((c, i) => assert.equal(sha(w.disk[i]), sha(c.data)));
  }
  // A cancel is lost: it is said again on the new channel.
  {
    const w = wire([{ data: randomBytes(3 * BLOCK) }]);
    offerAndAccept(w);
    w.pump(1);
    w.onIncoming(w.inc.cancel('no room'));
    w.reconnect();
    w.deliver();
    assert.equal(w.out.state, 'stopped');
    assert.equal(w.out.next(), null);
  }
  // A half-sent offer is sent again from its first part.
  {
    const files = Array.from({ length: 1000 }, (_, i) => ({ path: `${'p'.repeat(80)}/${i}`, data: new Uint8Array(1) }));
    const w = wire(files);
    const parts = w.out.offer();
    assert.ok(parts.length > 2);
    w.onIncoming(w.inc.onMessage(JSON.parse(JSON.stringify(parts[0]))));
    w.reconnect();
    w.deliver();
    assert.equal(w.inc.state, 'offered');
    assert.equal(w.inc.offer.count, 1000);
  }
});

test('an offer of huge files costs nothing before their bytes arrive', { timeout: 5000 }, () => {
  const files = Array.from({ length: 1000 }, (_, i) => ({ path: `f${i}`, size: 2 ** 43 }));
  const out = new Outgoing('0123456789abcdef', files);
  const inc = new Incoming();
  let offer;
  for (const p of out.offer()) for (const a of inc.onMessage(JSON.parse(JSON.stringify(p)))) if (a.t === 'offer') offer = a.offer;
  assert.equal(offer.total, 1000 * 2 ** 43);
  inc.accept();
  assert.deepEqual(inc.resume()[0].msg.files, []);
  const single = new Incoming();
  const [one] = new Outgoing('0123456789abcdef', [{ path: 'max', size: Number.MAX_SAFE_INTEGER }]).offer();
  assert.equal(single.onMessage(one)[0].offer.files[0].size, Number.MAX_SAFE_INTEGER);
});

test('flow control: the sender stays within the window the receiver acks, and a big file still moves', () => {
  const contents = [{ data: randomBytes(40 * BLOCK + 123) }];
  const w = wire(contents);
  offerAndAccept(w);
  // Without acks, the sender stops at the window.
  w.pump();
  assert.equal(w.sentBytes.n, WINDOW, 'the sender stops at 16 MiB without an ack');
  assert.equal(w.out.next(), null);
  w.untilDone();
  assert.equal(w.inc.state, 'done');
  assert.equal(w.out.state, 'done');
  assert.equal(sha(w.disk[0]), sha(contents[0].data));
  assert.equal(w.sentBytes.n, contents[0].data.length, 'each byte once');
  assert.ok(w.log.filter((t) => t === 'send').length >= 40 * BLOCK / ACK_EVERY, 'acks went out');
});

test('flow control: a sender that ignores the window is refused; acks that lie are refused', () => {
  const contents = [{ data: randomBytes(20 * BLOCK) }];
  const w = wire(contents);
  offerAndAccept(w);
  // The receiver takes WINDOW bytes without acking (its disk is slow) ...
  let frames = 0;
  const chunk = new Uint8Array(MAX_PAYLOAD);
  for (; frames * MAX_PAYLOAD < WINDOW; frames++) w.inc.onData({ file: 0, offset: frames * MAX_PAYLOAD, data: chunk });
  // ... and the next frame breaks the window.
  assert.throws(() => w.inc.onData({ file: 0, offset: frames * MAX_PAYLOAD, data: chunk }), (e) => e instanceof ControlError && e.kind === 'unexpected_data');

  const v = wire(contents);
  offerAndAccept(v);
  v.pump(2);
  assert.throws(() => v.out.onMessage({ kind: 'ack', id: v.out.id, bytes: 2 * BLOCK + 1 }), (e) => e.kind === 'unexpected', 'an ack past what was sent');
  const u = wire(contents);
  offerAndAccept(u);
  u.pump(2);
  u.out.onMessage({ kind: 'ack', id: u.out.id, bytes: 2 * BLOCK });
  assert.throws(() => u.out.onMessage({ kind: 'ack', id: u.out.id, bytes: BLOCK }), (e) => e.kind === 'unexpected', 'an ack going back');
  assert.throws(() => u.inc.onMessage({ kind: 'ack', id: u.out.id, bytes: 0 }), (e) => e.kind === 'unexpected', 'an ack is for the sender');
});

test('flow control: a new channel starts the window afresh; a damaged block near the end still comes again', () => {
  const contents = [{ data: randomBytes(30 * BLOCK) }];
  let spoiled = false;
  const w = wire(contents, { corrupt: (b, o) => { if (b.block === 28 && o === 0 && !spoiled) { spoiled = true; return true; } return false; } });
  offerAndAccept(w);
  w.pump();
  w.deliver();
  w.pump(3);
  // The channel breaks with frames and acks in flight.
  w.reconnect();
  w.untilDone();
  assert.equal(w.inc.state, 'done');
  assert.ok(spoiled);
  assert.equal(sha(w.disk[0]), sha(contents[0].data));
});
