// Whole-file SHA-256 off the page's thread: WebCrypto has no incremental
// digest, and hashing a large file in pure JavaScript on the main thread
// would hold up the transfer. Messages: { id, op: 'update', bytes } (in
// order), { id, op: 'digest' } answered by { id, hex }, { id, op: 'drop' }.
import { sha256 } from '@noble/hashes/sha2.js';

const hashers = new Map();
const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');

self.onmessage = ({ data: { id, op, bytes } }) => {
  if (op === 'update') {
    let h = hashers.get(id);
    if (!h) hashers.set(id, (h = sha256.create()));
    h.update(new Uint8Array(bytes));
  } else if (op === 'digest') {
    const h = hashers.get(id) ?? sha256.create();
    hashers.delete(id);
    self.postMessage({ id, hex: hex(h.digest()) });
  } else if (op === 'drop') {
    hashers.delete(id);
  } else if (op === 'ping') {
    self.postMessage({ id, hex: 'pong' });
  }
};
