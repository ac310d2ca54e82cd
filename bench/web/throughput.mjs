// Web client throughput against the browser's own ceiling (issue 10). In
// one headless Chromium, against one tallow-server: the ceiling is a bare
// RTCDataChannel pump between two pages (64 KiB messages, the same
// bufferedAmount marks as the app, no hashing, no sealing, no disk); the
// app moves a file of the same size through its whole path (offer,
// accept, read, hash, seal, write to the browser's storage, verify). Both
// direct (host candidates) and forced through the embedded relay. The runs
// alternate, `rounds` times; the medians go into bench/results/web.md.
// A benchmark, not a test: timing decides nothing here.
//
//   node bench/web/throughput.mjs [MiB=1024] [rounds=2]
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connected, launch, newPage, offer, ready, startServer } from '../../web/test/harness.js';

const MIB = Number(process.argv[2] ?? 1024);
const ROUNDS = Number(process.argv[3] ?? 2);
const SIZE = MIB * 1024 * 1024;
const scratch = mkdtempSync(join(tmpdir(), 'tallow-bench-web-'));

function randomFile(path, size) {
  const fd = openSync(path, 'w');
  const h = createHash('sha256');
  const buf = Buffer.alloc(8 * 1024 * 1024);
  for (let done = 0; done < size; done += buf.length) {
    randomFillSync(buf);
    const part = buf.subarray(0, Math.min(buf.length, size - done));
    writeSync(fd, part);
    h.update(part);
  }
  closeSync(fd);
  return h.digest('hex');
}

/** A bare data channel between two pages; returns MB/s. */
async function ceiling(browser, server, relay) {
  const a = await newPage(browser, 'A');
  const b = await newPage(browser, 'B');
  await a.goto(`${server.base}/`);
  await b.goto(`${server.base}/`);
  // The same ICE servers the app gets: TURN credentials from a real session.
  const ice = await iceServers(a, b);
  const setup = ([servers, forceRelay]) => {
    window.pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: forceRelay ? 'relay' : 'all' });
    window.cands = [];
    pc.onicecandidate = (e) => { if (e.candidate) cands.push(e.candidate.toJSON()); };
  };
  await a.evaluate(setup, [ice, relay]);
  await b.evaluate(setup, [ice, relay]);
  const o = await a.evaluate(async () => {
    window.ch = pc.createDataChannel('file', { ordered: true });
    ch.binaryType = 'arraybuffer';
    await pc.setLocalDescription();
    return pc.localDescription.toJSON();
  });
  const ans = await b.evaluate(async (sdp) => {
    window.got = 0;
    pc.ondatachannel = (e) => { e.channel.binaryType = 'arraybuffer'; e.channel.onmessage = (m) => { window.got += m.data.byteLength; }; };
    await pc.setRemoteDescription(sdp);
    await pc.setLocalDescription();
    return pc.localDescription.toJSON();
  }, o);
  await a.evaluate((sdp) => pc.setRemoteDescription(sdp), ans);
  await new Promise((r) => setTimeout(r, 1500)); // candidates gathered
  for (const c of await a.evaluate(() => cands)) await b.evaluate((x) => pc.addIceCandidate(x), c);
  for (const c of await b.evaluate(() => cands)) await a.evaluate((x) => pc.addIceCandidate(x), c);
  await a.waitForFunction(() => ch.readyState === 'open', null, { timeout: 30_000 });
  const t0 = Date.now();
  await a.evaluate(async (size) => {
    const chunk = new Uint8Array(64 * 1024 + 29); // an app record's size
    ch.bufferedAmountLowThreshold = 2 * 1024 * 1024;
    for (let sent = 0; sent < size; sent += 64 * 1024) {
      if (ch.bufferedAmount > 8 * 1024 * 1024) await new Promise((r) => { ch.onbufferedamountlow = r; });
      ch.send(chunk);
    }
  }, SIZE);
  await b.waitForFunction((n) => window.got >= n, SIZE * ((64 * 1024 + 29) / (64 * 1024)) - 1, { timeout: 1_800_000, polling: 50 });
  const s = (Date.now() - t0) / 1000;
  await a.context().close();
  await b.context().close();
  return SIZE / 1e6 / s;
}

/** TURN credentials as a paired client gets them (asked from two pages:
 * Node 20 has no WebSocket). */
