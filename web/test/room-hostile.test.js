// The room client (web/src/room.js) against a scripted, hostile server: a
// fake WebSocket the test drives frame by frame. The server is the
// adversary of the peers (docs/PROTOCOL.md, "Rooms"): whatever it sends, a
// room's kind stays the one this client entered (a named room's sessions
// take the room's secret code, a nearby one's the public `nearby`), a room
// that ended is over, and an invitation refused part-way hands over the
// sessions that were made, each member once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomClient } from '../src/room.js';

class FakeWS {
  static OPEN = 1;
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 1;
    this.sent = [];
    FakeWS.all.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  server(m) { this.onmessage({ data: JSON.stringify(m) }); }
  drop(code = 1006) { this.readyState = 3; this.onclose({ code, reason: '' }); }
  close(code = 1000) { this.drop(code); }
}
const WELCOME = { type: 'welcome', version: 1, server_id: 't', limits: { resume_grace_secs: 120 } };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const state = (over = {}) => ({
  type: 'room_state', room: 'r1', kind: 'named', name: '', owner: 1, you: 2, max_members: 10, expires_in_secs: 3600,
  members: [{ member: 1, name: 'Ada', present: true }, { member: 2, name: 'Bob', present: true }, { member: 3, name: 'Cy', present: true }], ...over,
});

/** Bob in Ada's named room (over the fake server); `seen` records the events. */
async function joined() {
  FakeWS.all = [];
  const c = new RoomClient('ws://x/signal', { WebSocket: FakeWS, delaysMs: [5, 10, 20] });
  c.seen = [];
  for (const t of ['change', 'invite', 'closed', 'left', 'error']) c.on(t, (m) => c.seen.push([t, m]));
  const p = c.connect();
  const ws = FakeWS.all[0];
  ws.server(WELCOME);
  await p;
  const j = c.join('417-bal-kir-mos', 'Bob');
  ws.server({ type: 'room_joined', room: 'r1', kind: 'named', member: 2, resume_token: 'tok' });
  ws.server(state());
  await j;
  return { c, ws };
}

test('a server cannot turn a named room into a nearby one, whose sessions take the public code', async () => {
  const { c, ws } = await joined();
  assert.equal(c.kind, 'named');
  assert.equal(c.code, '417-bal-kir-mos');
  // The server says the room is nearby now, then invites: the page would
  // take the invitation with the code `nearby`, which the server knows.
  ws.server(state({ kind: 'nearby' }));
  ws.server({ type: 'room_resumed', room: 'r1', kind: 'nearby', member: 2, resume_token: 'tok' });
  assert.equal(c.kind, 'named', 'the kind is the one this client entered');
  assert.equal(c.code, '417-bal-kir-mos');

  // And a nearby membership stays nearby (no code) whatever the server says.
  FakeWS.all = [];
  const n = new RoomClient('ws://x/signal', { WebSocket: FakeWS });
  const p = n.connect();
  FakeWS.all[0].server(WELCOME);
  await p;
  const j = n.nearby('laptop');
  FakeWS.all[0].server({ type: 'room_joined', room: 'n1', kind: 'named', member: 1, resume_token: 't' });
  FakeWS.all[0].server(state({ room: 'n1', kind: 'named', you: 1, owner: null }));
  await j;
  assert.equal(n.kind, 'nearby');
});

test('once a room ended, what the server sends about it is not acted on', async () => {
  for (const end of [{ type: 'room_closed', reason: 'closed' }, { type: 'room_left', reason: 'gone' }]) {
    const { c, ws } = await joined();
    ws.server(end);
    assert.equal(c.done, true);
    const before = c.seen.length;
    ws.server({ type: 'room_invite', from: 3, session: 's9', resume_token: 'x' });
    ws.server({ type: 'room_member_joined', member: 7, name: 'Mallory' });
    ws.server(state({ members: [{ member: 9, name: 'Mallory', present: true }] }));
    assert.deepEqual(c.seen.slice(before), [], `nothing after ${end.type}: no invitation taken, no member shown`);
    assert.equal(c.members.has(7), false);
    assert.equal(c.members.has(9), false);
  }
});

