// What a room transfer's cards say: the state a recipient's row (sender
// side) or an invitation's card (receiver side) takes when its transfer
// stops, and the summary of a group transfer once every recipient is done
// with. A row's end is final: later news (a path closing, disk work
// finishing) never turns a decline into a failure. Pure; tested in Node
// (test/group.test.js).

import { neutral } from './names.js';

/** States a row or card never leaves. */
export const TERMINAL = new Set(['done', 'declined', 'cancelled', 'failed']);

const capital = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

/** Sender side: recipient `name`'s transfer stopped (a Sender 'stopped'
 * event's detail: {why, by}). */
export function senderStopped({ why, by }, name) {
  if (by === 'peer' && why.startsWith('your peer declined')) return { state: 'declined', text: `${name} declined.` };
  if (by === 'peer') return { state: 'cancelled', text: `${name} cancelled: ${neutral(why.replace(/^your peer cancelled: /, ''), 120)}.` };
  if (why.startsWith('stalled: ')) return { state: 'failed', text: `Stopped: ${why.slice(9)}.` };
  return { state: 'cancelled', text: 'You cancelled.' };
}

/** Receiver side: the transfer from `from` stopped (a Receiver 'stopped'
 * event's detail: {why, by, error}); null when the session itself fails
 * (a protocol break: the Peer says why). */
export function receiverStopped({ why, by, error }) {
  if (error) return null;
  if (why === 'you declined') return { state: 'declined', text: 'You declined.' };
  if (by === 'peer') return { state: 'cancelled', text: `${capital(neutral(why))}.` };
  return { state: 'cancelled', text: `You cancelled: ${neutral(why)}.` };
}

/** One line for a group transfer whose rows all ended, e.g.
 * "Delivered to 1 of 3 · 1 declined · 1 cancelled"; null while any runs. */
export function summary(states) {
  if (states.length === 0 || states.some((s) => !TERMINAL.has(s))) return null;
  const n = (s) => states.filter((x) => x === s).length;
  const parts = [`Delivered to ${n('done')} of ${states.length}`];
  for (const s of ['declined', 'cancelled', 'failed']) if (n(s)) parts.push(`${n(s)} ${s}`);
  return parts.join(' · ');
}

/** Invitations waiting for the person (not yet accepted, declined or
 * ended) a page takes at once; a member has at most one of them. Every
 * invitation opens a connection and a handshake, so a hostile member must
 * not be able to make a page open them without bound; what is not taken
 * ends on the sender's side when the server's grace for it runs out. */
export const MAX_UNANSWERED = 4;
const UNANSWERED = new Set(['connecting', 'waiting', 'offered']);

/** Whether to take an invitation from member `from` of `room` (each room
 * numbers its own members), given the page's incoming sends (each
 * {fromId, room, state}). */
export function mayTakeInvite(incoming, from, room) {
  const open = incoming.filter((r) => UNANSWERED.has(r.state));
  return open.length < MAX_UNANSWERED && !open.some((r) => r.fromId === from && r.room === room);
}

/** A room session's failure (a Peer's text) as a row or card says it: the
 * room's code stays good, so no advice to make a new one, and a key
 * confirmation that failed says what it means in a room. */
export function roomFailure(text) {
  if (/^The codes did not match/.test(text)) {
    return 'The codes did not match: the other side does not know this room\'s code, or is not the member shown, or someone tampered with the session. No file went through it.';
  }
  return text.replace(/ Start again with a new code\.$/, '').replace(/ Start again with a new code; your peer/, ' Your peer');
}
