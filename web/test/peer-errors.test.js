// What ./peer.js says when the server refuses a resume (Node, a scripted
// server): a room's invitation that is no longer valid is said as such; a
// 1:1 code's seat whose grace ran out is not an "invitation".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Peer } from '../src/peer.js';

class FakeWS {
  static OPEN = 1;
  static all = [];
  constructor() { this.readyState = 1; this.sent = []; FakeWS.all.push(this); }
  send(text) { this.sent.push(JSON.parse(text)); }
  server(m) { this.onmessage({ data: JSON.stringify(m) }); }
  close() {}
}
const WELCOME = { type: 'welcome', version: 1, server_id: 't', limits: { resume_grace_secs: 120 } };
const REFUSED = { type: 'error', code: 'invalid_resume_token', message: 'unknown or expired resume token', retryable: false };

test('a 1:1 seat refused on resume is not called an invitation', async () => {
  FakeWS.all = [];
  const failed = [];
  const p = new Peer({ url: 'ws://x/signal', signalOptions: { WebSocket: FakeWS }, hooks: { failed: (t) => failed.push(t) } });
  const c = p.connect();
  FakeWS.all[0].server(WELCOME);
  await c;
  p.create();
  FakeWS.all[0].server({ type: 'created', session: 's', nameplate: '7', seat: 0, resume_token: 'tok', expires_in_secs: 600 });
  FakeWS.all[0].server(REFUSED);
  assert.equal(failed.length, 1);
  assert.doesNotMatch(failed[0], /invitation/i);
  assert.match(failed[0], /new code/);
});

test('a room invitation refused on resume says it is no longer valid', async () => {
  FakeWS.all = [];
  const failed = [];
  const p = new Peer({ url: 'ws://x/signal', oneShot: true, signalOptions: { WebSocket: FakeWS }, hooks: { failed: (t) => failed.push(t) } });
  const seated = p.seat({ token: 'tok', role: 'B', code: 'c', sid: 's' });
  FakeWS.all[0].server(WELCOME);
  await seated;
  FakeWS.all[0].server(REFUSED);
  assert.deepEqual(failed, ['The invitation is no longer valid: it expired, or the session ended.']);
});
