// Whole-file SHA-256 off the page's thread: WebCrypto has no incremental
// digest. hash-wasm's WebAssembly SHA-256 runs several times faster than
// JavaScript (@noble/hashes, the fallback where WebAssembly may not run),
// and each side hashes every byte it moves, so it sets much of the speed
// on a slow machine (bench/results/web.md). Messages: { id, op: 'update',
// bytes } (in order), { id, op: 'digest' } answered by { id, hex },
// { id, op: 'drop' }, { id, op: 'ping' } answered by { id, hex: 'pong', engine: 'wasm' | 'js' }.
import { sha256 } from '@noble/hashes/sha2.js';
import { createSHA256 } from 'hash-wasm';

const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');
const noble = () => {
  const h = sha256.create();
  return { update: (b) => h.update(b), digest: () => hex(h.digest()) };
};
// Decided once: a page whose CSP forbids WebAssembly hashes in JavaScript.
const wasm = createSHA256().then(() => true, () => false);
const make = async () => ((await wasm) ? createSHA256() : noble());

// Per transfer file, a chain of steps, so updates stay in order while the
// hasher is still being made.
const hashers = new Map();

self.onmessage = ({ data: { id, op, bytes } }) => {
  if (op === 'update') {
    const h = (hashers.get(id) ?? make()).then((x) => {
      x.update(new Uint8Array(bytes));
      return x;
    });
    hashers.set(id, h);
  } else if (op === 'digest') {
    const h = hashers.get(id) ?? make();
    hashers.delete(id);
    h.then((x) => self.postMessage({ id, hex: x.digest('hex') }));
  } else if (op === 'drop') {
    hashers.delete(id);
  } else if (op === 'ping') {
    wasm.then((ok) => self.postMessage({ id, hex: 'pong', engine: ok ? 'wasm' : 'js' }));
  }
};
