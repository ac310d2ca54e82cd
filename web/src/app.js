// The Tallow page: create or join a code, verify, send and receive files;
// and rooms and nearby devices (./rooms-ui.js). The session with the peer
// (signaling, handshake, WebRTC, transfers) is a ./peer.js Peer; this file
// shows what it does. Files are written as they land by ./sink.js.

import qrcode from 'qrcode-generator';
import { Peer, signalUrl, transferOver } from './peer.js';
import { neutral, sanitizeName } from './names.js';
import { Progress } from './progress.js';
import { clearBrowserStore } from './sink.js';
import { hashEngine, prepareHashing } from './hashing.js';
import { bytes, fromDrop, fromInput, markFile, offerItems, renderFiles, saveClick, saveItem } from './view.js';
import { startRooms } from './rooms-ui.js';
import { roomCode } from './room.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const forceRelay = params.get('relay') === '1';
// ?sink=browser: keep received files in the browser's storage even where a
// folder picker exists (tests, which cannot drive native pickers).
const sink = params.get('sink') === 'browser' ? 'browser' : 'picker';

const USER_RETRY_TEXT = {
  too_many_failed_joins: 'Too many wrong codes were tried from your network. Wait a few minutes, then try again.',
  server_full: 'The server is full right now. Try again in a minute.',
  too_many_sessions: 'Your network already holds too many open sessions. Close some, then try again.',
  presence_unavailable: 'The server cannot reach its session store. Try again in a minute.',
  rate_limited: 'Too many requests. Try again in a moment.',
};

const ui = {
  notice(text) {
    $('notice').textContent = text;
    $('notice').hidden = false;
  },
  status(text) { $('status').textContent = text; },
  error(text) {
    $('error').textContent = text;
    $('error').hidden = false;
    $('status').textContent = 'Stopped.';
    $('verify').hidden = true; // words of a session that failed compare nothing
    document.body.dataset.state = 'failed';
  },
  words(words) {
    $('words').textContent = words.join(' ');
    $('verify').hidden = false;
  },
  progress(prefix, p) {
    $('progress').hidden = false;
    $('progress').max = p.total;
    $('progress').value = p.done;
    const left = p.done < p.total && Number.isFinite(p.secondsLeft) ? ` · ${Math.ceil(p.secondsLeft)} s left` : '';
    $('progress-text').textContent = `${prefix} ${bytes(p.done)} of ${bytes(p.total)} · ${bytes(p.rate)}/s${left}`;
  },
};

let rooms = null; // ./rooms-ui.js, once the server answered
const state = {
  peer: null, // the page's one session (./peer.js)
  txProgress: null,
  rxProgress: null,
};

const finished = () => document.body.dataset.state?.startsWith('done') ?? false;
const bump = (name) => { document.body.dataset[name] = String(Number(document.body.dataset[name] ?? 0) + 1); };

// --- the session ---------------------------------------------------------------

/** What the page shows of its one session. */
const hooks = {
  status: (text) => ui.status(text),
  notice: (text) => ui.notice(text),
  failed(text) {
    ui.error(text);
    $('cancel').hidden = true;
    $('offer').hidden = true;
    sessionStorage.removeItem('tallow-active');
  },
  words: (words) => ui.words(words),
  created({ code }) {
    $('code').textContent = code;
    ui.status('Read this code to your peer, or send the link. It expires in 10 minutes.');
    showShare();
  },
  refused(m) {
    ui.notice(USER_RETRY_TEXT[m.code] ?? `${m.message} (${m.code}). Try again in a moment.`);
    ui.status('Create a code, or type the one you were given.');
    $('start').hidden = false;
    $('code').textContent = '';
  },
  connected({ afterBreak }) {
    if (!afterBreak) document.body.dataset.state = 'connected';
    const out = state.peer.outgoing;
    $('send').hidden = !!out && !transferOver(out);
  },
  path: (type) => { $('path').textContent = type; },
  count: (name) => bump(name),
  sender: (sender, event, detail) => onSenderEvent(sender, event, detail),
  receiver: (r, event, detail) => onReceiverEvent(r, event, detail),
};

