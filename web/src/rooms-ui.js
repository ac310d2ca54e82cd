// Rooms and nearby devices on the page (README, "Rooms and nearby
// devices"): create or join a named room, or show this device to the others
// behind the same address; the member list; group transfers, one pairwise
// session (a ./peer.js Peer) per recipient, opened by a room invitation
// (docs/PROTOCOL.md, "Rooms"); and the invitations others send us. The
// room's share code (nearby: the fixed `nearby`) is the handshake's code, so
// each pair proves it knows the room's words; each pair has its own
// verification words. Membership: ./room.js.

import { Peer } from './peer.js';
import { RoomClient, displayName, roomCode, roomSessionCode } from './room.js';
import { neutral } from './names.js';
import { bytes, fromDrop, fromInput, offerItems, saveItem } from './view.js';
import { TERMINAL, mayTakeInvite, receiverStopped, roomFailure, senderStopped, summary } from './group.js';

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
};

// What a Peer says that a room's card already shows by its state, or that
// is routine there (an invitee not yet arrived): not repeated under it.
const ROUTINE = /^(Connected\.|Secure session ready|Peer connected|Your peer is back|Your peer lost its connection to the server; waiting)/;
const detailOf = (text) => (ROUTINE.test(text) ? '' : text);

// How long a finished session stays up so that its last records (a got,
// a cancel) reach the peer before it is closed.
const LINGER_MS = 1500;

const ROOM_ERRORS = {
  unknown_room: 'No room has that code: it was closed, expired, or the code is mistyped.',
  room_full: 'That room is full.',
  too_many_rooms: 'Your network is already in too many rooms. Leave one, then try again.',
  too_many_failed_joins: 'Too many wrong codes were tried from your network. Wait a few minutes, then try again.',
  too_many_invites: 'Too many sends in a short time. Wait a minute, then try again.',
  server_full: 'The server is full right now. Try again in a minute.',
  presence_unavailable: 'The server cannot reach its room store. Try again in a minute.',
};
const roomErrorText = (e) => ROOM_ERRORS[e?.code] ?? `${e?.message ?? e}${e?.code ? ` (${e.code})` : ''}.`;

/**
 * Wires the rooms part of the page. `url`: the /signal URL; `forceRelay`
 * and `sink` as for the 1:1 session; `fromLink`: a room code from a
 * `#room=` link. Returns { leaveAll(), activeTransfer() } for the page's
 * unload handlers.
 */
