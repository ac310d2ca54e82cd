// A /signal client (docs/PROTOCOL.md): create, join, or take a seat a room
// reserved for us (an invitation, seat()), then an ordered,
// acknowledged message stream with the peer that survives a dropped
// connection: it reconnects with backoff for as long as the server keeps the
// seat (welcome.limits.resume_grace_secs), sends `resume`, and resends what
// the server had not acknowledged. Nothing is sent on a new connection
// before it is resumed: frames wait in order until then.
//
// Events go to `on(type, fn)`: the server's message types, plus
//   'reconnecting' {code}          the connection dropped, retrying
//   'retrying' {code, delayMs}     a retryable refusal, retried automatically
//   'closed' {code, reason}        given up (never while it can still resume)
// `paired` also fires for a `resumed {paired: true}` when the pairing
// happened while we were away.

const RETRY_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000, 15000];
const DEFAULT_GRACE_SECS = 120;
// Refusals that may succeed later by themselves: retried automatically.
const AUTO_RETRY = new Set(['presence_unavailable', 'rate_limited', 'mailbox_full', 'internal']);
const AUTO_RETRY_ATTEMPTS = 6;

export class SignalClient {
  /** `options.WebSocket` and `options.now` are for tests. */
  constructor(url, { WebSocket: WS = globalThis.WebSocket, now = () => Date.now(), delaysMs = RETRY_DELAYS_MS } = {}) {
    this.url = url;
    this.WS = WS;
    this.now = now;
    this.delaysMs = delaysMs;
    this.handlers = new Map();
    this.seq = 0;
    this.ws = null;
    this.ready = false; // welcomed (and resumed, when we hold a seat)
    this.waiting = []; // frames for the server held until ready
    this.token = null; // resume token of our seat
    this.paired = false;
    this.lastSeq = 0; // highest message seq received
    this.unacked = new Map(); // seq -> frame, until the server acknowledges
    this.request = null; // create/join awaiting its answer
    this.retries = 0; // automatic retries of the current refusal
    this.retryTimer = null;
    this.graceMs = DEFAULT_GRACE_SECS * 1000;
    this.droppedAt = null;
    this.leaving = false;
    this.done = false; // left, peer left or superseded: do not reconnect
  }

  on(type, fn) {
    this.handlers.set(type, fn);
    return this;
  }

  emit(type, msg) {
    const fn = this.handlers.get(type);
    if (fn) fn(msg);
  }

  /** Resolves with the server's `welcome`; rejects with an Error whose
   * `code` is the server's refusal (e.g. server_full) or null. May be called
   * again after a rejection. */
  connect() {
    return new Promise((resolve, reject) => {
      this.open((m) => {
        this.ready = true;
        resolve(m);
      }, (e, refusal) => reject(Object.assign(new Error(refusal
        ? `the signaling server refused the connection: ${refusal.message} (${refusal.code})`
        : 'cannot reach the signaling server'), { code: refusal?.code ?? null })));
    });
  }

  open(onWelcome, onFail) {
    const ws = new this.WS(this.url);
    this.ws = ws;
    this.ready = false;
    let welcomed = false;
    let refusal = null;
    // A failed connection is reported by onclose; an unhandled error
    // event would throw in Node's `ws`.
    ws.onerror = () => {};
    ws.onmessage = (e) => {
      if (ws !== this.ws) return;
      const m = JSON.parse(e.data);
      if (m.type === 'welcome') {
        welcomed = true;
        const grace = m.limits?.resume_grace_secs;
        if (Number.isFinite(grace) && grace > 0) this.graceMs = grace * 1000;
        onWelcome(m);
        this.flush();
        return;
      }
      if (!welcomed && m.type === 'error') {
        // A refused connection (server_full, then close 1013): reported by
        // connect() or retried by the reconnect loop.
        refusal = m;
        return;
      }
      this.onServerMessage(m);
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.ready = false;
      if (!welcomed && onFail) {
        onFail(e, refusal);
        return;
      }
      this.onDrop(e);
    };
  }

  onServerMessage(m) {
    switch (m.type) {
      case 'created':
      case 'joined':
        this.request = null;
        this.retries = 0;
        this.token = m.resume_token;
        break;
      case 'paired':
        this.paired = true;
        break;
      case 'message':
        // A seq that is not a positive integer is not the protocol: drop
        // it rather than let it spoil the duplicate check or the resume.
        if (!Number.isSafeInteger(m.seq) || m.seq < 1) return;
        // Acknowledge every message so the server can drop it; a message
        // seen before a reconnect is not delivered twice.
        this.raw({ type: 'ack', seq: m.seq });
        if (m.seq <= this.lastSeq) return;
        this.lastSeq = m.seq;
        break;
      case 'ack':
        this.retries = 0;
        for (const s of this.unacked.keys()) if (s <= m.seq) this.unacked.delete(s);
        return;
      case 'resumed':
        this.ready = true;
        this.droppedAt = null;
        this.token = m.resume_token ?? this.token;
        {
          // Without a usable last_received, resend everything unacknowledged:
          // the server drops what it holds already.
          const held = Number.isSafeInteger(m.last_received) ? m.last_received : 0;
          for (const [s, frame] of this.unacked) if (s > held) this.send_(frame);
        }
        this.flush();
        this.emit('resumed', m);
        if (m.paired && !this.paired) {
          // Paired while we were away: the `paired` we missed.
          this.paired = true;
          this.emit('paired', { ...m, type: 'paired', ice_servers: m.ice_servers ?? [] });
        }
        return;
      case 'peer_left':
        this.done = true;
        break;
      case 'left':
        this.done = true;
        break;
      case 'error':
        if (this.onError(m)) return;
        break;
      default:
        break;
    }
    this.emit(m.type, m);
  }

