// Nearby devices in the browser (issue 11), headless Chromium against a
// real tallow-server: two pages behind the same address see each other
// once both opt in, a page behind another address sees neither; a file
// goes to a nearby device only after the sender confirmed the
// verification words both pages show (the session's code is the fixed
// `nearby`, so the words are what authenticates), and arrives intact.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { artifacts, launch, newPage, ready, startServer } from './harness.js';

let server;
let browser;

before(async () => {
  server = await startServer({
    TURN_PORT_RANGE: '43500-43999',
    TALLOW_MAX_ROOMS_PER_IP: '100',
    TALLOW_MAX_UPGRADES_PER_IP_PER_MIN: '1000',
    // Loopback stands for the proxy in front of the server: a page that
    // sends X-Forwarded-For is a device on another network.
    TALLOW_TRUST_FORWARDED_FOR: 'true',
    TALLOW_TRUSTED_PROXIES: '127.0.0.1',
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

const sha = (b) => createHash('sha256').update(b).digest('hex');

async function device(name, forwardedFor) {
  const p = await newPage(browser, name, {
    setup: forwardedFor ? (page) => page.context().setExtraHTTPHeaders({ 'X-Forwarded-For': forwardedFor }) : undefined,
  });
  await ready(p, `${server.base}/?relay=1`);
  await p.waitForSelector('#nearby-toggle:not([disabled])');
  assert.equal(await p.isChecked('#nearby-toggle'), false, 'off until the person opts in');
  assert.equal(await p.isVisible('#nearby'), false);
  await p.fill('#display-name', name);
  await p.check('#nearby-toggle');
  await p.waitForSelector('#nearby:not([hidden])');
  return p;
}

const listed = (p) => p.$$eval('#nearby-list button', (bs) => bs.map((b) => b.textContent));

test('two devices behind one address see each other and move a file once both show the same words', { timeout: 120_000 }, async () => {
  const laptop = await device('Ada laptop');
  const phone = await device('Bob phone');
  const elsewhere = await device('Eve elsewhere', '203.0.113.9');
  await laptop.waitForFunction(() => document.querySelectorAll('#nearby-list button').length === 1);
  await phone.waitForFunction(() => document.querySelectorAll('#nearby-list button').length === 1);
  assert.deepEqual(await listed(laptop), ['Bob phone']);
  assert.deepEqual(await listed(phone), ['Ada laptop']);
  assert.deepEqual(await listed(elsewhere), [], 'another network sees no one');
  assert.ok(await elsewhere.isVisible('#nearby-empty'));

  // Click the device, pick a file.
  const file = randomBytes(3 * 1024 * 1024 + 17);
  const [chooser] = await Promise.all([laptop.waitForEvent('filechooser'), laptop.click('#nearby-list button')]);
  await chooser.setFiles({ name: 'photo.bin', mimeType: 'application/octet-stream', buffer: file });
  // Both show the session's words; nothing is offered before the sender
  // says they match.
  await laptop.waitForSelector('.recipient[data-state="verify"] .words-ok:not([hidden])', { timeout: 30_000 });
  await phone.waitForSelector('.incoming .words-box:not([hidden])', { timeout: 30_000 });
  const words = await laptop.textContent('.recipient .words');
  assert.match(words, /^[a-z]+ [a-z]+ [a-z]+ [a-z]+$/);
  assert.equal(await phone.textContent('.incoming .words'), words, 'the same words on both screens');
  assert.match(await phone.textContent('.incoming .words-box'), /Compare these words with Ada laptop/);
  assert.equal(await phone.isVisible('.incoming .offer'), false, 'no offer before the words are confirmed');
  assert.equal(await phone.getAttribute('.incoming', 'data-state'), 'waiting');
  await laptop.screenshot({ path: `${artifacts}/nearby-sender-verify.png`, fullPage: true });
  await laptop.click('.recipient .words-ok');
  await phone.waitForSelector('.incoming .accept:not([disabled])');
  assert.equal(await phone.textContent('.incoming .accept'), 'The words match: accept');
  await phone.screenshot({ path: `${artifacts}/nearby-receiver-offer.png`, fullPage: true });
  await phone.click('.incoming .accept');
  await phone.waitForSelector('.incoming[data-state="done"]', { timeout: 60_000 });
  await laptop.waitForSelector('.recipient[data-state="done"]', { timeout: 30_000 });
  const [download] = await Promise.all([phone.waitForEvent('download'), phone.click('.incoming .saves a')]);
  assert.equal(sha(readFileSync(await download.path())), sha(file));

  // Opting out: the others no longer see this device.
  await phone.uncheck('#nearby-toggle');
  await laptop.waitForFunction(() => document.querySelectorAll('#nearby-list button').length === 0);
  assert.ok(await laptop.isVisible('#nearby-empty'));
  for (const p of [laptop, phone, elsewhere]) assert.deepEqual(p.problems, []);
  for (const p of [laptop, phone, elsewhere]) await p.context().close();
});
