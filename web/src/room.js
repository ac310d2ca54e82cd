// A room membership over its own /signal connection (docs/PROTOCOL.md,
// "Rooms" and "Nearby devices"): create a named room, join one by its code,
// or become visible nearby; then the member list (names, presence, owner)
// kept up to date from the server's events, invitations in and out, and
// the membership taken back with its token after a dropped connection.
// The room's share code is the nameplate plus three words this client draws;
// the words never reach the server. Pure: no DOM; the WebSocket is
// injectable; tested in Node against a real tallow-server
// (test/room.test.js).
//
// Events go to `on(type, fn)`:
//   'change'        the room (members, owner, presence) changed
//   'invite' {from, session, resume_token}   a member opened a session with us
//   'closed' {reason}  the room ended (closed, expired, gone)
//   'left' {reason}    we are no longer in it (left, timeout, gone, superseded)
//   'reconnecting' / 'resumed'   the connection dropped / came back
//   'error' {code, message}      a refusal that answered no pending request

import { word } from './handshake.js';

const RETRY_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000, 15000];
const DEFAULT_GRACE_SECS = 120;
// Retried by the client itself; the request stays pending meanwhile.
const AUTO_RETRY = new Set(['presence_unavailable', 'rate_limited', 'internal']);
const AUTO_RETRY_ATTEMPTS = 6;

/** The name others see, as the server will take it (1-40 characters,
 * trimmed, no control or direction characters), or null. */
export function displayName(text) {
  const s = String(text ?? '').trim();
  const n = [...s].length;
  if (n < 1 || n > 40) return null;
  // The joiners U+200C/D stay, as on the server: emoji and scripts need them.
  if (/[\u0000-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u206f\ufeff]/u.test(s)) return null;
  return s;
}

/** A room's share code (`417-bal-kir-mos`), trimmed and lowercased, or null. */
export function roomCode(text) {
  const c = String(text ?? '').trim().toLowerCase();
  return /^\d{1,9}-[a-z]+(-[a-z]+)+$/.test(c) ? c : null;
}

/**
 * The handshake's `code` for a session between two members of a named room
 * (docs/PROTOCOL.md, "Rooms"): the room's share code bound to the display
 * names of the member who invited and the one invited, each as that
 * member chose it. Each side takes its own name from itself and the other's
 * from the server, so a server that gives a session to another member than
 * the one shown (who knows the room's code too) fails the handshake, unless
 * that member chose the same name.
 */
export function roomSessionCode(code, inviter, invitee) {
  return JSON.stringify(['tallow room session', code, inviter, invitee]);
}

/** A pending request as it should go (again): an invitation asks only
 * for the members it has no session with yet, so none gets a second. */
function outstanding(p) {
  const a = p.answer;
  if (a.members) p.msg = { ...p.msg, to: a.members.filter((t) => !p.got.some((g) => g.to === t)) };
  return p.msg;
}

const randomWords = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), word);

export class RoomError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class RoomClient {
  /** `options.WebSocket`, `delaysMs` and `words` are for tests. */
  constructor(url, { WebSocket: WS = globalThis.WebSocket, delaysMs = RETRY_DELAYS_MS, words = randomWords } = {}) {
    this.url = url;
    this.WS = WS;
    this.delaysMs = delaysMs;
    this.words = words;
    this.handlers = new Map();
    this.ws = null;
    this.graceMs = DEFAULT_GRACE_SECS * 1000;
    this.pending = []; // requests in the order sent; the server answers in order
    this.token = null; // resume token of our membership
    this.resuming = false;
    this.live = false; // welcomed, and resumed after a drop
    this.droppedAt = null;
    this.done = false; // left, closed or given up: no reconnect
    this.ended = false; // over: nothing the server says about the room counts
    this.retries = 0;
    // The room as the server last described it.
    this.room = null;
    // 'named' or 'nearby': what this client entered, never what the server
    // says (a named room's sessions take its secret code, a nearby one's the
    // public `nearby`: a server that could turn one into the other could
    // sit in the middle of the invitations).
    this.kind = null;
    this.name = null;
    this.nameplate = null;
    this.code = null; // the share code (named rooms): nameplate + our words
    this.display = null; // our display name, as we chose it
    this.owner = null;
    this.you = null;
    this.maxMembers = null;
    this.expiresAt = null; // ms since the epoch (named rooms)
    this.members = new Map(); // member id -> { member, name, present }
    // Members who left (ids are never reused within a room): an invitation
    // may reach us just after its sender left, and names its session.
    this.former = new Map();
  }

