// A room's session carries one transfer, from the member who invited to the
// one invited (docs/PROTOCOL.md, "What the web client seals"): a hostile
// member cannot put a second offer on a card the person already answered,
// nor offer files to the member who invited it. ./peer.js in Node, its
// data channel stubbed (no WebRTC here).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Peer } from '../src/peer.js';
import { offerParts } from '../src/control.js';

class IdleWS {
  static OPEN = 1;
  constructor() { this.readyState = 0; }
  send() {}
  close() {}
}

function peer(role) {
  const events = [];
  const p = new Peer({ url: 'ws://x/signal', oneShot: true, signalOptions: { WebSocket: IdleWS }, hooks: { receiver: (r, e) => events.push([r.machine.id, e]) } });
  p.role = role;
  p.sent = [];
  p.link = { control: (m) => p.sent.push(m), close() {} };
  return { p, events };
}
const offer = (p, id, path) => { for (const m of offerParts(id, [{ path, size: 5 }])) p.onControl(m); };
const stop = (p) => { if (p.incoming && !['done', 'stopped'].includes(p.incoming.machine.state)) p.incoming.cancel('test over'); };

test('an invited member who declined is not offered again in the same session', async () => {
  const { p, events } = peer('B');
  try {
    offer(p, '0123456789abcdef', 'a.bin');
    assert.deepEqual(events, [['0123456789abcdef', 'offer']]);
    p.incoming.decline();
    await new Promise((r) => setTimeout(r, 50));
    offer(p, '1123456789abcdef', 'again.bin');
    assert.deepEqual(events.filter(([, e]) => e === 'offer').map(([id]) => id), ['0123456789abcdef'], 'no second offer on the answered card');
  } finally {
    stop(p);
  }
});

test('the member who invited takes no offer from the one it invited', () => {
  const { p, events } = peer('A');
  try {
    offer(p, '2123456789abcdef', 'unasked.bin');
    assert.deepEqual(events, [], 'nothing offered to the sender of a room transfer');
  } finally {
    stop(p);
  }
});
