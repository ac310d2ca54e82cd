// SignalClient.seat (web/src/signal.js) against a real tallow-server: a
// room invitation's two seats are taken with `resume {token, last_seq: 0}`
// on connections of their own, count as paired (with the ice_servers of
// `resumed`), and carry the peer handshake over the room's share code; a
// member with the wrong words fails it; a taken seat survives a drop.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SignalClient } from '../src/signal.js';
import { RoomClient } from '../src/room.js';
import { PeerSession } from '../src/session.js';
import { HandshakeError } from '../src/handshake.js';
import { NodeWebSocket, signalUrl, startServer, waitUntil } from './harness.js';

let server;
let url;

before(async () => {
  server = await startServer({ TALLOW_MAX_ROOMS_PER_IP: '100', TALLOW_MAX_UPGRADES_PER_IP_PER_MIN: '1000' });
  url = signalUrl(server);
});

after(() => server?.stop());

const open = [];
after(() => { for (const w of open) w.terminate(); });

/** The `ws` WebSocket, recording what the client sends on each connection. */
class Recorded extends NodeWebSocket {
  constructor(...args) {
    super(...args);
    this.frames = [];
    open.push(this);
  }

  send(text) {
    this.frames.push(JSON.parse(text));
    super.send(text);
  }
}

const until = async (what, fn, ms = 5000) => assert.ok(await waitUntil(fn, ms, 20), what);

function signal() {
  const c = new SignalClient(url, { WebSocket: Recorded, delaysMs: [50, 100, 200] });
  c.seen = [];
  for (const t of ['paired', 'resumed', 'message', 'peer_away', 'peer_back', 'error', 'reconnecting', 'closed']) c.on(t, (m) => c.seen.push([t, m]));
  return c;
}
const got = (c, type) => c.seen.filter(([t]) => t === type).map(([, m]) => m);

/** Ada's room with Bob in it (Bob typed `bobCode`), and Ada's invitation of Bob. */
async function invited(bobCode = (code) => code) {
  const ada = new RoomClient(url, { WebSocket: NodeWebSocket });
  await ada.connect();
  await ada.create('Ada');
  const bob = new RoomClient(url, { WebSocket: NodeWebSocket });
  let invite = null;
  bob.on('invite', (m) => { invite = m; });
  await bob.connect();
  await bob.join(bobCode(ada.code), 'Bob');
  const [mine] = await ada.invite([bob.you]);
  await until('Bob is invited', () => invite);
  return { ada, bob, mine, theirs: invite };
}

/** Runs the handshake between seat 0 (`a`, role A) and seat 1 (`b`). */
async function handshake(a, b, codeA, codeB, sid) {
  const pa = new PeerSession('A', codeA, sid);
  const pb = new PeerSession('B', codeB, sid);
  a.hello(pa.start());
  await until('B gets hello', () => got(b, 'message').length === 1);
  const reply = pb.receive(JSON.parse(got(b, 'message')[0].body));
  b.send(reply.send);
  await until('A gets the reply', () => got(a, 'message').length === 1);
  const done = pa.receive(JSON.parse(got(a, 'message')[0].body));
  a.send(done.send);
  await until('B gets confirm', () => got(b, 'message').length === 2);
  pb.receive(JSON.parse(got(b, 'message')[1].body));
  return { pa, pb };
}

