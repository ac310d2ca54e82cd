// What went wrong, in words for the user, and the reason an abort carries.
// One rule: only what the peer (or the path) sent can read as tampering; a
// failure of this browser says it is local, on both sides. Pure; tested in
// Node (test/failures.test.js).

import { HandshakeError } from './handshake.js';
import { neutral } from './names.js';

const TAMPERED = 'The codes did not match, or someone tampered with the connection. Start again with a new code.';

/** The reason our abort carries: the HandshakeError's kind when the peer's
 * message failed a check, `local` when this browser failed. */
export function abortReason(e) {
  return e instanceof HandshakeError ? e.kind : 'local';
}

/** Why we stopped, for the user of this page. */
export function explain(e) {
  if (e instanceof HandshakeError) {
    switch (e.kind) {
      case 'confirmation':
      case 'downgrade':
        return TAMPERED;
      case 'out_of_turn':
      case 'replay':
        return `A message was replayed or arrived out of turn (${e.message}): someone may be tampering with the connection. Start again with a new code.`;
      case 'tampered':
      case 'malformed':
        return `A message from your peer was altered or malformed (${e.message}): someone may be tampering with the connection. Start again with a new code.`;
      default:
        return `${e.message}. Start again with a new code.`;
    }
  }
  return `This browser could not run the secure session (${e?.message || String(e)}). This is a problem on this device, not with the code: reload the page and start again with a new code.`;
}

/** Why the peer stopped, from the reason of its abort. Before the session
 * the abort is unsealed and anyone on the path could have sent it: the
 * reason only picks the words, and the session ends either way. */
export function peerStopped(reason, { sealed }) {
  switch (reason) {
    case 'confirmation':
    case 'downgrade':
      return TAMPERED;
    case 'out_of_turn':
    case 'replay':
    case 'tampered':
    case 'malformed':
      return `Your peer refused a message as replayed, altered or malformed (${reason}): someone may be tampering with the connection. Start again with a new code.`;
    case 'stalled':
      return 'Your peer stopped the session: nothing arrived from you for too long. Start again with a new code.';
    case 'cancelled':
      // A room's session ended by its person before any file moved.
      return 'Your peer cancelled before any file was sent.';
    case 'unreachable':
      return 'Your peer could not reach you again and stopped the session. Start again with a new code.';
    case 'size_exceeded':
    case 'size_short':
    case 'bad_frame':
    case 'bad_size':
    case 'bad_name':
    case 'bad_digest':
    case 'unexpected':
    case 'unexpected_data':
    case 'unknown_type':
      return `Your peer stopped the session: what it received broke the transfer protocol (${reason}). Start again with a new code.`;
    case 'local':
      return `Your peer's browser could not ${sealed ? 'carry on with' : 'set up'} the secure session: a problem on its side, not with the code. Start again with a new code; your peer may need to reload the page or open it over HTTPS.`;
    default:
      return `Your peer stopped the session (${neutral(String(reason ?? 'no reason given'), 64)}). Start again with a new code.`;
  }
}