export function startRooms({ url, forceRelay, sink, fromLink }) {
  const groups = [];
  const incoming = [];
  let room = null; // the named room
  let nearby = null; // the nearby "room"
  let nearbyTarget = null;

  const notice = (text) => {
    $('room-notice').textContent = text;
    $('room-notice').hidden = !text;
  };
  const name = () => {
    const n = displayName($('display-name').value);
    if (!n) {
      notice('Type the name others will see (1 to 40 characters).');
      $('display-name').focus();
    }
    return n;
  };
  const newPeer = (hooks) => new Peer({ url, forceRelay, oneShot: true, hooks });

  // --- the named room -------------------------------------------------------

  function roomClient() {
    const c = new RoomClient(url);
    c.on('change', () => { if (c === room) renderRoom(); })
      .on('invite', (m) => invited(c, m))
      .on('closed', (m) => {
        if (c !== room) return;
        endRoom(m.reason === 'expired' ? 'The room expired.' : m.reason === 'closed' ? 'The room was closed by its owner.' : 'The room is gone.');
      })
      .on('left', (m) => {
        if (c !== room) return;
        endRoom(m.reason === 'left' ? '' : m.reason === 'superseded' ? 'This room was opened in another tab.' : 'You lost your place in the room (the connection was down too long).');
      })
      .on('reconnecting', () => {
        if (c !== room) return;
        $('room').dataset.connection = 'reconnecting';
        $('room-status').textContent = 'Connection to the room lost; reconnecting…';
      })
      .on('resumed', () => {
        if (c !== room) return;
        $('room').dataset.connection = 'live';
        roomStatus();
      });
    return c;
  }

  async function enter(how) {
    const display = name();
    if (!display) return;
    let code = null;
    if (how === 'join') {
      code = roomCode($('room-code-input').value);
      if (!code) {
        notice('A room code looks like 417-bal-kir-mos.');
        return;
      }
    }
    notice('');
    for (const b of ['room-create', 'room-join']) $(b).disabled = true;
    const c = roomClient();
    try {
      await c.connect();
      if (how === 'create') await c.create(display);
      else await c.join(code, display);
    } catch (e) {
      c.ws?.close(1000);
      notice(roomErrorText(e));
      for (const b of ['room-create', 'room-join']) $(b).disabled = false;
      return;
    }
    room = c;
    $('room-start-row').hidden = true;
    $('room').hidden = false;
    $('room').dataset.connection = 'live';
    $('room-code').textContent = c.code;
    $('room-link').textContent = roomLink(c.code);
    renderRoom();
    roomStatus();
  }

  /** When the room ends by itself. */
  function roomStatus() {
    const at = room?.expiresAt;
    $('room-status').textContent = at ? `The room closes by itself at ${new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}.` : '';
  }

  const roomLink = (code) => `${location.origin}${location.pathname}#room=${code}`;

  function endRoom(text) {
    room = null;
    $('room').hidden = true;
    $('room-start-row').hidden = false;
    for (const b of ['room-create', 'room-join']) $(b).disabled = false;
    notice(text);
  }

  function renderRoom() {
    const c = room;
    const owner = c.owner;
    $('room-title').textContent = c.name ? `Room ${neutral(c.name, 60)}` : 'Your room';
    $('room-close').hidden = owner !== c.you;
    const checked = new Set([...$('room-members').querySelectorAll('input:checked')].map((i) => Number(i.value)));
    const items = [...c.members.values()].sort((a, b) => a.member - b.member).map((m) => {
      const li = el('li', { dataset: { member: String(m.member), present: String(m.present), owner: String(m.member === owner) } });
      const label = el('span', { className: 'name', textContent: neutral(m.name, 40) });
      if (m.member === c.you) {
        li.dataset.you = 'true';
        li.append(label, el('span', { className: 'badge', textContent: 'you' }));
      } else {
        const box = el('input', { type: 'checkbox', value: String(m.member), checked: checked.has(m.member) });
        li.append(el('label', {}, box, ' ', label));
      }
      if (m.member === owner) li.append(el('span', { className: 'badge owner', textContent: 'owner' }));
      if (!m.present) li.append(el('span', { className: 'badge away', textContent: 'away' }));
      return li;
    });
    $('room-members').replaceChildren(...items);
    const others = c.others().length;
    $('room-hint').textContent = others === 0
      ? 'No one else is here yet: share the code or the link.'
      : 'Tick the members to send to, then drop files or a folder, or choose them.';
  }

  function sendToRoom(entries) {
    if (!room || entries.length === 0) return;
    const chosen = [...$('room-members').querySelectorAll('input:checked')].map((i) => room.members.get(Number(i.value))).filter(Boolean);
    if (chosen.length === 0) {
      notice('Tick at least one member to send to.');
      return;
    }
    notice('');
    startGroup(room, room.code, chosen, entries, { nearby: false });
  }

  // --- nearby ---------------------------------------------------------------

  async function nearbyOn() {
    const display = name();
    if (!display) {
      $('nearby-toggle').checked = false;
      return;
    }
    notice('');
    const c = new RoomClient(url);
    c.on('change', () => { if (c === nearby) renderNearby(); })
      .on('invite', (m) => invited(c, m))
      .on('left', () => { if (c === nearby) nearbyOff(); })
      .on('closed', () => { if (c === nearby) nearbyOff(); });
    nearby = c;
    $('nearby').hidden = false;
    try {
      await c.connect();
      await c.nearby(display);
    } catch (e) {
      if (nearby === c) nearbyOff();
      notice(roomErrorText(e));
      return;
    }
    renderNearby();
  }

  function nearbyOff() {
    const c = nearby;
    nearby = null;
    $('nearby-toggle').checked = false;
    $('nearby').hidden = true;
    $('nearby-list').replaceChildren();
    c?.leave().catch(() => {});
  }

  function renderNearby() {
    const c = nearby;
    const others = c.others();
    $('nearby-empty').hidden = others.length > 0;
    $('nearby-list').replaceChildren(...others.map((m) => {
      const b = el('button', { type: 'button', className: 'device', textContent: neutral(m.name, 40) });
      b.dataset.member = String(m.member);
      b.setAttribute('aria-label', `Send files to ${neutral(m.name, 40)}`);
      b.onclick = () => {
        nearbyTarget = m;
        $('nearby-file').click();
      };
      b.ondragover = (e) => { e.preventDefault(); b.classList.add('over'); };
      b.ondragleave = () => b.classList.remove('over');
      b.ondrop = async (e) => {
        e.preventDefault();
        b.classList.remove('over');
        startGroup(c, 'nearby', [m], await fromDrop(e.dataTransfer), { nearby: true });
      };
      const li = el('li', { dataset: { member: String(m.member), present: String(m.present) } }, b);
      if (!m.present) li.append(el('span', { className: 'badge away', textContent: 'away' }));
      return li;
    }));
  }

  // --- group transfers: one session per recipient ----------------------------

  function startGroup(c, code, members, entries, { nearby: isNearby }) {
    const files = entries.filter((e) => e.file);
    if (files.length === 0) return;
    const g = new GroupSend({ c, code, members, files, nearby: isNearby, newPeer });
    groups.push(g);
    $('groups').prepend(g.card);
    g.start();
  }

  // --- invitations to us ------------------------------------------------------

  const KEEP_FINISHED = 20;

  function invited(c, m) {
    // Only from a room this page is in (one it left says nothing more).
    if (c !== room && c !== nearby) return;
    const from = c.member(m.from); // present, or just left
    // The kind this page entered (./room.js): a named room's sessions take
    // its secret code, never the public `nearby`.
    const isNearby = c.kind === 'nearby';
    // A named room's session binds the inviter's name as the server shows
    // it and ours as we chose it (./room.js, roomSessionCode).
    const code = isNearby ? 'nearby' : roomSessionCode(c.code, from ? from.name : '', c.display);
    if (!mayTakeInvite(incoming, m.from, c)) {
      notice(`${from ? neutral(from.name, 40) : `Member ${m.from}`} tried to send more while earlier sends wait for you: answer those first.`);
      // Take the seat only to leave it, so the sender hears at once rather
      // than when the server's grace for the invitation runs out.
      const peer = newPeer({});
      peer.seat({ token: m.resume_token, role: 'B', code, sid: m.session }).then(() => peer.close(), () => peer.close());
      return;
    }
    const r = new IncomingSend({ from: from ? from.name : `member ${m.from}`, fromId: m.from, room: c, invite: m, code, nearby: isNearby, sink, newPeer });
    incoming.push(r);
    $('incoming').prepend(r.card);
    r.start();
    // Finished cards beyond the last few go: a member sending and
    // cancelling over and over must not grow the page without bound.
    const over = incoming.filter((x) => !x.active());
    for (const x of over.slice(0, Math.max(0, over.length - KEEP_FINISHED))) {
      x.card.remove();
      incoming.splice(incoming.indexOf(x), 1);
    }
  }

  // --- wiring -------------------------------------------------------------------

  $('room-create').onclick = () => enter('create');
  $('room-join').onclick = () => enter('join');
  $('room-code-input').onkeydown = (e) => { if (e.key === 'Enter' && !$('room-join').disabled) enter('join'); };
  $('room-leave').onclick = () => {
    const c = room;
    endRoom('');
    c?.leave().catch(() => {});
  };
  $('room-close').onclick = async () => {
    try {
      await room?.close();
    } catch (e) {
      notice(roomErrorText(e));
    }
  };
  $('room-copy').onclick = async () => {
    try {
      await navigator.clipboard.writeText($('room-link').textContent);
      $('room-copy').textContent = 'Copied';
    } catch {
      $('room-copy').textContent = 'Select the link above to copy it';
    }
  };
  $('room-file').onchange = () => { sendToRoom(fromInput($('room-file'))); $('room-file').value = ''; };
  $('room-folder').onchange = () => { sendToRoom(fromInput($('room-folder'))); $('room-folder').value = ''; };
  const drop = $('room-drop');
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = async (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    sendToRoom(await fromDrop(e.dataTransfer));
  };
  $('nearby-toggle').onchange = () => { if ($('nearby-toggle').checked) nearbyOn(); else nearbyOff(); };
  $('nearby-file').onchange = () => {
    const m = nearbyTarget;
    const files = fromInput($('nearby-file'));
    $('nearby-file').value = '';
    if (m && nearby) startGroup(nearby, 'nearby', [m], files, { nearby: true });
  };
  for (const b of ['room-create', 'room-join', 'nearby-toggle']) $(b).disabled = false;
  const linked = (code) => {
    $('room-code-input').value = code;
    notice('The room code from your link is filled in: type your name, then press Join a room.');
    $('display-name').focus();
  };
  if (fromLink) linked(fromLink);

  return {
    fromLink: linked,
    leaveAll() {
      for (const g of groups) g.leave();
      for (const r of incoming) r.leave();
      room?.leave().catch(() => {});
      nearby?.leave().catch(() => {});
    },
    activeTransfer: () => groups.some((g) => g.active()) || incoming.some((r) => r.active()),
  };
}

