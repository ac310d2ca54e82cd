// One pairwise session with one peer, as many times as a page needs (the
// 1:1 page holds one; a room's group transfer one per recipient): its own
// /signal connection (./signal.js), the end-to-end handshake (./session.js),
// one RTCPeerConnection per epoch with its sealed data channel (./link.js),
// resumed after a break, and the transfers both ways (./sending.js,
// ./receiving.js). No DOM: what the person should see goes to `hooks`.
//
// hooks (all optional):
//   status(text)            what is happening now
//   notice(text)            something to read that is not a failure
//   failed(text, {peerReason})  the session is over with an error (peerReason:
//                           the reason of the peer's abort, when it stopped it)
//   words(words)            the verification words, once the session exists
//   created({nameplate, code})   our code, after create()
//   refused(m)              a retryable refusal of create/join the person must retry
//   connected({afterBreak}) a data channel opened
//   path(type)              how the data flows: host, srflx, relay
//   count(name)             something to count: reconnects, breaks, repaths, untrusted
//   sending(sender)         our transfer starts (before its offer leaves)
//   sender(sender, event, detail)      its events (./sending.js)
//   receiver(receiver, event, detail)  the peer's transfer's events (./receiving.js)
//   peerLeft()              the peer ended the session (after the checks below)

import { SignalClient } from './signal.js';
import * as hs from './handshake.js';
import { PeerSession } from './session.js';
import { neutral } from './names.js';
import { abortReason, explain, peerStopped } from './failures.js';
import { ControlError } from './control.js';
import { freshDataKey } from './records.js';
import { Link } from './link.js';
import { Sender } from './sending.js';
import { Receiver } from './receiving.js';

const RETRY_MS = [2000, 4000, 8000, 10_000];
const GIVE_UP_MS = 180_000;
const b64 = {
  enc: (u8) => btoa(String.fromCharCode(...u8)),
  dec: (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0)),
};
const randomId = () => Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
const randomWords = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), hs.word);
const OUTGOING_KINDS = new Set(['accept', 'decline', 'want', 'resume', 'got', 'ack']);

export const transferOver = (t) => ['done', 'stopped'].includes(t.machine.state);

