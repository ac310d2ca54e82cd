// Rooms in the browser (issue 11), headless Chromium against a real
// tallow-server (in-memory store, embedded relay): one sender and three
// recipients in one room; one folder goes to all three, each over its own
// invited session, handshake and transfer. One accepts and gets every file
// intact, one declines, one cancels mid-way, and none of that stops the
// others; the sender's Cancel all reaches every recipient. Received files
// stay in the browser's storage (?sink=browser): native pickers cannot be
// driven from a test.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { artifacts, cuttableProxy, launch, newPage, ready, startServer, waitUntil } from './harness.js';

let server;
let browser;
const scratch = mkdtempSync(join(tmpdir(), 'tallow-rooms-'));

before(async () => {
  server = await startServer({
    TURN_PORT_RANGE: '43000-43499',
    // Every page of the test comes from 127.0.0.1.
    TALLOW_MAX_ROOMS_PER_IP: '100',
    TALLOW_MAX_UPGRADES_PER_IP_PER_MIN: '1000',
    TALLOW_MAX_CONNECTIONS_PER_IP: '500',
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

const sha = (b) => createHash('sha256').update(b).digest('hex');
const close = async (...pages) => { for (const p of pages) await p.context().close(); };

/** A disk that takes `ms` for every block written: the page's flow control
 * then holds the sender back, so a transfer stays in flight long enough to
 * be cancelled half-way. */
const slowDisk = (ms) => (page) => page.addInitScript((delay) => {
  const write = FileSystemWritableFileStream.prototype.write;
  FileSystemWritableFileStream.prototype.write = async function slow(...args) {
    await new Promise((r) => setTimeout(r, delay));
    return write.apply(this, args);
  };
}, ms);

/** Every file the page keeps in its browser storage: path -> SHA-256. */
function stored(page) {
  return page.evaluate(async () => {
    const out = {};
    const hex = (buf) => Array.from(new Uint8Array(buf), (x) => x.toString(16).padStart(2, '0')).join('');
    const walk = async (dir, prefix) => {
      for await (const [name, h] of dir.entries()) {
        if (h.kind === 'directory') await walk(h, `${prefix}${name}/`);
        else out[`${prefix}${name}`] = hex(await crypto.subtle.digest('SHA-256', await (await h.getFile()).arrayBuffer()));
      }
    };
    let root;
    try {
      root = await (await navigator.storage.getDirectory()).getDirectoryHandle('tallow');
    } catch {
      return out;
    }
    for await (const [, transfer] of root.entries()) await walk(transfer, '');
    return out;
  });
}

/** Whether the page's storage holds no file within 30 s (the walk may
 * meet a folder being removed: then it looks again). */
const emptied = (page) => waitUntil(async () => {
  const files = await stored(page).catch(() => null);
  return files && Object.keys(files).length === 0;
}, 30_000, 250);

async function roomPage(name, setup) {
  const p = await newPage(browser, name, { setup });
  await ready(p, `${server.base}/?relay=1`);
  await p.waitForSelector('#room-create:not([disabled])');
  return p;
}

/** `owner` creates a room as `ownerName`; each of `members` joins it
 * ([page, name, how]: how is 'link' or 'code'). Resolves to the code. */
async function room(owner, ownerName, members) {
  await owner.fill('#display-name', ownerName);
  await owner.click('#room-create');
  await owner.waitForSelector('#room:not([hidden])');
  const code = await owner.textContent('#room-code');
  assert.match(code, /^\d{3,}-[a-z]+-[a-z]+-[a-z]+$/);
  const link = await owner.textContent('#room-link');
  assert.equal(new URL(link).hash, `#room=${code}`, 'the code travels in the fragment');
  for (const [p, name, how] of members) {
    if (how === 'link') {
      // A fresh load (only the fragment differs from the page's address).
      await p.goto('about:blank');
      const u = new URL(link);
      u.searchParams.set('relay', '1');
      u.searchParams.set('sink', 'browser');
      await p.goto(u.href);
      await p.waitForSelector('#room-join:not([disabled])');
      assert.equal(await p.inputValue('#room-code-input'), code, 'the link fills the room code in');
      assert.equal(new URL(p.url()).hash, '', 'and leaves the address bar');
    } else {
      await p.fill('#room-code-input', code);
    }
    await p.fill('#display-name', name);
    await p.click('#room-join');
    await p.waitForSelector('#room:not([hidden])');
  }
  const n = members.length + 1;
  await owner.waitForFunction((k) => document.querySelectorAll('#room-members li[data-present="true"]').length === k, n);
  return code;
}

const rowState = (p, member) => p.getAttribute(`.group .recipient[data-member="${member}"]`, 'data-state');
const cardState = (p) => p.getAttribute('.incoming', 'data-state');

test('one folder to three members: one accepts and verifies every file, one declines, one cancels mid-way', { timeout: 240_000 }, async () => {
  // The folder: files in nested directories, a few MB in all.
  const top = join(scratch, 'album');
  const expected = {};
  const sizes = [0, 1000, 700_000, 1_500_000, 2_200_000, 90_000, 1_048_576, 3_000_000, 450_000, 1_200_001];
  sizes.forEach((size, i) => {
    const rel = i % 3 === 0 ? `p${i}.bin` : `d${i % 2}/${i % 4 ? 'deep/' : ''}p${i}.bin`;
    const data = randomBytes(size);
    mkdirSync(join(top, rel, '..'), { recursive: true });
    writeFileSync(join(top, rel), data);
    expected[`album/${rel}`] = sha(data);
  });
  const total = sizes.reduce((a, b) => a + b, 0);

  const ada = await roomPage('Ada');
  const bob = await roomPage('Bob');
  const cy = await roomPage('Cy');
  const dee = await roomPage('Dee', slowDisk(400));
  const code = await room(ada, 'Ada', [[bob, 'Bob', 'link'], [cy, 'Cy', 'code'], [dee, 'Dee', 'code']]);
  // Members, presence and the owner, as each page shows them.
  assert.deepEqual(await ada.$$eval('#room-members li', (ls) => ls.map((l) => [l.dataset.member, l.querySelector('.name').textContent, l.dataset.owner])),
    [['1', 'Ada', 'true'], ['2', 'Bob', 'false'], ['3', 'Cy', 'false'], ['4', 'Dee', 'false']]);
  assert.ok(await ada.isVisible('#room-close'), 'the owner can close the room');
  await bob.waitForFunction(() => document.querySelectorAll('#room-members li').length === 4);
  assert.equal(await bob.isVisible('#room-close'), false, 'a member cannot');
  assert.equal(await bob.getAttribute('#room-members li[data-member="1"]', 'data-owner'), 'true');
  assert.equal(await bob.textContent('#room-code'), code);

  for (const m of [2, 3, 4]) await ada.check(`#room-members input[value="${m}"]`);
  await ada.setInputFiles('#room-folder', top);
  for (const p of [bob, cy, dee]) {
    await p.waitForSelector('.incoming[data-state="offered"]', { timeout: 60_000 });
    assert.equal(await p.textContent('.incoming .from strong'), 'Ada', 'the sender\'s name');
    assert.match(await p.textContent('.incoming .offer-text'), new RegExp(`^Ada offers ${sizes.length} files, `));
  }
  // Each pair has its own session, and its own words on both sides.
  const words = {};
  for (const [p, m] of [[bob, 2], [cy, 3], [dee, 4]]) {
    words[m] = await p.textContent('.incoming .words');
    assert.match(words[m], /^[a-z]+ [a-z]+ [a-z]+ [a-z]+$/);
    assert.equal(await ada.textContent(`.recipient[data-member="${m}"] .words`), words[m], `member ${m}`);
    assert.equal(await rowState(ada, m), 'offered');
  }
  assert.equal(new Set(Object.values(words)).size, 3, 'three sessions, three sets of words');
  await ada.screenshot({ path: `${artifacts}/room-sender-offered.png`, fullPage: true });

  await bob.click('.incoming .accept');
  await cy.click('.incoming .decline');
  await dee.click('.incoming .accept');
  // Cy declined: the sender shows it; the others go on.
  await ada.waitForFunction(() => document.querySelector('.recipient[data-member="3"]')?.dataset.state === 'declined');
  assert.match(await ada.textContent('.recipient[data-member="3"] .state-text'), /Cy declined/);
  assert.equal(await cardState(cy), 'declined');
  // Dee cancels half-way (her slow disk keeps the transfer in flight).
  await dee.waitForFunction((t) => {
    const bar = document.querySelector('.incoming progress');
    return bar && bar.value > 0 && bar.value < t;
  }, total, { polling: 50, timeout: 60_000 });
  const at = await dee.evaluate(() => document.querySelector('.incoming progress').value);
  await dee.click('.incoming .cancel');
  await ada.waitForFunction(() => document.querySelector('.recipient[data-member="4"]')?.dataset.state === 'cancelled', null, { timeout: 30_000 });
  assert.match(await ada.textContent('.recipient[data-member="4"] .state-text'), /Dee cancelled: cancelled by the receiver/);
  await dee.waitForSelector('.incoming[data-state="cancelled"]');
  assert.ok(at < total, `Dee had ${at} of ${total} bytes when she cancelled`);
  // Bob still gets everything, verified.
  await bob.waitForSelector('.incoming[data-state="done"]', { timeout: 120_000 });
  await ada.waitForFunction(() => document.querySelector('.recipient[data-member="2"]')?.dataset.state === 'done', null, { timeout: 30_000 });
  assert.deepEqual(await stored(bob), expected, 'every file, every path, every SHA-256');
  assert.equal(await bob.locator('.incoming .saves a').count(), sizes.length, 'a Save link per file');
  // The half-received files go once the disk work queued before the stop ends.
  assert.ok(await emptied(dee), 'nothing half received is kept');
  assert.deepEqual(await stored(cy), {});
  assert.equal(await ada.getAttribute('.group', 'data-state'), 'over');
  assert.equal(await ada.textContent('.group .group-summary'), 'Delivered to 1 of 3 · 1 declined · 1 cancelled');
  assert.equal(await ada.isVisible('.group .cancel-all'), false);
  await ada.screenshot({ path: `${artifacts}/room-sender-done.png`, fullPage: true });
  await bob.screenshot({ path: `${artifacts}/room-recipient-done.png`, fullPage: true });
  for (const p of [ada, bob, cy, dee]) assert.deepEqual(p.problems, []);

  // The owner leaves: the longest-standing member owns the room; it closes.
  await ada.click('#room-leave');
  await bob.waitForFunction(() => document.querySelector('#room-members li[data-member="2"]')?.dataset.owner === 'true');
  assert.ok(await bob.isVisible('#room-close'));
  await bob.click('#room-close');
  for (const p of [bob, cy, dee]) {
    await p.waitForSelector('#room', { state: 'hidden' });
    assert.match(await p.textContent('#room-notice'), /closed by its owner/);
  }
  await close(ada, bob, cy, dee);
});

test('the sender\'s Cancel all reaches every recipient', { timeout: 180_000 }, async () => {
  const ada = await roomPage('Ada');
  const rs = [await roomPage('R1', slowDisk(400)), await roomPage('R2', slowDisk(400)), await roomPage('R3', slowDisk(400))];
  await room(ada, 'Ada', rs.map((p, i) => [p, `R${i + 1}`, 'code']));
  for (const m of [2, 3, 4]) await ada.check(`#room-members input[value="${m}"]`);
  const file = randomBytes(12 * 1024 * 1024);
  await ada.setInputFiles('#room-file', { name: 'big.bin', mimeType: 'application/octet-stream', buffer: file });
  for (const p of rs) {
    await p.waitForSelector('.incoming .accept:not([disabled])', { timeout: 60_000 });
    await p.click('.incoming .accept');
  }
  // Every transfer under way, none finished.
  for (const p of rs) {
    await p.waitForFunction(() => document.querySelector('.incoming progress')?.value > 0, null, { polling: 50, timeout: 60_000 });
  }
  await ada.click('.group .cancel-all');
  for (const p of rs) {
    await p.waitForSelector('.incoming[data-state="cancelled"]', { timeout: 30_000 }).catch(async (e) => {
      console.log(await p.evaluate(() => document.querySelector('.incoming').outerHTML));
      console.log(await ada.evaluate(() => document.querySelector('.group').outerHTML));
      throw e;
    });
    assert.match(await p.textContent('.incoming .state-text'), /The sender cancelled: cancelled by the sender/);
  }
  for (const m of [2, 3, 4]) assert.equal(await rowState(ada, m), 'cancelled');
  for (const p of rs) assert.ok(await emptied(p), 'nothing half received is kept');
  assert.equal(await ada.getAttribute('.group', 'data-state'), 'over');
  assert.equal(await ada.textContent('.group .group-summary'), 'Delivered to 0 of 3 · 3 cancelled');
  for (const p of [ada, ...rs]) assert.deepEqual(p.problems, []);
  await close(ada, ...rs);
});

test('a member who joined with the wrong words fails only its own session', { timeout: 120_000 }, async () => {
  const ada = await roomPage('Ada');
  const bob = await roomPage('Bob');
  const eve = await roomPage('Eve');
  const code = await room(ada, 'Ada', [[bob, 'Bob', 'code']]);
  // Eve knows the nameplate only: the server lets her in, the words do not.
  await eve.fill('#room-code-input', code.replace(/-[a-z]+$/, '-zzz'));
  await eve.fill('#display-name', 'Eve');
  await eve.click('#room-join');
  await ada.waitForFunction(() => document.querySelectorAll('#room-members li').length === 3);
  await ada.check('#room-members input[value="2"]');
  await ada.check('#room-members input[value="3"]');
  const file = randomBytes(200_000);
  await ada.setInputFiles('#room-file', { name: 'note.bin', mimeType: 'application/octet-stream', buffer: file });
  await ada.waitForFunction(() => document.querySelector('.recipient[data-member="3"]')?.dataset.state === 'failed', null, { timeout: 30_000 });
  assert.match(await ada.textContent('.recipient[data-member="3"] .detail'), /codes did not match/);
  await eve.waitForSelector('.incoming[data-state="failed"]');
  assert.equal(await eve.isVisible('.incoming .offer'), false, 'Eve never sees the offer');
  await bob.click('.incoming .accept');
  await bob.waitForSelector('.incoming[data-state="done"]', { timeout: 30_000 });
  assert.deepEqual(Object.values(await stored(bob)), [sha(file)]);
  assert.ok(await waitUntil(async () => (await rowState(ada, 2)) === 'done', 10_000));
  await close(ada, bob, eve);
});

test('a member whose connection drops is shown away, then back once it resumed by itself', { timeout: 90_000 }, async () => {
  const proxy = await cuttableProxy(new URL(server.base));
  try {
    const ada = await roomPage('Ada');
    // Bob reaches the server through a connection the test can cut.
    const bob = await newPage(browser, 'Bob');
    await ready(bob, `${proxy.url}/?relay=1`);
    await bob.waitForSelector('#room-join:not([disabled])');
    await room(ada, 'Ada', [[bob, 'Bob', 'code']]);
    proxy.cut({ stayDown: true });
    await ada.waitForSelector('#room-members li[data-member="2"][data-present="false"] .badge.away', { timeout: 30_000 });
    await bob.waitForFunction(() => /reconnecting/.test(document.getElementById('room-status').textContent));
    proxy.restore();
    await ada.waitForSelector('#room-members li[data-member="2"][data-present="true"]', { timeout: 30_000 });
    await bob.waitForFunction(() => document.getElementById('room').dataset.connection === 'live', null, { timeout: 30_000 });
    assert.match(await bob.textContent('#room-status'), /closes by itself at/);
    assert.equal(await bob.isVisible('#room'), true, 'still in the room');
    for (const p of [ada, bob]) assert.deepEqual(p.problems, []);
    await close(ada, bob);
  } finally {
    proxy.close();
  }
});

test('a second send to a member whose first one waits for an answer ends at once on the sender\'s page', { timeout: 120_000 }, async () => {
  const file = join(scratch, 'note.txt');
  writeFileSync(file, 'hello');
  const ada = await roomPage('Ada');
  const bob = await roomPage('Bob');
  await room(ada, 'Ada', [[bob, 'Bob', 'code']]);
  await ada.check('#room-members input[value="2"]');
  await ada.setInputFiles('#room-file', file);
  await bob.waitForSelector('.incoming[data-state="offered"]', { timeout: 60_000 });
  // Bob has not answered; Ada sends again.
  await ada.check('#room-members input[value="2"]');
  await ada.setInputFiles('#room-file', file);
  const t0 = Date.now();
  await ada.waitForFunction(() => document.querySelectorAll('.group').length === 2);
  // Bob's page does not take it, and says why; Ada's row ends well before
  // the server's two-minute grace for an untaken invitation.
  await bob.waitForSelector('#room-notice:not([hidden])');
  assert.match(await bob.textContent('#room-notice'), /Ada tried to send more/);
  await ada.waitForFunction(() => {
    const newest = document.querySelector('.group .recipient[data-member="2"]');
    return ['failed', 'cancelled'].includes(newest?.dataset.state);
  }, null, { timeout: 30_000 });
  assert.ok(Date.now() - t0 < 30_000);
  assert.equal(await bob.locator('.incoming').count(), 1, 'one card: the first send');
  assert.equal(await cardState(bob), 'offered', 'which still waits for Bob');
  await close(ada, bob);
});