/** The sending side of one group transfer: a card with a row per recipient. */
class GroupSend {
  constructor({ c, code, members, files, nearby, newPeer }) {
    this.room = c;
    this.code = code;
    this.files = files;
    this.nearby = nearby;
    this.newPeer = newPeer;
    this.total = files.reduce((n, f) => n + f.file.size, 0);
    this.rows = new Map();
    this.summary = el('p', { className: 'group-summary', hidden: true });
    const title = el('p', { className: 'group-title' });
    const who = members.map((m) => neutral(m.name, 40)).join(', ');
    title.textContent = `${files.length === 1 ? neutral(files[0].path, 120) : `${files.length} files`} (${bytes(this.total)}) to ${who}`;
    this.cancelAll = el('button', { type: 'button', className: 'cancel-all', textContent: members.length > 1 ? 'Cancel all' : 'Cancel' });
    this.cancelAll.onclick = () => this.cancel();
    const list = el('ul', { className: 'recipients' });
    for (const m of members) {
      const row = {
        member: m.member,
        memberName: m.name, // as the server shows it, for the session's code
        name: neutral(m.name, 40),
        peer: null,
        state: null,
        connected: false,
        wordsOk: !nearby, // nearby: the person confirms the words first
        offered: false,
        li: el('li', { className: 'recipient', dataset: { member: String(m.member) } }),
      };
      row.text = el('span', { className: 'state-text' });
      row.words = el('span', { className: 'words' });
      row.wordsLine = el('div', { className: 'words-line', hidden: true }, 'Words: ', row.words);
      row.ok = el('button', { type: 'button', className: 'words-ok', hidden: true, textContent: 'The words match: send' });
      row.ok.onclick = () => {
        row.wordsOk = true;
        row.ok.hidden = true;
        this.offer(row);
      };
      row.bar = el('progress', { max: 1, value: 0, hidden: true });
      row.detail = el('div', { className: 'detail' });
      row.li.append(el('div', {}, el('span', { className: 'name', textContent: row.name }), ' · ', row.text), row.wordsLine, row.ok, row.bar, row.detail);
      list.append(row.li);
      this.rows.set(m.member, row);
      this.set(row, 'inviting', 'Inviting…');
    }
    this.card = el('section', { className: 'group card', dataset: { state: 'active' } }, title, list, this.summary, this.cancelAll);
    this.card.setAttribute('aria-label', 'Sending');
  }

