// The room client (web/src/room.js) against a real tallow-server: create,
// join by code, the member list with presence and owner, a dropped
// connection taken back with the room token, invitations both ways,
// refusals, nearby discovery, and a membership whose grace ran out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RoomClient, RoomError, displayName, roomCode } from '../src/room.js';
import { NodeWebSocket, cuttableProxy, signalUrl, startServer, waitUntil } from './harness.js';

let server;

before(async () => {
  server = await startServer({ TURN_ENABLED: 'false', TALLOW_MAX_ROOMS_PER_IP: '100', TALLOW_MAX_UPGRADES_PER_IP_PER_MIN: '1000' });
});

after(() => server?.stop());

const clients = [];
function client(url = signalUrl(server)) {
  const c = new RoomClient(url, { WebSocket: NodeWebSocket, delaysMs: [50, 100, 200, 400] });
  c.seen = [];
  for (const t of ['change', 'invite', 'closed', 'left', 'reconnecting', 'resumed', 'error']) c.on(t, (m) => c.seen.push([t, m]));
  clients.push(c);
  return c;
}
after(() => { for (const c of clients) c.ws?.terminate(); });

const until = async (what, fn, ms = 5000) => assert.ok(await waitUntil(fn, ms, 20), what);
const names = (c) => [...c.members.values()].map((m) => [m.member, m.name, m.present]);

test('display names and room codes are checked before they reach the server', () => {
  assert.equal(displayName('  Ada  '), 'Ada');
  assert.equal(displayName(''), null);
  assert.equal(displayName('x'.repeat(41)), null);
  assert.equal(displayName('é'.repeat(40)), 'é'.repeat(40), 'counted in characters, not bytes');
  assert.equal(displayName('evil\u202Egnp.exe'), null, 'no direction overrides');
  assert.equal(displayName('a\nb'), null);
  assert.equal(roomCode(' 417-Bal-Kir-Mos '), '417-bal-kir-mos');
  assert.equal(roomCode('417'), null);
  assert.equal(roomCode('room=417-a-b-c'), null);
});

test('create, join by code, presence, owner, a dropped connection resumed, leave and close', { timeout: 30_000 }, async () => {
  const ada = client();
  await ada.connect();
  await ada.create('Ada', { name: 'team' });
  assert.match(ada.code, /^\d{3,}-[a-z]+-[a-z]+-[a-z]+$/, 'nameplate of three digits or more, then three words');
  assert.ok(ada.code.startsWith(`${ada.nameplate}-`));
  assert.equal(ada.kind, 'named');
  assert.equal(ada.name, 'team');
  assert.equal(ada.you, 1);
  assert.equal(ada.owner, 1);
  assert.ok(ada.expiresAt > Date.now());
  assert.deepEqual(names(ada), [[1, 'Ada', true]]);

  const bob = client();
  await bob.connect();
  await bob.join(ada.code.toUpperCase(), 'Bob');
  assert.equal(bob.code, ada.code, 'the code, words included, is kept for the handshakes');
  assert.equal(bob.you, 2);
  assert.equal(bob.owner, 1);
  assert.equal(bob.name, 'team');
  assert.deepEqual(names(bob), [[1, 'Ada', true], [2, 'Bob', true]]);
  await until('Ada sees Bob', () => ada.members.has(2));
  const cy = client();
  await cy.connect();
  await cy.join(ada.code, 'Cy');
  await until('everyone sees three', () => ada.members.size === 3 && bob.members.size === 3);
  assert.deepEqual(cy.others().map((m) => m.name), ['Ada', 'Bob']);

  // Bob's network drops: the others see him away, then back, with nothing
  // asked of the page; his list is whole again.
  bob.ws.terminate();
  await until('Ada sees Bob away', () => ada.members.get(2)?.present === false);
  await until('Bob resumed', () => bob.seen.some(([t]) => t === 'resumed'));
  await until('Ada sees Bob back', () => ada.members.get(2)?.present === true);
  assert.equal(bob.you, 2, 'the same membership');
  assert.deepEqual(names(bob), [[1, 'Ada', true], [2, 'Bob', true], [3, 'Cy', true]]);

  // Refusals answer the request that caused them.
  await assert.rejects(cy.close(), (e) => e instanceof RoomError && e.code === 'not_room_owner');
  await assert.rejects(ada.invite([99]), (e) => e.code === 'unknown_member');
  const stranger = client();
  await stranger.connect();
  await assert.rejects(stranger.join(`9${ada.nameplate}9-bal-kir-mos`, 'Eve'), (e) => e.code === 'unknown_room');
  await assert.rejects(stranger.join('not-a-code', 'Eve'), (e) => e.code === 'bad_code');

  // The owner leaves: the longest-standing member owns the room now.
  await ada.leave();
  assert.deepEqual(ada.seen.at(-1), ['left', { type: 'room_left', reason: 'left' }]);
  await until('Bob owns the room', () => bob.owner === 2 && cy.owner === 2);
  await until('Ada is gone from the list', () => !bob.members.has(1) && !cy.members.has(1));
  await assert.rejects(ada.invite([2]), (e) => e.code === 'no_room', 'nothing more after leaving');

  // Bob closes it for everyone.
  await bob.close();
  await until('Cy hears it closed', () => cy.seen.some(([t, m]) => t === 'closed' && m.reason === 'closed'));
  assert.equal(cy.done, true);
  await assert.rejects(cy.invite([2]), (e) => e.code === 'no_room');
});

