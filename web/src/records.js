// The data channel's sealed records (docs/PROTOCOL.md, "Records"). DTLS
// alone protects the channel with classical keys; a transfer's messages and
// bytes are sealed again under keys from `dk`, 32 random bytes the creator
// sends in its sealed SDP offer, so what the relay forwards stays secret
// from a future quantum computer too, as the session itself does.
//
//   record = type (1 byte: 1 control, 2 data) || AES-256-GCM(plaintext)
//   key    = HKDF-SHA-256(ikm = dk, salt = empty, info = "tallow dc v2 A->B" or "... B->A")
//   nonce  = 4 zero bytes || u64 big-endian counter (from 0, per direction)
//   aad    = the type byte
//
// The channel is ordered and reliable, so the counter must be exactly the
// next one: a record that does not open, or comes out of turn, is an
// attack, and the channel is closed. A new peer connection brings a new dk.

export const CONTROL = 1;
export const DATA = 2;
const enc = new TextEncoder();

export class RecordError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RecordError';
    this.kind = 'tampered';
  }
}

function nonce(n) {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, BigInt(n));
  return iv;
}

async function directionKey(dk, info, usage) {
  const base = await crypto.subtle.importKey('raw', dk, 'HKDF', false, ['deriveKey']);
  return crypto.subtle.deriveKey(
    { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: enc.encode(info) },
    base,
    { name: 'AES-GCM', length: 256 },
    false,
    [usage],
  );
}

/** A fresh dk. */
export const freshDataKey = () => crypto.getRandomValues(new Uint8Array(32));

/**
 * Seals and opens records for one peer connection. `role`: 'A' (created
 * the session) or 'B'. seal() hands records to `send` in call order even
 * though WebCrypto may finish them out of order; open() resolves records
 * in arrival order.
 */
export class Records {
  constructor(dk, role) {
    if (!(dk instanceof Uint8Array) || dk.length !== 32) throw new Error('dk must be 32 bytes');
    const [mine, theirs] = role === 'A' ? ['A->B', 'B->A'] : ['B->A', 'A->B'];
    this.sendKey = directionKey(dk, `tallow dc v2 ${mine}`, 'encrypt');
    this.recvKey = directionKey(dk, `tallow dc v2 ${theirs}`, 'decrypt');
    this.sendN = 0;
    this.recvN = 0;
    this.sending = Promise.resolve();
    this.opening = Promise.resolve();
  }

  /** Seals `plain` (Uint8Array) as a record of `type`; resolves once
   * `send` was called with it, in the order of the seal() calls. */
  seal(type, plain, send) {
    const n = this.sendN++;
    const sealed = this.sendKey.then((key) => crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce(n), additionalData: Uint8Array.of(type) }, key, plain));
    const next = this.sending.then(async () => {
      const c = new Uint8Array(await sealed);
      const out = new Uint8Array(1 + c.length);
      out[0] = type;
      out.set(c, 1);
      send(out);
    });
    this.sending = next.catch(() => {});
    return next;
  }

  /** Opens a record; resolves to { type, data } in arrival order; rejects
   * with RecordError if it does not open under the next counter. */
  open(buf) {
    const u8 = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
    const n = this.recvN++;
    const type = u8[0];
    const opened = (u8.length < 17 || (type !== CONTROL && type !== DATA))
      ? Promise.reject(new RecordError(`a record of ${u8.length} bytes and type ${type}`))
      : this.recvKey.then((key) => crypto.subtle.decrypt({ name: 'AES-GCM', iv: nonce(n), additionalData: Uint8Array.of(type) }, key, u8.subarray(1)))
        .then((p) => ({ type, data: new Uint8Array(p) }), () => { throw new RecordError(`record ${n} did not open: altered, replayed or out of turn`); });
    const next = this.opening.then(() => opened);
    this.opening = next.catch(() => {});
    return next;
  }
}
