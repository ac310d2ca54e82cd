// The `tallow` command-line peer (cli/, issue 12) against the browser
// client: the real target/debug/tallow binary and a real Chromium page meet
// through a real tallow-server and its embedded relay. Files go both ways,
// SHA-256 compared on disk and in the page; the verification words match;
// a wrong code fails cleanly on both sides.
// Needs: /usr/bin/chromium, target/debug/tallow-server and target/debug/tallow
// (scripts/test.sh builds every workspace binary before these tests).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { errorText, launch, newPage, ready, root, signalUrl, startServer, stored, waitUntil } from './harness.js';

const cliBin = process.env.TALLOW_CLI_BIN ?? `${root}target/debug/tallow`;
const scratch = mkdtempSync(join(tmpdir(), 'tallow-cli-web-'));
const running = new Set(); // every CLI process a test started and that has not exited
let server;
let browser;

before(async () => {
  // The relay's own default per-allocation rate limit (relay/src/config.rs),
  // which the other browser tests and the CLI-to-CLI test lift: it must not
  // stall a browser and the CLI meeting through the relay.
  server = await startServer({ TURN_PORT_RANGE: '41000-41499', TURN_MAX_BYTES_PER_SEC: '12500000' });
  browser = await launch();
});

after(async () => {
  for (const p of running) p.kill('SIGKILL');
  await browser?.close();
  server?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

const sha = (b) => createHash('sha256').update(b).digest('hex');

/** Runs `tallow ARGS` against `srv`; `.out` / `.err` hold what it printed
 * so far, `.exited` resolves to its exit code (or signal). */
function tallow(srv, args, { relayOnly = true } = {}) {
  const p = spawn(cliBin, ['--server', signalUrl(srv), ...(relayOnly ? ['--relay-only'] : []), '--bind', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(p);
  p.out = '';
  p.err = '';
  p.stdout.on('data', (d) => { p.out += d; });
  p.stderr.on('data', (d) => { p.err += d; });
  p.exited = new Promise((resolve) => p.on('exit', (code, signal) => {
    running.delete(p);
    resolve(code ?? signal);
  }));
  p.on('close', () => { p.closed = true; }); // exited, and its output all read
  p.said = () => `tallow ${args.join(' ')}\nstdout:\n${p.out}\nstderr:\n${p.err}`;
  return p;
}

/** Waits (bounded) for `re` in the stream `which` of `p`, or until `p`
 * exits without it; its first group. */
async function line(p, which, re, ms = 30_000) {
  const m = await waitUntil(() => p[which].match(re) || (p.closed ? 'exited' : null), ms);
  assert.ok(m && m !== 'exited', `no ${re} (${m ?? `within ${ms} ms`})\n${p.said()}`);
  return m[1];
}

/** The exit status, or a failure if the process still runs after `ms`. */
async function exit(p, ms = 60_000) {
  let timer;
  const status = await Promise.race([p.exited, new Promise((r) => { timer = setTimeout(() => r('running'), ms); })]);
  clearTimeout(timer);
  assert.notEqual(status, 'running', `still running after ${ms} ms\n${p.said()}`);
  return status;
}

/** Keeps the page's peer connections where the test can read their SCTP
 * transport and descriptions. */
function keepConnections(page) {
  return page.addInitScript(() => {
    const PC = window.RTCPeerConnection;
    window.__pcs = [];
    window.RTCPeerConnection = class extends PC {
      constructor(...args) {
        super(...args);
        window.__pcs.push(this);
      }
    };
  });
}

/** What the page's connection agreed with the CLI: the largest message it may
 * send (RTCSctpTransport.maxMessageSize) and both sides' a=max-message-size. */
const sctpSizes = (page) => page.evaluate(() => {
  const pc = window.__pcs.at(-1);
  const size = (d) => Number(d?.sdp.match(/a=max-message-size:(\d+)/)?.[1]);
  return { maxMessageSize: pc.sctp?.maxMessageSize, local: size(pc.localDescription), remote: size(pc.remoteDescription) };
});

async function page(srv, { relay = true } = {}) {
  const p = await newPage(browser, 'page', { setup: keepConnections });
  await ready(p, `${srv.base}/${relay ? '?relay=1' : ''}`);
  return p;
}

/** Every file under `dir`: path relative to it -> SHA-256. */
function tree(dir) {
  const out = {};
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      if (e.isDirectory()) walk(full);
      else out[relative(dir, full)] = sha(readFileSync(full));
    }
  };
  walk(dir);
  return out;
}

/** `tallow send FILE` to a page that joins with the printed code. */
async function cliToBrowser(srv, { relayOnly, relay, size }) {
  const data = randomBytes(size);
  const dir = mkdtempSync(join(scratch, 'send-'));
  writeFileSync(join(dir, 'from-cli.bin'), data);
  const b = await page(srv, { relay });
  const cli = tallow(srv, ['send', join(dir, 'from-cli.bin')], { relayOnly });
  try {
    const code = await line(cli, 'out', /^code: (\S+)$/m);
    await b.fill('#code-input', code);
    await b.click('#join');
    const words = await line(cli, 'err', /^verification words: ([a-z]+(?: [a-z]+)*)/m);
    await b.waitForSelector('#verify:not([hidden])');
    assert.equal(await b.textContent('#words'), words, 'the page shows the words the CLI prints');
    await b.waitForSelector('#accept:not([disabled])', { timeout: 30_000 });
    assert.match(await b.textContent('#offer-text'), /from-cli\.bin/);
    const started = Date.now();
    await b.click('#accept');
    await b.waitForSelector('body[data-state="done-received"]', { timeout: 60_000 });
    const seconds = (Date.now() - started) / 1000;
    assert.equal(await b.textContent('#received-sha256'), sha(data));
    assert.equal(await exit(cli), 0, cli.said());
    assert.match(cli.out, new RegExp(`^sent .*from-cli\\.bin sha256 ${sha(data)}$`, 'm'));
    assert.equal(await errorText(b), null);
    assert.deepEqual(b.problems, []);
    return { path: cli.err.match(/^path: (.+)$/m)?.[1], pagePath: await b.textContent('#path'), sctp: await sctpSizes(b), seconds };
  } finally {
    cli.kill('SIGKILL');
    await b.context().close();
  }
}

/** A page creates, `tallow receive CODE --yes` joins and takes what the
 * page offers through `input` (#file or #folder). */
async function browserToCli(srv, { relayOnly, relay, files, input = '#file' }) {
  const out = mkdtempSync(join(scratch, 'recv-'));
  const a = await page(srv, { relay });
  let cli;
  try {
    await a.click('#create');
    await a.waitForFunction(() => /^\d+-[a-z]+-[a-z]+-[a-z]+$/.test(document.getElementById('code').textContent));
    cli = tallow(srv, ['receive', await a.textContent('#code'), '--dir', out, '--yes'], { relayOnly });
    const words = await line(cli, 'err', /^verification words: ([a-z]+(?: [a-z]+)*)/m);
    await a.waitForSelector('body[data-state="connected"]', { timeout: 30_000 });
    assert.equal(await a.textContent('#words'), words, 'the page shows the words the CLI prints');
    const started = Date.now();
    await a.setInputFiles(input, files);
    await a.waitForSelector('body[data-state="done-sent"]', { timeout: 90_000 });
    const seconds = (Date.now() - started) / 1000;
    assert.equal(await exit(cli), 0, cli.said());
    assert.equal(await errorText(a), null);
    assert.deepEqual(a.problems, []);
    return { out, cli, path: cli.err.match(/^path: (.+)$/m)?.[1], pagePath: await a.textContent('#path'), sctp: await sctpSizes(a), seconds };
  } finally {
    cli?.kill('SIGKILL');
    await a.context().close();
  }
}

/** The embedded relay's counters from the server's /metrics. */
async function relayCounters(srv) {
  const text = await (await fetch(`${srv.base}/metrics`)).text();
  // Summed over labels (direction, reason).
  const n = (name) => [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)$`, 'gm'))]
    .reduce((sum, m) => sum + Number(m[1]), 0);
  return { relayed: n('tallow_turn_packets_relayed_total'), dropped: n('tallow_turn_dropped_packets_total') };
}

// Both sides agree on 256 KiB messages: the CLI advertises it (cli/src/rtc.rs)
// as Chromium does, and a sealed data record (65,565 bytes) fits.
const SCTP = { maxMessageSize: 262144, local: 262144, remote: 262144 };

test('tallow send -> page, relay-only on both sides: same words, SHA-256 equal', { timeout: 120_000 }, async (t) => {
  // 8 MiB and a bit: 128 full records (65,565 bytes sealed) and a short last one.
  const r = await cliToBrowser(server, { relayOnly: true, relay: true, size: 8 * 1024 * 1024 + 4321 });
  assert.equal(r.pagePath, 'relay');
  assert.match(r.path ?? '', /^local=relay \S+ remote=relay \S+$/);
  assert.deepEqual(r.sctp, SCTP);
  t.diagnostic(`8 MiB CLI -> page through the relay in ${r.seconds} s; relay ${JSON.stringify(await relayCounters(server))}`);
});

test('page -> tallow receive, relay-only on both sides: same words, SHA-256 equal on disk', { timeout: 150_000 }, async (t) => {
  // Small: the CLI receives slowly through its own relayed candidate (see
  // docs/notes/cli-browser.md).
  const data = randomBytes(1024 * 1024 + 1234);
  const r = await browserToCli(server, {
    relayOnly: true,
    relay: true,
    files: { name: 'from-page.bin', mimeType: 'application/octet-stream', buffer: data },
  });
  assert.equal(r.pagePath, 'relay');
  assert.match(r.path ?? '', /^local=relay \S+ remote=relay \S+$/);
  assert.deepEqual(r.sctp, SCTP);
  assert.deepEqual(tree(r.out), { 'from-page.bin': sha(data) });
  assert.match(r.cli.out, new RegExp(`^received .*from-page\\.bin sha256 ${sha(data)}$`, 'm'));
  t.diagnostic(`1 MiB page -> CLI through the relay in ${r.seconds} s; relay ${JSON.stringify(await relayCounters(server))}`);
});

test('a nested folder goes page -> tallow receive with every path and SHA-256', { timeout: 120_000 }, async (t) => {
  const top = join(mkdtempSync(join(scratch, 'folder-')), 'project');
  const expected = {};
  const names = ['a.txt', 'empty.bin', 'src/main.rs', 'src/lib/deep/x.bin', 'src/lib/y.bin', 'docs/README', 'docs/img/big.bin'];
  names.forEach((rel, i) => {
    const data = rel === 'empty.bin' ? Buffer.alloc(0) : randomBytes(rel === 'docs/img/big.bin' ? 2 * 1024 * 1024 + 17 : 1000 * (i + 1));
    mkdirSync(join(top, rel, '..'), { recursive: true });
    writeFileSync(join(top, rel), data);
    expected[`project/${rel}`] = sha(data);
  });
  // The page relays; the CLI gathers every candidate (loopback host here).
  const r = await browserToCli(server, { relayOnly: false, relay: true, files: top, input: '#folder' });
  assert.equal(r.pagePath, 'relay');
  // The CLI may learn the page's relayed address from a check before the
  // signalled candidate, and then says prflx (cli/src/rtc.rs). Which of
  // its own candidates ICE nominates (host, or its relayed one now that
  // relayed paths are fast) is ICE's choice; either reaches the page's
  // relayed address.
  assert.match(r.path ?? '', /^local=(host|relay) \S+ remote=(relay|prflx) \S+$/);
  assert.deepEqual(tree(r.out), expected);
  for (const [rel, h] of Object.entries(expected)) {
    assert.ok(r.cli.out.includes(`received ${join(r.out, rel)} sha256 ${h}\n`), `${rel}\n${r.cli.said()}`);
  }
  t.diagnostic(`a 2 MiB folder page (relay) -> CLI (host) in ${r.seconds} s`);
});

test('a wrong code: the page creates, tallow receive joins with other words; both fail cleanly', { timeout: 60_000 }, async (t) => {
  const a = await page(server);
  const out = mkdtempSync(join(scratch, 'wrong-'));
  let cli;
  try {
    await a.click('#create');
    await a.waitForFunction(() => /^\d+-[a-z]+-[a-z]+-[a-z]+$/.test(document.getElementById('code').textContent));
    const wrong = (await a.textContent('#code')).replace(/-[a-z]+$/, '-zzz');
    cli = tallow(server, ['receive', wrong, '--dir', out, '--yes']);
    const started = Date.now();
    await a.waitForSelector('#error:not([hidden])', { timeout: 30_000 });
    assert.match(await a.textContent('#error'), /codes did not match/);
    assert.equal(await a.textContent('#words'), '', 'no verification words on failure');
    assert.notEqual(await exit(cli, 30_000), 0, cli.said());
    t.diagnostic(`both sides failed within ${(Date.now() - started) / 1000} s; the CLI said: ${cli.err.trim()}`);
    // The page found the mismatch first and sent its abort (reason
    // "confirmation"), which the CLI reports.
    assert.match(cli.err, /^tallow: your peer stopped the session: the codes did not match/m, cli.said());
    assert.doesNotMatch(cli.err, /^verification words:/m, 'no words for a failed session');
    assert.deepEqual(readdirSync(out), [], 'nothing written');
  } finally {
    cli?.kill('SIGKILL');
    await a.context().close();
  }
});

test('a wrong code: tallow send creates, the page joins with other words; both fail cleanly', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(scratch, 'wrong-send-'));
  writeFileSync(join(dir, 'secret.bin'), randomBytes(1000));
  const b = await page(server);
  const cli = tallow(server, ['send', join(dir, 'secret.bin')]);
  try {
    const code = await line(cli, 'out', /^code: (\S+)$/m);
    await b.fill('#code-input', code.replace(/-[a-z]+$/, '-zzz'));
    const started = Date.now();
    await b.click('#join');
    assert.notEqual(await exit(cli, 30_000), 0, cli.said());
    // The CLI found the mismatch first: the page hears it from the CLI's
    // abort (docs/PROTOCOL.md: a peer whose handshake fails sends
    // {"t":"abort","reason":...} and leaves), not from a lost connection.
    await b.waitForSelector('#error:not([hidden])', { timeout: 15_000 });
    assert.match(await b.textContent('#error'), /codes did not match/);
    assert.equal(await b.textContent('#words'), '', 'no verification words on failure');
    t.diagnostic(`both sides failed within ${(Date.now() - started) / 1000} s; the CLI said: ${cli.err.trim()}`);
    assert.match(cli.err, /^tallow: .*key confirmation failed: the other side used a different code/m, cli.said());
    assert.equal(cli.err.match(/key confirmation failed/g).length, 1, `the reason once:\n${cli.err}`);
    assert.equal(await b.isVisible('#accept'), false, 'no offer reached the page');
  } finally {
    cli.kill('SIGKILL');
    await b.context().close();
  }
});

test('a nested folder goes tallow send DIR -> page with every path and SHA-256', { timeout: 90_000 }, async () => {
  const top = join(mkdtempSync(join(scratch, 'send-folder-')), 'project');
  const expected = {};
  for (const [i, rel] of ['a.txt', 'empty.bin', 'src/main.rs', 'src/lib/deep/x.bin', 'docs/img/big.bin'].entries()) {
    const data = rel === 'empty.bin' ? Buffer.alloc(0) : randomBytes(rel === 'docs/img/big.bin' ? 1024 * 1024 + 17 : 1000 * (i + 1));
    mkdirSync(join(top, rel, '..'), { recursive: true });
    writeFileSync(join(top, rel), data);
    expected[`project/${rel}`] = sha(data);
  }
  const b = await page(server);
  const cli = tallow(server, ['send', top]);
  try {
    await b.fill('#code-input', await line(cli, 'out', /^code: (\S+)$/m));
    await b.click('#join');
    await b.waitForSelector('#accept:not([disabled])', { timeout: 30_000 });
    assert.match(await b.textContent('#offer-text'), /Your peer offers 5 files, /);
    await b.click('#accept');
    await b.waitForSelector('body[data-state="done-received"]', { timeout: 60_000 });
    assert.deepEqual(await stored(b), expected);
    assert.equal(await exit(cli), 0, cli.said());
    assert.deepEqual(b.problems, []);
  } finally {
    cli.kill('SIGKILL');
    await b.context().close();
  }
});