test('invitations: one session per member, each invitee told who opened it', { timeout: 20_000 }, async () => {
  const ada = client();
  await ada.connect();
  await ada.create('Ada');
  const bob = client();
  const cy = client();
  for (const [c, n] of [[bob, 'Bob'], [cy, 'Cy']]) {
    await c.connect();
    await c.join(ada.code, n);
  }
  await until('Ada sees both', () => ada.members.size === 3);
  const mine = await ada.invite([3, 2, 3]);
  assert.deepEqual(mine.map((i) => i.to), [2, 3], 'one per member, each once');
  for (const i of mine) {
    assert.match(i.session, /\S/);
    assert.match(i.resume_token, /\S/);
  }
  await until('both invited', () => bob.seen.some(([t]) => t === 'invite') && cy.seen.some(([t]) => t === 'invite'));
  const ib = bob.seen.find(([t]) => t === 'invite')[1];
  const ic = cy.seen.find(([t]) => t === 'invite')[1];
  assert.equal(ib.from, 1);
  assert.equal(ic.from, 1);
  assert.equal(ib.session, mine[0].session);
  assert.equal(ic.session, mine[1].session);
  assert.notEqual(ib.resume_token, mine[0].resume_token, 'each side its own seat');
  // Invitations the other way, and two requests in flight at once.
  const [[back], [again]] = await Promise.all([bob.invite([1]), bob.invite([3])]);
  assert.equal(back.to, 1);
  assert.equal(again.to, 3);
  await until('Ada invited by Bob', () => ada.seen.some(([t, m]) => t === 'invite' && m.from === 2));
  for (const c of [ada, bob, cy]) await c.leave();
});

test('nearby: clients behind one address see each other, with no code and no owner', { timeout: 20_000 }, async () => {
  const x = client();
  await x.connect();
  await x.nearby('laptop');
  assert.equal(x.kind, 'nearby');
  assert.equal(x.owner, null);
  assert.equal(x.code, null, 'nothing to share: the address is the meeting point');
  const y = client();
  await y.connect();
  await y.nearby('phone');
  assert.deepEqual(y.others().map((m) => m.name), ['laptop']);
  await until('x sees y', () => x.others().some((m) => m.name === 'phone'));
  const [inv] = await y.invite([x.you]);
  assert.equal(inv.to, x.you);
  await until('x invited', () => x.seen.some(([t, m]) => t === 'invite' && m.from === y.you));
  await assert.rejects(y.close(), (e) => e.code === 'not_room_owner');
  await y.leave();
  await until('x sees y leave', () => x.others().length === 0);
  await x.leave();
});

test('a membership whose connection stays down past the grace is reported left (timeout)', { timeout: 30_000 }, async () => {
  const short = await startServer({ TURN_ENABLED: 'false', TALLOW_RESUME_GRACE_SECS: '2', TALLOW_MAX_UPGRADES_PER_IP_PER_MIN: '1000' });
  const proxy = await cuttableProxy(new URL(short.base));
  try {
    const ada = client(signalUrl(short));
    await ada.connect();
    await ada.create('Ada');
    const bob = client(`${proxy.url.replace(/^http/, 'ws')}/signal`);
    await bob.connect();
    await bob.join(ada.code, 'Bob');
    await until('Ada sees Bob', () => ada.members.has(2));
    proxy.cut({ stayDown: true });
    await until('Bob gives up', () => bob.seen.some(([t, m]) => t === 'left' && m.reason === 'timeout'), 10_000);
    await until('Ada sees Bob leave (timeout)', () => !ada.members.has(2), 10_000);
    assert.ok(bob.seen.some(([t]) => t === 'reconnecting'));
    assert.equal(bob.done, true);
    await ada.leave();
  } finally {
    proxy.close();
    short.stop();
  }
});

test('an invitation refused part-way by the inviter\'s session quota hands over the sessions made', { timeout: 20_000 }, async () => {
  // Each invitation's two seats count against the inviter's address: with
  // 3, the first invitation fits and the second is refused.
  const tight = await startServer({ TURN_ENABLED: 'false', TALLOW_MAX_SESSIONS_PER_IP: '3', TALLOW_MAX_ROOMS_PER_IP: '100', TALLOW_MAX_UPGRADES_PER_IP_PER_MIN: '1000' });
  try {
    const ada = client(signalUrl(tight));
    await ada.connect();
    await ada.create('Ada');
    const others = [];
    for (const n of ['Bob', 'Cy']) {
      const c = client(signalUrl(tight));
      await c.connect();
      await c.join(ada.code, n);
      others.push(c);
    }
    await until('Ada sees both', () => ada.members.size === 3);
    const e = await ada.invite([2, 3]).then(() => null, (x) => x);
    assert.equal(e?.code, 'too_many_sessions');
    assert.deepEqual(e.delivered?.map((i) => i.to), [2], 'Bob\'s session was made, and Bob was invited to it');
    await until('Bob invited', () => others[0].seen.some(([t]) => t === 'invite'));
    assert.equal(others[0].seen.find(([t]) => t === 'invite')[1].session, e.delivered[0].session);
    for (const c of [ada, ...others]) await c.leave();
  } finally {
    tight.stop();
  }
});