test('both seats of an invitation: resume with last_seq 0, paired with ice servers, the handshake over the room code', { timeout: 30_000 }, async () => {
  const { ada, bob, mine, theirs } = await invited();
  assert.equal(mine.session, theirs.session);
  const a = signal();
  await a.connect();
  a.seat(mine.resume_token);
  assert.throws(() => a.seat(mine.resume_token), /already holds a seat/);
  await until('A paired', () => got(a, 'paired').length === 1);
  const wsA = a.ws;
  assert.deepEqual(wsA.frames[0], { type: 'resume', token: mine.resume_token, last_seq: 0 }, 'the first frame takes the seat');
  const ice = got(a, 'paired')[0].ice_servers;
  assert.ok(Array.isArray(ice) && ice.length > 0, 'the ice servers of resumed');
  assert.ok(ice.some((s) => [].concat(s.urls).some((u) => u.startsWith('turn:')) && s.username && s.credential));
  assert.equal(got(a, 'resumed')[0].seat, 0);
  await until('Bob has not come yet', () => got(a, 'peer_away').length === 1);

  const b = signal();
  await b.connect();
  // Frames sent before `resumed` wait: nothing but the resume goes first.
  b.seat(theirs.resume_token);
  await until('B paired', () => got(b, 'paired').length === 1);
  assert.equal(got(b, 'resumed')[0].seat, 1);
  assert.deepEqual(b.ws.frames[0], { type: 'resume', token: theirs.resume_token, last_seq: 0 });
  await until('A hears Bob came', () => got(a, 'peer_back').length === 1);

  const { pa, pb } = await handshake(a, b, ada.code, bob.code, mine.session);
  assert.deepEqual(pa.session.words, pb.session.words, 'the same verification words');
  assert.equal(pa.session.words.length, 4);

  // Bob's connection drops after the handshake: he resumes his seat with
  // the last seq he processed, and what Ada sent meanwhile arrives once.
  const sealed = await pa.session.seal('while you were away');
  b.ws.terminate();
  a.send(sealed);
  await until('B resumed', () => got(b, 'resumed').length === 2, 10_000);
  assert.deepEqual(b.ws.frames[0], { type: 'resume', token: theirs.resume_token, last_seq: 2 });
  await until('the message arrives', () => got(b, 'message').length === 3);
  const text = new TextDecoder().decode(await pb.session.open(JSON.parse(got(b, 'message')[2].body)));
  assert.equal(text, 'while you were away');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(got(b, 'message').length, 3, 'delivered once');
  a.leave();
  b.leave();
  for (const c of [ada, bob]) await c.leave();
});

test('a member who joined with the wrong words fails the handshake of every invitation', { timeout: 30_000 }, async () => {
  const { ada, bob, mine, theirs } = await invited((code) => code.replace(/-[a-z]+$/, '-zzz'));
  assert.notEqual(bob.code, ada.code);
  const a = signal();
  const b = signal();
  await a.connect();
  await b.connect();
  a.seat(mine.resume_token);
  b.seat(theirs.resume_token);
  await until('both paired', () => got(a, 'paired').length && got(b, 'paired').length);
  await assert.rejects(handshake(a, b, ada.code, bob.code, mine.session), (e) => e instanceof HandshakeError && e.kind === 'confirmation');
  a.leave();
  b.leave();
  for (const c of [ada, bob]) await c.leave();
});

test('a hello sent right after seat() waits for resumed, then goes as seq 1', { timeout: 20_000 }, async () => {
  const { ada, bob, mine, theirs } = await invited();
  const a = signal();
  await a.connect();
  const order = [];
  const receive = a.ws.onmessage;
  a.ws.onmessage = (e) => {
    if (JSON.parse(e.data).type === 'resumed') order.push('in resumed');
    receive(e);
  };
  const send = a.ws.send.bind(a.ws);
  a.ws.send = (text) => { order.push(`out ${JSON.parse(text).type}`); send(text); };
  a.seat(mine.resume_token);
  a.hello(new PeerSession('A', ada.code, mine.session).start());
  const b = signal();
  await b.connect();
  b.seat(theirs.resume_token);
  await until('B gets the hello', () => got(b, 'message').length === 1);
  assert.deepEqual(order.slice(0, 3), ['out resume', 'in resumed', 'out hello']);
  assert.equal(JSON.parse(got(b, 'message')[0].body).t, 'hello');
  assert.deepEqual(got(a, 'error'), [], 'nothing refused');
  a.leave();
  b.leave();
  for (const c of [ada, bob]) await c.leave();
});

test('a made-up invitation token is refused', { timeout: 10_000 }, async () => {
  const c = signal();
  await c.connect();
  c.seat('00'.repeat(32));
  await until('refused', () => got(c, 'error').some((m) => m.code === 'invalid_resume_token'));
  assert.equal(got(c, 'paired').length, 0);
});
