// A 1 GB file (issue 10): it arrives intact while the receiving page's JS
// heap stays under 100 MB throughout (sampled through the DevTools
// protocol), and it is on disk, not in memory: in the browser's storage,
// which the browser counts, and saved from there by a download.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, mkdtempSync, openSync, closeSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { artifacts, connected, launch, newPage, offer, ready, startServer } from './harness.js';

const SIZE = 1024 * 1024 * 1024;
const HEAP_LIMIT = 100 * 1024 * 1024;
let server;
let browser;
const scratch = mkdtempSync(join(tmpdir(), 'tallow-large-'));

before(async () => {
  server = await startServer({ TURN_PORT_RANGE: '44500-44999' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** Writes `size` random bytes to `path`; returns their SHA-256. */
function randomFile(path, size) {
  const fd = openSync(path, 'w');
  const hash = createHash('sha256');
  const buf = Buffer.alloc(8 * 1024 * 1024);
  for (let done = 0; done < size; done += buf.length) {
    randomFillSync(buf);
    writeSync(fd, buf);
    hash.update(buf);
  }
  closeSync(fd);
  return hash.digest('hex');
}

const sha256Of = (path) => new Promise((resolve, reject) => {
  const h = createHash('sha256');
  createReadStream(path).on('data', (d) => h.update(d)).on('end', () => resolve(h.digest('hex'))).on('error', reject);
});

test('a 1 GB file arrives intact with the receiving page\'s heap under 100 MB, written to disk', { timeout: 900_000 }, async () => {
  const path = join(scratch, 'one-gigabyte.bin');
  const sha256 = randomFile(path, SIZE);
  const a = await newPage(browser, 'A');
  const b = await newPage(browser, 'B');
  await ready(a, `${server.base}/`);
  await ready(b, `${server.base}/`);
  await connected(a, b);
  const cdp = await b.context().newCDPSession(b);
  await cdp.send('HeapProfiler.enable');
  let peak = 0;
  const samples = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const { usedSize } = await cdp.send('Runtime.getHeapUsage');
      peak = Math.max(peak, usedSize);
      samples.push(usedSize);
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const started = Date.now();
  await offer(a, b, path);
  await b.waitForSelector('body[data-state="done-received"]', { timeout: 840_000 });
  const seconds = (Date.now() - started) / 1000;
  sampling = false;
  await sampler;
  console.log(`1 GiB in ${seconds.toFixed(1)} s (${(SIZE / 1e6 / seconds).toFixed(1)} MB/s); receiver heap peak ${(peak / 1048576).toFixed(1)} MiB over ${samples.length} samples`);
  assert.ok(samples.length > 10, 'the heap was sampled throughout');
  assert.ok(peak < HEAP_LIMIT, `receiver heap peaked at ${peak} bytes`);
  assert.equal(await b.textContent('#received-sha256'), sha256);
  assert.equal(await a.textContent('#sent-sha256'), sha256);
  // On disk: the browser counts it in its storage...
  const usage = await b.evaluate(async () => (await navigator.storage.estimate()).usage);
  assert.ok(usage >= SIZE, `the browser's storage holds ${usage} bytes`);
  // ...and the Save link hands over the bytes from there.
  const [download] = await Promise.all([b.waitForEvent('download'), b.click('#save')]);
  assert.equal(await sha256Of(await download.path()), sha256);
  const { usedSize } = await cdp.send('Runtime.getHeapUsage');
  assert.ok(usedSize < HEAP_LIMIT, `saving did not load the file into the page (${usedSize})`);
  await b.screenshot({ path: `${artifacts}/one-gigabyte-receiver.png`, fullPage: true });
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
  await a.context().close();
  await b.context().close();
});
