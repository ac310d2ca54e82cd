// The server as a newcomer runs it: the README's command with nothing set
// but free ports, so the default peer policy (no loopback, no private
// peers) is in force. The embedded relay must still carry two local pages.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connected, launch, newPage, ready, startServer } from './harness.js';

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

test('with the defaults, ?relay=1 moves a file through the embedded relay', { timeout: 90_000 }, async () => {
  // TURN_LISTEN keeps the default wildcard address, on a free port.
  const server = await startServer({ TALLOW_LISTEN: '127.0.0.1:0', TURN_LISTEN: '0.0.0.0:0' }, { bare: true });
  try {
    const a = await newPage(browser, 'A');
    const b = await newPage(browser, 'B');
    await ready(a, `${server.base}/?relay=1`);
    await ready(b, `${server.base}/?relay=1`);
    await connected(a, b);
    assert.equal(await a.textContent('#path'), 'relay');
    assert.equal(await b.textContent('#path'), 'relay');
    const file = randomBytes(2 * 1024 * 1024);
    const sha256 = createHash('sha256').update(file).digest('hex');
    await a.setInputFiles('#file', { name: 'newcomer.bin', mimeType: 'application/octet-stream', buffer: file });
    await b.waitForSelector('body[data-state="done-received"]', { timeout: 60_000 });
    assert.equal(await b.textContent('#received-sha256'), sha256);
    const [download] = await Promise.all([b.waitForEvent('download'), b.click('#save')]);
    assert.equal(createHash('sha256').update(readFileSync(await download.path())).digest('hex'), sha256);
    for (const p of [a, b]) assert.deepEqual(p.problems, []);
    await a.context().close();
    await b.context().close();
  } finally {
    server.stop();
  }
});