async function connect() {
  const peer = new Peer({ url: signalUrl(location), forceRelay, hooks });
  state.peer = peer;
  await peer.connect();
  $('notice').hidden = true;
  if (state.interrupted) ui.notice(state.interrupted);
  ui.status('Create a code, or type the one you were given.');
  $('create').disabled = false;
  $('join').disabled = false;
}

const capital = (s) => s[0].toUpperCase() + s.slice(1);

/** A transfer ended early, said plainly; the session stays usable. */
function stopped(text, kind) {
  $('notice').textContent = text;
  $('notice').hidden = false;
  ui.status(text);
  document.body.dataset.stopped = kind;
}

function onReceiverEvent(r, event, detail) {
  switch (event) {
    case 'offer': {
      const { count, total, files } = detail;
      $('offer-text').textContent = count === 1
        ? `Your peer offers ${files[0].parts.join('/')} (${bytes(total)}).`
        : `Your peer offers ${count} files, ${bytes(total)} in all.`;
      $('offer-list').replaceChildren(...offerItems(files));
      $('offer').hidden = false;
      $('accept').disabled = false;
      $('decline').disabled = false;
      $('accept').focus();
      ui.status('Your peer offers files: accept or decline.');
      document.body.dataset.offer = 'shown';
      break;
    }
    case 'progress': {
      const p = r.machine.progress();
      state.rxProgress?.update(p.done);
      const f = r.machine.files[detail.file];
      if (f) fileProgress($('files'), detail.file, p.count, r.offer.files[detail.file].parts.join('/'), f.done ? f.size : f.landed, f.size, state.rxProgress?.rate ?? 0);
      announce('Received', p.done, p.total);
      break;
    }
    case 'file': {
      const f = r.offer.files[detail.file];
      markFile($('files'), detail.file, detail.ok ? `✓ verified (SHA-256 ${detail.sha256.slice(0, 12)}…)` : '✗ damaged', detail.ok ? 'done' : 'bad');
      if (r.offer.count === 1) $('received-sha256').textContent = detail.sha256;
      if (detail.ok && r.sink.kind === 'browser') {
        if (r.offer.count === 1) {
          // One file: the page's own Save link.
          const save = $('save');
          save.textContent = `Save ${f.parts.join('/')} (${bytes(f.size)})`;
          save.download = f.parts[f.parts.length - 1];
          save.onclick = saveClick(save, r, detail.file);
          save.hidden = false;
        } else {
          $('saves').append(saveItem(r, detail.file, f));
          $('saved').hidden = false;
        }
      }
      break;
    }
    case 'done': {
      const p = r.machine.progress();
      state.rxProgress.report = (q) => ui.progress('Received', q);
      state.rxProgress.update(p.total, true);
      announce('Received', p.total, p.total);
      const n = r.offer.count;
      $('progress-label').textContent = n === 1 ? `Received ${r.offer.files[0].parts.join('/')}` : `Received ${n} files`;
      $('cancel').hidden = true;
      document.body.dataset.state = 'done-received';
      ui.status(`${n === 1 ? 'File' : `All ${n} files`} received and verified${r.sink.kind === 'picker' ? `, saved in ${r.sink.label}` : ''}.`);
      sessionStorage.removeItem('tallow-active');
      break;
    }
    case 'stopped':
      $('offer').hidden = true;
      $('cancel').hidden = true;
      sessionStorage.removeItem('tallow-active');
      // A protocol break or a local write failure ends the session (the
      // Peer says so); anything else leaves it usable.
      if (detail.error) break;
      if (detail.by === 'peer') stopped(`${capital(neutral(detail.why))}.`, 'cancelled');
      else stopped(detail.why === 'you declined' ? 'You declined the files.' : `The transfer stopped: ${detail.why}.`, detail.why === 'you declined' ? 'declined' : 'cancelled');
      break;
    default:
      break;
  }
}

