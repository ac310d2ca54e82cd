// Shared by the browser tests (not a test file itself): a real tallow-server
// on loopback, Debian's headless Chromium, and pages instrumented to report
// what the page must never do (CSP violations, a second RTCPeerConnection,
// object URLs left alive) and to hand tests the data channels.
import { spawn } from 'node:child_process';
import { connect, createServer as createNetServer } from 'node:net';
import { mkdirSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

// Node 20 has no global WebSocket; playwright-core (already a dev
// dependency) bundles `ws`, a standard one, for the Node tests that talk
// to a real server.
export const NodeWebSocket = createRequire(import.meta.url)('playwright-core/lib/utilsBundle').ws;

/** The /signal URL of a server started by startServer. */
export const signalUrl = (server) => `${server.base.replace(/^http/, 'ws')}/signal`;

export const root = new URL('../../', import.meta.url).pathname;
export const artifacts = `${root}artifacts/e2e`;
const serverBin = process.env.TALLOW_SERVER_BIN ?? `${root}target/debug/tallow-server`;

// The policy tallow-server sends on every response (signaling/src/server.rs);
// startServer checks that the server really sends it, so the pages below are
// held to the server's own headers.
export const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
  + "connect-src 'self' ws: wss:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
  + "form-action 'none'; frame-ancestors 'none'";

/** Starts tallow-server with `env` on top of the test defaults and checks
 * that it sends the CSP and nosniff; resolves to { base, direct, stop }
 * (both the server's own address). */
export async function startServer(env = {}, { bare = false } = {}) {
  mkdirSync(artifacts, { recursive: true });
  // `bare`: nothing but `env` (free ports), as a newcomer runs the server.
  const defaults = bare ? {} : {
    TALLOW_LISTEN: '127.0.0.1:0',
    TURN_LISTEN: '127.0.0.1:0',
    TURN_ALLOW_LOOPBACK: 'true',
    TURN_PORT_RANGE: '47000-47999',
    TURN_MAX_BYTES_PER_SEC: '0',
    TALLOW_MAX_MESSAGES_PER_SEC: '1000',
    TALLOW_MAX_SESSIONS_PER_IP: '200',
    LOG_FORMAT: 'json',
  };
  const server = spawn(serverBin, [], {
    env: {
      ...defaults,
      // TEST_WEB_ROOT: run the browser tests against another build of the page.
      ...(process.env.TEST_WEB_ROOT ? { TALLOW_WEB_ROOT: process.env.TEST_WEB_ROOT } : bare ? {} : { TALLOW_WEB_ROOT: `${root}web` }),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const logs = [];
  const direct = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: server.stdout });
    lines.on('line', (line) => {
      const v = JSON.parse(line);
      logs.push(v);
      if (v.message === 'tallow-server listening') resolve(`${v.scheme}://${v.addr}`);
    });
    server.on('exit', (code) => reject(new Error(`tallow-server exited with ${code}`)));
  });
  // HTTPS: the certificate is the one whose fingerprint the server logged.
  const sha256 = logs.find((v) => v.sha256)?.sha256;
  const headers = direct.startsWith('https:') ? await httpsHeaders(`${direct}/`, sha256) : (await fetch(`${direct}/`)).headers;
  if (headers.get('content-security-policy') !== CSP || headers.get('x-content-type-options') !== 'nosniff') {
    server.kill('SIGTERM');
    throw new Error(`tallow-server does not send the expected CSP: ${headers.get('content-security-policy')}`);
  }
  return { base: direct, direct, logs, sha256, stop: () => server.kill('SIGTERM') };
}

/** GETs `url` over HTTPS trusting exactly the certificate with SHA-256
 * fingerprint `sha256` (AB:CD:... as the server logs it); resolves to the
 * response headers, and puts the certificate on `.cert`. */
export function httpsHeaders(url, sha256) {
  return new Promise((resolve, reject) => {
    const req = httpsGet(url, { rejectUnauthorized: false, agent: false }, (res) => {
      const cert = res.socket.getPeerX509Certificate();
      res.resume();
      if (cert.fingerprint256 !== sha256) {
        reject(new Error(`certificate ${cert.fingerprint256} is not the logged ${sha256}`));
        return;
      }
      const h = new Headers();
      for (const [k, v] of Object.entries(res.headers)) h.set(k, String(v));
      h.cert = cert;
      resolve(h);
    });
    req.on('error', reject);
  });
}

/** Debian's Chromium, headless; `args` are added to the usual flags. */
export function launch({ args = [] } = {}) {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...args],
  });
}

