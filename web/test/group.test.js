// What a room transfer's cards say when a recipient's transfer stops, and
// a group's summary (web/src/group.js), from the transfer machines' own
// stop reasons.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TERMINAL, receiverStopped, senderStopped, summary } from '../src/group.js';
import { Outgoing } from '../src/outgoing.js';

test('sender side: a decline, a cancel by the recipient, ours, and a stall each read as what they are', () => {
  // The reasons as the sender's machine gives them.
  const out = () => {
    const m = new Outgoing('0123456789abcdef', [{ path: 'a.bin', size: 10 }]);
    m.offer();
    return m;
  };
  const declined = out().onMessage({ kind: 'decline', id: '0123456789abcdef' }).find((a) => a.t === 'stopped');
  assert.deepEqual(senderStopped(declined, 'Bob'), { state: 'declined', text: 'Bob declined.' });
  const cancelled = out().onMessage({ kind: 'cancel', id: '0123456789abcdef', reason: 'cancelled by the receiver' }).find((a) => a.t === 'stopped');
  assert.deepEqual(senderStopped(cancelled, 'Dee'), { state: 'cancelled', text: 'Dee cancelled: cancelled by the receiver.' });
  const ours = out().cancel('cancelled by the sender').find((a) => a.t === 'stopped');
  assert.deepEqual(senderStopped(ours, 'Cy'), { state: 'cancelled', text: 'You cancelled.' });
  assert.equal(senderStopped({ why: 'stalled: the receiver said nothing for 30 s', by: 'us' }, 'Cy').state, 'failed');
  // A peer's reason is shown neutralised.
  const hostile = senderStopped({ why: 'your peer cancelled: \u202Eevil\u0007', by: 'peer' }, 'Eve');
  assert.doesNotMatch(hostile.text, /[\u202E\u0007]/);
});

test('receiver side: declined, cancelled by either side; a protocol break is left to the session', () => {
  assert.deepEqual(receiverStopped({ why: 'you declined', by: 'us' }), { state: 'declined', text: 'You declined.' });
  assert.deepEqual(receiverStopped({ why: 'the sender cancelled: cancelled by the sender', by: 'peer' }), { state: 'cancelled', text: 'The sender cancelled: cancelled by the sender.' });
  assert.deepEqual(receiverStopped({ why: 'cancelled by the receiver', by: 'us' }), { state: 'cancelled', text: 'You cancelled: cancelled by the receiver.' });
  assert.equal(receiverStopped({ why: 'bad_frame: x', by: 'us', error: { kind: 'bad_frame' } }), null);
});

test('a group is summed up only once every recipient is done with', () => {
  assert.equal(summary(['done', 'sending', 'declined']), null);
  assert.equal(summary([]), null);
  assert.equal(summary(['done', 'declined', 'cancelled']), 'Delivered to 1 of 3 · 1 declined · 1 cancelled');
  assert.equal(summary(['done', 'done']), 'Delivered to 2 of 2');
  assert.equal(summary(['failed', 'cancelled', 'cancelled']), 'Delivered to 0 of 3 · 2 cancelled · 1 failed');
  for (const s of ['done', 'declined', 'cancelled', 'failed']) assert.ok(TERMINAL.has(s));
  for (const s of ['inviting', 'connecting', 'verify', 'offered', 'sending']) assert.ok(!TERMINAL.has(s));
});

test('invitations: a page takes at most four waiting for the person, and one at a time from each member', async () => {
  const { mayTakeInvite, MAX_UNANSWERED } = await import('../src/group.js');
  assert.equal(MAX_UNANSWERED, 4);
  assert.equal(mayTakeInvite([], 2), true);
  // One unanswered from member 2: another from it is not taken, one from 3 is.
  assert.equal(mayTakeInvite([{ fromId: 2, state: 'offered' }], 2), false);
  assert.equal(mayTakeInvite([{ fromId: 2, state: 'offered' }], 3), true);
  // Answered or finished ones do not count.
  assert.equal(mayTakeInvite([{ fromId: 2, state: 'receiving' }, { fromId: 2, state: 'done' }], 2), true);
  const four = [1, 3, 4, 5].map((fromId) => ({ fromId, state: 'waiting' }));
  assert.equal(mayTakeInvite(four, 6), false);
  assert.equal(mayTakeInvite(four.slice(1), 6), true);
});

test('invitations: member ids are a room\'s own, so one waiting from nearby member 2 does not block member 2 of a named room', async () => {
  const { mayTakeInvite } = await import('../src/group.js');
  const named = {};
  const nearby = {};
  const waiting = [{ fromId: 2, room: nearby, state: 'offered' }];
  assert.equal(mayTakeInvite(waiting, 2, named), true, 'another room\'s member 2 is someone else');
  assert.equal(mayTakeInvite(waiting, 2, nearby), false);
});

test('a room session\'s failure does not send the person off to make a new code (the room\'s stays good)', async () => {
  const { roomFailure } = await import('../src/group.js');
  const { explain, peerStopped } = await import('../src/failures.js');
  const { HandshakeError } = await import('../src/handshake.js');
  const wrong = roomFailure(explain(new HandshakeError('confirmation', 'x')));
  assert.match(wrong, /codes did not match/);
  assert.match(wrong, /room's code/);
  assert.doesNotMatch(wrong, /new code/);
  assert.doesNotMatch(roomFailure(peerStopped('confirmation', { sealed: false })), /new code/);
  assert.doesNotMatch(roomFailure(peerStopped('stalled', { sealed: true })), /new code/);
  assert.doesNotMatch(roomFailure('Your peer closed the page or left: the transfer cannot continue. Start again with a new code.'), /new code/);
  assert.equal(roomFailure('Your peer left.'), 'Your peer left.');
});
