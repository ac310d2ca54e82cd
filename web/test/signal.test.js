// The /signal client (web/src/signal.js) against a scripted server: a fake
// WebSocket the test drives frame by frame.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SignalClient } from '../src/signal.js';

class FakeWS {
  static OPEN = 1;
  static all = [];
  static onCreate = null;
  constructor(url) {
    this.url = url;
    this.readyState = 1;
    this.sent = [];
    FakeWS.all.push(this);
    FakeWS.onCreate?.(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  server(m) { this.onmessage({ data: JSON.stringify(m) }); }
  drop(code = 1006) { this.readyState = 3; this.onclose({ code, reason: '' }); }
  close() { this.drop(1000); }
}
globalThis.WebSocket = FakeWS;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const WELCOME = { type: 'welcome', version: 1, server_id: 't', limits: { resume_grace_secs: 120 } };
const types = (ws) => ws.sent.map((f) => f.type);

async function seated(events = []) {
  FakeWS.all = [];
  FakeWS.onCreate = null;
  const c = new SignalClient('ws://x/signal', { WebSocket: FakeWS, delaysMs: [5, 10, 20] });
  for (const t of ['paired', 'resumed', 'error', 'retrying', 'closed', 'left', 'message', 'reconnecting']) c.on(t, (m) => events.push([t, m]));
  const p = c.connect();
  FakeWS.all[0].server(WELCOME);
  await p;
  c.create();
  FakeWS.all[0].server({ type: 'created', session: 's', nameplate: '7', seat: 0, resume_token: 'tok', expires_in_secs: 600 });
  return c;
}

async function reconnected(c) {
  const n = FakeWS.all.length;
  FakeWS.all.at(-1).drop();
  for (let i = 0; i < 100 && FakeWS.all.length === n; i++) await sleep(10);
  assert.equal(FakeWS.all.length, n + 1, 'reconnected');
  return FakeWS.all.at(-1);
}

test('after a reconnect nothing is sent before resumed: no no_session, no bad_sequence', async () => {
  const c = await seated();
  FakeWS.all[0].server({ type: 'paired', session: 's', seat: 0, ice_servers: [] });
  c.send({ n: 1 });
  FakeWS.all[0].server({ type: 'message', seq: 1, body: '{}' });
  const ws = await reconnected(c);
  // Open, not yet welcomed: the page goes on sending and acknowledging.
  c.send({ n: 2 });
  ws.onmessage({ data: JSON.stringify({ type: 'message', seq: 2, body: '{}' }) });
  assert.deepEqual(ws.sent, [], 'nothing before welcome');
  ws.server(WELCOME);
  assert.deepEqual(types(ws), ['resume'], 'only resume before resumed');
  assert.equal(ws.sent[0].last_seq, 2);
  ws.server({ type: 'resumed', session: 's', seat: 0, paired: true, last_received: 0, resume_token: 'tok' });
  const sends = ws.sent.filter((f) => f.type === 'send').map((f) => f.seq);
  assert.deepEqual(sends, [1, 2], 'unacknowledged sends resent in order after resumed');
  assert.ok(ws.sent.findIndex((f) => f.type === 'send') > 0);
});

test('resumed {paired: true} is the pairing when the page missed paired', async () => {
  const events = [];
  const c = await seated(events);
  const ws = await reconnected(c);
  ws.server(WELCOME);
  const ice = [{ urls: ['turn:127.0.0.1:3478'], username: 'u', credential: 'c' }];
  ws.server({ type: 'resumed', session: 's', seat: 0, paired: true, last_received: 0, resume_token: 'tok', ice_servers: ice });
  const paired = events.filter(([t]) => t === 'paired');
  assert.equal(paired.length, 1);
  assert.deepEqual(paired[0][1].ice_servers, ice);
  // Already paired: a later resumed is not a second pairing.
  const ws2 = await reconnected(c);
  ws2.server(WELCOME);
  ws2.server({ type: 'resumed', session: 's', seat: 0, paired: true, last_received: 0, resume_token: 'tok', ice_servers: ice });
  assert.equal(events.filter(([t]) => t === 'paired').length, 1);
});

test('presence_unavailable is retried with backoff; too_many_failed_joins reaches the page', async () => {
  const events = [];
  FakeWS.all = [];
  const c = new SignalClient('ws://x/signal', { WebSocket: FakeWS, delaysMs: [5, 10, 20] });
  for (const t of ['error', 'retrying']) c.on(t, (m) => events.push([t, m.code]));
  const p = c.connect();
  const ws = FakeWS.all[0];
  ws.server(WELCOME);
  await p;
  c.create();
  ws.server({ type: 'error', code: 'presence_unavailable', message: 'redis down', retryable: true });
  await sleep(50);
  assert.deepEqual(types(ws), ['create', 'create'], 'create sent again after a delay');
  assert.deepEqual(events, [['retrying', 'presence_unavailable']]);
  c.join('7');
  ws.server({ type: 'error', code: 'too_many_failed_joins', message: 'slow down', retryable: true });
  await sleep(50);
  assert.deepEqual(events.at(-1), ['error', 'too_many_failed_joins'], 'the page decides (shows it, lets the user retry)');
  assert.equal(types(ws).filter((t) => t === 'join').length, 1, 'not retried behind the user\'s back');
});

test('a dropped connection is retried for the announced grace, not ~61 s', { timeout: 20_000 }, async () => {
  const events = [];
  let clock = 0;
  FakeWS.all = [];
  FakeWS.onCreate = null;
  const c = new SignalClient('ws://x/signal', { WebSocket: FakeWS, now: () => clock, delaysMs: [5, 10, 20] });
  c.on('closed', (m) => events.push(m));
  const p = c.connect();
  FakeWS.all[0].server({ ...WELCOME, limits: { resume_grace_secs: 120 } });
  await p;
  c.create();
  FakeWS.all[0].server({ type: 'created', session: 's', nameplate: '7', seat: 0, resume_token: 'tok', expires_in_secs: 600 });
  // Every reconnection fails; each attempt takes 10 s of the clock.
  FakeWS.onCreate = (ws) => setTimeout(() => { clock += 10_000; ws.drop(); }, 1);
  FakeWS.all[0].drop();
  for (let i = 0; i < 400 && !events.length; i++) await sleep(10);
  FakeWS.onCreate = null;
  assert.equal(events.length, 1, 'gave up once');
  assert.ok(clock >= 110_000, `kept trying for the grace period (gave up at ${clock / 1000} s)`);
  assert.ok(clock <= 130_000, `but not much longer (${clock / 1000} s)`);
});

test('leave after the peer left is not an error (no_session or left)', async () => {
  const events = [];
  const c = await seated(events);
  const ws = FakeWS.all[0];
  ws.server({ type: 'peer_left', reason: 'left' });
  c.leave();
  assert.equal(ws.sent.at(-1).type, 'leave');
  ws.server({ type: 'error', code: 'no_session', message: 'no seat', retryable: false });
  assert.deepEqual(events.filter(([t]) => t === 'error'), [], 'no error reaches the page');
  c.leave();
  assert.equal(types(ws).filter((t) => t === 'leave').length, 1, 'leave is sent once');
});

test('rate_limited and mailbox_full: unacknowledged sends go out again after a pause', async () => {
  const events = [];
  const c = await seated(events);
  const ws = FakeWS.all[0];
  ws.server({ type: 'paired', session: 's', seat: 0, ice_servers: [] });
  c.send({ n: 1 });
  c.send({ n: 2 });
  ws.server({ type: 'ack', seq: 1 });
  ws.server({ type: 'error', code: 'rate_limited', message: 'slow down', retryable: true });
  await sleep(100);
  assert.deepEqual(ws.sent.filter((f) => f.type === 'send').map((f) => f.seq), [1, 2, 2], 'seq 2 (dropped) sent again');
  ws.server({ type: 'error', code: 'mailbox_full', message: 'peer behind', retryable: true });
  await sleep(100);
  assert.deepEqual(ws.sent.filter((f) => f.type === 'send').map((f) => f.seq), [1, 2, 2, 2]);
  assert.deepEqual(events.filter(([t]) => t === 'error'), [], 'handled without stopping the page');
});

test('a server that sends a seq that is not a positive integer cannot break the duplicate check or the resume', async () => {
  const events = [];
  const c = await seated(events);
  const ws0 = FakeWS.all[0];
  ws0.server({ type: 'paired', session: 's', seat: 0, ice_servers: [] });
  for (const seq of ['x', null, -1, 1.5, 0]) ws0.server({ type: 'message', seq, body: '{}' });
  ws0.server({ type: 'message', seq: 1, body: '{"n":1}' });
  ws0.server({ type: 'message', seq: 1, body: '{"n":1}' });
  const delivered = events.filter(([t]) => t === 'message').map(([, m]) => m.seq);
  assert.deepEqual(delivered, [1], 'only the one well-formed message, once');
  // The resume carries the last good seq, and a resumed without a usable
  // last_received resends everything unacknowledged (the server drops
  // what it already holds).
  c.send({ n: 'a' });
  const ws = await reconnected(c);
  ws.server(WELCOME);
  assert.equal(ws.sent[0].type, 'resume');
  assert.equal(ws.sent[0].last_seq, 1);
  ws.server({ type: 'resumed', session: 's', seat: 0, paired: true, resume_token: 'tok' });
  assert.deepEqual(ws.sent.slice(1).map((f) => f.type), ['send'], 'the unacknowledged send went out again');
});
