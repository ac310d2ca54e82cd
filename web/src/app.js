// The Tallow page: create or join a code, verify, send and receive files.
// Signaling: ./signal.js. End-to-end session: ./handshake.js (everything
// after it is sealed). Transfers: sealed records on an RTCDataChannel
// (./link.js), the sender's and receiver's machines in ./sending.js and
// ./receiving.js, files written as they land by ./sink.js.

import qrcode from 'qrcode-generator';
import { SignalClient } from './signal.js';
import * as hs from './handshake.js';
import { PeerSession } from './session.js';
import { neutral, sanitizeName } from './names.js';
import { abortReason, explain, peerStopped } from './failures.js';
import { Progress } from './progress.js';
import { ControlError } from './control.js';
import { freshDataKey } from './records.js';
import { Link } from './link.js';
import { Sender } from './sending.js';
import { Receiver } from './receiving.js';
import { clearBrowserStore } from './sink.js';
import { hashEngine, prepareHashing } from './hashing.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const forceRelay = params.get('relay') === '1';
// ?sink=browser: keep received files in the browser's storage even where a
// folder picker exists (tests, which cannot drive native pickers).
const sink = params.get('sink') === 'browser' ? 'browser' : 'picker';

const RETRY_TEXT = {
  presence_unavailable: 'The server cannot reach its session store right now.',
  rate_limited: 'Sending too fast for the server.',
  mailbox_full: 'Your peer has not caught up yet.',
  internal: 'The server had a problem.',
};
const USER_RETRY_TEXT = {
  too_many_failed_joins: 'Too many wrong codes were tried from your network. Wait a few minutes, then try again.',
  server_full: 'The server is full right now. Try again in a minute.',
  too_many_sessions: 'Your network already holds too many open sessions. Close some, then try again.',
  presence_unavailable: 'The server cannot reach its session store. Try again in a minute.',
  rate_limited: 'Too many requests. Try again in a moment.',
};

const bytes = (n) => (n < 1e3 ? `${Math.round(n)} B` : n < 1e6 ? `${(n / 1e3).toFixed(1)} kB` : `${(n / 1e6).toFixed(1)} MB`);

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

const state = {
  signal: null,
  role: null, // 'A' creates, 'B' joins
  code: null,
  sid: null,
  iceServers: [],
  peer: null, // PeerSession: the handshake state machine, then the session
  pc: null, // the current peer connection (epoch `epoch`)
  epoch: 0,
  dk: null, // its data key
  channel: null,
  link: null, // sealed records on its channel, once open
  outgoing: null, // Sender: our transfer
  incoming: null, // Receiver: the peer's transfer
  txProgress: null,
  rxProgress: null,
  retries: 0,
  reconnecting: false,
  breakSince: null,
  peerLeft: false,
  signalClosed: false,
  queue: Promise.resolve(), // sealed messages are opened strictly in order
  failed: false,
};

function fail(text) {
  if (state.failed) return;
  state.failed = true;
  ui.error(text);
  clearTimeout(state.retryTimer);
  if (state.incoming && !transferOver(state.incoming)) state.incoming.cancel(text);
  if (state.outgoing && !transferOver(state.outgoing)) state.outgoing.cancel(text);
  $('cancel').hidden = true;
  $('offer').hidden = true;
  sessionStorage.removeItem('tallow-active');
  // A moment for a last record (a cancel) to leave before the connection goes.
  const pc = state.pc;
  setTimeout(() => pc?.close(), 1000);
}

/** Stops the whole session for a reason of ours that the peer cannot see
 * (a stalled or lying transfer, a path that never came back): tells it,
 * sealed, then leaves. */
function stopSession(text, reason) {
  if (state.failed) return;
  fail(text);
  if (state.peer?.session) {
    state.peer.seal({ kind: 'abort', reason }, (m) => state.signal.send(m)).catch(() => {}).finally(() => state.signal.leave());
  }
}

const finished = () => document.body.dataset.state?.startsWith('done') ?? false;
const channelOpen = () => state.channel?.readyState === 'open';