// Runs in the page before its own scripts.
function instrument() {
  const t = { pcs: 0, channels: [], liveUrls: new Set(), blobTypes: [], violations: [] };
  window.__tallowTest = t;
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC {
    constructor(...args) {
      super(...args);
      t.pcs += 1;
      this.addEventListener('datachannel', (e) => t.channels.push(e.channel));
    }

    createDataChannel(...args) {
      const c = super.createDataChannel(...args);
      t.channels.push(c);
      return c;
    }
  };
  const create = URL.createObjectURL.bind(URL);
  const revoke = URL.revokeObjectURL.bind(URL);
  URL.createObjectURL = (o) => { const u = create(o); t.liveUrls.add(u); t.blobTypes.push(o.type); return u; };
  URL.revokeObjectURL = (u) => { t.liveUrls.delete(u); revoke(u); };
  document.addEventListener('securitypolicyviolation', (e) => t.violations.push(`${e.violatedDirective} ${e.blockedURI}`));
}

/**
 * A new page in its own context (two people's browsers share nothing),
 * instrumented (pages of startServer's `base` get the CSP above). `page.problems` collects page
 * errors and CSP refusals ("Refused to ...") from the console.
 */
export async function newPage(browser, name, { setup } = {}) {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => { page.problems.push(`page error: ${e.message}`); console.error(`page ${name}: ${e.message}`); });
  page.on('console', (m) => {
    if (/Refused to|Content Security Policy/i.test(m.text())) page.problems.push(`console: ${m.text()}`);
  });
  await page.addInitScript(instrument);
  if (setup) await setup(page);
  return page;
}

/** Opens `url` and waits until the page can create or join. Native file
 * pickers cannot be driven from a test, so received files go to the
 * fallback, the browser's own storage (`?sink=browser`), unless the URL
 * already says where. */
export async function ready(page, url) {
  const u = new URL(url);
  if (!u.searchParams.has('sink')) u.searchParams.set('sink', 'browser');
  await page.goto(u.href);
  await page.waitForSelector('#create:not([disabled])');
}

/** `a` offers `files` (setInputFiles values) through `input`, `b` accepts
 * once the offer is shown. */
export async function offer(a, b, files, input = '#file') {
  await a.setInputFiles(input, files);
  await b.waitForSelector('#accept:not([disabled])', { timeout: 30_000 });
  await b.click('#accept');
}

/** Creator `a` makes a code, joiner `b` types it; resolves once both see
 * the verification words. */
export async function pairUp(a, b) {
  await a.click('#create');
  await a.waitForFunction(() => /^\d+-[a-z]+-[a-z]+-[a-z]+$/.test(document.getElementById('code').textContent));
  await b.fill('#code-input', await a.textContent('#code'));
  await b.click('#join');
}

export async function connected(a, b) {
  await pairUp(a, b);
  for (const p of [a, b]) await p.waitForSelector('body[data-state="connected"]', { timeout: 30_000 });
}

/** Polls `fn` (async allowed) until truthy or `ms` pass; returns its last value. */
export async function waitUntil(fn, ms, step = 100) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, step));
  }
}

export const errorText = async (p) => ((await p.isVisible('#error')) ? p.textContent('#error') : null);

/** A TCP proxy to `target` (a URL) that the test can cut; while `down`, it
 * drops every new connection at once (a network that stays broken). */
export async function cuttableProxy(target) {
  const live = new Set();
  let down = false;
  const server = createNetServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = connect(target.port, target.hostname);
    for (const s of [client, upstream]) {
      live.add(s);
      s.on('error', () => {});
      s.on('close', () => { live.delete(s); client.destroy(); upstream.destroy(); });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut: ({ stayDown = false } = {}) => { down = stayDown; for (const s of live) s.destroy(); },
    restore: () => { down = false; },
    close: () => { server.close(); for (const s of live) s.destroy(); },
  };
}

/** Every file the page keeps in its browser storage: path -> SHA-256. */
export function stored(page) {
  return page.evaluate(async () => {
    const out = {};
    const hex = (buf) => Array.from(new Uint8Array(buf), (x) => x.toString(16).padStart(2, '0')).join('');
    const walk = async (dir, prefix) => {
      for await (const [name, h] of dir.entries()) {
        if (h.kind === 'directory') await walk(h, `${prefix}${name}/`);
        else out[`${prefix}${name}`] = hex(await crypto.subtle.digest('SHA-256', await (await h.getFile()).arrayBuffer()));
      }
    };
    const root = await (await navigator.storage.getDirectory()).getDirectoryHandle('tallow');
    for await (const [, transfer] of root.entries()) await walk(transfer, '');
    return out;
  });
}