async function iceServers(a, b) {
  const open = (page) => page.evaluate(() => {
    const ws = new WebSocket(new URL('/signal', location.href.replace(/^http/, 'ws')));
    window.sig = { ws, q: [] };
    ws.onmessage = (m) => window.sig.q.push(JSON.parse(m.data));
    return new Promise((r) => { ws.onopen = r; });
  });
  const next = (page, type) => page.waitForFunction((t) => window.sig.q.find((m) => m.type === t), type).then((h) => h.jsonValue());
  await open(a);
  await open(b);
  await a.evaluate(() => window.sig.ws.send(JSON.stringify({ type: 'create' })));
  const created = await next(a, 'created');
  await b.evaluate((n) => window.sig.ws.send(JSON.stringify({ type: 'join', nameplate: n })), created.nameplate);
  const paired = await next(a, 'paired');
  await a.evaluate(() => window.sig.ws.close());
  await b.evaluate(() => window.sig.ws.close());
  return paired.ice_servers;
}

/** The app, end to end; returns [MB/s, receiver heap peak MiB]. */
async function app(browser, server, relay, path) {
  const a = await newPage(browser, 'A');
  const b = await newPage(browser, 'B');
  const url = `${server.base}/${relay ? '?relay=1' : ''}`;
  await ready(a, url);
  await ready(b, url);
  await connected(a, b);
  const cdp = await b.context().newCDPSession(b);
  let peak = 0;
  let on = true;
  const sampler = (async () => {
    while (on) {
      peak = Math.max(peak, (await cdp.send('Runtime.getHeapUsage')).usedSize);
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const t0 = Date.now();
  await offer(a, b, path);
  await b.waitForSelector('body[data-state="done-received"]', { timeout: 1_800_000 });
  const s = (Date.now() - t0) / 1000;
  on = false;
  await sampler;
  await a.context().close();
  await b.context().close();
  return [SIZE / 1e6 / s, peak / 1048576];
}

const median = (xs) => {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const path = join(scratch, 'bench.bin');
randomFile(path, SIZE);
const server = await startServer({ TURN_PORT_RANGE: '44000-44499' });
const browser = await launch();
const runs = { direct: { ceiling: [], app: [], heap: [] }, relay: { ceiling: [], app: [], heap: [] } };
try {
  for (let r = 0; r < ROUNDS; r++) {
    for (const mode of ['direct', 'relay']) {
      const relay = mode === 'relay';
      const c = await ceiling(browser, server, relay);
      const [x, heap] = await app(browser, server, relay, path);
      runs[mode].ceiling.push(c);
      runs[mode].app.push(x);
      runs[mode].heap.push(heap);
      console.log(`round ${r + 1} ${mode}: ceiling ${c.toFixed(1)} MB/s, app ${x.toFixed(1)} MB/s (${(x / c).toFixed(2)}), receiver heap peak ${heap.toFixed(1)} MiB`);
    }
  }
} finally {
  await browser.close();
  server.stop();
  rmSync(scratch, { recursive: true, force: true });
}

const chromium = (await import('node:child_process')).execSync('/usr/bin/chromium --version').toString().trim();
const lines = [
  '## Web client: a file between two pages vs the bare data channel',
  '',
  `Written by \`scripts/bench-web.sh\` (${new Date().toISOString().slice(0, 10)}; ${chromium}, headless, on this machine's 2 cores;`,
  `${MIB} MiB, ${ROUNDS} alternating round(s), medians; app / ceiling is the median of each round's ratio, the app run right after`,
  'its ceiling, so that this shared machine\'s drift between rounds cancels). The ceiling is a bare RTCDataChannel pump between two pages in the same',
  'browser (64 KiB messages of the app\'s record size, the same 8/2 MiB bufferedAmount marks, nothing else); the app moves the',
  'same bytes through its whole path: offer and accept, File.slice reads, SHA-256 per block and per file, AES-256-GCM records,',
  'writes to the browser\'s storage, verification. Receiver heap: the peak of `Runtime.getHeapUsage` sampled every 250 ms.',
  '',
  '| path | ceiling MB/s | app MB/s | app / ceiling | receiver heap peak |',
  '|---|---|---|---|---|',
];
for (const mode of ['direct', 'relay']) {
  const c = median(runs[mode].ceiling);
  const x = median(runs[mode].app);
  const ratio = median(runs[mode].app.map((a, i) => a / runs[mode].ceiling[i]));
  lines.push(`| ${mode === 'direct' ? 'direct (host candidates)' : 'embedded TURN relay (UDP)'} | ${c.toFixed(1)} | ${x.toFixed(1)} | ${ratio.toFixed(2)} | ${Math.max(...runs[mode].heap).toFixed(1)} MiB |`);
}
lines.push('', 'Raw runs (MB/s, ceiling / app):', '');
for (const mode of ['direct', 'relay']) lines.push(`- ${mode}: ${runs[mode].ceiling.map((c, i) => `${c.toFixed(1)} / ${runs[mode].app[i].toFixed(1)}`).join('; ')}`);
lines.push('');
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/web.md', `${lines.join('\n')}\n`);
console.log(lines.join('\n'));
