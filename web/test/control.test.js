// The transfer's sealed messages and data-frame header (web/src/control.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeFrame, encodeFrame, HEADER, MAX_PAYLOAD, offerParts, parseTransfer } from '../src/control.js';

const id = '00112233445566aa';
const kindOf = (m) => { try { parseTransfer(m); return 'ok'; } catch (e) { return e.kind; } };

test('every kind parses, and only its known fields are kept', () => {
  assert.deepEqual(parseTransfer({ kind: 'accept', id, extra: 1 }), { kind: 'accept', id });
  assert.deepEqual(parseTransfer({ kind: 'cancel', id, reason: 'é'.repeat(300) }).reason.length, 256);
  assert.equal(parseTransfer({ kind: 'cancel', id }).reason, '');
  assert.equal(kindOf({ kind: 'hashes', id, file: 0, first: 0, sha256: ['0'.repeat(64)] }), 'ok');
  assert.equal(kindOf({ kind: 'sent', id, file: 3, sha256: 'f'.repeat(64) }), 'ok');
  assert.equal(kindOf({ kind: 'want', id, file: 0, blocks: [0, 5] }), 'ok');
  assert.equal(kindOf({ kind: 'resume', id, files: [{ file: 0, have: [[0, 3], [5, 6]] }] }), 'ok');
  assert.equal(kindOf({ kind: 'resume', id, files: [] }), 'ok');
  assert.equal(kindOf({ kind: 'got', id, file: 0, ok: true, sha256: 'a'.repeat(64) }), 'ok');
});

test('hostile fields are refused with a kind', () => {
  assert.equal(kindOf(null), 'malformed');
  assert.equal(kindOf([]), 'malformed');
  assert.equal(kindOf({ kind: 'accept', id: 'ABC' }), 'malformed');
  assert.equal(kindOf({ kind: 'nope', id }), 'unknown_type');
  assert.equal(kindOf({ kind: 'files', id, part: 0, parts: 1, count: 1, total: 1, files: [{ path: 'a', size: -1 }] }), 'bad_size');
  assert.equal(kindOf({ kind: 'files', id, part: 0, parts: 1, count: 1, total: 1, files: [{ path: 'a', size: 1.5 }] }), 'bad_size');
  assert.equal(kindOf({ kind: 'files', id, part: 0, parts: 1, count: 1, total: 1, files: [{ path: 'a'.repeat(4097), size: 1 }] }), 'bad_name');
  assert.equal(kindOf({ kind: 'files', id, part: 0, parts: 1, count: 1, total: 1, files: [{ path: '\ud800', size: 1 }] }), 'malformed');
  assert.equal(kindOf({ kind: 'files', id, part: 1, parts: 1, count: 1, total: 1, files: [{ path: 'a', size: 1 }] }), 'malformed');
  assert.equal(kindOf({ kind: 'files', id, part: 0, parts: 1, count: 0, total: 0, files: [] }), 'malformed');
  assert.equal(kindOf({ kind: 'files', id, part: 0, parts: 1, count: 1, total: 2 ** 53, files: [{ path: 'a', size: 1 }] }), 'malformed');
  assert.equal(kindOf({ kind: 'hashes', id, file: 0, first: 0, sha256: ['A'.repeat(64)] }), 'bad_digest');
  assert.equal(kindOf({ kind: 'hashes', id, file: 0, first: 0, sha256: Array(257).fill('0'.repeat(64)) }), 'malformed');
  assert.equal(kindOf({ kind: 'hashes', id, file: 0, first: 0, sha256: [] }), 'malformed');
  assert.equal(kindOf({ kind: 'want', id, file: 0, blocks: [-1] }), 'malformed');
  assert.equal(kindOf({ kind: 'resume', id, files: [{ file: 0, have: [[3, 3]] }] }), 'malformed');
  assert.equal(kindOf({ kind: 'resume', id, files: [{ file: 0, have: [[0, 4], [2, 6]] }] }), 'malformed');
  assert.equal(kindOf({ kind: 'got', id, file: 0, ok: 'yes', sha256: 'a'.repeat(64) }), 'malformed');
});

test('data frames: header and bounds', () => {
  const f = encodeFrame(7, 2 ** 40 + 3, Uint8Array.of(1, 2, 3));
  assert.equal(f.length, HEADER + 3);
  const d = decodeFrame(f.buffer);
  assert.deepEqual([d.file, d.offset, Array.from(d.data)], [7, 2 ** 40 + 3, [1, 2, 3]]);
  assert.throws(() => decodeFrame(new Uint8Array(HEADER)), (e) => e.kind === 'bad_frame', 'no payload');
  assert.throws(() => decodeFrame(new Uint8Array(HEADER + MAX_PAYLOAD + 1)), (e) => e.kind === 'bad_frame');
  const far = encodeFrame(0, 0, Uint8Array.of(1));
  new DataView(far.buffer).setBigUint64(4, 2n ** 60n);
  assert.throws(() => decodeFrame(far), (e) => e.kind === 'bad_frame');
});

test('an offer of one file with a long name is one part; sizes that overflow are refused', () => {
  assert.equal(offerParts(id, [{ path: 'x'.repeat(4000), size: 1 }]).length, 1);
  assert.throws(() => offerParts(id, [{ path: 'a', size: 2 ** 52 }, { path: 'b', size: 2 ** 52 }]), (e) => e.kind === 'bad_size');
});
