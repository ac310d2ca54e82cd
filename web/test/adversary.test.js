// The signaling server is the adversary the peer protocol names: it relays
// every handshake message and could re-deliver one. These tests put a
// malicious server between Chromium and the real tallow-server (playwright's
// WebSocket routing: every frame passes through the test, which forwards it
// and can inject its own, renumbering `message` seqs and the page's acks so
// the real server never notices) and check that the page refuses, builds no
// second session or RTCPeerConnection, and never seals two messages under
// one nonce.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { artifacts, connected, errorText, launch, newPage, offer, pairUp, ready, startServer, waitUntil } from './harness.js';

let server;
let browser;

before(async () => {
  server = await startServer({ TURN_PORT_RANGE: '47000-47499' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

/**
 * Routes the page's /signal through the test. `inject(body, seq)` is asked
 * for each peer message the server delivers (body parsed); it returns a list
 * of extra bodies (objects) to deliver right after it, as if the server had
 * sent them. Returns { sealedN, injected, forge }: the counters of every
 * sealed message the page sent, in order; how many messages were forged;
 * forge(body) delivers one now.
 */
async function maliciousServer(page, inject) {
  const log = { sealedN: [], injected: 0 };
  await page.routeWebSocket(/\/signal$/, (ws) => {
    const server = ws.connectToServer();
    const injectedSeqs = []; // page-side seqs that the real server never sent
    const toServer = (seq) => seq - injectedSeqs.filter((s) => s <= seq).length;
    ws.onMessage((text) => {
      const f = JSON.parse(text);
      if (f.type === 'send' || f.type === 'hello') {
        const body = JSON.parse(f.body);
        if (body.t === 'sealed') log.sealedN.push(body.n);
      }
      if (f.type === 'ack') {
        if (injectedSeqs.includes(f.seq)) return;
        f.seq = toServer(f.seq);
      }
      if (f.type === 'resume') f.last_seq = toServer(f.last_seq);
      server.send(JSON.stringify(f));
    });
    let lastSeq = 0; // the page's numbering
    const forge = (body) => {
      lastSeq += 1;
      injectedSeqs.push(lastSeq);
      log.injected += 1;
      ws.send(JSON.stringify({ type: 'message', seq: lastSeq, body: JSON.stringify(body) }));
    };
    log.forge = forge;
    server.onMessage((text) => {
      const f = JSON.parse(text);
      if (f.type !== 'message') {
        ws.send(text);
        return;
      }
      f.seq += injectedSeqs.length;
      lastSeq = f.seq;
      ws.send(JSON.stringify(f));
      for (const extra of inject(JSON.parse(f.body)) ?? []) forge(extra);
    });
  });
  return log;
}

const dupes = (ns) => ns.filter((n, i) => ns.indexOf(n) !== i);

for (const [role, replayed] of [['A', 'reply'], ['B', 'confirm'], ['B', 'hello']]) {
  test(`a replayed ${replayed} is refused by the ${role === 'A' ? 'creator' : 'joiner'}: no second session, no nonce reuse`, { timeout: 60_000 }, async () => {
    let log;
    const setup = async (p) => { log = await maliciousServer(p, (body) => (body.t === replayed ? [body] : [])); };
    const a = await newPage(browser, 'A', role === 'A' ? { setup } : {});
    const b = await newPage(browser, 'B', role === 'B' ? { setup } : {});
    const victim = role === 'A' ? a : b;
    await ready(a, `${server.base}/?relay=1`);
    await ready(b, `${server.base}/?relay=1`);
    await pairUp(a, b);
    // Give a second session every chance to appear: wait for the refusal, or
    // for a repeated nonce, or 15 s.
    await waitUntil(async () => log.injected > 0 && ((await errorText(victim)) || dupes(log.sealedN).length), 15_000);
    assert.equal(log.injected, 1, `the test replayed one ${replayed}`);
    assert.deepEqual(dupes(log.sealedN), [], `no sealing counter repeats under one key (sent ${log.sealedN})`);
    const pcs = await victim.evaluate(() => window.__tallowTest.pcs);
    assert.ok(pcs <= 1, `at most one RTCPeerConnection, got ${pcs}`);
    const err = await errorText(victim);
    assert.match(err ?? '', /replayed|tamper/i, 'the page says why it stopped');
    assert.equal(await victim.evaluate(() => document.body.dataset.state), 'failed');
    await victim.screenshot({ path: `${artifacts}/replayed-${replayed}.png`, fullPage: true });
    // The honest side learns that it is over rather than waiting forever.
    const other = victim === a ? b : a;
    assert.ok(await waitUntil(() => errorText(other), 15_000), 'the other side stops too');
    for (const p of [a, b]) assert.deepEqual(p.problems, []);
    await a.context().close();
    await b.context().close();
  });
}

test('an unsealed abort after the session is not trusted: the transfer goes on', { timeout: 60_000 }, async () => {
  let log;
  const setup = async (p) => { log = await maliciousServer(p, () => []); };
  const a = await newPage(browser, 'A');
  const b = await newPage(browser, 'B', { setup });
  await ready(a, `${server.base}/?relay=1`);
  await ready(b, `${server.base}/?relay=1`);
  await connected(a, b);
  // The server forges the peer's unsealed abort (all a failing handshake
  // sends); after the session only a sealed abort may stop the page.
  log.forge({ t: 'abort', reason: 'confirmation' });
  await b.waitForTimeout(1000);
  assert.equal(await errorText(b), null, 'the forged abort did not stop the page');
  const file = randomBytes(256 * 1024);
  const sha256 = createHash('sha256').update(file).digest('hex');
  await offer(a, b, { name: 'after-abort.bin', mimeType: 'application/octet-stream', buffer: file });
  await b.waitForSelector('body[data-state="done-received"]', { timeout: 30_000 });
  assert.equal(await b.textContent('#received-sha256'), sha256);
  await a.waitForSelector('body[data-state="done-sent"]', { timeout: 30_000 });
  assert.equal(await errorText(b), null);
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
  await a.context().close();
  await b.context().close();
});
