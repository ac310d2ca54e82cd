// The page when signaling misbehaves, in Chromium against a real
// tallow-server with a short resume grace (3 s): a finished transfer stays a
// success when the peer is gone, a working data channel outlives the
// signaling connection, WebCrypto finishing seals out of order changes
// nothing, and a refusal the user can act on is shown with the form again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { artifacts, connected, cuttableProxy, errorText, launch, newPage, offer, ready, startServer, waitUntil } from './harness.js';

let server;
let browser;

before(async () => {
  server = await startServer({ TURN_PORT_RANGE: '48000-48499', TALLOW_RESUME_GRACE_SECS: '3' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

async function sendAndVerify(a, b, bytes = 1024 * 1024) {
  const file = randomBytes(bytes);
  const sha256 = createHash('sha256').update(file).digest('hex');
  await offer(a, b, { name: 'r.bin', mimeType: 'application/octet-stream', buffer: file });
  await b.waitForSelector('body[data-state="done-received"]', { timeout: 60_000 });
  await a.waitForSelector('body[data-state="done-sent"]', { timeout: 30_000 });
  assert.equal(await b.textContent('#received-sha256'), sha256);
}

test('peer_left after a finished transfer does not turn success into an error', { timeout: 60_000 }, async () => {
  const a = await newPage(browser, 'A');
  const b = await newPage(browser, 'B');
  await ready(a, `${server.base}/?relay=1`);
  await ready(b, `${server.base}/?relay=1`);
  await connected(a, b);
  await sendAndVerify(a, b);
  // A goes away without a word; after the 3 s grace B gets peer_left.
  await a.context().close();
  await b.waitForTimeout(6000);
  assert.equal(await errorText(b), null, 'no error after success');
  assert.equal(await b.evaluate(() => document.body.dataset.state), 'done-received');
  assert.ok(await b.isVisible('#save'), 'the file can still be saved');
  await b.screenshot({ path: `${artifacts}/peer-left-after-success.png`, fullPage: true });
  assert.deepEqual(b.problems, []);
  await b.context().close();
});

test('signaling down for good does not tear down a working data channel', { timeout: 90_000 }, async () => {
  const proxy = await cuttableProxy(new URL(server.base));
  try {
    const a = await newPage(browser, 'A');
    const b = await newPage(browser, 'B');
    await ready(a, `${server.base}/?relay=1`);
    await ready(b, `${proxy.url}/?relay=1`);
    await connected(a, b);
    // B's network to the server breaks and stays broken: past the grace,
    // the server tells A its peer left, and B stops trying.
    proxy.cut({ stayDown: true });
    await b.waitForFunction(() => Number(document.body.dataset.reconnects ?? 0) >= 1);
    await a.waitForTimeout(8000);
    assert.equal(await errorText(a), null, 'A keeps its data channel');
    assert.equal(await errorText(b), null, 'B keeps its data channel');
    await sendAndVerify(a, b);
    await b.screenshot({ path: `${artifacts}/signaling-down-receiver.png`, fullPage: true });
    for (const p of [a, b]) assert.deepEqual(p.problems, []);
    await a.context().close();
    await b.context().close();
  } finally {
    proxy.close();
  }
});

test('seals that WebCrypto finishes out of order still leave in order', { timeout: 60_000 }, async () => {
  // Each encryption takes less time than the one before: without
  // serialisation the page would send counter 1 before counter 0.
  const slowFirst = (p) => p.addInitScript(() => {
    const subtle = crypto.subtle;
    const encrypt = subtle.encrypt.bind(subtle);
    let calls = 0;
    subtle.encrypt = async (...args) => {
      const delay = Math.max(0, 600 - 150 * calls++);
      const out = await encrypt(...args);
      await new Promise((r) => setTimeout(r, delay));
      return out;
    };
  });
  const a = await newPage(browser, 'A', { setup: slowFirst });
  const b = await newPage(browser, 'B', { setup: slowFirst });
  await ready(a, `${server.base}/?relay=1`);
  await ready(b, `${server.base}/?relay=1`);
  await connected(a, b);
  await sendAndVerify(a, b, 64 * 1024);
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
  await a.context().close();
  await b.context().close();
});

test('too many failed joins: said clearly, and the user can try again', { timeout: 60_000 }, async () => {
  const strict = await startServer({ TURN_PORT_RANGE: '48500-48599', TALLOW_MAX_FAILED_JOINS_PER_IP: '1' });
  try {
    const b = await newPage(browser, 'B');
    await ready(b, `${strict.base}/`);
    await b.fill('#code-input', '98765-bal-kir-mos');
    await b.click('#join');
    await b.waitForSelector('#error:not([hidden])');
    await ready(b, `${strict.base}/`);
    await b.fill('#code-input', '98764-bal-kir-mos');
    await b.click('#join');
    const notice = await waitUntil(async () => (await b.isVisible('#notice')) && b.textContent('#notice'), 10_000);
    assert.match(notice || '', /Too many wrong codes/);
    assert.ok(await b.isVisible('#join'), 'the form is back');
    assert.ok(await b.isEnabled('#join'));
    assert.ok(await b.isEnabled('#create'));
    await b.screenshot({ path: `${artifacts}/too-many-failed-joins.png`, fullPage: true });
    assert.deepEqual(b.problems, []);
    await b.context().close();
  } finally {
    strict.stop();
  }
});

test('a full server: said clearly, and the page connects once there is room', { timeout: 60_000 }, async () => {
  const tiny = await startServer({ TURN_PORT_RANGE: '48600-48699', TALLOW_MAX_CONNECTIONS: '1' });
  try {
    const first = await newPage(browser, 'first');
    await ready(first, `${tiny.base}/`);
    const b = await newPage(browser, 'B');
    await b.goto(`${tiny.base}/`);
    const notice = await waitUntil(async () => (await b.isVisible('#notice')) && b.textContent('#notice'), 10_000);
    assert.match(notice || '', /server is full/i);
    assert.equal(await errorText(b), null, 'not a dead end');
    await b.screenshot({ path: `${artifacts}/server-full.png`, fullPage: true });
    await first.context().close();
    await b.waitForSelector('#create:not([disabled])', { timeout: 30_000 });
    assert.ok(!(await b.isVisible('#notice')), 'the notice goes once connected');
    assert.deepEqual(b.problems, []);
    await b.context().close();
  } finally {
    tiny.stop();
  }
});

test('paired while the page was away: resumed {paired: true} starts the session', { timeout: 60_000 }, async () => {
  // The creator's connection drops (1012, as a restarting node closes it)
  // just as `paired` is on its way, so the page never sees it. It resumes
  // and the server answers resumed {paired: true, ice_servers} (the route
  // adds ice_servers from the lost `paired`, as the server now does).
  let lostPaired = null;
  const setup = (p) => p.routeWebSocket(/\/signal$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((text) => server.send(text));
    server.onMessage((text) => {
      const f = JSON.parse(text);
      if (f.type === 'paired' && !lostPaired) {
        lostPaired = f;
        server.close();
        ws.close({ code: 1012, reason: 'server restarting: reconnect and resume' });
        return;
      }
      if (f.type === 'resumed' && f.paired && !f.ice_servers && lostPaired) f.ice_servers = lostPaired.ice_servers;
      ws.send(JSON.stringify(f));
    });
  });
  const a = await newPage(browser, 'A', { setup });
  const b = await newPage(browser, 'B');
  await ready(a, `${server.base}/?relay=1`);
  await ready(b, `${server.base}/?relay=1`);
  await connected(a, b);
  assert.ok(lostPaired, 'the creator missed paired');
  assert.ok(Number(await a.evaluate(() => document.body.dataset.reconnects)) >= 1);
  await sendAndVerify(a, b, 64 * 1024);
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
  await a.context().close();
  await b.context().close();
});