  /** Handles a refusal that needs no page decision; true if handled. */
  onError(m) {
    // The seat is gone (its grace passed, or it never existed): nothing
    // left to resume after a later drop.
    if (m.code === 'invalid_resume_token') this.done = true;
    if (m.code === 'no_session' && (this.leaving || this.done)) {
      // `leave` without a seat (the peer left first): already over. The
      // server will answer `left` for it; older servers say no_session.
      this.done = true;
      this.emit('left', { type: 'left' });
      return true;
    }
    if (!m.retryable || !AUTO_RETRY.has(m.code)) return false;
    if (m.code !== 'mailbox_full' && this.retries >= AUTO_RETRY_ATTEMPTS) return false;
    const delayMs = this.delaysMs[Math.min(this.retries, this.delaysMs.length - 1)] * (m.code === 'rate_limited' ? 4 : 1);
    this.retries += 1;
    this.emit('retrying', { code: m.code, delayMs });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.retryRefused(), delayMs);
    return true;
  }

  /** Sends again whatever a retryable refusal may have dropped. */
  retryRefused() {
    if (this.done) return;
    if (!this.ready) {
      // Refused `resume` (presence down): the welcome handler resends it on
      // a new connection; on this one, ask again.
      if (this.token && this.ws?.readyState === this.WS.OPEN) this.send_({ type: 'resume', token: this.token, last_seq: this.lastSeq });
      return;
    }
    if (this.request) this.send_(this.request);
    if (this.lastSeq > 0) this.send_({ type: 'ack', seq: this.lastSeq });
    for (const frame of this.unacked.values()) this.send_(frame);
  }

  onDrop(e) {
    // 1000: we closed it; 4001: our seat was resumed elsewhere.
    if (this.done || !this.token || e.code === 1000 || e.code === 4001) {
      this.done = true;
      this.emit('closed', { code: e.code, reason: e.reason });
      return;
    }
    this.droppedAt ??= this.now();
    this.emit('reconnecting', { code: e.code });
    this.retry(0);
  }

  retry(attempt) {
    const delay = this.delaysMs[Math.min(attempt, this.delaysMs.length - 1)];
    // The server keeps the seat for the grace period: keep trying that long.
    if (this.now() + delay - this.droppedAt > this.graceMs) {
      this.done = true;
      this.emit('closed', { code: 1006, reason: 'could not reconnect within the resume grace period' });
      return;
    }
    setTimeout(() => {
      if (this.done) return;
      this.open(
        () => this.send_({ type: 'resume', token: this.token, last_seq: this.lastSeq }),
        () => this.retry(attempt + 1),
      );
    }, delay);
  }

  /** Sends now if the connection is ready, else holds the frame in order. */
  raw(obj) {
    if (this.ready && this.ws?.readyState === this.WS.OPEN) {
      this.send_(obj);
      return;
    }
    // Acks: only the latest matters.
    if (obj.type === 'ack') this.waiting = this.waiting.filter((f) => f.type !== 'ack');
    this.waiting.push(obj);
  }

  send_(obj) {
    if (this.ws?.readyState === this.WS.OPEN) this.ws.send(JSON.stringify(obj));
  }

  flush() {
    if (!this.ready) return;
    const frames = this.waiting;
    this.waiting = [];
    for (const f of frames) this.send_(f);
  }

  create() { this.request = { type: 'create' }; this.retries = 0; this.raw(this.request); }

  join(nameplate) { this.request = { type: 'join', nameplate }; this.retries = 0; this.raw(this.request); }

  /**
   * Takes a seat a room reserved for us (`room_invite` / `room_invited`,
   * docs/PROTOCOL.md "Rooms"): `resume` with its token and last_seq 0, on a
   * connection of its own. Call after connect(). Until `resumed` nothing
   * else goes out (a `hello` waits, as after a reconnect); `resumed`
   * carries the pairing (both seats are reserved), so `paired` fires with
   * its ice_servers. A drop before or after is resumed like any seat.
   */
  seat(token) {
    if (this.token) throw new Error('this connection already holds a seat');
    this.token = token;
    this.lastSeq = 0;
    this.ready = false;
    this.send_({ type: 'resume', token, last_seq: 0 });
  }

  /** The creator's opening handshake message (checked by the server). */
  hello(body) { this.sendFrame('hello', body); }

  /** Any other message for the peer; `body` is an object, sent as JSON. */
  send(body) { this.sendFrame('send', body); }

  sendFrame(type, body) {
    const frame = { type, seq: ++this.seq, body: JSON.stringify(body) };
    this.unacked.set(frame.seq, frame);
    // Before `resumed` it waits in `unacked`; `resumed` resends it.
    if (this.ready) this.send_(frame);
  }

  /** Idempotent; a `leave` after the session ended is harmless. */
  leave() {
    if (this.leaving) return;
    this.leaving = true;
    this.raw({ type: 'leave' });
    this.done = true;
  }
}