async function acceptOffer() {
  const r = state.peer?.incoming;
  if (!r || r.machine.state !== 'offered') return;
  $('accept').disabled = true;
  $('decline').disabled = true;
  try {
    await r.accept(sink === 'browser' ? 'browser' : 'picker');
  } catch (e) {
    $('accept').disabled = false;
    $('decline').disabled = false;
    if (e?.name === 'AbortError') return; // the user closed the picker
    // Nowhere to write: the sender is told rather than left waiting.
    r.cancel(`the receiver's browser cannot save files: ${e.message}`);
    ui.notice(`Cannot save here: ${e.message}`);
    return;
  }
  sessionStorage.setItem('tallow-active', '1');
  lastAnnounced = -1;
  lastFile = null;
  $('file-progress').textContent = '';
  $('offer').hidden = true;
  $('send').hidden = true;
  $('transfer').hidden = false;
  $('cancel').hidden = false;
  $('saves').replaceChildren();
  renderFiles($('files'), r.offer.files, (f) => f.parts.join('/'));
  const n = r.offer.count;
  $('progress-label').textContent = n === 1 ? `Receiving ${r.offer.files[0].parts.join('/')}` : `Receiving ${n} files`;
  state.rxProgress = new Progress(r.offer.total, (p) => ui.progress('Receiving', p));
  state.rxProgress.update(0, true);
  ui.status(`Receiving into ${r.sink.label}…`);
}

/** The file in flight: its line in the list and the line under the bar,
 * with its share, and its time left at the transfer's current rate. */
let lastFile = null;
function fileProgress(list, i, count, name, done, size, rate) {
  const pct = size > 0 ? Math.floor((done / size) * 100) : 100;
  const key = `${i}:${pct}`;
  if (key === lastFile) return;
  lastFile = key;
  const left = done < size && rate > 0 ? ` · ${Math.ceil((size - done) / rate)} s left` : '';
  if (list.children[i]?.dataset.status !== 'done') markFile(list, i, `${pct}%`, 'active');
  $('file-progress').textContent = `File ${i + 1} of ${count}: ${name} · ${pct}% (${bytes(done)} of ${bytes(size)})${left}`;
}

let lastAnnounced = -1;
function announce(prefix, done, total) {
  const pct = total > 0 ? Math.floor((done / total) * 10) * 10 : 100;
  if (pct === lastAnnounced) return;
  lastAnnounced = pct;
  $('announce').textContent = `${prefix}: ${pct}%`;
}

function offerFiles(entries) {
  let sender;
  try {
    sender = state.peer?.send(entries);
  } catch (e) {
    ui.notice(`Cannot offer these files: ${e.message}.`);
    return;
  }
  if (!sender) return;
  const files = entries.filter((e) => e.file);
  sessionStorage.setItem('tallow-active', '1');
  lastAnnounced = -1;
  lastFile = null;
  $('file-progress').textContent = '';
  $('send').hidden = true;
  $('transfer').hidden = false;
  $('cancel').hidden = false;
  renderFiles($('files'), files.map((f) => ({ size: f.file.size, path: f.path })), (f) => neutral(f.path, 200));
  const total = sender.total;
  $('progress-label').textContent = files.length === 1
    ? `Offering ${sanitizeName(files[0].path.split('/').pop())}`
    : `Offering ${files.length} files (${bytes(total)})`;
  ui.status('Waiting for your peer to accept…');
  state.txProgress = new Progress(total, (p) => ui.progress('Sent', p));
}

