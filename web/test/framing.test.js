// The data-channel framing (web/src/framing.js): control frames, the file
// receiver and its errors; the Rust peer implements the same format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { FileReceiver, FramingError, MAX_CONTROL, MAX_DATA, parseControl, encodeControl } from '../src/framing.js';

const kind = (k) => (e) => e instanceof FramingError && e.kind === k;
const sha = (u8) => createHash('sha256').update(u8).digest('hex');
const J = JSON.stringify;
const EMPTY = sha(new Uint8Array(0));

test('limits are the spec\'s', () => {
  assert.equal(MAX_CONTROL, 16384);
  assert.equal(MAX_DATA, 65536);
});

test('parseControl accepts the four messages and drops unknown fields', () => {
  assert.deepEqual(parseControl(J({ t: 'file', name: 'a.txt', size: 3, extra: 1 })), { t: 'file', name: 'a.txt', size: 3 });
  assert.deepEqual(parseControl(J({ t: 'file', name: '', size: 0 })), { t: 'file', name: '', size: 0 });
  assert.deepEqual(parseControl(J({ t: 'file', name: 'x', size: Number.MAX_SAFE_INTEGER })).size, Number.MAX_SAFE_INTEGER);
  assert.deepEqual(parseControl(J({ t: 'end', sha256: EMPTY })), { t: 'end', sha256: EMPTY });
  assert.deepEqual(parseControl(J({ t: 'received', ok: false, sha256: EMPTY })), { t: 'received', ok: false, sha256: EMPTY });
  assert.deepEqual(parseControl(J({ t: 'cancel', reason: 'user' })), { t: 'cancel', reason: 'user' });
});

test('parseControl errors, each with its kind', () => {
  assert.throws(() => parseControl(J({ t: 'cancel', reason: 'x'.repeat(MAX_CONTROL) })), kind('too_large'));
  assert.throws(() => parseControl(`{"t":"cancel","reason":"${'é'.repeat(8190)}"}`), kind('too_large'), 'bytes, not characters');
  for (const bad of ['nope', '', '[1]', 'null', '3', '"file"', J({}), J({ t: 3 }), J({ t: 'file', size: 1 }),
    J({ t: 'file', name: 3, size: 1 }), J({ t: 'file', name: 'a' }), J({ t: 'file', name: 'a', size: '1' }),
    J({ t: 'end' }), J({ t: 'end', sha256: 5 }), J({ t: 'received', sha256: EMPTY }), J({ t: 'received', ok: 1, sha256: EMPTY }),
    J({ t: 'received', ok: true }), J({ t: 'cancel' }), J({ t: 'cancel', reason: null })]) {
    assert.throws(() => parseControl(bad), kind('malformed'), bad);
  }
  assert.throws(() => parseControl(J({ t: 'chunk' })), kind('unknown_type'));
  for (const size of [-1, 1.5, 2 ** 53, 1e300]) {
    assert.throws(() => parseControl(J({ t: 'file', name: 'a', size })), kind('bad_size'), String(size));
  }
  assert.throws(() => parseControl(J({ t: 'file', name: 'a'.repeat(4097), size: 1 })), kind('bad_name'));
  assert.doesNotThrow(() => parseControl(J({ t: 'file', name: 'a'.repeat(4096), size: 1 })));
  assert.throws(() => parseControl(J({ t: 'file', name: 'é'.repeat(2049), size: 1 })), kind('bad_name'), '4098 bytes');
  for (const d of [EMPTY.toUpperCase(), EMPTY.slice(1), `${EMPTY}0`, `g${EMPTY.slice(1)}`]) {
    assert.throws(() => parseControl(J({ t: 'end', sha256: d })), kind('bad_digest'), d);
    assert.throws(() => parseControl(J({ t: 'received', ok: true, sha256: d })), kind('bad_digest'), d);
  }
});

test('encodeControl refuses what parseControl would', () => {
  assert.equal(encodeControl({ t: 'end', sha256: EMPTY }), J({ t: 'end', sha256: EMPTY }));
  assert.throws(() => encodeControl({ t: 'cancel', reason: 'x'.repeat(MAX_CONTROL) }), kind('too_large'));
});

function receiver(opts = {}) {
  return new FileReceiver({ stallMs: 1000, ...opts });
}

test('a file arrives, is hashed and verified', () => {
  const r = receiver();
  const data = new Uint8Array(100_000).map((_, i) => i);
  assert.deepEqual(r.push(J({ t: 'file', name: 'a\u202Ebc.txt', size: data.length })), { t: 'file', name: 'a_bc.txt', size: data.length });
  r.push(data.subarray(0, 65536));
  r.push(data.subarray(65536));
  const end = r.push(J({ t: 'end', sha256: sha(data) }));
  assert.equal(end.t, 'end');
  assert.equal(end.ok, true);
  assert.equal(end.sha256, sha(data));
  assert.equal(end.blob.size, data.length);
  assert.equal(end.blob.type, 'application/octet-stream', 'never the peer\'s MIME type');
  assert.equal(r.open, false);
});

