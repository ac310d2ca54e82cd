// The file's framing on the data channel, in Chromium against a real
// tallow-server (through the embedded TURN relay): a zero-byte file, a
// peer whose size lies, a hostile name and MIME type; what the page saves
// and shows; object URLs released. Pages run under the server's CSP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { artifacts, connected, errorText, launch, newPage, offer, ready, startServer, waitUntil } from './harness.js';

let server;
let browser;

before(async () => {
  server = await startServer({ TURN_PORT_RANGE: '47500-47999' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

async function twoPages() {
  const a = await newPage(browser, 'A');
  const b = await newPage(browser, 'B');
  await ready(a, `${server.base}/?relay=1`);
  await ready(b, `${server.base}/?relay=1`);
  await connected(a, b);
  return { a, b };
}

async function close(...pages) {
  for (const p of pages) await p.context().close();
}

test('a zero-byte file completes and verifies', { timeout: 60_000 }, async () => {
  const { a, b } = await twoPages();
  await offer(a, b, { name: 'empty.txt', mimeType: 'text/plain', buffer: Buffer.alloc(0) });
  await b.waitForSelector('body[data-state="done-received"]', { timeout: 20_000 });
  await a.waitForSelector('body[data-state="done-sent"]', { timeout: 20_000 });
  const empty = createHash('sha256').digest('hex');
  assert.equal(await b.textContent('#received-sha256'), empty);
  assert.equal(await a.textContent('#sent-sha256'), empty);
  const [download] = await Promise.all([b.waitForEvent('download'), b.click('#save')]);
  assert.equal(readFileSync(await download.path()).length, 0);
  await b.screenshot({ path: `${artifacts}/zero-byte-receiver.png`, fullPage: true });
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
  await close(a, b);
});

test('a hostile name and MIME type: saved as octet-stream under a neutralised name; object URLs revoked', { timeout: 60_000 }, async () => {
  const { a, b } = await twoPages();
  const name = 'invoice\u202Elmth.exe<script>';
  const file = Buffer.from('<html><script>alert(document.domain)</script></html>');
  await offer(a, b, { name, mimeType: 'text/html', buffer: file });
  await b.waitForSelector('body[data-state="done-received"]', { timeout: 20_000 });
  const shown = await b.evaluate(() => document.body.innerText);
  assert.ok(!/[\u202a-\u202e\u2066-\u2069]/.test(shown), 'no bidirectional override on the page');
  assert.match(shown, /invoice_lmth\.exe_script_/);
  const [download] = await Promise.all([b.waitForEvent('download'), b.click('#save')]);
  const types = await b.evaluate(() => window.__tallowTest.blobTypes);
  assert.ok(types.length >= 1);
  assert.deepEqual([...new Set(types)], ['application/octet-stream'], `the saved blob never takes the peer's type (got ${types})`);
  assert.equal(download.suggestedFilename(), 'invoice_lmth.exe_script_');
  assert.deepEqual(readFileSync(await download.path()), file);
  await b.screenshot({ path: `${artifacts}/hostile-name-receiver.png`, fullPage: true });
  // The object URL behind the save is released once the download started.
  const live = await waitUntil(() => b.evaluate(() => window.__tallowTest.liveUrls.size === 0), 15_000, 250);
  assert.ok(live, 'every object URL was revoked');
  // Saving again still works (a fresh URL).
  const [again] = await Promise.all([b.waitForEvent('download'), b.click('#save')]);
  assert.deepEqual(readFileSync(await again.path()), file);
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
  await close(a, b);
});

/**
 * Makes page `a` a lying sender with the session's real keys: an init
 * script rewrites the plaintext of its data-channel records (the ones
 * sealed with a one-byte type as AAD) just before they are encrypted.
 * `rule` names the lie; the records still open on the other side.
 */
const liar = (rule) => (page) => page.addInitScript((r) => {
  const subtle = crypto.subtle;
  const encrypt = subtle.encrypt.bind(subtle);
  const dec = new TextDecoder();
  const enc = new TextEncoder();
  subtle.encrypt = async (params, key, data) => {
    const aad = params.additionalData ? new Uint8Array(params.additionalData) : null;
    if (aad?.length === 1) {
      let plain = new Uint8Array(data.buffer ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) : data);
      if (aad[0] === 1) {
        const m = JSON.parse(dec.decode(plain));
        if (m.kind === 'files' && r.size !== undefined) {
          m.files[0].size = r.size;
          m.total = r.size;
        }
        if (m.kind === 'files' && r.paths) m.files.forEach((f, i) => { f.path = r.paths[i] ?? f.path; });
        plain = enc.encode(JSON.stringify(m));
      } else if (aad[0] === 2 && r.file !== undefined) {
        new DataView(plain.buffer).setUint32(0, r.file);
      }
      return encrypt(params, key, plain);
    }
    return encrypt(params, key, data);
  };
}, rule);

async function lyingPages(rule) {
  const a = await newPage(browser, 'A', { setup: liar(rule) });
  const b = await newPage(browser, 'B');
  await ready(a, `${server.base}/?relay=1`);
  await ready(b, `${server.base}/?relay=1`);
  await connected(a, b);
  return { a, b };
}

const noticeText = async (p) => ((await p.isVisible('#notice')) ? p.textContent('#notice') : null);

test('a peer that sends more bytes than it announced is reported clearly', { timeout: 60_000 }, async () => {
  const { a, b } = await lyingPages({ size: 1000 });
  await offer(a, b, { name: 'lie.bin', mimeType: 'application/octet-stream', buffer: randomBytes(3000) });
  assert.ok(await waitUntil(() => errorText(b), 15_000), 'the receiver stops with an error');
  assert.match(await errorText(b), /size_exceeded/);
  // The liar is told why.
  // The liar is told why: on the channel (a cancel) and, sealed, through
  // the server (an abort); whichever lands first says it.
  const told = async () => `${(await noticeText(a)) ?? ''} ${(await errorText(a)) ?? ''}`.trim();
  assert.ok(await waitUntil(told, 15_000), 'the sender hears of it');
  assert.match(await told(), /size_exceeded/);
  await b.screenshot({ path: `${artifacts}/lying-size-receiver.png`, fullPage: true });
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
  await close(a, b);
});

test('a peer that ends before the announced size is reported clearly', { timeout: 60_000 }, async () => {
  const { a, b } = await lyingPages({ size: 5 * 1024 * 1024 });
  await offer(a, b, { name: 'short.bin', mimeType: 'application/octet-stream', buffer: randomBytes(100) });
  assert.ok(await waitUntil(() => errorText(b), 15_000), 'the receiver stops with an error');
  assert.match(await errorText(b), /finished file 1 after 1048576 of the 5242880 bytes it announced/);
  await close(a, b);
});

test('bytes for a file not in the offer, and a malformed offer, are errors, not silence', { timeout: 60_000 }, async () => {
  const { a, b } = await lyingPages({ file: 7 });
  await offer(a, b, { name: 'x.bin', mimeType: 'application/octet-stream', buffer: randomBytes(10) });
  assert.ok(await waitUntil(() => errorText(b), 15_000), 'the receiver stops with an error');
  assert.match(await errorText(b), /file 7 is not in the offer/);
  const p = await lyingPages({ size: -1 });
  await p.a.setInputFiles('#file', { name: 'x', mimeType: 'application/octet-stream', buffer: randomBytes(10) });
  assert.ok(await waitUntil(() => errorText(p.b), 15_000));
  assert.match(await errorText(p.b), /malformed: files.total must be an integer/);
  assert.equal(await p.b.isVisible('#offer'), false, 'nothing to accept');
  await close(a, b, p.a, p.b);
});

test('a normal 3 MB file still crosses and is verified on both sides', { timeout: 90_000 }, async () => {
  const { a, b } = await twoPages();
  const file = randomBytes(3 * 1024 * 1024 + 17);
  const sha256 = createHash('sha256').update(file).digest('hex');
  await offer(a, b, { name: 'three.bin', mimeType: 'application/octet-stream', buffer: file });
  await b.waitForSelector('body[data-state="done-received"]', { timeout: 60_000 });
  await a.waitForSelector('body[data-state="done-sent"]', { timeout: 30_000 });
  assert.equal(await b.textContent('#received-sha256'), sha256);
  await a.screenshot({ path: `${artifacts}/three-mb-sender.png`, fullPage: true });
  await close(a, b);
});

test('hostile paths from the peer are neutralised: no escape, no device names, no controls, duplicates renamed', { timeout: 90_000 }, async () => {
  const paths = [
    '../../../etc/passwd',
    '/abs/root.txt',
    'C:\\Windows\\system32\\evil.dll',
    'dir/CON.txt',
    'bidi/invoice\u202Egpj.exe',
    'ctl/a\u0000b\u0007c.txt',
    'dup.txt',
    'DUP.TXT',
    `long/${'x'.repeat(300)}.bin`,
    '',
  ];
  const { a, b } = await lyingPages({ paths });
  await offer(a, b, paths.map((_, i) => ({ name: `f${i}.bin`, mimeType: 'application/octet-stream', buffer: Buffer.from(`file ${i}`) })));
  await b.waitForSelector('body[data-state="done-received"]', { timeout: 30_000 });
  const names = await b.evaluate(async () => {
    const out = [];
    const walk = async (dir, prefix) => {
      for await (const [name, h] of dir.entries()) {
        if (h.kind === 'directory') await walk(h, `${prefix}${name}/`);
        else out.push(`${prefix}${name}`);
      }
    };
    const root = await (await navigator.storage.getDirectory()).getDirectoryHandle('tallow');
    for await (const [, t] of root.entries()) await walk(t, '');
    return out.sort();
  });
  const expected = [
    'file/file/file/etc/passwd',
    'abs/root.txt',
    'C_/Windows/system32/evil.dll',
    'dir/_CON.txt',
    'bidi/invoice_gpj.exe',
    'ctl/a_b_c.txt',
    'dup.txt',
    'DUP (2).TXT',
    `long/${'x'.repeat(255)}`, // cut to 255 bytes
    'file (2)', // '' is `file`, which the first path made a folder
  ].sort();
  assert.deepEqual(names, expected);
  const shown = await b.evaluate(() => document.body.innerText);
  assert.ok(!/[\u0000-\u0008\u202a-\u202e]/.test(shown), 'nothing invisible or bidirectional on the page');
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
  await close(a, b);
});
