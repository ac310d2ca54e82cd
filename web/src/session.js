// One explicit state machine per role around the handshake of ./handshake.js
// (docs/PROTOCOL.md, "The peer session"):
//
//   creator (A): idle --start()--> sent-hello --reply--> session
//   joiner  (B): idle --hello----> sent-reply --confirm-> session
//
// Anything else is refused: a handshake message (hello/reply/confirm) in the
// wrong state, and every handshake message once the session exists. The
// server relays these messages and is the adversary the protocol names; a
// re-delivered `reply` or `confirm` must not build a second session (its
// counters would restart at 0, and two messages would be sealed under one key
// and nonce). A refusal throws a HandshakeError of kind `out_of_turn` and
// leaves the machine `failed`, which refuses everything after.
//
// After the session: sealing is serialised (seal(obj, send) hands messages to
// `send` in counter order even if WebCrypto finishes them out of order), and
// an unsealed abort is not trusted (anyone on the path can forge it).
// Pure: no DOM, no network; tested in Node (test/session.test.js).

import * as hs from './handshake.js';

const HANDSHAKE = new Set(['hello', 'reply', 'confirm']);

const outOfTurn = (what) => new hs.HandshakeError('out_of_turn', what);

export class PeerSession {
  /** role: 'A' (created the session) or 'B' (joined it). */
  constructor(role, code, sid, { randomness = hs.freshRandomness } = {}) {
    if (role !== 'A' && role !== 'B') throw new Error(`unknown role ${role}`);
    this.role = role;
    this.code = code;
    this.sid = sid;
    this.randomness = randomness;
    this.state = 'idle';
    this.pending = null; // handshake state between our message and the peer's
    this.session = null;
    this.sealing = Promise.resolve();
  }

  /** A: the opening hello, once. */
  start() {
    if (this.role !== 'A' || this.state !== 'idle') this.refuse(`hello cannot be sent by ${this.role} in state ${this.state}`);
    return this.step(() => {
      const { state, hello } = hs.start(this.code, this.sid, this.randomness());
      this.pending = state;
      this.state = 'sent-hello';
      return hello;
    });
  }

  /**
   * An unsealed message from the peer. Returns
   *   { send?: msg, session?: Session } for a handshake step,
   *   { abort: true } for an abort the page should honour (before the session),
   *   { ignored: why } for an abort that cannot be trusted (after it).
   * Throws HandshakeError on anything else (and the machine is then failed).
   */
  receive(msg) {
    const t = msg?.t;
    if (t === 'abort') {
      if (this.state === 'session') return { ignored: 'unsealed abort after the session' };
      this.state = 'failed';
      return { abort: true };
    }
    if (!HANDSHAKE.has(t)) {
      if (t === 'sealed') this.refuse('a sealed message arrived before the session existed');
      this.fail(new hs.HandshakeError('malformed', `unexpected message ${String(t)}`));
    }
    if (this.state === 'session') this.refuse(`a second ${t} arrived after the session was set up`);
    const expected = this.role === 'A' ? { 'sent-hello': 'reply' } : { idle: 'hello', 'sent-reply': 'confirm' };
    if (expected[this.state] !== t) this.refuse(`${t} arrived out of turn (${this.role} in state ${this.state})`);
    return this.step(() => {
      switch (t) {
        case 'hello': {
          const { state, reply } = hs.respond(this.code, this.sid, msg, this.randomness());
          this.pending = state;
          this.state = 'sent-reply';
          return { send: reply };
        }
        case 'reply': {
          const { session, confirm } = hs.finish(this.pending, msg);
          this.established(session);
          return { send: confirm, session };
        }
        default: { // confirm
          const session = hs.accept(this.pending, msg);
          this.established(session);
          return { session };
        }
      }
    });
  }

  /** Opens a sealed message (strictly the next counter). */
  async open(msg) {
    if (this.state !== 'session') this.refuse(`a sealed message arrived in state ${this.state}`);
    return this.session.open(msg);
  }

  /**
   * Seals `obj` (as JSON) and hands the sealed message to `send`, in the
   * order of the calls. Resolves once it was handed over.
   */
  seal(obj, send) {
    // Also once failed after the session existed: the counters go on, so the
    // page can still seal its abort.
    if (!this.session) return Promise.reject(outOfTurn(`nothing can be sealed in state ${this.state}`));
    const session = this.session;
    const next = this.sealing.then(async () => send(await session.seal(JSON.stringify(obj))));
    this.sealing = next.catch(() => {});
    return next;
  }

  established(session) {
    this.session = session;
    this.pending = null;
    this.state = 'session';
  }

  step(fn) {
    try {
      return fn();
    } catch (e) {
      this.fail(e);
    }
    return undefined;
  }

  refuse(what) {
    this.fail(outOfTurn(what));
  }

  fail(e) {
    this.state = 'failed';
    this.pending = null;
    throw e;
  }
}