  /** Member `id`, present or one that left. */
  member(id) {
    return this.members.get(id) ?? this.former.get(id);
  }

  on(type, fn) {
    this.handlers.set(type, fn);
    return this;
  }

  emit(type, msg) {
    const fn = this.handlers.get(type);
    if (fn) fn(msg);
  }

  /** Resolves with the server's `welcome`; rejects if it cannot connect. */
  connect() {
    return new Promise((resolve, reject) => this.open(resolve, (refusal) => reject(new RoomError(refusal?.code ?? null,
      refusal ? `the signaling server refused the connection: ${refusal.message}` : 'cannot reach the signaling server'))));
  }

  open(onWelcome, onFail) {
    const ws = new this.WS(this.url);
    this.ws = ws;
    let welcomed = false;
    let refusal = null;
    // A failed connection is reported by onclose; an unhandled error
    // event would throw in Node's `ws`.
    ws.onerror = () => {};
    ws.onmessage = (e) => {
      if (ws !== this.ws) return;
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (m?.type === 'welcome') {
        welcomed = true;
        if (!this.token) this.live = true;
        const grace = m.limits?.resume_grace_secs;
        if (Number.isFinite(grace) && grace > 0) this.graceMs = grace * 1000;
        onWelcome(m);
        return;
      }
      if (!welcomed && m?.type === 'error') {
        refusal = m;
        return;
      }
      this.onServerMessage(m);
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      if (!welcomed) {
        onFail(refusal);
        return;
      }
      this.onDrop(e);
    };
  }

  send(obj) {
    if (this.ws?.readyState === this.WS.OPEN) this.ws.send(JSON.stringify(obj));
  }

  /** Sends `msg` and resolves with its answer (see `settle`). */
  request(msg, answer) {
    return new Promise((resolve, reject) => {
      if (this.done && msg.type !== 'room_leave') {
        reject(new RoomError('no_room', 'not in a room'));
        return;
      }
      this.pending.push({ msg, answer, resolve, reject, got: [], attempts: 0 });
      // While a dropped connection resumes, requests wait (room_resumed
      // sends them): one sent first would be refused as no_room.
      if (this.live) this.send(msg);
    });
  }

  /** Opens a named room; resolves once its state is known. `code` is then
   * the room's share code. */
  async create(display, { name, maxMembers, ttlSecs } = {}) {
    this.kind = 'named';
    this.display = display;
    const msg = { type: 'room_create', display_name: display };
    if (name) msg.name = name;
    if (maxMembers) msg.max_members = maxMembers;
    if (ttlSecs) msg.ttl_secs = ttlSecs;
    const [created] = await this.request(msg, { first: 'room_created', state: true });
    this.code = `${created.nameplate}-${this.words(3).join('-')}`;
    return this;
  }

  /** Enters the named room of `code` (the words stay here: they are the
   * secret the pairwise handshakes check). */
  async join(code, display) {
    const c = roomCode(code);
    if (!c) throw new RoomError('bad_code', 'a room code looks like 417-bal-kir-mos');
    const nameplate = c.split('-')[0];
    this.kind = 'named';
    this.display = display;
    await this.request({ type: 'room_join', nameplate, display_name: display }, { first: 'room_joined', state: true });
    this.code = c;
    this.nameplate = nameplate;
    return this;
  }

  /** Becomes visible to the clients behind the same public address. */
  async nearby(display) {
    this.kind = 'nearby';
    this.display = display;
    await this.request({ type: 'nearby_join', display_name: display }, { first: 'room_joined', state: true });
    return this;
  }

