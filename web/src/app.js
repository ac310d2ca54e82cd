// The Tallow page: create or join a code, verify, send or receive a file.
// Signaling: ./signal.js. End-to-end session: ./handshake.js (everything
// after it is sealed). Bytes: an RTCDataChannel, ./transfer.js.

import { SignalClient } from './signal.js';
import * as hs from './handshake.js';
import { PeerSession } from './session.js';
import { sanitizeName } from './names.js';
import { abortReason, explain, peerStopped } from './failures.js';
import { drained, Progress, sendFile } from './transfer.js';
import { encodeControl, FileReceiver, FramingError, STALL_MS } from './framing.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const forceRelay = params.get('relay') === '1';

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
  pc: null,
  channel: null,
  rx: null, // FileReceiver: every frame the peer sends on the channel
  rxProgress: null,
  awaiting: null, // { resolve, reject } while our file waits for `received`
  queue: Promise.resolve(), // sealed messages are opened strictly in order
  failed: false,
};

function fail(text) {
  if (state.failed) return;
  state.failed = true;
  ui.error(text);
  state.rx?.close();
  state.awaiting?.reject(new Error(text));
  // A moment for a last frame (a cancel) to leave before the connection goes.
  const pc = state.pc;
  setTimeout(() => pc?.close(), 1000);
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
      ui.status('Read this code to your peer. It expires in 10 minutes.');
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
      // working data channel is not torn down for it.
      if (finished()) return;
      if (channelOpen()) ui.status('Your peer is no longer connected to the server; the direct connection to it stays open.');
      else fail('Your peer left.');
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

// --- WebRTC --------------------------------------------------------------------

async function startWebRtc(offerer) {
  const pc = new RTCPeerConnection({
    iceServers: state.iceServers,
    iceTransportPolicy: forceRelay ? 'relay' : 'all',
  });
  state.pc = pc;
  pc.onicecandidate = (e) => { if (e.candidate) sealed({ kind: 'ice', candidate: e.candidate.toJSON() }).catch(() => {}); };
  pc.oniceconnectionstatechange = () => {
    if (pc.iceConnectionState === 'failed') fail('Could not reach your peer, not even through the relay.');
  };
  if (offerer) {
    setupChannel(pc.createDataChannel('file', { ordered: true }));
    await pc.setLocalDescription(await pc.createOffer());
    await sealed({ kind: 'offer', sdp: pc.localDescription.toJSON() });
  } else {
    pc.ondatachannel = (e) => setupChannel(e.channel);
  }
}

async function onSealed(m) {
  const pc = state.pc;
  switch (m.kind) {
    case 'offer':
      await pc.setRemoteDescription(m.sdp);
      await pc.setLocalDescription(await pc.createAnswer());
      await sealed({ kind: 'answer', sdp: pc.localDescription.toJSON() });
      break;
    case 'answer':
      await pc.setRemoteDescription(m.sdp);
      break;
    case 'ice':
      await pc.addIceCandidate(m.candidate);
      break;
    case 'abort':
      fail(peerStopped(m.reason, { sealed: true }));
      state.signal.leave();
      break;
    default:
      break;
  }
}

function setupChannel(channel) {
  channel.binaryType = 'arraybuffer';
  state.channel = channel;
  state.rx = new FileReceiver({
    onStall: (e) => channelError(e),
    onProgress: (done, total) => state.rxProgress?.update(done, done === total),
  });
  channel.onopen = async () => {
    ui.status('Connected. Pick or drop a file to send it.');
    $('send').hidden = false;
    document.body.dataset.state = 'connected';
    $('path').textContent = await pathType();
  };
  channel.onclose = () => {
    if (!finished()) fail('The connection to your peer was lost.');
  };
  channel.onmessage = (e) => {
    if (state.failed) return;
    try {
      onChannelEvent(state.rx.push(e.data));
    } catch (err) {
      channelError(err);
    }
  };
}

/** What the peer's frames meant (FileReceiver.push). */
function onChannelEvent(ev) {
  switch (ev.t) {
    case 'file':
      $('send').hidden = true;
      $('progress-label').textContent = `Receiving ${ev.name}`;
      state.rxProgress = new Progress(ev.size, (p) => ui.progress('Receiving', p));
      state.rxProgress.update(0, true);
      break;
    case 'end': {
      state.channel.send(encodeControl({ t: 'received', ok: ev.ok, sha256: ev.sha256 }));
      state.rxProgress?.update(ev.size, true);
      $('received-sha256').textContent = ev.sha256;
      if (!ev.ok) {
        fail('The file arrived damaged (its SHA-256 does not match). Ask your peer to send it again.');
        return;
      }
      offerSave(ev);
      $('progress-label').textContent = `Received ${ev.name}`;
      document.body.dataset.state = 'done-received';
      ui.status('File received and verified.');
      break;
    }
    case 'received':
      if (!state.awaiting) throw new FramingError('unexpected_control', 'a receipt arrived for a file we did not send');
      state.awaiting.resolve(ev);
      break;
    case 'cancel':
      fail(`Your peer cancelled the transfer: ${ev.reason}`);
      break;
    default: // data: progress is reported by the receiver
      break;
  }
}

/** A framing error (or a stall): tell the peer why, then stop. */
function channelError(e) {
  const why = e instanceof FramingError ? `${e.kind}: ${e.message}` : String(e?.message ?? e);
  try {
    if (channelOpen()) state.channel.send(encodeControl({ t: 'cancel', reason: Array.from(why).slice(0, 256).join('') }));
  } catch { /* the channel is going anyway */ }
  fail(`The transfer stopped: ${e.message} (${e.kind ?? 'error'}).`);
}

/** The Save link: an object URL made on each click and revoked soon after
 * (the download holds the file by then). Always application/octet-stream,
 * under the sanitised name. */
function offerSave({ blob, name, size }) {
  const link = $('save');
  link.download = name;
  link.textContent = `Save ${name} (${bytes(size)})`;
  link.href = '#';
  link.onclick = () => {
    const url = URL.createObjectURL(blob);
    link.href = url;
    setTimeout(() => {
      URL.revokeObjectURL(url);
      if (link.href === url) link.href = '#';
    }, 10_000);
  };
  link.hidden = false;
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

async function send(file) {
  if (!channelOpen() || state.awaiting) return;
  $('send').hidden = true;
  $('progress-label').textContent = `Sending ${sanitizeName(file.name)}`;
  const receipt = new Promise((resolve, reject) => { state.awaiting = { resolve, reject }; });
  receipt.catch(() => {});
  try {
    const sha256 = await sendFile(state.channel, file, (p) => ui.progress('Sent', p));
    $('sent-sha256').textContent = sha256;
    ui.status('Sent. Waiting for your peer to verify…');
    await drained(state.channel, 0);
    let timer;
    const r = await Promise.race([receipt, new Promise((_, reject) => {
      timer = setTimeout(() => reject(new FramingError('stalled', `your peer did not confirm the file within ${STALL_MS / 1000} s`)), STALL_MS);
    })]).finally(() => clearTimeout(timer));
    if (r.ok && r.sha256 === sha256) {
      $('progress-label').textContent = `Sent ${sanitizeName(file.name)}`;
      document.body.dataset.state = 'done-sent';
      ui.status(`Delivered. Your peer verified the file (SHA-256 ${r.sha256.slice(0, 16)}…).`);
    } else {
      fail('Your peer received a file that does not match what you sent.');
    }
  } catch (e) {
    if (e instanceof FramingError) channelError(e);
    else fail(e.message);
  }
}

// --- page wiring -----------------------------------------------------------------

$('create').onclick = () => {
  $('notice').hidden = true;
  state.role = 'A';
  $('start').hidden = true;
  state.signal.create();
};
$('join').onclick = () => {
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
};
$('file').onchange = () => { if ($('file').files[0]) send($('file').files[0]); };
const drop = $('drop');
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
};

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

const missing = missingCapability();
if (missing) showUnsupported(missing);
else connect().catch((e) => fail(e.message));
