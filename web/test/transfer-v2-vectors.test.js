// Transfers v2 against the shared vectors (peer/vectors/transfer-v2.json,
// written by web/tools/transfer-vectors.mjs, checked by the Rust peer in
// peer/tests/transfer_v2.rs): the web client still gives what they say.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decodeFrame, encodeFrame, offerParts } from '../src/control.js';
import { Records } from '../src/records.js';
import { parseRecord } from '../tools/transfer-vectors.mjs';

const vectors = JSON.parse(readFileSync(new URL('../../peer/vectors/transfer-v2.json', import.meta.url)));
const enc = new TextEncoder();
const hex = (u8) => Buffer.from(u8).toString('hex');
const unhex = (s) => Uint8Array.from(Buffer.from(s, 'hex'));

test('control messages', () => {
  assert.ok(vectors.messages.length > 100);
  for (const v of vectors.messages) {
    const bytes = v.text !== undefined ? enc.encode(v.text) : unhex(v.hex);
    const want = v.error !== undefined ? { error: v.error } : { parsed: v.parsed };
    assert.deepEqual(parseRecord(bytes), want, v.comment);
  }
});

test('offers', () => {
  for (const v of vectors.offers) {
    let got;
    try {
      got = { parts: offerParts(vectors.id, v.files) };
    } catch (e) {
      got = { error: e.kind };
    }
    assert.deepEqual(got, v.error !== undefined ? { error: v.error } : { parts: v.parts }, v.comment);
  }
});

test('data frames', () => {
  for (const v of vectors.frames.encode) {
    assert.equal(hex(encodeFrame(v.file, v.offset, unhex(v.payload))), v.frame);
  }
  for (const v of vectors.frames.decode) {
    const buf = new Uint8Array(v.head.length / 2 + v.pad);
    buf.set(unhex(v.head));
    let got;
    try {
      const f = decodeFrame(buf);
      got = { file: f.file, offset: f.offset, data_len: f.data.length, data_head: hex(f.data.subarray(0, 8)) };
    } catch (e) {
      got = { error: e.kind };
    }
    const { comment, head, pad, ...want } = v;
    assert.deepEqual(got, want, comment);
  }
});

test('sealed records', async () => {
  const r = vectors.records;
  const dk = unhex(r.dk);
  for (const [role, other] of [['A', 'B'], ['B', 'A']]) {
    const sealer = new Records(dk, role);
    const opener = new Records(dk, other);
    for (const v of r[role]) {
      let rec;
      await sealer.seal(v.type, unhex(v.plain), (x) => { rec = x; });
      assert.equal(hex(rec), v.record);
      const opened = await opener.open(rec);
      assert.deepEqual([opened.type, hex(opened.data)], [v.type, v.plain]);
    }
  }
  for (const v of r.refused) {
    await assert.rejects(new Records(dk, 'B').open(unhex(v.record)), (e) => e.kind === v.error, v.comment);
  }
});