function onSenderEvent(sender, event, detail) {
  switch (event) {
    case 'accepted':
      ui.status('Your peer accepted. Sending…');
      $('progress-label').textContent = $('progress-label').textContent.replace(/^Offering/, 'Sending');
      state.txProgress.update(0, true);
      break;
    case 'progress': {
      const done = Math.min(sender.total, sender.firstBytes);
      state.txProgress.update(done);
      const f = sender.machine.files[detail.file];
      fileProgress($('files'), detail.file, sender.machine.files.length, neutral(f.path, 120), Math.min(f.size, sender.fileBytes[detail.file]), f.size, state.txProgress.rate);
      announce('Sent', done, sender.total);
      document.body.dataset.sentBytes = String(sender.bytesSent);
      break;
    }
    case 'confirmed':
      markFile($('files'), detail.file, `✓ verified (SHA-256 ${detail.sha256.slice(0, 12)}…)`, 'done');
      if (sender.machine.files.length === 1) $('sent-sha256').textContent = detail.sha256;
      break;
    case 'done': {
      document.body.dataset.sentBytes = String(sender.bytesSent);
      state.txProgress.update(sender.total, true);
      announce('Sent', sender.total, sender.total);
      const n = sender.machine.files.length;
      $('progress-label').textContent = n === 1 ? `Sent ${sanitizeName(sender.machine.files[0].path.split('/').pop())}` : `Sent ${n} files`;
      $('cancel').hidden = true;
      document.body.dataset.state = 'done-sent';
      ui.status(`Delivered. Your peer verified ${n === 1 ? 'the file' : `all ${n} files`} (SHA-256).`);
      sessionStorage.removeItem('tallow-active');
      $('send').hidden = false;
      break;
    }
    case 'stopped':
      $('cancel').hidden = true;
      sessionStorage.removeItem('tallow-active');
      if (detail.by === 'peer') stopped(detail.why.startsWith('your peer declined') ? 'Your peer declined the files.' : `${capital(neutral(detail.why))}.`, detail.why.startsWith('your peer declined') ? 'declined' : 'cancelled');
      else if (detail.why.startsWith('stalled: ')) stopped(`The transfer stopped: ${detail.why.slice(9)}.`, 'stalled');
      else stopped(`You cancelled: ${detail.why}.`, 'cancelled');
      $('send').hidden = false;
      break;
    default:
      break;
  }
}

// --- share link --------------------------------------------------------------------

function shareLink() {
  return `${location.origin}${location.pathname}#${state.peer.code}`;
}

function showShare() {
  $('share').hidden = false;
  $('share-link').textContent = shareLink();
}

function showQr() {
  const qr = qrcode(0, 'M');
  qr.addData(shareLink());
  qr.make();
  const n = qr.getModuleCount();
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `-4 -4 ${n + 8} ${n + 8}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `QR code of ${shareLink()}`);
  let d = '';
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) if (qr.isDark(r, c)) d += `M${c} ${r}h1v1h-1z`;
  const bg = document.createElementNS(ns, 'rect');
  bg.setAttribute('x', '-4');
  bg.setAttribute('y', '-4');
  bg.setAttribute('width', String(n + 8));
  bg.setAttribute('height', String(n + 8));
  bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', '#000');
  svg.append(bg, path);
  $('qr').replaceChildren(svg);
  $('qr').hidden = false;
}

// --- page wiring -----------------------------------------------------------------

$('create').onclick = () => {
  $('notice').hidden = true;
  $('start').hidden = true;
  state.peer.create();
};
function join() {
  const code = $('code-input').value.trim().toLowerCase();
  if (!/^\d{1,9}-[a-z]+(-[a-z]+)+$/.test(code)) {
    ui.status('A code looks like 7-bal-kir-mos.');
    return;
  }
  $('notice').hidden = true;
  $('start').hidden = true;
  $('code').textContent = code;
  state.peer.join(code);
  ui.status('Joining…');
}
$('join').onclick = join;
$('code-input').onkeydown = (e) => { if (e.key === 'Enter' && !$('join').disabled) join(); };
$('file').onchange = () => { offerFiles(fromInput($('file'))); $('file').value = ''; };
$('folder').onchange = () => { offerFiles(fromInput($('folder'))); $('folder').value = ''; };
const drop = $('drop');
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = async (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  offerFiles(await fromDrop(e.dataTransfer));
};
$('accept').onclick = () => acceptOffer();
$('decline').onclick = () => { state.peer?.incoming?.decline(); $('offer').hidden = true; };
$('cancel').onclick = () => state.peer?.cancel();
$('copy-link').onclick = async () => {
  try {
    await navigator.clipboard.writeText(shareLink());
    $('copy-link').textContent = 'Copied';
  } catch {
    $('copy-link').textContent = 'Select the link above to copy it';
  }
};
$('show-qr').onclick = () => showQr();

// Closing the page ends this side for good: say so to the peer at once
// (rather than after the server's grace), and remember it for a reload.
window.addEventListener('pagehide', () => {
  if (state.peer?.sid) state.peer.signal.leave();
  rooms?.leaveAll();
});
window.addEventListener('beforeunload', (e) => {
  if (state.peer?.activeTransfer() || rooms?.activeTransfer()) e.preventDefault();
});

/** What this page lacks to run Tallow, or null. Checked before anything
 * else: without a secure context the browser hides WebCrypto, and the
 * handshake would fail half-way with a TypeError. */
function missingCapability() {
  if (!window.isSecureContext) return 'insecure';
  if (typeof crypto?.subtle?.importKey !== 'function' || typeof crypto.getRandomValues !== 'function') return 'webcrypto';
  if (typeof RTCPeerConnection !== 'function') return 'webrtc';
  return null;
}

/** Says, in plain words, why this page cannot run and what to do. */
function showUnsupported(what) {
  const box = $('unsupported');
  const p = (...parts) => {
    const el = document.createElement('p');
    el.append(...parts);
    box.append(el);
  };
  if (what === 'insecure') {
    const https = `https://${location.host}${location.pathname}${location.search}${location.hash}`;
    const link = document.createElement('a');
    link.href = https;
    link.textContent = https;
    const port = location.port ? `:${location.port}` : '';
    p(`This page was opened over plain HTTP from ${location.hostname}, which your browser does not treat as a secure context, so it hides the cryptography Tallow needs (WebCrypto). Nothing can be sent from here.`);
    p('Open it over HTTPS instead: ', link, ' (the server must be started with TALLOW_TLS_SELF_SIGNED=true or its own certificate; if your browser warns about a self-signed certificate, check that the fingerprint it shows is the one the server printed at start).');
    p(`Or, on the machine that runs the server, open http://localhost${port}${location.pathname}.`);
  } else if (what === 'webcrypto') {
    p('This browser does not offer WebCrypto, which Tallow needs for its end-to-end encryption. Use a current Chrome, Edge, Firefox or Safari.');
  } else {
    p('This browser does not offer WebRTC data channels, which Tallow needs to move files. Use a current Chrome, Edge, Firefox or Safari.');
  }
  box.hidden = false;
  $('start').hidden = true;
  ui.status('Tallow cannot run in this page.');
  document.body.dataset.state = 'unsupported';
  document.body.dataset.unsupported = what;
}