test('a zero-byte file completes and verifies', () => {
  const r = receiver();
  r.push(J({ t: 'file', name: 'empty', size: 0 }));
  const end = r.push(J({ t: 'end', sha256: EMPTY }));
  assert.equal(end.ok, true);
  assert.equal(end.blob.size, 0);
});

test('a digest that does not match is reported, not thrown', () => {
  const r = receiver();
  r.push(J({ t: 'file', name: 'x', size: 1 }));
  r.push(Uint8Array.of(1));
  const end = r.push(J({ t: 'end', sha256: EMPTY }));
  assert.equal(end.ok, false);
  assert.equal(end.sha256, sha(Uint8Array.of(1)));
});

test('lying sizes and frames out of place are errors', () => {
  let r = receiver();
  assert.throws(() => r.push(new Uint8Array(1)), kind('unexpected_data'), 'bytes before file');
  r = receiver();
  assert.throws(() => r.push(J({ t: 'end', sha256: EMPTY })), kind('unexpected_control'), 'end with no file');
  r = receiver();
  r.push(J({ t: 'file', name: 'x', size: 10 }));
  assert.throws(() => r.push(J({ t: 'file', name: 'y', size: 1 })), kind('unexpected_control'), 'file while open');
  r = receiver();
  r.push(J({ t: 'file', name: 'x', size: 10 }));
  r.push(new Uint8Array(6));
  assert.throws(() => r.push(new Uint8Array(5)), kind('size_exceeded'));
  r = receiver();
  r.push(J({ t: 'file', name: 'x', size: 0 }));
  assert.throws(() => r.push(new Uint8Array(1)), kind('size_exceeded'));
  r = receiver();
  r.push(J({ t: 'file', name: 'x', size: 10 }));
  r.push(new Uint8Array(9));
  assert.throws(() => r.push(J({ t: 'end', sha256: EMPTY })), kind('size_short'));
  r = receiver();
  r.push(J({ t: 'file', name: 'x', size: 100_000 }));
  assert.throws(() => r.push(new Uint8Array(MAX_DATA + 1)), kind('unexpected_data'), 'oversized binary frame');
  r = receiver();
  r.push(J({ t: 'file', name: 'x', size: MAX_DATA }));
  assert.doesNotThrow(() => r.push(new ArrayBuffer(MAX_DATA)), 'ArrayBuffer frames as from a data channel');
});

test('received and cancel pass through; cancel closes an open file', () => {
  const r = receiver();
  assert.deepEqual(r.push(J({ t: 'received', ok: true, sha256: EMPTY })), { t: 'received', ok: true, sha256: EMPTY });
  r.push(J({ t: 'file', name: 'x', size: 10 }));
  assert.deepEqual(r.push(J({ t: 'cancel', reason: 'bye\u202E' })), { t: 'cancel', reason: 'bye_' });
  assert.equal(r.open, false);
  assert.throws(() => r.push(new Uint8Array(1)), kind('unexpected_data'));
});

test('no frame for stallMs while a file is open: stalled', async () => {
  const stalls = [];
  const r = receiver({ stallMs: 50, onStall: (e) => stalls.push(e) });
  r.push(J({ t: 'file', name: 'x', size: 10 }));
  for (let i = 0; i < 4; i++) {
    await new Promise((res) => setTimeout(res, 25));
    r.push(new Uint8Array(1)); // progress keeps it alive
  }
  assert.equal(stalls.length, 0);
  await new Promise((res) => setTimeout(res, 120));
  assert.equal(stalls.length, 1);
  assert.ok(kind('stalled')(stalls[0]));
  // Nothing open: no timer.
  const r2 = receiver({ stallMs: 20, onStall: (e) => stalls.push(e) });
  r2.push(J({ t: 'file', name: 'x', size: 0 }));
  r2.push(J({ t: 'end', sha256: EMPTY }));
  await new Promise((res) => setTimeout(res, 60));
  assert.equal(stalls.length, 1);
});

test('the stall timeout defaults to 30 s and the timers are injectable', () => {
  const set = [];
  const r = new FileReceiver({ timers: { setTimeout: (fn, ms) => { set.push(ms); return set.length; }, clearTimeout: () => {} } });
  r.push(J({ t: 'file', name: 'x', size: 1 }));
  assert.deepEqual(set, [30_000]);
  r.close();
});
