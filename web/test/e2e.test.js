// End to end: two isolated headless Chromium contexts (Debian's chromium
// driven by playwright-core) against a real tallow-server on loopback. A 20 MB
// random file goes across with iceTransportPolicy "relay", so through the
// embedded TURN relay; a wrong code fails cleanly on both sides.
// Needs: /usr/bin/chromium and target/debug/tallow-server (scripts/test.sh
// installs and builds them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import { cuttableProxy, offer } from './harness.js';

const root = new URL('../../', import.meta.url).pathname;
const artifacts = `${root}artifacts/e2e`;
const serverBin = process.env.TALLOW_SERVER_BIN ?? `${root}target/debug/tallow-server`;
let server;
let base;
let browser;

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  server = spawn(serverBin, [], {
    env: {
      TALLOW_LISTEN: '127.0.0.1:0',
      TURN_LISTEN: '127.0.0.1:0',
      TURN_ALLOW_LOOPBACK: 'true',
      TURN_PORT_RANGE: '46000-46999',
      TURN_MAX_BYTES_PER_SEC: '0',
      TALLOW_MAX_MESSAGES_PER_SEC: '1000',
      TALLOW_WEB_ROOT: `${root}web`,
      LOG_FORMAT: 'json',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  base = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: server.stdout });
    lines.on('line', (line) => {
      const v = JSON.parse(line);
      if (v.message === 'tallow-server listening') resolve(`http://${v.addr}`);
    });
    server.on('exit', (code) => reject(new Error(`tallow-server exited with ${code}`)));
  });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
});

async function pages() {
  // Two contexts: no shared storage, as two people's browsers.
  const a = await (await browser.newContext({ acceptDownloads: true })).newPage();
  const b = await (await browser.newContext({ acceptDownloads: true })).newPage();
  for (const [name, p] of [['A', a], ['B', b]]) {
    p.on('pageerror', (e) => console.error(`page ${name}: ${e.message}`));
  }
  await a.goto(`${base}/?relay=1&sink=browser`);
  await b.goto(`${base}/?relay=1&sink=browser`);
  await a.waitForSelector('#create:not([disabled])');
  await b.waitForSelector('#join:not([disabled])');
  return { a, b };
}

test('a 20 MB file crosses through the relay and arrives intact', { timeout: 180_000 }, async () => {
  const { a, b } = await pages();
  await a.click('#create');
  await a.waitForFunction(() => /^\d+-[a-z]+-[a-z]+-[a-z]+$/.test(document.getElementById('code').textContent));
  const code = await a.textContent('#code');
  await b.fill('#code-input', code);
  await b.click('#join');

  await a.waitForSelector('#verify:not([hidden])');
  await b.waitForSelector('#verify:not([hidden])');
  const wordsA = await a.textContent('#words');
  const wordsB = await b.textContent('#words');
  assert.match(wordsA, /^[a-z]+ [a-z]+ [a-z]+ [a-z]+$/);
  assert.equal(wordsA, wordsB, 'both sides show the same verification words');

  await a.waitForSelector('body[data-state="connected"]', { timeout: 30_000 });
  await b.waitForSelector('body[data-state="connected"]', { timeout: 30_000 });
  assert.equal(await a.textContent('#path'), 'relay');
  assert.equal(await b.textContent('#path'), 'relay');

  const file = randomBytes(20 * 1024 * 1024);
  const sha256 = createHash('sha256').update(file).digest('hex');
  await offer(a, b, { name: 'random.bin', mimeType: 'application/octet-stream', buffer: file });

  await b.waitForSelector('body[data-state="done-received"]', { timeout: 150_000 });
  await a.waitForSelector('body[data-state="done-sent"]', { timeout: 30_000 });
  assert.equal(await a.textContent('#sent-sha256'), sha256);
  assert.equal(await b.textContent('#received-sha256'), sha256);

  // The file as saved by the browser.
  const [download] = await Promise.all([b.waitForEvent('download'), b.click('#save')]);
  const saved = readFileSync(await download.path());
  assert.equal(saved.length, file.length);
  assert.equal(createHash('sha256').update(saved).digest('hex'), sha256);

  await a.screenshot({ path: `${artifacts}/sender.png`, fullPage: true });
  await b.screenshot({ path: `${artifacts}/receiver.png`, fullPage: true });
});

test('a wrong code fails cleanly on both sides', { timeout: 60_000 }, async () => {
  const { a, b } = await pages();
  await a.click('#create');
  await a.waitForFunction(() => /^\d+-/.test(document.getElementById('code').textContent));
  const code = await a.textContent('#code');
  const wrong = code.replace(/-[a-z]+$/, '-zzz');
  await b.fill('#code-input', wrong);
  await b.click('#join');
  for (const p of [a, b]) {
    await p.waitForSelector('#error:not([hidden])', { timeout: 20_000 });
    assert.match(await p.textContent('#error'), /codes did not match/);
    assert.equal(await p.textContent('#words'), '', 'no verification words on failure');
  }
  await a.screenshot({ path: `${artifacts}/wrong-code-creator.png` });
  await b.screenshot({ path: `${artifacts}/wrong-code-joiner.png` });
});

test('a dropped signaling connection resumes and the transfer completes', { timeout: 90_000 }, async () => {
  const proxy = await cuttableProxy(new URL(base));
  try {
    const a = await (await browser.newContext({ acceptDownloads: true })).newPage();
    const b = await (await browser.newContext({ acceptDownloads: true })).newPage();
    await a.goto(`${base}/?relay=1&sink=browser`);
    await b.goto(`${proxy.url}/?relay=1&sink=browser`);
    await a.waitForSelector('#create:not([disabled])');
    await b.waitForSelector('#join:not([disabled])');
    await a.click('#create');
    await a.waitForFunction(() => /^\d+-[a-z]+-[a-z]+-[a-z]+$/.test(document.getElementById('code').textContent));
    await b.fill('#code-input', await a.textContent('#code'));
    await b.click('#join');
    // Drop b's connection as soon as it is paired, while the handshake is
    // in flight.
    await b.waitForFunction(() => document.getElementById('status').textContent.includes('Securing'));
    proxy.cut();
    await b.waitForFunction(() => Number(document.body.dataset.reconnects ?? 0) >= 1);
    await a.waitForSelector('body[data-state="connected"]', { timeout: 30_000 });
    await b.waitForSelector('body[data-state="connected"]', { timeout: 30_000 });
    assert.equal(await a.textContent('#words'), await b.textContent('#words'));
    const file = randomBytes(1024 * 1024);
    const sha256 = createHash('sha256').update(file).digest('hex');
    await offer(a, b, { name: 'small.bin', mimeType: 'application/octet-stream', buffer: file });
    await b.waitForSelector('body[data-state="done-received"]', { timeout: 60_000 });
    assert.equal(await b.textContent('#received-sha256'), sha256);
    await b.screenshot({ path: `${artifacts}/resumed-receiver.png`, fullPage: true });
  } finally {
    proxy.close();
  }
});