/** What the page has to say before anything else: a transfer this tab was
 * in when it was closed or reloaded, and a code from a share link. */
function atLoad() {
  if (sessionStorage.getItem('tallow-active')) {
    sessionStorage.removeItem('tallow-active');
    state.interrupted = 'A transfer in this tab stopped when the page was closed or reloaded. It cannot continue: start again with a new code.';
    ui.notice(state.interrupted);
  }
  fromFragment();
  clearBrowserStore();
}

/** A code from a share link: the 1:1 code (`#7-bal-kir-mos`) or a room's
 * (`#room=417-bal-kir-mos`). It travels in the fragment, which never
 * reaches a server, and leaves the address bar once read. */
function fromFragment() {
  const code = decodeURIComponent(location.hash.slice(1)).trim().toLowerCase();
  if (/^\d{1,9}-[a-z]+(-[a-z]+)+$/.test(code)) {
    $('code-input').value = code;
    history.replaceState(null, '', location.pathname + location.search);
    document.body.dataset.fromLink = '1';
  } else if (code.startsWith('room=') && roomCode(code.slice(5))) {
    state.roomFromLink = roomCode(code.slice(5));
    history.replaceState(null, '', location.pathname + location.search);
    rooms?.fromLink(state.roomFromLink);
  }
}
// A link opened in a tab that already shows the page changes only the fragment.
window.addEventListener('hashchange', fromFragment);

const missing = missingCapability();
if (missing) showUnsupported(missing);
else {
  atLoad();
  prepareHashing().then(() => { document.body.dataset.hashing = hashEngine; }).then(connect).then(() => {
    rooms = startRooms({ url: signalUrl(location), forceRelay, sink, fromLink: state.roomFromLink });
    if (document.body.dataset.fromLink) {
      ui.status('The code from your link is filled in: press Join.');
      $('join').focus();
    }
  }).catch((e) => ui.error(e.message));
}