/** Stops after an error of ours: tells the peer (sealed once the session
 * exists: an unsealed abort is only trusted before it), then leaves. The
 * reason is a HandshakeError's kind, or `local` for a failure of this
 * browser (docs/PROTOCOL.md, "What the web client seals"). */
function abort(e) {
  const reason = abortReason(e);
  if (state.peer?.session) {
    state.peer.seal({ kind: 'abort', reason }, (m) => state.signal.send(m)).catch(() => {}).finally(() => state.signal.leave());
  } else {
    state.signal.send({ t: 'abort', reason });
    state.signal.leave();
  }
}

function randomWords(n) {
  return Array.from(crypto.getRandomValues(new Uint8Array(n)), hs.word);
}

/** Seals `obj` and sends it; sealing is serialised (PeerSession.seal), so
 * messages leave in counter order. */
function sealed(obj) {
  return state.peer.seal(obj, (m) => state.signal.send(m));
}

// --- signaling ---------------------------------------------------------------

async function connect() {
  const url = new URL('/signal', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const signal = new SignalClient(url);
  state.signal = signal;
  signal
    .on('created', (m) => {
      state.sid = m.session;
      state.code = `${m.nameplate}-${randomWords(3).join('-')}`;
      $('code').textContent = state.code;
      ui.status('Read this code to your peer, or send the link. It expires in 10 minutes.');
      showShare();
    })
    .on('joined', (m) => { state.sid = m.session; })
    .on('paired', (m) => {
      if (state.peer) return; // paired once
      state.iceServers = m.ice_servers ?? [];
      if (state.role === 'A') {
        state.peer = new PeerSession('A', state.code, state.sid);
        let hello;
        try {
          hello = state.peer.start();
        } catch (e) {
          fail(explain(e));
          abort(e);
          return;
        }
        signal.hello(hello);
        ui.status('Peer connected. Securing the session…');
      } else {
        state.peer = new PeerSession('B', state.code, state.sid);
        ui.status('Connected. Securing the session…');
      }
    })
    .on('message', (m) => {
      state.queue = state.queue.then(() => onPeerMessage(parsePeerJson(m.body))).catch((e) => {
        fail(explain(e));
        abort(e);
      });
    })
    .on('peer_left', () => {
      // Over on the server; a finished transfer stays a success, and a
      // working data channel is not torn down for it. Without the server
      // no new connection can be made, so a break is then final.
      state.peerLeft = true;
      if (channelOpen()) {
        if (!finished() || activeTransfer()) ui.status('Your peer is no longer connected to the server; the direct connection to it stays open.');
        return;
      }
      if (activeTransfer()) fail('Your peer closed the page or left: the transfer cannot continue. Start again with a new code.');
      else if (!finished()) fail('Your peer left.');
    })
    // After a verified transfer the status keeps saying so.
    .on('peer_away', () => { if (!finished() && !state.failed) ui.status('Your peer lost its connection to the server; waiting for it to come back…'); })
    .on('peer_back', () => { if (!finished() && !state.failed) ui.status('Your peer is back.'); })
    .on('reconnecting', () => {
      document.body.dataset.reconnects = String(Number(document.body.dataset.reconnects ?? 0) + 1);
      if (!finished() && !state.failed) ui.status('Connection to the server lost; reconnecting…');
    })
    .on('resumed', () => { if (!state.failed) ui.status(finished() ? 'Reconnected.' : 'Reconnected. Carrying on…'); })
    .on('retrying', (m) => {
      if (!state.failed) ui.status(`${RETRY_TEXT[m.code] ?? 'The server refused a request for now.'} Trying again in ${Math.max(1, Math.round(m.delayMs / 1000))} s…`);
    })
    .on('error', (m) => {
      if (m.code === 'unknown_nameplate' || m.code === 'session_full') {
        fail('No one is waiting with that code. Check it, or ask for a new one.');
      } else if (m.code === 'nameplate_expired') {
        fail('The code expired before anyone joined. Create a new one.');
      } else if (m.retryable && !state.peer) {
        // Refused create/join that needs the user: say so, let them retry.
        ui.notice(USER_RETRY_TEXT[m.code] ?? `${m.message} (${m.code}). Try again in a moment.`);
        ui.status('Create a code, or type the one you were given.');
        $('start').hidden = false;
        $('code').textContent = '';
        state.role = null;
      } else if (m.retryable) {
        ui.status(`${m.message} (${m.code}); still trying…`);
      } else {
        fail(`${m.message} (${m.code})`);
      }
    })
    .on('closed', (e) => {
      // Signaling is gone for good; a working data channel goes on without it.
      state.signalClosed = true;
      if (finished() || state.failed) return;
      if (channelOpen()) {
        ui.status('The connection to the server was lost; the direct connection to your peer stays open.');
        return;
      }
      fail(`The connection to the server was lost (${e.code}).`);
    });
  // The page is no use without the server: keep trying, and say why.
  for (let attempt = 0; ; attempt++) {
    try {
      await signal.connect();
      break;
    } catch (e) {
      const delay = Math.min(15_000, 1000 * 2 ** attempt);
      const why = e.code === 'server_full' ? 'The server is full right now.' : `Cannot reach the server${e.code ? ` (${e.code})` : ''}.`;
      ui.notice(`${why} Trying again in ${delay / 1000} s…`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  $('notice').hidden = true;
  if (state.interrupted) ui.notice(state.interrupted);
  ui.status('Create a code, or type the one you were given.');
  $('create').disabled = false;
  $('join').disabled = false;
}

/** JSON from the peer (or the path): unparsable is its fault, not ours. */
function parsePeerJson(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new hs.HandshakeError('malformed', `a message from the peer is not JSON (${e.message})`);
  }
}

async function onPeerMessage(msg) {
  if (state.failed) return;
  if (msg?.t === 'sealed') {
    return onSealed(parsePeerJson(new TextDecoder().decode(await state.peer.open(msg))));
  }
  if (!state.peer) throw new hs.HandshakeError('out_of_turn', `${String(msg?.t)} arrived before the handshake started`);
  const r = state.peer.receive(msg);
  if (r.abort) {
    fail(peerStopped(msg.reason, { sealed: false }));
    state.signal.leave();
    return;
  }
  if (r.ignored) {
    // Anyone on the path can forge an unsealed abort: after the session a
    // peer stops with a sealed one. Not trusted, noted for the curious.
    document.body.dataset.untrusted = String(Number(document.body.dataset.untrusted ?? 0) + 1);
    console.warn(`ignored: ${r.ignored}`);
    return;
  }
  if (r.send) state.signal.send(r.send);
  if (r.session) {
    onSession();
    await startWebRtc(state.role === 'A');
  }
}

function onSession() {
  ui.words(state.peer.session.words);
  ui.status('Secure session ready. Compare the words with your peer. Connecting…');
}

// --- WebRTC: one peer connection per epoch ---------------------------------------
//
// The creator offers every peer connection; each carries a fresh data key
// (`dk`, ./records.js) in its sealed offer. When the connection breaks
// mid-session the creator offers a new one (the joiner asks with
// `reconnect` if it noticed first), and transfers resume on its channel.

const RETRY_MS = [2000, 4000, 8000, 10_000];
const GIVE_UP_MS = 180_000;
const b64 = {
  enc: (u8) => btoa(String.fromCharCode(...u8)),
  dec: (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0)),
};

function newPeerConnection(epoch) {
  const pc = new RTCPeerConnection({
    iceServers: state.iceServers,
    iceTransportPolicy: forceRelay ? 'relay' : 'all',
  });
  pc.onicecandidate = (e) => { if (e.candidate) sealed({ kind: 'ice', candidate: e.candidate.toJSON(), epoch }).catch(() => {}); };
  pc.oniceconnectionstatechange = () => {
    if (pc !== state.pc) return;
    if (pc.iceConnectionState === 'failed') onBreak('the path to your peer failed');
    else if (pc.iceConnectionState === 'disconnected') {
      // A short glitch recovers on its own; a cut path does not.
      clearTimeout(state.disconnectTimer);
      state.disconnectTimer = setTimeout(() => { if (pc === state.pc && pc.iceConnectionState === 'disconnected') onBreak('the path to your peer was lost'); }, 4000);
    }
  };
  return pc;
}

async function startWebRtc(offerer) {
  if (offerer) await offerEpoch(1);
}

/** A (the creator): a new peer connection and its offer. */
async function offerEpoch(epoch) {
  state.epoch = epoch;
  state.pc?.close();
  const pc = newPeerConnection(epoch);
  state.pc = pc;
  const dk = freshDataKey();
  state.dk = dk;
  setupChannel(pc.createDataChannel('file', { ordered: true }), epoch);
  await pc.setLocalDescription(await pc.createOffer());
  await sealed({ kind: 'offer', sdp: pc.localDescription.toJSON(), epoch, dk: b64.enc(dk) });
}

async function onSealed(m) {
  switch (m.kind) {
    case 'offer': {
      // B: the first connection, or a new one after a break.
      const epoch = m.epoch ?? 1;
      if (state.role !== 'B' || !(epoch > state.epoch)) throw new hs.HandshakeError('out_of_turn', `an offer for connection ${epoch} after ${state.epoch}`);
      const dk = typeof m.dk === 'string' ? b64.dec(m.dk) : null;
      if (!dk || dk.length !== 32) throw new hs.HandshakeError('malformed', 'an offer without a 32-byte data key');
      state.epoch = epoch;
      state.dk = dk;
      state.pc?.close();
      const pc = newPeerConnection(epoch);
      state.pc = pc;
      pc.ondatachannel = (e) => setupChannel(e.channel, epoch);
      await pc.setRemoteDescription(m.sdp);
      await pc.setLocalDescription(await pc.createAnswer());
      await sealed({ kind: 'answer', sdp: pc.localDescription.toJSON(), epoch });
      break;
    }
    case 'answer':
      if ((m.epoch ?? 1) !== state.epoch || state.role !== 'A') break; // for a connection given up
      await state.pc.setRemoteDescription(m.sdp);
      break;
    case 'ice':
      if ((m.epoch ?? 1) !== state.epoch) break;
      await state.pc.addIceCandidate(m.candidate);
      break;
    case 'reconnect':
      // B noticed the break first; a request for an older connection is stale.
      if (state.role === 'A' && m.epoch === state.epoch) onBreak('your peer lost the connection');
      break;
    case 'abort':
      fail(peerStopped(m.reason, { sealed: true }));
      state.signal.leave();
      break;
    default:
      break;
  }
}

function setupChannel(channel, epoch) {
  channel.binaryType = 'arraybuffer';
  channel.onopen = async () => {
    if (epoch !== state.epoch || state.failed) return;
    const afterBreak = state.opened;
    state.opened = true;
    state.link = new Link(channel, state.dk, state.role, {
      onControl: (msg) => onControl(msg),
      onData: (bytes) => state.incoming?.onFrame(bytes),
      onError: (e) => linkError(e),
    });
    state.channel = channel;
    clearTimeout(state.retryTimer);
    state.breakSince = null;
    state.retries = 0;
    state.outgoing?.setLink(state.link);
    state.incoming?.setLink(state.link, { afterBreak });
    if (afterBreak) {
      document.body.dataset.repaths = String(Number(document.body.dataset.repaths ?? 0) + 1);
      ui.status(activeTransfer() ? 'Reconnected to your peer. Carrying on from where it broke…' : 'Reconnected to your peer.');
    } else {
      ui.status('Connected. Pick or drop files or a folder to send them.');
      document.body.dataset.state = 'connected';
    }
    $('send').hidden = !!state.outgoing && !transferOver(state.outgoing);
    $('path').textContent = await pathType();
  };
  channel.onclose = () => { if (epoch === state.epoch) onBreak('the connection to your peer closed'); };
}

const transferOver = (t) => ['done', 'stopped'].includes(t.machine.state);
const activeTransfer = () => [state.outgoing, state.incoming].some((t) => t && !transferOver(t) && t.machine.state !== 'offering');

/** The peer connection broke: try another while the session lives. */
function onBreak(why) {
  if (state.failed || state.reconnecting) return;
  const link = state.link;
  if (link && link.channel.readyState === 'open' && state.pc?.iceConnectionState !== 'failed' && !why.startsWith('your peer')) {
    // The channel still works: nothing to do yet.
    if (state.pc?.iceConnectionState !== 'disconnected') return;
  }
  state.link?.close();
  state.link = null;
  state.channel = null;
  state.breakSince ??= Date.now();
  if (state.peerLeft || state.signalClosed) {
    if (activeTransfer()) {
      fail(state.peerLeft
        ? 'Your peer closed the page or left: the transfer cannot continue. Start again with a new code.'
        : 'The connection to your peer was lost and the server cannot be reached to make a new one: the transfer cannot continue. Start again with a new code.');
    }
    else if (!finished()) fail('The connection to your peer was lost.');
    return;
  }
  if (Date.now() - state.breakSince > GIVE_UP_MS) {
    stopSession('Your peer could not be reached again for 3 minutes: the transfer stopped. Start again with a new code.', 'unreachable');
    return;
  }
  ui.status(`${why[0].toUpperCase()}${why.slice(1)}; reconnecting…`);
  document.body.dataset.breaks = String(Number(document.body.dataset.breaks ?? 0) + 1);
  const delay = RETRY_MS[Math.min(state.retries, RETRY_MS.length - 1)];
  state.retries += 1;
  state.reconnecting = true;
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(() => {
    state.reconnecting = false;
    if (state.failed) return;
    const epoch = state.epoch;
    if (state.role === 'A') offerEpoch(epoch + 1).catch((e) => fail(explain(e)));
    else sealed({ kind: 'reconnect', epoch }).catch(() => {});
    // If this attempt does not open a channel, try again.
    state.retryTimer = setTimeout(() => { if (!state.link && !state.failed) onBreak('your peer could not be reached yet'); }, 15_000);
  }, state.role === 'A' ? delay : 500);
}

function linkError(e) {
  // A record that did not open: someone altered the stream. Stop.
  const text = e?.kind === 'tampered'
    ? `Data from your peer did not open under your session's key (${e.message}): someone may be tampering with the connection. The transfer stopped.`
    : `Your peer sent something malformed (${e.message}). The transfer stopped.`;
  state.outgoing?.cancel(e.message);
  state.incoming?.cancel(e.message);
  stopSession(text, e?.kind ?? 'malformed');
}

// --- transfers ---------------------------------------------------------------------

const randomId = () => Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
const OUTGOING_KINDS = new Set(['accept', 'decline', 'want', 'resume', 'got', 'ack']);

/** A control message on the link: to our transfer or to theirs. */
function onControl(msg) {
  try {
    if (msg?.kind === 'cancel' && msg.id === state.outgoing?.id) {
      state.outgoing.onMessage(msg);
      return;
    }
    if (OUTGOING_KINDS.has(msg?.kind)) {
      if (!state.outgoing || msg.id !== state.outgoing.id) throw new ControlError('unexpected', `${msg.kind} for a transfer we did not offer`);
      state.outgoing.onMessage(msg);
      return;
    }
    if (msg?.kind === 'files' && (!state.incoming || (msg.id !== state.incoming.machine.id && transferOver(state.incoming)))) {
      if (msg.part !== 0) return; // the tail of an offer we did not see begin
      state.incoming = newReceiver();
    }
    if (!state.incoming) throw new ControlError('unexpected', `${String(msg?.kind)} before any offer`);
    state.incoming.onMessage(msg);
  } catch (e) {
    linkError(e);
  }
}

// Progress of our transfer (sending) and of theirs (receiving).
function renderFiles(list, files, label) {
  list.replaceChildren(...files.map((f, i) => {
    const li = document.createElement('li');
    li.dataset.file = String(i);
    li.textContent = `${label(f)} (${bytes(f.size)})`;
    return li;
  }));
}

function markFile(list, i, text, cls) {
  const li = list.children[i];
  if (!li) return;
  li.dataset.status = cls;
  li.querySelector('.status')?.remove();
  const span = document.createElement('span');
  span.className = 'status';
  span.textContent = ` ${text}`;
  li.append(span);
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

async function offerFiles(entries) {
  if (!channelOpen() || (state.outgoing && !transferOver(state.outgoing))) return;
  const files = entries.filter((e) => e.file);
  if (files.length === 0) return;
  const sender = new Sender(randomId(), files, { on: (event, detail) => onSenderEvent(sender, event, detail) });
  try {
    sender.machine.offer(); // too many files, or names too long, for one offer
  } catch (e) {
    ui.notice(`Cannot offer these files: ${e.message}.`);
    return;
  }
  state.outgoing = sender;
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
  sender.setLink(state.link);
}

function onSenderEvent(sender, event, detail) {
  if (sender !== state.outgoing) return;
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

const capital = (s) => s[0].toUpperCase() + s.slice(1);

/** A transfer ended early, said plainly; the session stays usable. */
function stopped(text, kind) {
  $('notice').textContent = text;
  $('notice').hidden = false;
  ui.status(text);
  document.body.dataset.stopped = kind;
}

function newReceiver() {
  const r = new Receiver({ on: (event, detail) => onReceiverEvent(r, event, detail) });
  r.setLink(state.link);
  return r;
}

function onReceiverEvent(r, event, detail) {
  if (r !== state.incoming) return;
  switch (event) {
    case 'offer': {
      const { count, total, files } = detail;
      $('offer-text').textContent = count === 1
        ? `Your peer offers ${files[0].parts.join('/')} (${bytes(total)}).`
        : `Your peer offers ${count} files, ${bytes(total)} in all.`;
      const shown = files.slice(0, 50).map((f) => {
        const li = document.createElement('li');
        li.textContent = `${f.parts.join('/')} (${bytes(f.size)})`;
        return li;
      });
      if (files.length > 50) {
        const li = document.createElement('li');
        li.textContent = `…and ${files.length - 50} more`;
        shown.push(li);
      }
      $('offer-list').replaceChildren(...shown);
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
      if (detail.ok && r.sink.kind === 'browser') addSave(r, detail.file, f);
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
      if (detail.error) {
        // The sender broke the protocol (or this browser could not write):
        // the session ends, the sender was told why.
        stopSession(`The transfer stopped: ${neutral(detail.why)}.`, detail.error.kind ?? 'local');
      } else if (detail.by === 'peer') stopped(`${capital(neutral(detail.why))}.`, 'cancelled');
      else stopped(detail.why === 'you declined' ? 'You declined the files.' : `The transfer stopped: ${detail.why}.`, detail.why === 'you declined' ? 'declined' : 'cancelled');
      break;
    default:
      break;
  }
}

async function acceptOffer() {
  const r = state.incoming;
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

/** A Save link for a file kept in the browser's storage: the download
 * reads it from disk; always application/octet-stream, under the safe
 * name; the object URL lives only while the click needs it. */
function addSave(r, i, f) {
  const name = f.parts[f.parts.length - 1];
  const link = document.createElement('a');
  link.href = '#';
  link.download = name;
  link.textContent = `Save ${f.parts.join('/')} (${bytes(f.size)})`;
  const li = document.createElement('li');
  li.append(link);
  if (r.offer.count === 1) {
    // One file: the page's own Save link.
    const save = $('save');
    save.textContent = link.textContent;
    save.download = name;
    save.onclick = saveClick(save, r, i);
    save.hidden = false;
  } else {
    link.onclick = saveClick(link, r, i);
    $('saves').append(li);
    $('saved').hidden = false;
  }
}

/** The click handler of a Save link: makes the object URL, lets the
 * download start with a second, synthetic click, revokes it soon after. */
function saveClick(link, r, i) {
  return async (e) => {
    if (link.dataset.ready) return;
    e.preventDefault();
    const file = await r.sink.file(i);
    const url = URL.createObjectURL(new Blob([file], { type: 'application/octet-stream' }));
    link.href = url;
    link.dataset.ready = '1';
    link.click();
    setTimeout(() => {
      URL.revokeObjectURL(url);
      link.href = '#';
      delete link.dataset.ready;
    }, 10_000);
  };
}

/** How the data flows: 'host', 'srflx' or 'relay' (the local candidate of
 * the selected pair). */
async function pathType() {
  const stats = await state.pc.getStats();
  let pair;
  for (const s of stats.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  }
  if (!pair) {
    for (const s of stats.values()) {
      if (s.type === 'candidate-pair' && s.state === 'succeeded') pair = s;
    }
  }
  const local = pair && stats.get(pair.localCandidateId);
  return local ? local.candidateType : 'unknown';
}

// --- picking files ---------------------------------------------------------------

/** Files from an <input>: paths relative to the chosen folder if any. */
const fromInput = (input) => Array.from(input.files, (file) => ({ file, path: file.webkitRelativePath || file.name }));

/** Files and folders dropped: folders walked (FileSystemEntry API). */
async function fromDrop(items) {
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ file, path: `${prefix}${entry.name}` });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  };
  const entries = Array.from(items, (it) => it.webkitGetAsEntry?.()).filter(Boolean);
  for (const e of entries) await walk(e, '');
  return out;
}

// --- share link --------------------------------------------------------------------

function shareLink() {
  return `${location.origin}${location.pathname}#${state.code}`;
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
  state.role = 'A';
  $('start').hidden = true;
  state.signal.create();
};
function join() {
  const code = $('code-input').value.trim().toLowerCase();
  if (!/^\d{1,9}-[a-z]+(-[a-z]+)+$/.test(code)) {
    ui.status('A code looks like 7-bal-kir-mos.');
    return;
  }
  $('notice').hidden = true;
  state.role = 'B';
  state.code = code;
  $('start').hidden = true;
  $('code').textContent = code;
  state.signal.join(code.split('-')[0]);
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
  const items = e.dataTransfer.items;
  const files = items?.length && items[0].webkitGetAsEntry ? await fromDrop(items) : Array.from(e.dataTransfer.files, (file) => ({ file, path: file.name }));
  offerFiles(files);
};
$('accept').onclick = () => acceptOffer();
$('decline').onclick = () => { state.incoming?.decline(); $('offer').hidden = true; };
$('cancel').onclick = () => {
  if (state.outgoing && !transferOver(state.outgoing)) state.outgoing.cancel('cancelled by the sender');
  if (state.incoming && !transferOver(state.incoming)) state.incoming.cancel('cancelled by the receiver');
};
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
  if (state.signal && state.sid) state.signal.leave();
});
window.addEventListener('beforeunload', (e) => {
  if (activeTransfer()) e.preventDefault();
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
  // The code travels in the fragment, which never reaches a server.
  const code = decodeURIComponent(location.hash.slice(1)).trim().toLowerCase();
  if (/^\d{1,9}-[a-z]+(-[a-z]+)+$/.test(code)) {
    $('code-input').value = code;
    history.replaceState(null, '', location.pathname + location.search);
    document.body.dataset.fromLink = '1';
  }
  clearBrowserStore();
}

const missing = missingCapability();
if (missing) showUnsupported(missing);
else {
  atLoad();
  prepareHashing().then(() => { document.body.dataset.hashing = hashEngine; }).then(connect).then(() => {
    if (document.body.dataset.fromLink) {
      ui.status('The code from your link is filled in: press Join.');
      $('join').focus();
    }
  }).catch((e) => fail(e.message));
}
