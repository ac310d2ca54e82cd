// The server as a newcomer runs it: the README's command with nothing set
// but free ports, so the default peer policy (no loopback, no private
// peers) is in force. The embedded relay must still carry two local pages.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { X509Certificate, createHash as hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { connected, httpsHeaders, launch, newPage, ready, startServer } from './harness.js';

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

test('across devices: the server\'s own HTTPS in self-signed mode carries a file between pages on a non-local name', { timeout: 120_000 }, async () => {
  // tallow.test stands for the server's LAN name: not localhost, so only
  // TLS makes the page a secure context.
  const server = await startServer({
    TALLOW_LISTEN: '127.0.0.1:0',
    TURN_LISTEN: '0.0.0.0:0',
    TALLOW_TLS_SELF_SIGNED: 'true',
    TALLOW_TLS_NAMES: 'tallow.test',
  }, { bare: true });
  let lanBrowser;
  try {
    assert.ok(server.base.startsWith('https://'), server.base);
    const line = server.logs.find((v) => v.sha256);
    assert.match(line.sha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, 'the fingerprint is printed at start');
    assert.ok(line.names.includes('tallow.test') && line.names.includes('localhost'), JSON.stringify(line.names));
    // Trust exactly that certificate (its key), as a user accepting it
    // after comparing fingerprints would; startServer checked the server
    // presents the certificate whose fingerprint it logged.
    const { port } = new URL(server.base);
    const cert = (await httpsHeaders(`${server.base}/`, line.sha256)).cert;
    assert.equal(cert.fingerprint256, line.sha256);
    assert.ok(cert.checkHost('tallow.test'), 'the certificate names tallow.test');
    const spki = hash('sha256').update(new X509Certificate(cert.raw).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
    lanBrowser = await launch({ args: ['--host-resolver-rules=MAP tallow.test 127.0.0.1', `--ignore-certificate-errors-spki-list=${spki}`] });
    const url = `https://tallow.test:${port}/?relay=1`;
    const a = await newPage(lanBrowser, 'A');
    const b = await newPage(lanBrowser, 'B');
    await ready(a, url);
    await ready(b, url);
    for (const p of [a, b]) assert.equal(await p.evaluate(() => window.isSecureContext && typeof crypto.subtle?.importKey), 'function');
    await connected(a, b);
    assert.equal(await a.textContent('#path'), 'relay');
    const file = randomBytes(1024 * 1024);
    const sha256 = createHash('sha256').update(file).digest('hex');
    await a.setInputFiles('#file', { name: 'lan.bin', mimeType: 'application/octet-stream', buffer: file });
    await b.waitForSelector('body[data-state="done-received"]', { timeout: 60_000 });
    assert.equal(await b.textContent('#received-sha256'), sha256);
    const [download] = await Promise.all([b.waitForEvent('download'), b.click('#save')]);
    assert.equal(createHash('sha256').update(readFileSync(await download.path())).digest('hex'), sha256);
    for (const p of [a, b]) assert.deepEqual(p.problems, []);

    // Someone typing http:// is sent to https://.
    const plain = await new Promise((resolve, reject) => {
      httpGet({ host: '127.0.0.1', port, path: '/?relay=1', headers: { host: `tallow.test:${port}` } }, (res) => {
        res.resume();
        resolve(res);
      }).on('error', reject);
    });
    assert.equal(plain.statusCode, 308);
    assert.equal(plain.headers.location, `https://tallow.test:${port}/?relay=1`);
  } finally {
    await lanBrowser?.close();
    server.stop();
  }
});
