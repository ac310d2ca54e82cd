// A /signal client (docs/PROTOCOL.md): create or join, then an ordered,
// acknowledged message stream with the peer. Events go to `on(type, fn)`.

export class SignalClient {
  constructor(url) {
    this.url = url;
    this.handlers = new Map();
    this.seq = 0;
    this.ws = null;
  }

  on(type, fn) {
    this.handlers.set(type, fn);
    return this;
  }

  emit(type, msg) {
    const fn = this.handlers.get(type);
    if (fn) fn(msg);
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === 'welcome') {
          resolve(m);
          return;
        }
        if (m.type === 'message') {
          // Acknowledge every message so the server can drop it.
          this.raw({ type: 'ack', seq: m.seq });
        }
        this.emit(m.type, m);
      };
      ws.onerror = () => reject(new Error('cannot reach the signaling server'));
      ws.onclose = (e) => this.emit('closed', { code: e.code, reason: e.reason });
    });
  }

  raw(obj) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  create() { this.raw({ type: 'create' }); }

  join(nameplate) { this.raw({ type: 'join', nameplate }); }

  /** The creator's opening handshake message (checked by the server). */
  hello(body) { this.raw({ type: 'hello', seq: ++this.seq, body: JSON.stringify(body) }); }

  /** Any other message for the peer; `body` is an object, sent as JSON. */
  send(body) { this.raw({ type: 'send', seq: ++this.seq, body: JSON.stringify(body) }); }

  leave() { this.raw({ type: 'leave' }); }
}
