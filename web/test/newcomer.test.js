// The server as a newcomer runs it: the README's command with nothing set
// but free ports, so the default peer policy (no loopback, no private
// peers) is in force. The embedded relay must still carry two local pages.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { X509Certificate, createHash as hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { connected, httpsHeaders, launch, newPage, offer, pairUp, ready, startServer } from './harness.js';

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
    await offer(a, b, { name: 'newcomer.bin', mimeType: 'application/octet-stream', buffer: file });
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
    await offer(a, b, { name: 'lan.bin', mimeType: 'application/octet-stream', buffer: file });
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

/** Records everything a newcomer would see in the console or the network
 * panel: console errors and warnings, page errors, failed requests and
 * responses of 400 and above. */
function watchConsole(page) {
  const seen = [];
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') seen.push(`console ${m.type()}: ${m.text()}`); });
  page.on('pageerror', (e) => seen.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => seen.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) seen.push(`HTTP ${r.status()}: ${r.url()}`); });
  return seen;
}

const TAMPER = /tamper|did not match/i;

test('on a non-local plain-HTTP origin both pages explain what to do, and nothing reads as tampering', { timeout: 60_000 }, async () => {
  const server = await startServer({ TALLOW_LISTEN: '127.0.0.1:0', TURN_LISTEN: '0.0.0.0:0' }, { bare: true });
  // tallow.test stands for the server's LAN address, typed by a second
  // device: plain HTTP there is not a secure context.
  const lanBrowser = await launch({ args: ['--host-resolver-rules=MAP tallow.test 127.0.0.1'] });
  try {
    const { port } = new URL(server.base);
    const url = `http://tallow.test:${port}/`;
    for (const name of ['A', 'B']) {
      const page = await newPage(lanBrowser, name);
      const seen = watchConsole(page);
      await page.goto(url);
      await page.waitForSelector('body[data-state="unsupported"]', { timeout: 10_000 });
      assert.equal(await page.evaluate(() => window.isSecureContext), false);
      assert.equal(await page.evaluate(() => document.body.dataset.unsupported), 'insecure');
      const text = await page.textContent('#unsupported');
      assert.match(text, /secure context/);
      assert.match(text, /HTTPS/);
      assert.match(text, /TALLOW_TLS_SELF_SIGNED=true/);
      assert.match(text, new RegExp(`http://localhost:${port}/`));
      assert.equal(await page.getAttribute('#unsupported a', 'href'), `https://tallow.test:${port}/`);
      assert.equal(await page.isVisible('#create'), false, 'nothing to click that cannot work');
      assert.equal(await page.isDisabled('#create'), true);
      assert.equal(await page.isDisabled('#join'), true);
      const all = await page.textContent('body');
      assert.doesNotMatch(all, TAMPER);
      assert.doesNotMatch(all, /Cannot read properties/);
      // The browser's own note that it ignored the server's COOP header on
      // an untrustworthy origin is the only thing logged: it says what the
      // page says.
      assert.deepEqual(seen.filter((m) => !/^console error: The Cross-Origin-Opener-Policy header has been ignored, because the URL's origin was untrustworthy/.test(m)), []);
      assert.deepEqual(page.problems, []);
      await page.context().close();
    }
  } finally {
    await lanBrowser.close();
    server.stop();
  }
});

/** Makes this page's WebCrypto fail when the session key is imported, as a
 * browser that lacks it would half-way through the handshake. */
const breakImportKey = (page) => page.addInitScript(() => {
  crypto.subtle.importKey = () => { throw new TypeError('simulated: this browser cannot import keys'); };
});

test('a local failure during the handshake is reported as one on both sides, never as tampering', { timeout: 90_000 }, async () => {
  const server = await startServer();
  try {
    // The creator fails (it builds the session first, as in a page opened
    // without WebCrypto): the joiner is still in the handshake and is told why.
    {
      const a = await newPage(browser, 'A', { setup: breakImportKey });
      const b = await newPage(browser, 'B');
      await ready(a, server.base);
      await ready(b, server.base);
      await pairUp(a, b);
      for (const p of [a, b]) await p.waitForSelector('body[data-state="failed"]', { timeout: 30_000 });
      const ea = await a.textContent('#error');
      const eb = await b.textContent('#error');
      assert.match(ea, /This browser could not run the secure session \(simulated: this browser cannot import keys\)/);
      assert.match(ea, /not with the code/);
      assert.match(eb, /Your peer's browser could not set up the secure session/);
      for (const e of [ea, eb]) assert.doesNotMatch(e, TAMPER);
      await a.context().close();
      await b.context().close();
    }
    // The joiner fails after the creator has its session: the creator
    // cannot trust an unsealed abort by then, but is not told of an attack.
    {
      const a = await newPage(browser, 'A');
      const b = await newPage(browser, 'B', { setup: breakImportKey });
      await ready(a, server.base);
      await ready(b, server.base);
      await pairUp(a, b);
      await b.waitForSelector('body[data-state="failed"]', { timeout: 30_000 });
      assert.match(await b.textContent('#error'), /This browser could not run the secure session/);
      await a.waitForSelector('body[data-state="failed"]', { timeout: 30_000 });
      for (const p of [a, b]) assert.doesNotMatch(await p.textContent('body'), TAMPER);
      await a.context().close();
      await b.context().close();
    }
  } finally {
    server.stop();
  }
});

test('a newcomer\'s console stays clean: loading, pairing and a transfer log no error and fetch nothing missing', { timeout: 90_000 }, async () => {
  const server = await startServer({ TALLOW_LISTEN: '127.0.0.1:0', TURN_LISTEN: '0.0.0.0:0' }, { bare: true });
  try {
    const a = await newPage(browser, 'A');
    const b = await newPage(browser, 'B');
    const seen = [watchConsole(a), watchConsole(b)];
    const icons = [];
    a.on('response', (r) => { if (/favicon/.test(r.url())) icons.push([r.url(), r.status(), r.headers()['content-type']]); });
    await ready(a, server.base);
    await ready(b, server.base);
    await connected(a, b);
    const file = randomBytes(64 * 1024);
    await offer(a, b, { name: 'clean.bin', mimeType: 'application/octet-stream', buffer: file });
    await b.waitForSelector('body[data-state="done-received"]', { timeout: 30_000 });
    assert.deepEqual(seen, [[], []]);
    // The icon the page names is served (a browser asks for one either way,
    // /favicon.ico when the page names none).
    for (const [, status] of icons) assert.equal(status, 200, JSON.stringify(icons));
    const icon = await a.evaluate(async () => {
      const href = document.querySelector('link[rel=icon]')?.href;
      const r = await fetch(href);
      return [href, r.status, r.headers.get('content-type')];
    });
    assert.equal(icon[1], 200, JSON.stringify(icon));
    assert.match(icon[2], /^image\/svg\+xml/);
    for (const p of [a, b]) assert.deepEqual(p.problems, []);
    await a.context().close();
    await b.context().close();
  } finally {
    server.stop();
  }
});
