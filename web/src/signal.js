// A /signal client (docs/PROTOCOL.md): create or join, then an ordered,
// acknowledged message stream with the peer that survives a dropped
// connection: it reconnects, sends `resume`, and resends what the server had
// not acknowledged. Events go to `on(type, fn)`; `closed` fires only when it
// gives up.

const RETRY_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000, 15000, 30000];

export class SignalClient {
  constructor(url) {
    this.url = url;
    this.handlers = new Map();
    this.seq = 0;
    this.ws = null;
    this.token = null; // resume token of our seat
    this.lastSeq = 0; // highest message seq received
    this.unacked = new Map(); // seq -> frame, until the server acknowledges
    this.done = false; // left or superseded: do not reconnect
  }

  on(type, fn) {
    this.handlers.set(type, fn);
    return this;
  }

  emit(type, msg) {
    const fn = this.handlers.get(type);
    if (fn) fn(msg);
  }

  /** Resolves with the server's `welcome`. */
  connect() {
    return new Promise((resolve, reject) => {
      this.open(resolve, () => reject(new Error('cannot reach the signaling server')));
    });
  }

  open(onWelcome, onFail) {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    let welcomed = false;
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === 'welcome') {
        welcomed = true;
        onWelcome(m);
        return;
      }
      this.onServerMessage(m);
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      if (!welcomed && onFail) {
        onFail(e);
        return;
      }
      this.onDrop(e);
    };
  }

  onServerMessage(m) {
    switch (m.type) {
      case 'created':
      case 'joined':
        this.token = m.resume_token;
        break;
      case 'message':
        // Acknowledge every message so the server can drop it; a message
        // seen before a reconnect is not delivered twice.
        this.raw({ type: 'ack', seq: m.seq });
        if (m.seq <= this.lastSeq) return;
        this.lastSeq = m.seq;
        break;
      case 'ack':
        for (const s of this.unacked.keys()) if (s <= m.seq) this.unacked.delete(s);
        return;
      case 'resumed':
        for (const [s, frame] of this.unacked) if (s > m.last_received) this.raw(frame);
        break;
      case 'peer_left':
        this.done = true;
        break;
      default:
        break;
    }
    this.emit(m.type, m);
  }

  onDrop(e) {
    // 1000: we closed it; 4001: our seat was resumed elsewhere.
    if (this.done || !this.token || e.code === 1000 || e.code === 4001) {
      this.emit('closed', { code: e.code, reason: e.reason });
      return;
    }
    this.emit('reconnecting', { code: e.code });
    this.retry(0);
  }

  retry(attempt) {
    if (attempt >= RETRY_DELAYS_MS.length) {
      this.emit('closed', { code: 1006, reason: 'could not reconnect' });
      return;
    }
    setTimeout(() => {
      this.open(
        () => this.raw({ type: 'resume', token: this.token, last_seq: this.lastSeq }),
        () => this.retry(attempt + 1),
      );
    }, RETRY_DELAYS_MS[attempt]);
  }

  raw(obj) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  create() { this.raw({ type: 'create' }); }

  join(nameplate) { this.raw({ type: 'join', nameplate }); }

  /** The creator's opening handshake message (checked by the server). */
  hello(body) { this.sendFrame('hello', body); }

  /** Any other message for the peer; `body` is an object, sent as JSON. */
  send(body) { this.sendFrame('send', body); }

  sendFrame(type, body) {
    const frame = { type, seq: ++this.seq, body: JSON.stringify(body) };
    this.unacked.set(frame.seq, frame);
    this.raw(frame);
  }

  leave() {
    this.done = true;
    this.raw({ type: 'leave' });
  }
}
