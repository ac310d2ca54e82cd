// Incremental SHA-256 hashers for whole files, run in ./hash-worker.js
// (bundled to dist/hash-worker.js); in the page itself where a worker
// cannot start. digest() resolves to the hex digest.
import { sha256 } from '@noble/hashes/sha2.js';

const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');
let worker = null;
let nextId = 0;
const waiting = new Map();

function startWorker() {
  if (worker !== null) return worker;
  try {
    worker = new Worker(new URL('./hash-worker.js', import.meta.url), { type: 'module' });
    worker.onmessage = ({ data: { id, hex: digest } }) => {
      waiting.get(id)?.(digest);
      waiting.delete(id);
    };
  } catch {
    worker = false;
  }
  return worker;
}

/** A hasher: update(bytes) in order (the bytes are copied), digest() -> Promise<hex>. */
export function createHasher() {
  const w = startWorker();
  if (!w) {
    const h = sha256.create();
    return { update: (b) => h.update(b), digest: async () => hex(h.digest()) };
  }
  const id = nextId++;
  return {
    update(bytes) {
      const copy = bytes.slice();
      w.postMessage({ id, op: 'update', bytes: copy.buffer }, [copy.buffer]);
    },
    digest() {
      return new Promise((resolve) => {
        waiting.set(id, resolve);
        w.postMessage({ id, op: 'digest' });
      });
    },
    drop() { w.postMessage({ id, op: 'drop' }); },
  };
}