/** The /signal URL of the page's own server. */
export function signalUrl(location) {
  const url = new URL('/signal', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return url;
}

export class Peer {
  /** `url`: the /signal URL; `forceRelay`: only relayed paths (tests);
   * `oneShot`: the session carries one transfer (a room's), so once it
   * ended, stopped or done, the peer leaving or the path closing is the
   * expected end rather than a failure. */
  constructor({ url, forceRelay = false, oneShot = false, hooks = {}, signalOptions = {} }) {
    this.hooks = hooks;
    this.oneShot = oneShot;
    this.forceRelay = forceRelay;
    this.signal = new SignalClient(url, signalOptions);
    this.role = null; // 'A' creates (or invited), 'B' joins (or was invited)
    this.code = null;
    this.sid = null;
    this.iceServers = [];
    this.session = null; // PeerSession: the handshake state machine, then the session
    this.pc = null; // the current peer connection (epoch `epoch`)
    this.epoch = 0;
    this.dk = null; // its data key
    this.channel = null;
    this.link = null; // sealed records on its channel, once open
    this.outgoing = null; // Sender: our transfer
    this.incoming = null; // Receiver: the peer's transfer
    this.retries = 0;
    this.reconnecting = false;
    this.breakSince = null;
    this.retryTimer = null;
    this.disconnectTimer = null;
    this.opened = false;
    this.peerLeft = false;
    this.signalClosed = false;
    this.seating = false; // a room's seat asked for, its `resumed` not yet in
    this.queue = Promise.resolve(); // sealed messages are opened strictly in order
    this.failed = false;
    this.ended = false; // closed by us on purpose (a room's session is over)
    this.finished = false; // a transfer of this session completed
    this.wire();
  }

  hook(name, ...args) {
    const f = this.hooks[name];
    return f ? f(...args) : undefined;
  }

  get over() { return this.failed || this.ended; }

  get channelOpen() { return this.channel?.readyState === 'open'; }

  /** Nothing left to lose: a transfer completed (or, one-shot, ended). The
   * machine's state counts at once, before its event reached the page. */
  get settled() {
    return this.finished || (this.oneShot && [this.outgoing, this.incoming].some((t) => t && transferOver(t)));
  }

  /** A transfer under way (offered, accepted, moving), either direction. */
  activeTransfer() {
    return [this.outgoing, this.incoming].some((t) => t && !transferOver(t) && t.machine.state !== 'offering');
  }

  // --- signaling -------------------------------------------------------------

  /** Connects, retrying with backoff while the server cannot be reached
   * (each wait reported through `notice`). */
  async connect() {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.signal.connect();
      } catch (e) {
        const delay = Math.min(15_000, 1000 * 2 ** attempt);
        const why = e.code === 'server_full' ? 'The server is full right now.' : `Cannot reach the server${e.code ? ` (${e.code})` : ''}.`;
        this.hook('notice', `${why} Trying again in ${delay / 1000} s…`);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  create() {
    this.role = 'A';
    this.signal.create();
  }

  join(code) {
    this.role = 'B';
    this.code = code;
    this.signal.join(code.split('-')[0]);
  }

  /** Takes a room invitation's seat (docs/PROTOCOL.md, "Rooms"): role A
   * for the inviter, who opens the handshake; `code` is the room's share
   * code, or `nearby`. */
  async seat({ token, role, code, sid }) {
    this.role = role;
    this.code = code;
    this.sid = sid;
    await this.connect();
    // Taken even if the session was ended meanwhile: the abort and leave
    // waiting in the client then reach the peer.
    this.seating = true;
    this.signal.seat(token);
  }

  wire() {
    const signal = this.signal;
    signal
      .on('created', (m) => {
        this.sid = m.session;
        this.code = `${m.nameplate}-${randomWords(3).join('-')}`;
        this.hook('created', { nameplate: m.nameplate, code: this.code });
      })
      .on('joined', (m) => { this.sid = m.session; })
      .on('paired', (m) => {
        if (this.session || this.over) return; // paired once
        this.iceServers = m.ice_servers ?? [];
        if (this.role === 'A') {
          this.session = new PeerSession('A', this.code, this.sid);
          let hello;
          try {
            hello = this.session.start();
          } catch (e) {
            this.fail(explain(e));
            this.abort(e);
            return;
          }
          signal.hello(hello);
          this.hook('status', 'Peer connected. Securing the session…');
        } else {
          this.session = new PeerSession('B', this.code, this.sid);
          this.hook('status', 'Connected. Securing the session…');
        }
      })
      .on('message', (m) => {
        this.queue = this.queue.then(() => this.onPeerMessage(parsePeerJson(m.body))).catch((e) => {
          this.fail(explain(e));
          this.abort(e);
        });
      })
      .on('peer_left', () => {
        // Over on the server; a finished transfer stays a success, and a
        // working data channel is not torn down for it. Without the server
        // no new connection can be made, so a break is then final.
        this.peerLeft = true;
        // Judged after the messages before it: a sealed abort just ahead
        // (opened by WebCrypto, asynchronously) says why the peer left.
        this.queue = this.queue.then(() => this.onPeerLeft()).catch((e) => console.error(e));
      })
      // After a verified transfer the status keeps saying so.
      .on('peer_away', () => { if (!this.finished && !this.over) this.hook('status', 'Your peer lost its connection to the server; waiting for it to come back…'); })
      .on('peer_back', () => { if (!this.finished && !this.over) this.hook('status', 'Your peer is back.'); })
      .on('reconnecting', () => {
        this.hook('count', 'reconnects');
        if (!this.finished && !this.over) this.hook('status', 'Connection to the server lost; reconnecting…');
      })
      .on('resumed', () => {
        if (this.over) return;
        if (this.seating) {
          // A room's seat taken, not a reconnect: the pairing follows.
          this.seating = false;
          return;
        }
        this.hook('status', this.finished ? 'Reconnected.' : 'Reconnected. Carrying on…');
      })
      .on('retrying', (m) => {
        if (!this.over) this.hook('status', `${RETRY_TEXT[m.code] ?? 'The server refused a request for now.'} Trying again in ${Math.max(1, Math.round(m.delayMs / 1000))} s…`);
      })
      .on('error', (m) => {
        if (this.over) return;
        if (m.code === 'unknown_nameplate' || m.code === 'session_full') {
          this.fail('No one is waiting with that code. Check it, or ask for a new one.');
        } else if (m.code === 'nameplate_expired') {
          this.fail('The code expired before anyone joined. Create a new one.');
        } else if (m.code === 'invalid_resume_token' && !this.session) {
          this.fail(this.oneShot
            ? 'The invitation is no longer valid: it expired, or the session ended.'
            : 'The session ended while the connection to the server was down. Start again with a new code.');
        } else if (m.retryable && !this.session && this.hooks.refused) {
          // Refused create/join that needs the user: say so, let them retry.
          this.role = null;
          this.hook('refused', m);
        } else if (m.retryable) {
          this.hook('status', `${m.message} (${m.code}); still trying…`);
        } else {
          this.fail(`${m.message} (${m.code})`);
        }
      })
      .on('closed', (e) => {
        // Signaling is gone for good; a working data channel goes on without it.
        this.signalClosed = true;
        if (this.settled || this.over) return;
        if (this.channelOpen) {
          this.hook('status', 'The connection to the server was lost; the direct connection to your peer stays open.');
          return;
        }
        this.fail(`The connection to the server was lost (${e.code}).`);
      });
  }

  onPeerLeft() {
    if (this.over) return;
    if (this.channelOpen) {
      if (!this.settled || this.activeTransfer()) this.hook('status', 'Your peer is no longer connected to the server; the direct connection to it stays open.');
      return;
    }
    if (this.activeTransfer()) this.fail('Your peer closed the page or left: the transfer cannot continue. Start again with a new code.');
    else if (!this.settled) this.fail('Your peer left.');
    this.hook('peerLeft');
  }

  fail(text, info = {}) {
    if (this.over) return;
    this.failed = true;
    this.hook('failed', text, info);
    clearTimeout(this.retryTimer);
    if (this.incoming && !transferOver(this.incoming)) this.incoming.cancel(text);
    if (this.outgoing && !transferOver(this.outgoing)) this.outgoing.cancel(text);
    // A moment for a last record (a cancel) to leave before the connection goes.
    const pc = this.pc;
    setTimeout(() => pc?.close(), 1000);
  }

  /** Stops the whole session for a reason of ours that the peer cannot see
   * (a stalled or lying transfer, a path that never came back): tells it,
   * sealed, then leaves. */
  stopSession(text, reason) {
    if (this.over) return;
    this.fail(text);
    if (this.session?.session) {
      this.session.seal({ kind: 'abort', reason }, (m) => this.signal.send(m)).catch(() => {}).finally(() => this.signal.leave());
    }
  }

  /** Stops after an error of ours: tells the peer (sealed once the session
   * exists: an unsealed abort is only trusted before it), then leaves. The
   * reason is a HandshakeError's kind, or `local` for a failure of this
   * browser (docs/PROTOCOL.md, "What the web client seals"). */
  abort(e) {
    this.say(abortReason(e));
  }

  /** Tells the peer the session ends for `reason`, then leaves. */
  say(reason) {
    if (this.session?.session) {
      this.session.seal({ kind: 'abort', reason }, (m) => this.signal.send(m)).catch(() => {}).finally(() => this.signal.leave());
    } else {
      if (this.role === 'A' && !this.session && this.sid) {
        // The server takes nothing from seat 0 before its hello (the PQ
        // check: pq_required), so an abort alone would never arrive and the
        // peer would only hear that we left: open the handshake, then stop it.
        try {
          this.session = new PeerSession('A', this.code, this.sid);
          this.signal.hello(this.session.start());
        } catch {
          // Nothing to open it with: the peer hears that we left.
        }
      }
      this.signal.send({ t: 'abort', reason });
      this.signal.leave();
    }
  }

  /**
   * Ends the session on purpose (a room's transfer is over, or the person
   * cancelled before any transfer began): a session that never carried a
   * transfer tells the peer why (`reason`); then it leaves, and the peer
   * connection closes a moment later, once a last record has left.
   */
  close(reason = null) {
    if (this.over) return;
    this.ended = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.disconnectTimer);
    if (reason) this.say(reason);
    else this.signal.leave();
    // The last records (a cancel) may sit behind megabytes still buffered
    // on the channel: close once they left (at least 1 s, at most 15 s).
    const { pc, channel } = this;
    const since = Date.now();
    const closeWhenDrained = () => {
      const waited = Date.now() - since;
      const pending = channel?.readyState === 'open' && channel.bufferedAmount > 0;
      if ((waited >= 1000 && !pending) || waited > 15_000) pc?.close();
      else setTimeout(closeWhenDrained, 100);
    };
    setTimeout(closeWhenDrained, 100);
  }

  /** Seals `obj` and sends it; sealing is serialised (PeerSession.seal), so
   * messages leave in counter order. */
  sealed(obj) {
    return this.session.seal(obj, (m) => this.signal.send(m));
  }

  async onPeerMessage(msg) {
    if (this.over) return;
    if (msg?.t === 'sealed') {
      await this.onSealed(parsePeerJson(new TextDecoder().decode(await this.session.open(msg))));
      return;
    }
    if (!this.session) throw new hs.HandshakeError('out_of_turn', `${String(msg?.t)} arrived before the handshake started`);
    const r = this.session.receive(msg);
    if (r.abort) {
      this.fail(peerStopped(msg.reason, { sealed: false }), { peerReason: String(msg.reason ?? '') });
      this.signal.leave();
      return;
    }
    if (r.ignored) {
      // Anyone on the path can forge an unsealed abort: after the session a
      // peer stops with a sealed one. Not trusted, noted for the curious.
      this.hook('count', 'untrusted');
      console.warn(`ignored: ${r.ignored}`);
      return;
    }
    if (r.send) this.signal.send(r.send);
    if (r.session) {
      this.hook('words', this.session.session.words);
      this.hook('status', 'Secure session ready. Compare the words with your peer. Connecting…');
      if (this.role === 'A') await this.offerEpoch(1);
    }
  }

  // --- WebRTC: one peer connection per epoch -----------------------------------
  //
  // The creator offers every peer connection; each carries a fresh data key
  // (`dk`, ./records.js) in its sealed offer. When the connection breaks
  // mid-session the creator offers a new one (the joiner asks with
  // `reconnect` if it noticed first), and transfers resume on its channel.

  newPeerConnection(epoch) {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.forceRelay ? 'relay' : 'all',
    });
    pc.onicecandidate = (e) => { if (e.candidate) this.sealed({ kind: 'ice', candidate: e.candidate.toJSON(), epoch }).catch(() => {}); };
    pc.oniceconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.iceConnectionState === 'failed') this.onBreak('the path to your peer failed');
      else if (pc.iceConnectionState === 'disconnected') {
        // A short glitch recovers on its own; a cut path does not.
        clearTimeout(this.disconnectTimer);
        this.disconnectTimer = setTimeout(() => { if (pc === this.pc && pc.iceConnectionState === 'disconnected') this.onBreak('the path to your peer was lost'); }, 4000);
      }
    };
    return pc;
  }

  /** A (the creator): a new peer connection and its offer. */
  async offerEpoch(epoch) {
    this.epoch = epoch;
    this.pc?.close();
    const pc = this.newPeerConnection(epoch);
    this.pc = pc;
    const dk = freshDataKey();
    this.dk = dk;
    this.setupChannel(pc.createDataChannel('file', { ordered: true }), epoch);
    await pc.setLocalDescription(await pc.createOffer());
    await this.sealed({ kind: 'offer', sdp: pc.localDescription.toJSON(), epoch, dk: b64.enc(dk) });
  }

  async onSealed(m) {
    switch (m.kind) {
      case 'offer': {
        // B: the first connection, or a new one after a break.
        const epoch = m.epoch ?? 1;
        if (this.role !== 'B' || !(epoch > this.epoch)) throw new hs.HandshakeError('out_of_turn', `an offer for connection ${epoch} after ${this.epoch}`);
        const dk = typeof m.dk === 'string' ? b64.dec(m.dk) : null;
        if (!dk || dk.length !== 32) throw new hs.HandshakeError('malformed', 'an offer without a 32-byte data key');
        this.epoch = epoch;
        this.dk = dk;
        this.pc?.close();
        const pc = this.newPeerConnection(epoch);
        this.pc = pc;
        pc.ondatachannel = (e) => this.setupChannel(e.channel, epoch);
        await pc.setRemoteDescription(m.sdp);
        await pc.setLocalDescription(await pc.createAnswer());
        await this.sealed({ kind: 'answer', sdp: pc.localDescription.toJSON(), epoch });
        break;
      }
      case 'answer':
        if ((m.epoch ?? 1) !== this.epoch || this.role !== 'A') break; // for a connection given up
        await this.pc.setRemoteDescription(m.sdp);
        break;
      case 'ice':
        if ((m.epoch ?? 1) !== this.epoch) break;
        await this.pc.addIceCandidate(m.candidate);
        break;
      case 'reconnect':
        // B noticed the break first; a request for an older connection is stale.
        if (this.role === 'A' && m.epoch === this.epoch) this.onBreak('your peer lost the connection');
        break;
      case 'abort':
        this.fail(peerStopped(m.reason, { sealed: true }), { peerReason: String(m.reason ?? '') });
        this.signal.leave();
        break;
      default:
        break;
    }
  }

  setupChannel(channel, epoch) {
    channel.binaryType = 'arraybuffer';
    channel.onopen = async () => {
      if (epoch !== this.epoch || this.over) return;
      const afterBreak = this.opened;
      this.opened = true;
      this.link = new Link(channel, this.dk, this.role, {
        onControl: (msg) => this.onControl(msg),
        onData: (bytes) => this.incoming?.onFrame(bytes),
        onError: (e) => this.linkError(e),
      });
      this.channel = channel;
      clearTimeout(this.retryTimer);
      this.breakSince = null;
      this.retries = 0;
      this.outgoing?.setLink(this.link);
      this.incoming?.setLink(this.link, { afterBreak });
      if (afterBreak) {
        this.hook('count', 'repaths');
        this.hook('status', this.activeTransfer() ? 'Reconnected to your peer. Carrying on from where it broke…' : 'Reconnected to your peer.');
      } else {
        this.hook('status', 'Connected. Pick or drop files or a folder to send them.');
      }
      this.hook('connected', { afterBreak });
      this.hook('path', await this.pathType());
    };
    channel.onclose = () => { if (epoch === this.epoch) this.onBreak('the connection to your peer closed'); };
  }

  /** The peer connection broke: try another while the session lives. */
  onBreak(why) {
    if (this.over || this.reconnecting) return;
    const link = this.link;
    if (link && link.channel.readyState === 'open' && this.pc?.iceConnectionState !== 'failed' && !why.startsWith('your peer')) {
      // The channel still works: nothing to do yet.
      if (this.pc?.iceConnectionState !== 'disconnected') return;
    }
    this.link?.close();
    this.link = null;
    this.channel = null;
    this.breakSince ??= Date.now();
    if (this.peerLeft || this.signalClosed) {
      if (this.activeTransfer()) {
        this.fail(this.peerLeft
          ? 'Your peer closed the page or left: the transfer cannot continue. Start again with a new code.'
          : 'The connection to your peer was lost and the server cannot be reached to make a new one: the transfer cannot continue. Start again with a new code.');
      } else if (!this.settled) this.fail('The connection to your peer was lost.');
      return;
    }
    if (Date.now() - this.breakSince > GIVE_UP_MS) {
      this.stopSession('Your peer could not be reached again for 3 minutes: the transfer stopped. Start again with a new code.', 'unreachable');
      return;
    }
    this.hook('status', `${why[0].toUpperCase()}${why.slice(1)}; reconnecting…`);
    this.hook('count', 'breaks');
    const delay = RETRY_MS[Math.min(this.retries, RETRY_MS.length - 1)];
    this.retries += 1;
    this.reconnecting = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.reconnecting = false;
      if (this.over) return;
      const epoch = this.epoch;
      if (this.role === 'A') this.offerEpoch(epoch + 1).catch((e) => this.fail(explain(e)));
      else this.sealed({ kind: 'reconnect', epoch }).catch(() => {});
      // If this attempt does not open a channel, try again.
      this.retryTimer = setTimeout(() => { if (!this.link && !this.over) this.onBreak('your peer could not be reached yet'); }, 15_000);
    }, this.role === 'A' ? delay : 500);
  }

  linkError(e) {
    // A record that did not open: someone altered the stream. Stop.
    const text = e?.kind === 'tampered'
      ? `Data from your peer did not open under your session's key (${e.message}): someone may be tampering with the connection. The transfer stopped.`
      : `Your peer sent something malformed (${e.message}). The transfer stopped.`;
    this.outgoing?.cancel(e.message);
    this.incoming?.cancel(e.message);
    this.stopSession(text, e?.kind ?? 'malformed');
  }

  /** How the data flows: 'host', 'srflx' or 'relay' (the local candidate of
   * the selected pair). */
  async pathType() {
    const stats = await this.pc.getStats();
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

  // --- transfers -------------------------------------------------------------------

  /** A control message on the link: to our transfer or to theirs. */
  onControl(msg) {
    try {
      if (msg?.kind === 'cancel' && msg.id === this.outgoing?.id) {
        this.outgoing.onMessage(msg);
        return;
      }
      if (OUTGOING_KINDS.has(msg?.kind)) {
        if (!this.outgoing || msg.id !== this.outgoing.id) throw new ControlError('unexpected', `${msg.kind} for a transfer we did not offer`);
        this.outgoing.onMessage(msg);
        return;
      }
      if (msg?.kind === 'files' && (!this.incoming || (msg.id !== this.incoming.machine.id && transferOver(this.incoming)))) {
        // A room's session carries one transfer, from the member who
        // invited: another offer is not shown (the person answered it).
        if (this.oneShot && (this.role === 'A' || this.incoming)) return;
        if (msg.part !== 0) return; // the tail of an offer we did not see begin
        this.incoming = this.newReceiver();
      }
      if (!this.incoming) throw new ControlError('unexpected', `${String(msg?.kind)} before any offer`);
      this.incoming.onMessage(msg);
    } catch (e) {
      this.linkError(e);
    }
  }

  newReceiver() {
    const r = new Receiver({ on: (event, detail) => this.onReceiverEvent(r, event, detail) });
    r.setLink(this.link);
    return r;
  }

  onReceiverEvent(r, event, detail) {
    if (r !== this.incoming) return;
    if (event === 'done') this.finished = true;
    this.hook('receiver', r, event, detail);
    if (event === 'stopped' && detail.error) {
      // The sender broke the protocol (or this browser could not write):
      // the session ends, the sender was told why.
      this.stopSession(`The transfer stopped: ${neutral(detail.why)}.`, detail.error.kind ?? 'local');
    }
  }

  /**
   * Offers `entries` ([{file, path}]) to the peer. Returns the Sender, or
   * null when nothing can go now (no channel, our transfer still running,
   * nothing picked); throws when the pick cannot be offered (too many
   * files, names too long), with the reason as its message.
   */
  send(entries) {
    if (!this.channelOpen || this.over || (this.outgoing && !transferOver(this.outgoing))) return null;
    const files = entries.filter((e) => e.file);
    if (files.length === 0) return null;
    const sender = new Sender(randomId(), files, { on: (event, detail) => this.onSenderEvent(sender, event, detail) });
    sender.machine.offer(); // too many files, or names too long, for one offer
    this.outgoing = sender;
    this.hook('sending', sender);
    sender.setLink(this.link);
    return sender;
  }

  onSenderEvent(sender, event, detail) {
    if (sender !== this.outgoing) return;
    if (event === 'done') this.finished = true;
    this.hook('sender', sender, event, detail);
  }

  /** Cancels both transfers that are still running. */
  cancel(outgoingWhy = 'cancelled by the sender', incomingWhy = 'cancelled by the receiver') {
    if (this.outgoing && !transferOver(this.outgoing)) this.outgoing.cancel(outgoingWhy);
    if (this.incoming && !transferOver(this.incoming)) this.incoming.cancel(incomingWhy);
  }
}

const RETRY_TEXT = {
  presence_unavailable: 'The server cannot reach its session store right now.',
  rate_limited: 'Sending too fast for the server.',
  mailbox_full: 'Your peer has not caught up yet.',
  internal: 'The server had a problem.',
};

/** JSON from the peer (or the path): unparsable is its fault, not ours. */
function parsePeerJson(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new hs.HandshakeError('malformed', `a message from the peer is not JSON (${e.message})`);
  }
}