  /** Opens one pairwise session with each member listed; resolves with one
   * `{to, session, resume_token}` per member (ours: seat 0), each member
   * once. A refusal part-way (the server delivers the sessions it made,
   * then refuses) rejects with the sessions made in `delivered`: they are
   * reserved for us and the invitees were told. */
  invite(members) {
    const to = [...new Set(members)];
    return this.request({ type: 'room_invite', to }, { type: 'room_invited', count: to.length, list: true, members: to });
  }

  /** Leaves for good (idempotent). */
  async leave() {
    if (this.done || !this.token) {
      this.done = true;
      return;
    }
    this.done = true; // no reconnect for a membership we give up
    if (!this.live) {
      // Mid-reconnect: nothing to say it on; the server lets the
      // membership go after its grace.
      this.over();
      this.ws?.close(1000);
      return;
    }
    try {
      await this.request({ type: 'room_leave' }, { type: 'room_left', count: 1 });
    } finally {
      this.ws?.close(1000);
    }
  }

  /** Ends the room for everyone (the owner only). */
  close() {
    return this.request({ type: 'room_close' }, { type: 'room_closed', count: 1 });
  }

  /** Completes the request at the head if `m` answers it. A create, join
   * or nearby is answered by its reply and the `room_state` after it. */
  settle(m) {
    const head = this.pending[0];
    if (!head) return;
    const a = head.answer;
    let complete = false;
    if (a.first) {
      if (m.type === a.first && head.got.length === 0) head.got.push(m);
      else if (m.type === 'room_state' && head.got.length === 1) complete = true;
    } else if (m.type === a.type) {
      // An invitation for a member not asked, or a second one for a
      // member, answers nothing: one session per member.
      if (a.members && (!a.members.includes(m.to) || head.got.some((g) => g.to === m.to))) return;
      head.got.push(m);
      complete = head.got.length >= a.count;
    }
    if (!complete) return;
    this.pending.shift();
    head.resolve(a.list || a.first ? head.got : head.got[0]);
  }

  onServerMessage(m) {
    if (!m || typeof m.type !== 'string' || this.ended) return;
    // Left (room_leave sent): only its answer counts now.
    if (this.done && m.type !== 'room_left' && m.type !== 'room_closed' && m.type !== 'error') return;
    if (m.type === 'error') {
      this.onError(m);
      return;
    }
    if (m.type === 'room_resumed') {
      this.resuming = false;
      this.live = true;
      this.droppedAt = null;
      this.retries = 0;
      this.token = m.resume_token ?? this.token;
      this.emit('resumed', m);
      // Requests that may have been lost with the old connection go again
      // (the full room_state follows and refreshes the member list).
      for (const p of this.pending) this.send(outstanding(p));
      return;
    }
    const changed = this.apply(m);
    this.settle(m);
    if (m.type === 'room_closed' || m.type === 'room_left') {
      this.over();
      this.emit(m.type === 'room_closed' ? 'closed' : 'left', m);
      this.ws?.close(1000);
    } else if (m.type === 'room_invite') {
      this.emit('invite', m);
    }
    if (changed) this.emit('change', m);
  }