test('an invitation refused part-way hands over the sessions made', async () => {
  const { c, ws } = await joined();
  const p = c.invite([1, 3]);
  assert.deepEqual(ws.sent.at(-1), { type: 'room_invite', to: [1, 3] });
  ws.server({ type: 'room_invited', to: 1, session: 's1', resume_token: 'a1' });
  ws.server({ type: 'error', code: 'too_many_sessions', message: 'too many sessions', retryable: true });
  const e = await p.then(() => null, (x) => x);
  assert.ok(e, 'refused');
  assert.equal(e.code, 'too_many_sessions');
  assert.deepEqual(e.delivered?.map((i) => i.to), [1], 'the session made for member 1 is not lost');
});

test('a retried invitation asks only for the members not invited yet', async () => {
  const { c, ws } = await joined();
  const p = c.invite([1, 3]);
  ws.server({ type: 'room_invited', to: 1, session: 's1', resume_token: 'a1' });
  ws.server({ type: 'error', code: 'presence_unavailable', message: 'store down', retryable: true });
  await sleep(50);
  const again = ws.sent.filter((f) => f.type === 'room_invite');
  assert.equal(again.length, 2, 'retried once');
  assert.deepEqual(again[1].to, [3], 'member 1 has its session: not a second one');
  ws.server({ type: 'room_invited', to: 3, session: 's3', resume_token: 'a3' });
  assert.deepEqual((await p).map((i) => [i.to, i.session]), [[1, 's1'], [3, 's3']]);
});

test('invitations the server makes up or repeats are not handed over', async () => {
  const { c, ws } = await joined();
  const p = c.invite([1, 3]);
  // One for a member not asked, one twice: neither counts.
  ws.server({ type: 'room_invited', to: 9, session: 's9', resume_token: 'a9' });
  ws.server({ type: 'room_invited', to: 1, session: 's1', resume_token: 'a1' });
  ws.server({ type: 'room_invited', to: 1, session: 's1b', resume_token: 'a1b' });
  ws.server({ type: 'room_invited', to: 3, session: 's3', resume_token: 'a3' });
  assert.deepEqual((await p).map((i) => [i.to, i.session]), [[1, 's1'], [3, 's3']]);
});

test('a display name the server would refuse is refused here first', async () => {
  const { displayName } = await import('../src/room.js');
  for (const bad of ['Bob\u2028x', 'Bob\u2029x', 'a\u206Ab', 'a\u206Fb', '\u061Cx']) assert.equal(displayName(bad), null, JSON.stringify(bad));
  // What it accepts, it does not refuse: emoji sequences and scripts that
  // need the zero-width joiners.
  for (const good of ['\u{1F469}\u200D\u{1F4BB} Ada', 'می\u200Cخواهم']) assert.equal(displayName(good), good, JSON.stringify(good));
});

test('a member who left is still known by name, for an invitation that reaches us after it left', async () => {
  const { c, ws } = await joined();
  ws.server({ type: 'room_member_left', member: 1, reason: 'left' });
  assert.equal(c.members.has(1), false);
  assert.equal(c.member(1)?.name, 'Ada');
  ws.server(state({ members: [{ member: 2, name: 'Bob', present: true }] }));
  assert.equal(c.member(3)?.name, 'Cy', 'one a full state no longer lists');
  assert.equal(c.member(2)?.name, 'Bob');
});

test('a malformed member list is not a crash: what is not a member is left out', async () => {
  const { c, ws } = await joined();
  for (const members of [5, { member: 1 }, 'x', null]) {
    assert.doesNotThrow(() => ws.server(state({ members })), JSON.stringify(members));
  }
  ws.server(state({ members: [null, 7, { member: 'x' }, { member: 1, name: 'Ada', present: true }] }));
  assert.deepEqual([...c.members.keys()], [1]);
  // And the client still answers the room as before.
  ws.server({ type: 'room_member_joined', member: 4, name: 'Dee' });
  assert.equal(c.members.get(4)?.name, 'Dee');
});
