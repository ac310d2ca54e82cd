// The data channel's sealed records (web/src/records.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CONTROL, DATA, freshDataKey, RecordError, Records } from '../src/records.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

async function sealAll(r, items) {
  const out = [];
  await Promise.all(items.map(([type, text]) => r.seal(type, enc.encode(text), (rec) => out.push(rec))));
  return out;
}

test('records open in order on the other side, and only there', async () => {
  const dk = freshDataKey();
  const a = new Records(dk, 'A');
  const b = new Records(dk, 'B');
  const recs = await sealAll(a, [[CONTROL, '{"kind":"accept"}'], [DATA, 'x'.repeat(70000)], [DATA, 'y']]);
  const opened = await Promise.all(recs.map((r) => b.open(r)));
  assert.deepEqual(opened.map((o) => o.type), [CONTROL, DATA, DATA]);
  assert.equal(dec.decode(opened[0].data), '{"kind":"accept"}');
  assert.equal(opened[1].data.length, 70000);
  // A's own records do not open as B's: the directions have their own keys.
  const echo = new Records(dk, 'A');
  await assert.rejects(echo.open(recs[0]), RecordError);
});

test('an altered, replayed, reordered or retyped record is refused', async () => {
  const dk = freshDataKey();
  const a = new Records(dk, 'A');
  const recs = await sealAll(a, [[DATA, 'one'], [DATA, 'two'], [CONTROL, 'three']]);
  const flip = Uint8Array.from(recs[0]);
  flip[5] ^= 1;
  await assert.rejects(new Records(dk, 'B').open(flip), RecordError);
  const replay = new Records(dk, 'B');
  await replay.open(recs[0]);
  await assert.rejects(replay.open(recs[0]), RecordError);
  await assert.rejects(new Records(dk, 'B').open(recs[1]), RecordError, 'out of turn');
  const retyped = Uint8Array.from(recs[0]);
  retyped[0] = CONTROL;
  await assert.rejects(new Records(dk, 'B').open(retyped), RecordError);
  await assert.rejects(new Records(freshDataKey(), 'B').open(recs[0]), RecordError, 'another connection\'s key');
  await assert.rejects(new Records(dk, 'B').open(new Uint8Array(10)), RecordError);
  assert.throws(() => new Records(new Uint8Array(16), 'A'));
});
