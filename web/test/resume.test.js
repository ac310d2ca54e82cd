// A broken path mid-transfer (issue 10): the pages make a new peer
// connection over the sealed session and carry on from what landed. The
// path is forced through the embedded relay over TURN-over-TCP, through a
// TCP proxy the test cuts for 5 s in the middle of the file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { artifacts, connected, cuttableProxy, errorText, launch, newPage, offer, ready, startServer, waitUntil } from './harness.js';

let server;
let browser;
let turnProxy;
const scratch = mkdtempSync(join(tmpdir(), 'tallow-resume-'));

before(async () => {
  server = await startServer({ TURN_PORT_RANGE: '45500-45999' });
  const relay = server.logs.find((v) => v.message === 'TURN relay listening');
  turnProxy = await cuttableProxy(new URL(`http://${relay.tcp_addr}`));
  browser = await launch();
});

after(async () => {
  await browser?.close();
  turnProxy?.close();
  server?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** The page may only reach the relay over TCP, through the proxy: every
 * TURN URL it is given becomes turn:PROXY?transport=tcp (same credentials),
 * as on a network that lets nothing else out. */
const onlyTcpTurn = (proxyPort) => (page) => page.addInitScript((port) => {
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC {
    constructor(config = {}) {
      const iceServers = (config.iceServers ?? [])
        .filter((s) => [].concat(s.urls).some((u) => u.startsWith('turn:')))
        .map((s) => ({ ...s, urls: [`turn:127.0.0.1:${port}?transport=tcp`] }));
      super({ ...config, iceServers, iceTransportPolicy: 'relay' });
    }
  };
}, proxyPort);

test('TURN over TCP cut for 5 s mid-file: the transfer resumes and completes, resending under 10%', { timeout: 240_000 }, async () => {
  const port = new URL(turnProxy.url).port;
  const a = await newPage(browser, 'A', { setup: onlyTcpTurn(port) });
  const b = await newPage(browser, 'B', { setup: onlyTcpTurn(port) });
  await ready(a, `${server.base}/?relay=1`);
  await ready(b, `${server.base}/?relay=1`);
  await connected(a, b);
  assert.equal(await a.textContent('#path'), 'relay');
  const size = 120 * 1024 * 1024;
  const file = randomBytes(size);
  const path = join(scratch, 'big.bin');
  writeFileSync(path, file);
  await offer(a, b, path);
  // Cut once a third has gone, for 5 s.
  await b.waitForFunction((n) => {
    const v = document.getElementById('progress');
    return v.value > n;
  }, size / 3, { timeout: 120_000, polling: 100 });
  turnProxy.cut({ stayDown: true });
  await new Promise((r) => setTimeout(r, 5000));
  turnProxy.restore();
  await b.waitForSelector('body[data-state="done-received"]', { timeout: 180_000 });
  await a.waitForSelector('body[data-state="done-sent"]', { timeout: 30_000 });
  assert.equal(await b.textContent('#received-sha256'), createHash('sha256').update(file).digest('hex'));
  const repaths = Number(await b.evaluate(() => document.body.dataset.repaths ?? 0));
  assert.ok(repaths >= 1, 'a new peer connection carried the rest');
  const sent = Number(await a.evaluate(() => document.body.dataset.sentBytes));
  const twice = sent - size;
  console.log(`resent ${(twice / 1048576).toFixed(1)} MiB of ${size / 1048576} MiB (${((100 * twice) / size).toFixed(1)}%) after ${repaths} new connection(s)`);
  assert.ok(twice < size * 0.1, `${twice} bytes sent twice`);
  const [download] = await Promise.all([b.waitForEvent('download'), b.click('#save')]);
  assert.equal(createHash('sha256').update(readFileSync(await download.path())).digest('hex'), createHash('sha256').update(file).digest('hex'));
  await b.screenshot({ path: `${artifacts}/resumed-transfer-receiver.png`, fullPage: true });
  for (const p of [a, b]) assert.equal(await errorText(p), null);
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
  await a.context().close();
  await b.context().close();
});

test('a page closed mid-transfer: both sides say it must start over', { timeout: 120_000 }, async () => {
  const a = await newPage(browser, 'A');
  const b = await newPage(browser, 'B');
  await ready(a, `${server.base}/?relay=1`);
  await ready(b, `${server.base}/?relay=1`);
  await connected(a, b);
  const file = join(scratch, 'closing.bin');
  writeFileSync(file, randomBytes(60 * 1024 * 1024));
  await offer(a, b, file);
  await b.waitForFunction(() => document.getElementById('progress').value > 0, null, { polling: 100 });
  // The receiver reloads: its state is gone.
  b.on('dialog', (d) => d.accept()); // the "leave this page?" question
  await b.reload();
  await b.waitForSelector('#notice:not([hidden])');
  assert.match(await b.textContent('#notice'), /stopped when the page was closed or reloaded\. It cannot continue: start again with a new code/);
  assert.ok(await waitUntil(() => errorText(a), 30_000), 'the sender is told');
  assert.match(await errorText(a), /Your peer closed the page or left: the transfer cannot continue\. Start again with a new code/);
  await a.context().close();
  await b.context().close();
});
