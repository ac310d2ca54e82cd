// The hashing worker (src/hash-worker.js) in Node, with `self` played by
// the test: its WebAssembly SHA-256, and the JavaScript fallback a page
// gets where its CSP refuses WebAssembly (an older NGINX config).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';

async function worker({ wasm }) {
  const saved = globalThis.WebAssembly;
  const replies = [];
  const waiters = [];
  globalThis.self = { postMessage: (m) => { replies.push(m); waiters.shift()?.(); } };
  if (!wasm) globalThis.WebAssembly = undefined;
  try {
    await import(`../src/hash-worker.js?${wasm ? 'wasm' : 'js'}`);
  } finally {
    globalThis.WebAssembly = saved;
  }
  const w = globalThis.self;
  const ask = (m) => new Promise((res) => { waiters.push(() => res(replies.at(-1))); w.onmessage({ data: m }); });
  return { w, ask };
}

for (const wasm of [true, false]) {
  test(`the whole-file digest in order, interleaved between files (${wasm ? 'WebAssembly' : 'JavaScript fallback'})`, async () => {
    const { w, ask } = await worker({ wasm });
    assert.deepEqual(await ask({ id: 0, op: 'ping' }), { id: 0, hex: 'pong', engine: wasm ? 'wasm' : 'js' });
    const a = [randomBytes(1000), randomBytes(70_000), randomBytes(1 << 20)];
    const b = [randomBytes(5), randomBytes(3)];
    for (let i = 0; i < 3; i++) {
      w.onmessage({ data: { id: 1, op: 'update', bytes: Uint8Array.from(a[i]).buffer } });
      if (b[i]) w.onmessage({ data: { id: 2, op: 'update', bytes: Uint8Array.from(b[i]).buffer } });
    }
    const sha = (parts) => createHash('sha256').update(Buffer.concat(parts)).digest('hex');
    assert.deepEqual(await ask({ id: 1, op: 'digest' }), { id: 1, hex: sha(a) });
    assert.deepEqual(await ask({ id: 2, op: 'digest' }), { id: 2, hex: sha(b) });
    assert.deepEqual(await ask({ id: 3, op: 'digest' }), { id: 3, hex: sha([]) }, 'an empty file');
  });
}
