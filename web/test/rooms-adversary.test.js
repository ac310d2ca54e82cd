// Rooms in the browser with the server as the adversary (docs/PROTOCOL.md,
// "Rooms"): every /signal connection of a page goes through the test
// (playwright's WebSocket routing), which forwards the real tallow-server's
// frames and can hold, rewrite or make up its own, as a malicious server
// would. The room's words must never leave the page; an invitation arriving
// on a named room's connection is taken under the room's secret code,
// whatever the server says the room is; Cancel all reaches a recipient
// whose invitation was still on its way.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { NodeWebSocket, launch, newPage, ready, signalUrl, startServer, waitUntil } from './harness.js';
import { RoomClient } from '../src/room.js';
import { SignalClient } from '../src/signal.js';
import { PeerSession } from '../src/session.js';

let server;
let browser;

before(async () => {
  server = await startServer({
    TURN_PORT_RANGE: '44000-44499',
    TALLOW_MAX_ROOMS_PER_IP: '100',
    TALLOW_MAX_UPGRADES_PER_IP_PER_MIN: '1000',
    TALLOW_MAX_CONNECTIONS_PER_IP: '500',
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

const until = async (what, fn, ms = 10_000) => assert.ok(await waitUntil(fn, ms, 50), what);

/**
 * Routes every /signal connection of `page` through the test. Each
 * connection is { kind: 'room' | 'seat' | null (nothing sent yet), toPage(frame),
 * toServer(frame), lastState }; `onServer(frame, conn)` returns the frames to
 * deliver instead of the server's (default: it as is), `onClient` likewise
 * for the page's, and every frame the page sends is kept, as text, in
 * `log.sent`.
 */
async function route(page, { onServer, onClient } = {}) {
  const log = { sent: [], conns: [] };
  await page.routeWebSocket(/\/signal$/, (ws) => {
    const server = ws.connectToServer();
    const conn = {
      kind: null,
      lastState: null,
      toPage: (f) => ws.send(JSON.stringify(f)),
      toServer: (f) => server.send(JSON.stringify(f)),
    };
    log.conns.push(conn);
    ws.onMessage((text) => {
      log.sent.push(text);
      const f = JSON.parse(text);
      conn.kind ??= /^(room_|nearby_)/.test(f.type) ? 'room' : 'seat';
      for (const out of onClient ? onClient(f, conn) ?? [] : [f]) conn.toServer(out);
    });
    server.onMessage((text) => {
      const f = JSON.parse(text);
      if (f.type === 'room_state') conn.lastState = f;
      for (const out of onServer ? onServer(f, conn) ?? [] : [f]) conn.toPage(out);
    });
  });
  return log;
}

async function roomPage(name, setup) {
  const p = await newPage(browser, name, { setup });
  await ready(p, `${server.base}/?relay=1`);
  await p.waitForSelector('#room-create:not([disabled])');
  return p;
}

async function createRoom(p, name) {
  await p.fill('#display-name', name);
  await p.click('#room-create');
  await p.waitForSelector('#room:not([hidden])');
  return p.textContent('#room-code');
}

async function joinRoom(p, name, code) {
  await p.fill('#room-code-input', code);
  await p.fill('#display-name', name);
  await p.click('#room-join');
  await p.waitForSelector('#room:not([hidden])');
}

/** An invitation's seat 0 played from Node, as the server itself could:
 * runs the handshake as A with `code`; resolves to 'session' or the kind
 * of the error that stopped it. */
async function playInviter(token, sid, code) {
  const s = new SignalClient(signalUrl(server), { WebSocket: NodeWebSocket });
  const peer = new PeerSession('A', code, sid);
  const outcome = new Promise((resolve) => {
    s.on('paired', () => s.hello(peer.start()));
    s.on('message', (m) => {
      const body = JSON.parse(m.body);
      if (body.t === 'abort') {
        resolve(`abort ${body.reason}`);
        return;
      }
      if (body.t !== 'reply') return;
      try {
        const r = peer.receive(body);
        s.send(r.send);
        resolve('session');
      } catch (e) {
        // As a client would: say why, then leave.
        s.send({ t: 'abort', reason: e.kind ?? 'local' });
        s.leave();
        resolve(e.kind ?? String(e));
      }
    });
  });
  await s.connect();
  s.seat(token);
  return { outcome, signal: s };
}

test('a server that calls a named room nearby cannot have its invitations taken under the public code "nearby"', { timeout: 90_000 }, async () => {
  let room = null; // Ada's room connection
  const ada = await roomPage('Ada', (p) => route(p, {
    onServer: (f, conn) => {
      if (conn.kind === 'room') room = conn;
      return [f];
    },
  }));
  const code = await createRoom(ada, 'Ada');
  assert.ok(room, 'the room connection goes through the test');

  // A session the server can play both ends of: two Node members of the
  // nearby room behind this address; Mallory invites Dummy, and the seat
  // meant for Dummy goes to Ada's page instead.
  const mallory = new RoomClient(signalUrl(server), { WebSocket: NodeWebSocket });
  const dummy = new RoomClient(signalUrl(server), { WebSocket: NodeWebSocket });
  let theirs = null;
  dummy.on('invite', (m) => { theirs = m; });
  for (const [c, n] of [[mallory, 'Mallory'], [dummy, 'Dummy']]) {
    await c.connect();
    await c.nearby(n);
  }
  await until('Mallory sees Dummy', () => mallory.members.has(dummy.you));
  const [mine] = await mallory.invite([dummy.you]);
  await until('Dummy invited', () => theirs);

  // The malicious server: a member Bob, the room now "nearby", and an
  // invitation from Bob whose other seat the server plays with `nearby`.
  const bob = { member: 2, name: 'Bob', present: true };
  room.toPage({ type: 'room_member_joined', member: 2, name: 'Bob' });
  room.toPage({ ...room.lastState, kind: 'nearby', members: [...room.lastState.members, bob] });
  room.toPage({ type: 'room_invite', from: 2, session: theirs.session, resume_token: theirs.resume_token });
  const { outcome, signal } = await playInviter(mine.resume_token, mine.session, 'nearby');
  await ada.waitForSelector('.incoming', { timeout: 15_000 });
  const got = await Promise.race([outcome, new Promise((r) => setTimeout(() => r('nothing'), 20_000))]);
  assert.notEqual(got, 'session', 'the server sat in the middle: the page took its invitation under the code "nearby"');
  await ada.waitForSelector('.incoming[data-state="failed"]', { timeout: 20_000 });
  assert.match(await ada.textContent('.incoming .detail'), /codes did not match/);
  assert.equal(await ada.isVisible('.incoming .words-box'), false, 'no words of a session that does not exist');
  assert.ok(code);
  signal.leave();
  for (const c of [mallory, dummy]) await c.leave();
  assert.deepEqual(ada.problems, []);
  await ada.context().close();
});

test('Cancel all while the invitation is on its way reaches the recipient at once; the code never leaves the pages', { timeout: 120_000 }, async () => {
  // Ada's server holds back her room_invited until the test lets it go.
  const held = [];
  let hold = true;
  const adaLog = {};
  const ada = await roomPage('Ada', async (p) => Object.assign(adaLog, await route(p, {
    onServer: (f, conn) => {
      if (hold && f.type === 'room_invited') {
        held.push([f, conn]);
        return [];
      }
      return [f];
    },
  })));
  const bobLog = {};
  const bob = await roomPage('Bob', async (p) => Object.assign(bobLog, await route(p)));
  const code = await createRoom(ada, 'Ada');
  await joinRoom(bob, 'Bob', code);
  await ada.waitForFunction(() => document.querySelectorAll('#room-members li').length === 2);
  await ada.check('#room-members input[value="2"]');
  const file = randomBytes(300_000);
  await ada.setInputFiles('#room-file', { name: 'first.bin', mimeType: 'application/octet-stream', buffer: file });
  await until('the invitation was made', () => held.length === 1);
  assert.equal(await ada.getAttribute('.recipient[data-member="2"]', 'data-state'), 'inviting');
  await ada.click('.group .cancel-all');
  assert.equal(await ada.getAttribute('.recipient[data-member="2"]', 'data-state'), 'cancelled');
  await bob.waitForSelector('.incoming');
  hold = false;
  for (const [f, conn] of held) conn.toPage(f);
  // Bob hears it now, not when the server's grace for the seat runs out.
  await bob.waitForSelector('.incoming[data-state="cancelled"]', { timeout: 20_000 }).catch(async (e) => {
    console.log('DEBUG bob', await bob.evaluate(() => document.querySelector('.incoming').outerHTML));
    console.log('DEBUG ada sent', adaLog.sent.filter((t) => !t.includes('"ack"')).map((t) => t.slice(0, 150)));
    console.log('DEBUG bob sent', bobLog.sent.map((t) => t.slice(0, 150)));
    throw e;
  });
  assert.match(await bob.textContent('.incoming .state-text'), /Ada cancelled/);

  // The next send goes through, verified.
  await ada.setInputFiles('#room-file', { name: 'second.bin', mimeType: 'application/octet-stream', buffer: file });
  await bob.waitForSelector('.incoming[data-state="offered"] .accept:not([disabled])', { timeout: 30_000 });
  await bob.click('.incoming[data-state="offered"] .accept');
  await bob.waitForSelector('.incoming[data-state="done"]', { timeout: 30_000 });
  await ada.waitForSelector('.group[data-state="over"] .recipient[data-state="done"]', { timeout: 30_000 });

  // Not one frame either page sent holds the room's words.
  const words = code.split('-').slice(1).join('-');
  for (const [who, log] of [['Ada', adaLog], ['Bob', bobLog]]) {
    assert.ok(log.sent.length > 10, `${who}'s frames were recorded`);
    for (const text of log.sent) assert.ok(!text.includes(words), `${who} sent the room's words: ${text.slice(0, 200)}`);
  }
  for (const p of [ada, bob]) assert.deepEqual(p.problems, []);
  await ada.context().close();
  await bob.context().close();
});

test('a server that hands Ada\'s session with Bob to Cy, another member, does not get Bob\'s file offered to Cy', { timeout: 90_000 }, async () => {
  // Ada asks for Bob (2); the server invites Cy (3) instead and tells Ada
  // the session is Bob's. Cy knows the room's code: only the names bound
  // into the session tell her from Bob.
  const ada = await roomPage('Ada', (p) => route(p, {
    onClient: (f) => [f.type === 'room_invite' ? { ...f, to: f.to.map((t) => (t === 2 ? 3 : t)) } : f],
    onServer: (f) => [f.type === 'room_invited' && f.to === 3 ? { ...f, to: 2 } : f],
  }));
  const bob = await roomPage('Bob');
  const cy = await roomPage('Cy');
  const code = await createRoom(ada, 'Ada');
  await joinRoom(bob, 'Bob', code);
  await joinRoom(cy, 'Cy', code);
  await ada.waitForFunction(() => document.querySelectorAll('#room-members li').length === 3);
  await ada.check('#room-members input[value="2"]');
  await ada.setInputFiles('#room-file', { name: 'for-bob.bin', mimeType: 'application/octet-stream', buffer: randomBytes(100_000) });
  await cy.waitForSelector('.incoming', { timeout: 20_000 });
  // Cy's card ends one way or the other: an offer shown, or a failure.
  await cy.waitForSelector('.incoming[data-state="offered"], .incoming[data-state="failed"]', { timeout: 30_000 });
  assert.equal(await cy.getAttribute('.incoming', 'data-state'), 'failed', 'Bob\'s file was offered to Cy');
  assert.equal(await cy.isVisible('.incoming .offer'), false);
  await ada.waitForSelector('.recipient[data-member="2"][data-state="failed"]', { timeout: 20_000 });
  assert.match(await ada.textContent('.recipient[data-member="2"] .detail'), /codes did not match/);
  assert.equal(await bob.$('.incoming'), null, 'Bob was never invited');
  for (const p of [ada, bob, cy]) assert.deepEqual(p.problems, []);
  for (const p of [ada, bob, cy]) await p.context().close();
});

test('Cancel before the path to the recipient opened: the recipient reads that the sender cancelled', { timeout: 90_000 }, async () => {
  // Ada's seat hears only Bob's reply: the handshake completes, the peer
  // connection never does (no answer, no candidates reach her).
  const ada = await roomPage('Ada', (p) => route(p, {
    onServer: (f, conn) => (conn.kind === 'seat' && f.type === 'message' && f.seq >= 2 ? [] : [f]),
  }));
  // Bob's browser opens sealed messages slowly (a busy machine): the
  // server's peer_left, right behind Ada's abort, is in before it opened.
  const bob = await roomPage('Bob', (p) => p.addInitScript(() => {
    const decrypt = crypto.subtle.decrypt.bind(crypto.subtle);
    crypto.subtle.decrypt = async (...args) => {
      await new Promise((r) => setTimeout(r, 300));
      return decrypt(...args);
    };
  }));
  const code = await createRoom(ada, 'Ada');
  await joinRoom(bob, 'Bob', code);
  await ada.waitForFunction(() => document.querySelectorAll('#room-members li').length === 2);
  await ada.check('#room-members input[value="2"]');
  await ada.setInputFiles('#room-file', { name: 'never.bin', mimeType: 'application/octet-stream', buffer: randomBytes(1000) });
  await ada.waitForSelector('.recipient[data-member="2"] .words-line:not([hidden])', { timeout: 30_000 });
  await bob.waitForSelector('.incoming[data-state="waiting"]', { timeout: 30_000 });
  assert.equal(await ada.getAttribute('.recipient[data-member="2"]', 'data-state'), 'connecting');
  await ada.click('.group .cancel-all');
  // Ada's sealed abort, then her leave: Bob must read the first, not only
  // that she left.
  await bob.waitForSelector('.incoming[data-state="cancelled"], .incoming[data-state="failed"]', { timeout: 20_000 });
  assert.equal(await bob.getAttribute('.incoming', 'data-state'), 'cancelled', `Bob's card: ${await bob.textContent('.incoming')}`);
  assert.match(await bob.textContent('.incoming .state-text'), /Ada cancelled/);
  for (const p of [ada, bob]) assert.deepEqual(p.problems, []);
  for (const p of [ada, bob]) await p.context().close();
});