  set(row, state, text) {
    if (TERMINAL.has(row.state)) return;
    row.state = state;
    row.li.dataset.state = state;
    row.text.textContent = text;
    if (TERMINAL.has(state)) {
      row.detail.textContent = row.detail.textContent && state === 'failed' ? row.detail.textContent : '';
      const over = summary([...this.rows.values()].map((r) => r.state));
      if (over) {
        this.card.dataset.state = 'over';
        this.cancelAll.hidden = true;
        this.summary.textContent = over;
        this.summary.hidden = false;
      }
    }
  }

  active() {
    return [...this.rows.values()].some((r) => !TERMINAL.has(r.state));
  }

  async start() {
    let invites;
    let refusal = null;
    try {
      invites = await this.room.invite([...this.rows.keys()]);
    } catch (e) {
      // Refused part-way: the sessions made before the refusal were
      // delivered to their recipients, who wait for us in them.
      invites = e.delivered ?? [];
      refusal = e;
    }
    for (const inv of invites) {
      const row = this.rows.get(inv.to);
      if (!row || row.peer) continue; // one session per recipient
      if (TERMINAL.has(row.state)) {
        // Cancelled while the invitation was on its way: the recipient was
        // invited all the same, so take the seat to tell it at once.
        const peer = this.newPeer({});
        row.peer = peer;
        peer.seat({ token: inv.resume_token, role: 'A', code: this.codeFor(row), sid: inv.session }).then(() => peer.close('cancelled'));
        continue;
      }
      this.connect(row, inv);
    }
    if (refusal) {
      for (const row of this.rows.values()) if (!row.peer) this.set(row, 'failed', `Could not invite: ${roomErrorText(refusal)}`);
    }
  }

