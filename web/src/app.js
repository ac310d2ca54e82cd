// The Tallow page: create or join a code, verify, send or receive a file.
// Signaling: ./signal.js. End-to-end session: ./handshake.js (everything
// after it is sealed). Bytes: an RTCDataChannel, ./transfer.js.

import { SignalClient } from './signal.js';
import * as hs from './handshake.js';
import { PeerSession } from './session.js';
import { neutral } from './names.js';
import { Receiver, sendFile } from './transfer.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const forceRelay = params.get('relay') === '1';

const ui = {
  status(text) { $('status').textContent = text; },
  error(text) {
    $('error').textContent = text;
    $('error').hidden = false;
    $('status').textContent = 'Stopped.';
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
    const mb = (n) => (n / 1e6).toFixed(1);
    const left = Number.isFinite(p.secondsLeft) ? `${Math.ceil(p.secondsLeft)} s left` : '';
    $('progress-text').textContent = `${prefix} ${mb(p.done)} / ${mb(p.total)} MB · ${mb(p.rate)} MB/s · ${left}`;
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
  incoming: null, // { meta, receiver, done, sha256 }
  queue: Promise.resolve(), // sealed messages are opened strictly in order
  failed: false,
};

function fail(text) {
  if (state.failed) return;
  state.failed = true;
  ui.error(text);
  state.pc?.close();
}

/** Stops after an error of ours: tells the peer (sealed once the session
 * exists: an unsealed abort is only trusted before it), then leaves. */
function abort(e) {
  const reason = e?.kind ?? 'error';
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
      state.iceServers = m.ice_servers;
      if (state.role === 'A') {
        state.peer = new PeerSession('A', state.code, state.sid);
        signal.hello(state.peer.start());
        ui.status('Peer connected. Securing the session…');
      } else {
        state.peer = new PeerSession('B', state.code, state.sid);
        ui.status('Connected. Securing the session…');
      }
    })
    .on('message', (m) => {
      state.queue = state.queue.then(() => onPeerMessage(JSON.parse(m.body))).catch((e) => {
        fail(explain(e));
        abort(e);
      });
    })
    .on('peer_left', () => fail('Your peer left.'))
    .on('peer_away', () => ui.status('Your peer lost its connection; waiting for it to come back…'))
    .on('peer_back', () => ui.status('Your peer is back.'))
    .on('reconnecting', () => {
      document.body.dataset.reconnects = String(Number(document.body.dataset.reconnects ?? 0) + 1);
      ui.status('Connection to the server lost; reconnecting…');
    })
    .on('resumed', () => ui.status('Reconnected.'))
    .on('error', (m) => {
      if (m.code === 'unknown_nameplate' || m.code === 'session_full') {
        fail('No one is waiting with that code. Check it, or ask for a new one.');
      } else if (m.code === 'nameplate_expired') {
        fail('The code expired before anyone joined. Create a new one.');
      } else if (!m.retryable) {
        fail(`${m.message} (${m.code})`);
      }
    })
    .on('closed', (e) => {
      if (!document.body.dataset.state?.startsWith('done')) fail(`The connection to the server was lost (${e.code}).`);
    });
  await signal.connect();
  ui.status('Create a code, or type the one you were given.');
  $('create').disabled = false;
  $('join').disabled = false;
}

function explain(e) {
  if (e instanceof hs.HandshakeError && (e.kind === 'confirmation' || e.kind === 'downgrade')) {
    return 'The codes did not match, or someone tampered with the connection. Start again with a new code.';
  }
  if (e instanceof hs.HandshakeError && e.kind === 'out_of_turn') {
    return `Stopped: a handshake message was replayed or arrived out of turn, so someone may be tampering with the connection. Nothing more was sent. Start again with a new code. (${e.message})`;
  }
  return e.message || String(e);
}

async function onPeerMessage(msg) {
  if (state.failed) return;
  if (msg?.t === 'sealed') {
    return onSealed(JSON.parse(new TextDecoder().decode(await state.peer.open(msg))));
  }
  if (!state.peer) throw new hs.HandshakeError('out_of_turn', `${String(msg?.t)} arrived before the handshake started`);
  const r = state.peer.receive(msg);
  if (r.abort) {
    fail('The codes did not match, or someone tampered with the connection. Start again with a new code.');
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
  pc.onicecandidate = (e) => { if (e.candidate) sealed({ kind: 'ice', candidate: e.candidate.toJSON() }); };
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
    case 'meta':
      state.incoming = { meta: m, receiver: new Receiver(m, (p) => ui.progress('Receiving', p)), complete: false, sha256: null };
      $('progress-label').textContent = `Receiving ${m.name}`;
      break;
    case 'done':
      state.incoming.sha256 = m.sha256;
      maybeFinishReceive();
      break;
    case 'abort':
      fail(`Your peer stopped the session (${neutral(m.reason)}).`);
      state.signal.leave();
      break;
    case 'received':
      document.body.dataset.state = m.ok ? 'done-sent' : 'failed';
      if (m.ok) ui.status(`Delivered. Your peer verified the file (SHA-256 ${m.sha256.slice(0, 16)}…).`);
      else fail('Your peer received a file that does not match what you sent.');
      break;
    default:
      break;
  }
}

function setupChannel(channel) {
  channel.binaryType = 'arraybuffer';
  state.channel = channel;
  channel.onopen = async () => {
    ui.status('Connected. Pick or drop a file to send it.');
    $('send').hidden = false;
    document.body.dataset.state = 'connected';
    $('path').textContent = await pathType();
  };
  channel.onclose = () => {
    if (!document.body.dataset.state?.startsWith('done')) fail('The connection to your peer was lost.');
  };
  channel.onmessage = (e) => {
    const inc = state.incoming;
    if (!inc) return;
    if (inc.receiver.push(e.data)) {
      inc.complete = true;
      maybeFinishReceive();
    }
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

function maybeFinishReceive() {
  const inc = state.incoming;
  if (!inc?.complete || !inc.sha256) return;
  const { blob, sha256 } = inc.receiver.finish();
  const ok = sha256 === inc.sha256;
  sealed({ kind: 'received', ok, sha256 });
  $('received-sha256').textContent = sha256;
  if (!ok) {
    fail('The file arrived damaged (its SHA-256 does not match). Ask your peer to send it again.');
    return;
  }
  const link = $('save');
  link.href = URL.createObjectURL(blob);
  link.download = inc.meta.name;
  link.textContent = `Save ${inc.meta.name} (${(inc.meta.size / 1e6).toFixed(1)} MB)`;
  link.hidden = false;
  document.body.dataset.state = 'done-received';
  ui.status('File received and verified.');
}

async function send(file) {
  if (!state.channel || state.channel.readyState !== 'open') return;
  $('send').hidden = true;
  $('progress-label').textContent = `Sending ${file.name}`;
  await sealed({ kind: 'meta', name: file.name, size: file.size, type: file.type });
  try {
    const sha256 = await sendFile(state.channel, file, (p) => ui.progress('Sent', p));
    $('sent-sha256').textContent = sha256;
    await sealed({ kind: 'done', sha256 });
    ui.status('Sent. Waiting for your peer to verify…');
  } catch (e) {
    fail(e.message);
  }
}

// --- page wiring -----------------------------------------------------------------

$('create').onclick = () => {
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

connect().catch((e) => fail(e.message));
