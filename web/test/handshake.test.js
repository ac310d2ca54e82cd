// The JavaScript handshake against the shared vectors and its failure modes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as hs from '../src/handshake.js';

const vectors = JSON.parse(readFileSync(new URL('../../peer/vectors/handshake-v1.json', import.meta.url)));
const hex = (s) => Uint8Array.from(s.match(/../g), (h) => parseInt(h, 16));
const rnd = (r) => ({ mlkemSeed: hex(r.mlkem_seed), mlkemM: hex(r.mlkem_m), x25519: hex(r.x25519), cpace: hex(r.cpace) });
const dec = new TextDecoder();

test('reproduces the Rust vectors byte for byte', async () => {
  const { state, hello } = hs.start(vectors.code, vectors.sid, rnd(vectors.randomness_a));
  assert.deepEqual(hello, vectors.hello);
  const b = hs.respond(vectors.code, vectors.sid, vectors.hello, rnd(vectors.randomness_b));
  assert.deepEqual(b.reply, vectors.reply);
  const { session: sa, confirm } = hs.finish(state, vectors.reply);
  assert.deepEqual(confirm, vectors.confirm);
  const sb = hs.accept(b.state, vectors.confirm);
  assert.deepEqual(sa.words, vectors.words);
  assert.deepEqual(sb.words, vectors.words);
  assert.deepEqual(await sa.seal(vectors.sealed_a_to_b.plaintext), vectors.sealed_a_to_b.message);
  assert.deepEqual(await sb.seal(vectors.sealed_b_to_a.plaintext), vectors.sealed_b_to_a.message);
  assert.equal(dec.decode(await sb.open(vectors.sealed_a_to_b.message)), 'hello from A');
  assert.equal(dec.decode(await sa.open(vectors.sealed_b_to_a.message)), 'hello from B');
});

test('a wrong code fails confirmation', () => {
  const { state } = hs.start(vectors.code, vectors.sid, rnd(vectors.randomness_a));
  const b = hs.respond(vectors.wrong_code, vectors.sid, vectors.hello, rnd(vectors.randomness_b));
  assert.throws(() => hs.finish(state, b.reply), (e) => e.kind === 'confirmation');
  assert.throws(() => hs.accept(b.state, vectors.confirm), (e) => e.kind === 'confirmation');
});

test('tampered, replayed and downgraded messages fail', async () => {
  const { state } = hs.start(vectors.code, vectors.sid, rnd(vectors.randomness_a));
  const bad = { ...vectors.reply, y: vectors.hello.y };
  assert.throws(() => hs.finish(state, bad), (e) => e.kind === 'confirmation');
  assert.throws(() => hs.respond(vectors.code, vectors.sid, { ...vectors.hello, suite: 'tallow-v1/x25519' }, hs.freshRandomness()),
    (e) => e.kind === 'downgrade');
  const { session: sa } = hs.finish(state, vectors.reply);
  const sb = hs.accept(hs.respond(vectors.code, vectors.sid, vectors.hello, rnd(vectors.randomness_b)).state, vectors.confirm);
  const m = await sa.seal('offer');
  const flipped = { ...m, c: m.c.slice(0, 4) + (m.c[4] === 'A' ? 'B' : 'A') + m.c.slice(5) };
  await assert.rejects(sb.open(flipped), (e) => e.kind === 'tampered');
  assert.equal(dec.decode(await sb.open(m)), 'offer');
  await assert.rejects(sb.open(m), (e) => e.kind === 'replay');
});

test('the FIPS 203 check refuses out-of-range coefficients', () => {
  const ek = Uint8Array.from(atob(vectors.hello.ek), (c) => c.charCodeAt(0));
  hs.checkEncapsulationKey(ek);
  const bad = ek.slice();
  bad[0] = 0xff;
  bad[1] |= 0x0f;
  assert.throws(() => hs.checkEncapsulationKey(bad), (e) => e.kind === 'malformed');
  assert.throws(() => hs.checkEncapsulationKey(ek.slice(0, 100)), (e) => e.kind === 'malformed');
});

test('two fresh JavaScript peers agree', async () => {
  const a = hs.start('12-kiwi-lemon-mango', 'sid-1', hs.freshRandomness());
  const b = hs.respond('12-kiwi-lemon-mango', 'sid-1', a.hello, hs.freshRandomness());
  const { session: sa, confirm } = hs.finish(a.state, b.reply);
  const sb = hs.accept(b.state, confirm);
  assert.deepEqual(sa.words, sb.words);
  assert.equal(dec.decode(await sb.open(await sa.seal('x'))), 'x');
});

test('a 1 MB plaintext seals and opens (base64 must not spread a million arguments)', async () => {
  const a = hs.start('12-kiwi-lemon-mango', 'sid-1', hs.freshRandomness());
  const b = hs.respond('12-kiwi-lemon-mango', 'sid-1', a.hello, hs.freshRandomness());
  const { session: sa, confirm } = hs.finish(a.state, b.reply);
  const sb = hs.accept(b.state, confirm);
  const big = new Uint8Array(1 << 20).map((_, i) => i * 7);
  const m = await sa.seal(big);
  assert.deepEqual(await sb.open(m), big);
});