  connect(row, inv) {
    this.set(row, 'connecting', 'Connecting…');
    row.peer = this.newPeer({
      status: (text) => { if (!TERMINAL.has(row.state)) row.detail.textContent = detailOf(text); },
      words: (words) => {
        row.words.textContent = words.join(' ');
        row.wordsLine.hidden = false;
        if (this.nearby) {
          this.set(row, 'verify', `Check that ${row.name} sees the same words, then send.`);
          row.ok.hidden = false;
        }
      },
      connected: ({ afterBreak }) => {
        if (afterBreak) return;
        row.connected = true;
        this.offer(row);
      },
      failed: (text, { peerReason }) => {
        row.ok.hidden = true;
        if (peerReason === 'cancelled') this.set(row, 'cancelled', `${row.name} cancelled.`);
        else {
          row.detail.textContent = roomFailure(text);
          this.set(row, 'failed', 'Failed.');
        }
      },
      sender: (sender, event, detail) => this.onSender(row, sender, event, detail),
    });
    row.peer.seat({ token: inv.resume_token, role: 'A', code: this.codeFor(row), sid: inv.session });
  }

  /** The handshake's code with this recipient: nearby, the public
   * `nearby`; in a named room, the room's code bound to our name and the
   * recipient's as shown (./room.js, roomSessionCode). */
  codeFor(row) {
    return this.nearby ? 'nearby' : roomSessionCode(this.code, this.room.display, row.memberName);
  }

  /** The offer goes once the channel is open (and, nearby, the words checked). */
  offer(row) {
    if (row.offered || !row.connected || !row.wordsOk || TERMINAL.has(row.state)) return;
    row.offered = true;
    let sender;
    try {
      sender = row.peer.send(this.files);
    } catch (e) {
      this.set(row, 'failed', `Cannot offer these files: ${e.message}.`);
      row.peer.close('cancelled');
      return;
    }
    if (!sender) {
      this.set(row, 'failed', 'The connection closed before the offer could go.');
      return;
    }
    this.set(row, 'offered', `Waiting for ${row.name} to accept…`);
  }

