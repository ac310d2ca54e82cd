// Incremental SHA-256 hashers for whole files, run in ./hash-worker.js
// (bundled to dist/hash-worker.js); in the page itself where a worker
// cannot start. digest() resolves to the hex digest. The worker is started
// and checked at load (prepareHashing), while the server that serves its
// script is surely reachable: a worker that fails later would take the
// bytes already hashed with it.
import { sha256 } from '@noble/hashes/sha2.js';

const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');
let worker = null;
/** Where whole-file hashes run: 'worker, wasm', 'worker, js' or 'page, js'. */
export let hashEngine = 'page, js';
let nextId = 0;
const waiting = new Map();

/** Starts the worker and waits for it to answer (at most 5 s); without
 * one, hashing happens in the page. */
export async function prepareHashing() {
  if (worker !== null) return;
  let w;
  try {
    w = new Worker(new URL('./hash-worker.js', import.meta.url), { type: 'module' });
  } catch {
    worker = false;
    return;
  }
  w.onmessage = ({ data: { id, hex: digest, engine } }) => {
    waiting.get(id)?.(digest, engine);
    waiting.delete(id);
  };
  const id = nextId++;
  const ok = await Promise.race([
    new Promise((resolve) => { waiting.set(id, (_, engine) => { hashEngine = `worker, ${engine}`; resolve(true); }); w.postMessage({ id, op: 'ping' }); }),
    new Promise((resolve) => { w.onerror = () => resolve(false); }),
    new Promise((resolve) => { setTimeout(() => resolve(false), 5000); }),
  ]);
  waiting.delete(id);
  if (ok) {
    worker = w;
  } else {
    w.terminate();
    worker = false;
  }
}

const startWorker = () => worker;

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