  /** Applies a server message to the room; true if the room changed. */
  apply(m) {
    switch (m.type) {
      case 'room_created':
        this.nameplate = String(m.nameplate);
        this.token = m.resume_token;
        this.room = m.room;
        this.you = m.member;
        return false;
      case 'room_joined':
        this.token = m.resume_token;
        this.room = m.room;
        this.you = m.member;
        return false;
      case 'room_state':
        this.room = m.room;
        this.name = m.name ?? null;
        this.owner = m.owner ?? null;
        this.you = m.you;
        this.maxMembers = m.max_members;
        if (Number.isFinite(m.expires_in_secs)) this.expiresAt = Date.now() + m.expires_in_secs * 1000;
        for (const [id, x] of this.members) this.former.set(id, x);
        // Whatever the server sends, only well-formed members count.
        this.members = new Map((Array.isArray(m.members) ? m.members : [])
          .filter((x) => Number.isSafeInteger(x?.member) && x.member > 0)
          .map((x) => [x.member, { member: x.member, name: String(x.name), present: !!x.present }]));
        for (const id of this.members.keys()) this.former.delete(id);
        return true;
      case 'room_member_joined':
        if (!Number.isSafeInteger(m.member) || m.member < 1) return false;
        this.members.set(m.member, { member: m.member, name: String(m.name), present: true });
        return true;
      case 'room_member_left': {
        const x = this.members.get(m.member);
        if (x) this.former.set(m.member, x);
        return this.members.delete(m.member);
      }
      case 'room_member_away':
      case 'room_member_back': {
        const x = this.members.get(m.member);
        if (x) x.present = m.type === 'room_member_back';
        return !!x;
      }
      case 'room_owner':
        this.owner = m.member;
        return true;
      default:
        return false;
    }
  }

  /** The membership ended: nothing more to resume; waiting requests fail. */
  over() {
    this.done = true;
    this.ended = true;
    this.live = false;
    this.token = null;
    for (const p of this.pending.splice(0)) p.reject(new RoomError('no_room', 'the room ended'));
  }

  onError(m) {
    if (this.resuming) {
      if (AUTO_RETRY.has(m.code) && this.retries < AUTO_RETRY_ATTEMPTS) {
        this.retries += 1;
        this.later(this.retries, m.code, () => this.send({ type: 'room_resume', token: this.token }));
        return;
      }
      // The membership is gone (its grace passed): say so.
      this.resuming = false;
      this.over();
      this.emit('left', { type: 'room_left', reason: m.code === 'invalid_resume_token' ? 'timeout' : 'gone' });
      this.ws?.close(1000);
      return;
    }
    const head = this.pending[0];
    if (!head) {
      this.emit('error', m);
      return;
    }
    if (m.retryable && AUTO_RETRY.has(m.code) && head.attempts < AUTO_RETRY_ATTEMPTS) {
      head.attempts += 1;
      this.later(head.attempts, m.code, () => { if (this.pending[0] === head && this.live) this.send(outstanding(head)); });
      return;
    }
    this.pending.shift();
    head.reject(Object.assign(new RoomError(m.code, m.message ?? m.code), { retryable: !!m.retryable, delivered: head.answer.list ? head.got.slice() : [] }));
  }

  later(attempt, code, fn) {
    const delay = this.delaysMs[Math.min(attempt - 1, this.delaysMs.length - 1)] * (code === 'rate_limited' ? 4 : 1);
    setTimeout(() => { if (!this.done) fn(); }, delay);
  }

  onDrop(e) {
    this.live = false;
    this.resuming = false;
    // 1000: we closed it; 4001: the membership was taken by another connection.
    if (this.done || !this.token || e.code === 1000 || e.code === 4001) {
      const was = !this.done && this.token;
      this.over();
      if (was) this.emit('left', { type: 'room_left', reason: e.code === 4001 ? 'superseded' : 'gone' });
      return;
    }
    this.droppedAt ??= Date.now();
    this.emit('reconnecting', { code: e.code });
    this.retry(0);
  }

  retry(attempt) {
    const delay = this.delaysMs[Math.min(attempt, this.delaysMs.length - 1)];
    // The server keeps the membership for the grace period: try that long.
    if (Date.now() + delay - this.droppedAt > this.graceMs) {
      this.over();
      this.emit('left', { type: 'room_left', reason: 'timeout' });
      return;
    }
    setTimeout(() => {
      if (this.done) return;
      this.open(() => {
        this.resuming = true;
        this.send({ type: 'room_resume', token: this.token });
      }, () => this.retry(attempt + 1));
    }, delay);
  }

  /** The members other than us, in id order. */
  others() {
    return [...this.members.values()].filter((m) => m.member !== this.you).sort((a, b) => a.member - b.member);
  }
}