  onSender(row, sender, event, detail) {
    switch (event) {
      case 'accepted':
        this.set(row, 'sending', 'Sending…');
        row.bar.max = Math.max(1, sender.total);
        row.bar.hidden = false;
        break;
      case 'progress': {
        if (TERMINAL.has(row.state)) break;
        const done = Math.min(sender.total, sender.firstBytes);
        row.bar.value = done;
        row.text.textContent = `Sending… ${bytes(done)} of ${bytes(sender.total)}`;
        break;
      }
      case 'done':
        row.bar.value = row.bar.max;
        this.set(row, 'done', `Delivered: ${row.name} verified every file (SHA-256).`);
        this.finish(row);
        break;
      case 'stopped': {
        const { state, text } = senderStopped(detail, row.name);
        this.set(row, state, text);
        this.finish(row);
        break;
      }
      default:
        break;
    }
  }

  /** This recipient's transfer is over: its session ends. */
  finish(row) {
    const peer = row.peer;
    setTimeout(() => peer?.close(), LINGER_MS);
  }

  /** Cancel all: `cancel` in every session that carries the transfer; a
   * session not that far yet ends with a sealed abort saying so. */
  cancel() {
    for (const row of this.rows.values()) {
      if (TERMINAL.has(row.state)) continue;
      const out = row.peer?.outgoing;
      if (out && !['done', 'stopped'].includes(out.machine.state)) {
        row.peer.cancel('cancelled by the sender');
        continue;
      }
      this.set(row, 'cancelled', 'You cancelled.');
      row.ok.hidden = true;
      row.peer?.close('cancelled');
    }
  }

  leave() {
    for (const row of this.rows.values()) row.peer?.signal.leave();
  }
}

/** The receiving side of one invitation: the sender's name, the words,
 * the offer with Accept and Decline, progress, Save links. */
class IncomingSend {
  constructor({ from, fromId, room, invite, code, nearby, sink, newPeer }) {
    this.invite = invite;
    this.fromId = fromId;
    this.room = room; // the RoomClient it came through
    this.code = code;
    this.nearby = nearby;
    this.sink = sink;
    this.newPeer = newPeer;
    this.state = null;
    this.from = neutral(from, 40);
    this.text = el('p', { className: 'state-text' });
    this.words = el('div', { className: 'words' });
    this.wordsBox = el('div', { className: 'words-box', hidden: true },
      el('span', { textContent: nearby ? `Compare these words with ${this.from}: accept only if they see the same.` : 'Verification words:' }), this.words);
    this.offerText = el('p', { className: 'offer-text' });
    this.offerList = el('ul', { className: 'offer-list' });
    this.accept = el('button', { type: 'button', className: 'accept', textContent: nearby ? 'The words match: accept' : 'Accept' });
    this.decline = el('button', { type: 'button', className: 'decline', textContent: 'Decline' });
    this.offerBox = el('div', { className: 'offer', hidden: true }, this.offerText, this.offerList, this.accept, this.decline);
    this.bar = el('progress', { max: 1, value: 0, hidden: true });
    this.cancelButton = el('button', { type: 'button', className: 'cancel', hidden: true, textContent: 'Cancel' });
    this.detail = el('div', { className: 'detail' });
    this.saves = el('ul', { className: 'saves' });
    this.card = el('section', { className: 'incoming card', dataset: { from: String(fromId) } },
      el('p', { className: 'from' }, 'From ', el('strong', { textContent: this.from })),
      this.wordsBox, this.text, this.offerBox, this.bar, this.cancelButton, this.detail, this.saves);
    this.card.setAttribute('aria-label', `Files from ${this.from}`);
    this.accept.onclick = () => this.onAccept();
    this.decline.onclick = () => {
      this.offerBox.hidden = true;
      this.peer?.incoming?.decline();
    };
    this.cancelButton.onclick = () => {
      const r = this.peer?.incoming;
      if (!r) return;
      r.cancel('cancelled by the receiver');
      // Said now: the machine stopped; its event may wait for the disk.
      if (r.machine.state === 'stopped') this.set('cancelled', 'You cancelled: cancelled by the receiver.');
    };
    this.set('connecting', 'Connecting…');
  }

