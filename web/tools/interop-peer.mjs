// One side of a handshake driven over stdin/stdout, one JSON message per
// line, for peer/tests/interop.rs (the Rust side is the other peer).
// Usage: node interop-peer.mjs A|B <code> <sid>
import { createInterface } from 'node:readline';
import * as hs from '../src/handshake.js';

const [role, code, sid] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const next = async () => JSON.parse((await lines.next()).value);
const say = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);
const dec = new TextDecoder();

try {
  let session;
  if (role === 'A') {
    const { state, hello } = hs.start(code, sid, hs.freshRandomness());
    say(hello);
    const { session: s, confirm } = hs.finish(state, await next());
    say(confirm);
    session = s;
  } else {
    const { state, reply } = hs.respond(code, sid, await next(), hs.freshRandomness());
    say(reply);
    session = hs.accept(state, await next());
  }
  say(await session.seal(`from js ${role}`));
  const got = dec.decode(await session.open(await next()));
  say({ t: 'done', words: session.words, got });
  process.exit(0);
} catch (e) {
  say({ t: 'error', kind: e.kind ?? 'unknown', message: e.message });
  process.exit(1);
}
