// The per-role handshake state machine (web/src/session.js): creator idle ->
// sent-hello -> session, joiner idle -> sent-reply -> session; every
// handshake message out of turn or after the session exists is refused, so a
// replaying server cannot make a second session (counters back at 0: one key,
// one nonce, two messages). Also: unsealed aborts, serialised sealing, big
// plaintexts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as hs from '../src/handshake.js';
import { PeerSession } from '../src/session.js';

const CODE = '12-kiwi-lemon-mango';
const SID = 'sid-1';
const outOfTurn = (e) => e instanceof hs.HandshakeError && e.kind === 'out_of_turn';

function pair() {
  const a = new PeerSession('A', CODE, SID);
  const b = new PeerSession('B', CODE, SID);
  const hello = a.start();
  const { send: reply } = b.receive(hello);
  const { send: confirm, session: sa } = a.receive(reply);
  const { session: sb } = b.receive(confirm);
  return { a, b, hello, reply, confirm, sa, sb };
}

test('creator: idle -> sent-hello -> session; joiner: idle -> sent-reply -> session', () => {
  const a = new PeerSession('A', CODE, SID);
  const b = new PeerSession('B', CODE, SID);
  assert.equal(a.state, 'idle');
  assert.equal(b.state, 'idle');
  const hello = a.start();
  assert.equal(hello.t, 'hello');
  assert.equal(a.state, 'sent-hello');
  const r = b.receive(hello);
  assert.equal(r.send.t, 'reply');
  assert.equal(r.session, undefined);
  assert.equal(b.state, 'sent-reply');
  const c = a.receive(r.send);
  assert.equal(c.send.t, 'confirm');
  assert.ok(c.session);
  assert.equal(a.state, 'session');
  const d = b.receive(c.send);
  assert.ok(d.session);
  assert.equal(d.send, undefined);
  assert.equal(b.state, 'session');
  assert.deepEqual(c.session.words, d.session.words);
});

test('a replayed reply or confirm after the session is refused, no second session', async () => {
  const { a, b, reply, confirm, sa, sb } = pair();
  assert.throws(() => a.receive(reply), outOfTurn);
  assert.throws(() => b.receive(confirm), outOfTurn);
  assert.equal(a.state, 'failed');
  assert.equal(b.state, 'failed');
  // The sessions built once keep their counters: nothing was rebuilt.
  assert.equal(a.session, sa);
  assert.equal(b.session, sb);
});

test('every handshake message in the wrong state is refused', () => {
  const { hello, reply, confirm } = pair();
  const cases = [
    // [role, how far to drive it, message]
    ['A', 'idle', hello], ['A', 'idle', reply], ['A', 'idle', confirm],
    ['A', 'sent-hello', hello], ['A', 'sent-hello', confirm],
    ['B', 'idle', reply], ['B', 'idle', confirm],
    ['B', 'sent-reply', hello], ['B', 'sent-reply', reply],
  ];
  for (const [role, at, msg] of cases) {
    const m = new PeerSession(role, CODE, SID);
    if (at === 'sent-hello') m.start();
    if (at === 'sent-reply') m.receive(hello);
    assert.throws(() => m.receive(msg), outOfTurn, `${role} in ${at} must refuse ${msg.t}`);
    assert.equal(m.state, 'failed');
    // Once failed, even the message that would have been right is refused.
    assert.throws(() => m.receive(role === 'A' ? reply : hello), outOfTurn);
  }
  const b = new PeerSession('B', CODE, SID);
  assert.throws(() => b.start(), outOfTurn, 'the joiner never sends hello');
  const a = new PeerSession('A', CODE, SID);
  a.start();
  assert.throws(() => a.start(), outOfTurn, 'hello is sent once');
});

test('every handshake message after the session exists is refused, on both sides', () => {
  for (const pick of ['hello', 'reply', 'confirm']) {
    const p = pair();
    assert.throws(() => p.a.receive(p[pick]), outOfTurn);
    const q = pair();
    assert.throws(() => q.b.receive(q[pick]), outOfTurn);
  }
});

test('a sealed message before the session is refused', async () => {
  const { sa } = pair();
  const m = await sa.seal('x');
  const b = new PeerSession('B', CODE, SID);
  await assert.rejects(b.open(m), outOfTurn);
});

test('a failed confirmation leaves the machine failed, not half-built', () => {
  const a = new PeerSession('A', CODE, SID);
  const b = new PeerSession('B', '12-kiwi-lemon-melon', SID);
  const { send: reply } = b.receive(a.start());
  assert.throws(() => a.receive(reply), (e) => e.kind === 'confirmation');
  assert.equal(a.state, 'failed');
  assert.equal(a.session, null);
});

test('unsealed abort: honoured before the session, not trusted after it', () => {
  const a = new PeerSession('A', CODE, SID);
  a.start();
  assert.deepEqual(a.receive({ t: 'abort', reason: 'confirmation' }), { abort: true });
  const { a: a2, b: b2 } = pair();
  assert.deepEqual(a2.receive({ t: 'abort', reason: 'x' }), { ignored: 'unsealed abort after the session' });
  assert.deepEqual(b2.receive({ t: 'abort' }), { ignored: 'unsealed abort after the session' });
  assert.equal(a2.state, 'session');
});

test('sealing is serialised: messages leave in counter order even when WebCrypto finishes out of order', async () => {
  const { a } = pair();
  const realSeal = a.session.seal.bind(a.session);
  let call = 0;
  // The first seal finishes last, as WebCrypto may do.
  a.session.seal = async (p) => {
    const delay = [60, 0, 20][call++] ?? 0;
    const m = await realSeal(p);
    await new Promise((r) => setTimeout(r, delay));
    return m;
  };
  const sent = [];
  const send = (m) => sent.push(m.n);
  await Promise.all([a.seal({ kind: 'x' }, send), a.seal({ kind: 'y' }, send), a.seal({ kind: 'z' }, send)]);
  assert.deepEqual(sent, [0, 1, 2]);
});

test('seal before the session exists is refused', async () => {
  const a = new PeerSession('A', CODE, SID);
  await assert.rejects(a.seal({ kind: 'x' }, () => {}), outOfTurn);
});

test('a sealed plaintext of 1 MB seals and opens (base64 without spreading arguments)', async () => {
  const { sa, sb } = pair();
  const big = 'x'.repeat(1 << 20);
  const m = await sa.seal(big);
  assert.equal(new TextDecoder().decode(await sb.open(m)), big);
});