  set(state, text) {
    if (TERMINAL.has(this.state)) return;
    this.state = state;
    this.card.dataset.state = state;
    this.text.textContent = text;
    if (TERMINAL.has(state)) {
      this.offerBox.hidden = true;
      this.cancelButton.hidden = true;
    }
  }

  active() {
    return !TERMINAL.has(this.state);
  }

  start() {
    this.peer = this.newPeer({
      status: (text) => { if (!TERMINAL.has(this.state)) this.detail.textContent = detailOf(text); },
      words: (words) => {
        this.words.textContent = words.join(' ');
        this.wordsBox.hidden = false;
        this.set('waiting', `Connected. Waiting for ${this.from} to send…`);
      },
      failed: (text, { peerReason }) => {
        if (peerReason === 'cancelled') this.set('cancelled', `${this.from} cancelled.`);
        else {
          this.detail.textContent = roomFailure(text);
          this.set('failed', 'Failed.');
        }
      },
      receiver: (r, event, detail) => this.onReceiver(r, event, detail),
    });
    this.peer.seat({ token: this.invite.resume_token, role: 'B', code: this.code, sid: this.invite.session });
  }

  onReceiver(r, event, detail) {
    switch (event) {
      case 'offer': {
        if (TERMINAL.has(this.state)) break; // answered: the session is over
        const { count, total, files } = detail;
        this.offerText.textContent = count === 1
          ? `${this.from} offers ${files[0].parts.join('/')} (${bytes(total)}).`
          : `${this.from} offers ${count} files, ${bytes(total)} in all.`;
        this.offerList.replaceChildren(...offerItems(files));
        this.offerBox.hidden = false;
        this.accept.disabled = false;
        this.decline.disabled = false;
        this.set('offered', 'Accept or decline.');
        break;
      }
      case 'progress': {
        // Disk work finishing after a stop reports too: the words stay.
        if (TERMINAL.has(this.state)) break;
        const p = r.machine.progress();
        this.bar.value = p.done;
        this.text.textContent = `Receiving… ${bytes(p.done)} of ${bytes(p.total)}`;
        break;
      }
      case 'file':
        if (detail.ok && r.sink.kind === 'browser') this.saves.append(saveItem(r, detail.file, r.offer.files[detail.file]));
        break;
      case 'done': {
        const n = r.offer.count;
        this.bar.value = this.bar.max;
        this.set('done', `${n === 1 ? 'File' : `All ${n} files`} received and verified${r.sink.kind === 'picker' ? `, saved in ${r.sink.label}` : ''}.`);
        this.finish();
        break;
      }
      case 'stopped': {
        const end = receiverStopped(detail);
        // Without an end here the Peer ends the session and says why.
        if (end) this.set(end.state, end.text);
        else this.detail.textContent = `The transfer stopped: ${neutral(detail.why)}.`;
        this.finish();
        break;
      }
      default:
        break;
    }
  }

  async onAccept() {
    const r = this.peer?.incoming;
    if (!r || r.machine.state !== 'offered') return;
    this.accept.disabled = true;
    this.decline.disabled = true;
    try {
      await r.accept(this.sink === 'browser' ? 'browser' : 'picker');
    } catch (e) {
      this.accept.disabled = false;
      this.decline.disabled = false;
      if (e?.name === 'AbortError') return; // the person closed the picker
      r.cancel(`the receiver's browser cannot save files: ${e.message}`);
      this.detail.textContent = `Cannot save here: ${e.message}`;
      return;
    }
    this.offerBox.hidden = true;
    this.bar.max = Math.max(1, r.offer.total);
    this.bar.hidden = false;
    this.cancelButton.hidden = false;
    this.set('receiving', `Receiving into ${r.sink.label}…`);
  }

  finish() {
    const peer = this.peer;
    setTimeout(() => peer?.close(), LINGER_MS);
  }

  leave() {
    this.peer?.signal.leave();
  }
}
