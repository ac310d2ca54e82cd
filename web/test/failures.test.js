// Which failures read as tampering: only what the peer or the path sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as hs from '../src/handshake.js';
import { abortReason, explain, peerStopped } from '../src/failures.js';

const vectors = JSON.parse(readFileSync(new URL('../../peer/vectors/handshake-v1.json', import.meta.url)));
const hex = (s) => Uint8Array.from(s.match(/../g), (h) => parseInt(h, 16));
const rnd = (r) => ({ mlkemSeed: hex(r.mlkem_seed), mlkemM: hex(r.mlkem_m), x25519: hex(r.x25519), cpace: hex(r.cpace) });
const TAMPER = /tamper|did not match/i;

test('a wrong code reads as "did not match" on our side and, from its abort, on the peer\'s', () => {
  const { state } = hs.start(vectors.code, vectors.sid, rnd(vectors.randomness_a));
  const b = hs.respond(vectors.wrong_code, vectors.sid, vectors.hello, rnd(vectors.randomness_b));
  let err;
  try { hs.finish(state, b.reply); } catch (e) { err = e; }
  assert.match(explain(err), /codes did not match/);
  assert.equal(abortReason(err), 'confirmation');
  assert.match(peerStopped(abortReason(err), { sealed: false }), /codes did not match/);
});

test('a browser without WebCrypto fails locally: no word of tampering on either side', () => {
  const subtle = Object.getOwnPropertyDescriptor(globalThis.crypto, 'subtle')
    ?? Object.getOwnPropertyDescriptor(Object.getPrototypeOf(globalThis.crypto), 'subtle');
  Object.defineProperty(globalThis.crypto, 'subtle', { value: undefined, configurable: true });
  let err;
  try {
    const { state } = hs.start(vectors.code, vectors.sid, rnd(vectors.randomness_a));
    const b = hs.respond(vectors.code, vectors.sid, vectors.hello, rnd(vectors.randomness_b));
    hs.finish(state, b.reply); // builds the session: imports the keys
  } catch (e) {
    err = e;
  } finally {
    delete globalThis.crypto.subtle;
    if (!globalThis.crypto.subtle) Object.defineProperty(globalThis.crypto, 'subtle', subtle);
  }
  assert.ok(err instanceof TypeError, String(err));
  assert.equal(abortReason(err), 'local');
  assert.doesNotMatch(explain(err), TAMPER);
  assert.match(explain(err), /problem on this device, not with the code/);
  for (const sealed of [false, true]) {
    assert.doesNotMatch(peerStopped('local', { sealed }), TAMPER);
    assert.match(peerStopped('local', { sealed }), /problem on its side/);
  }
  assert.equal(typeof globalThis.crypto.subtle.importKey, 'function', 'WebCrypto restored for the other tests');
});

test('every check the handshake makes on the peer\'s messages names a cause; an unknown reason is shown neutralised', () => {
  for (const kind of ['confirmation', 'downgrade', 'out_of_turn', 'replay', 'tampered', 'malformed']) {
    const e = new hs.HandshakeError(kind, `a ${kind} failure`);
    assert.equal(abortReason(e), kind);
    assert.match(explain(e), TAMPER, kind);
    assert.match(peerStopped(kind, { sealed: false }), TAMPER, kind);
  }
  const shown = peerStopped('\u202eevil\u0007'.padEnd(500, 'x'), { sealed: true });
  assert.doesNotMatch(shown, /[\u202e\u0007]/);
  assert.ok(shown.length < 200, shown);
  assert.doesNotMatch(shown, TAMPER);
  assert.match(peerStopped(undefined, { sealed: false }), /no reason given/);
  assert.match(peerStopped({ toString: () => 'object' }, { sealed: false }), /object/);
});

test('a room session its person ended before any file moved reads as a cancel, not a fault', () => {
  for (const sealed of [false, true]) {
    const shown = peerStopped('cancelled', { sealed });
    assert.match(shown, /cancelled before any file was sent/);
    assert.doesNotMatch(shown, TAMPER);
  }
});
