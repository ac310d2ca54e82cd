// The peer handshake of docs/PROTOCOL.md ("The peer session"), the same
// protocol as the Rust crate `tallow-peer`; both are checked against
// peer/vectors/handshake-v1.json. Sans-IO: functions take the other side's
// message and the randomness to use and return the next message.

import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { x25519, ristretto255, ristretto255_hasher } from '@noble/curves/ed25519.js';
import { bytesToNumberLE } from '@noble/curves/utils.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';

export const SUITE = 'tallow-v1/x25519+mlkem768/cpace-ristretto255/hkdf-sha256/aes256gcm';
export const EK_LEN = 1184;
export const CT_LEN = 1088;
const enc = new TextEncoder();
const SEAL_AAD = enc.encode('tallow-v1 sealed');
const { Point } = ristretto255;

export class HandshakeError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}
const fail = (kind, message) => { throw new HandshakeError(kind, message); };
const malformed = (what) => fail('malformed', `malformed handshake message: ${what}`);

// Base64 in slices: spreading a whole buffer into fromCharCode overflows the
// stack above ~100 KB.
function b64enc(u8) {
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
}

const b64 = {
  enc: b64enc,
  dec: (s, what, len) => {
    let u8;
    try {
      u8 = Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
    } catch {
      malformed(what);
    }
    if (len !== undefined && u8.length !== len) malformed(what);
    return u8;
  },
};

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
}

function lp(x) {
  const b = typeof x === 'string' ? enc.encode(x) : x;
  return concat(Uint8Array.of(b.length >> 8, b.length & 0xff), b);
}

function ctEqual(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

function normalize(code) {
  const c = String(code).trim().toLowerCase();
  if (!c) fail('empty_code', 'the share code is empty');
  return c;
}

function generator(code, sid) {
  return ristretto255_hasher.deriveToCurve(sha512(concat(lp('tallow-v1 cpace'), lp(code), lp(sid))));
}

function scalar(bytes64) {
  const s = Point.Fn.create(bytesToNumberLE(bytes64));
  if (s === 0n) fail('malformed', 'zero scalar');
  return s;
}

function point(bytes) {
  let p;
  try {
    p = Point.fromBytes(bytes);
  } catch {
    malformed('CPace share is not a group element');
  }
  if (p.is0()) malformed('CPace share is the identity');
  return p;
}

function x25519Shared(secret, pub) {
  const s = x25519.getSharedSecret(secret, pub);
  if (s.every((b) => b === 0)) malformed('X25519 key of low order');
  return s;
}

/** FIPS 203 §7.2 input check of an ML-KEM-768 encapsulation key: length and
 * every 12-bit coefficient below q = 3329. The server runs it on `hello`. */
export function checkEncapsulationKey(ek) {
  if (ek.length !== EK_LEN) malformed('ML-KEM-768 encapsulation key length');
  for (let i = 0; i < 1152; i += 3) {
    const c0 = ek[i] | ((ek[i + 1] & 0x0f) << 8);
    const c1 = (ek[i + 1] >> 4) | (ek[i + 2] << 4);
    if (c0 >= 3329 || c1 >= 3329) malformed('ML-KEM-768 encapsulation key fails the FIPS 203 check');
  }
}

function transcript(sid, ek, xa, ya, ct, xb, yb) {
  return sha256(concat(lp('tallow-v1 transcript'), lp(SUITE), lp(sid), lp(ek), lp(xa), lp(ya), lp(ct), lp(xb), lp(yb)));
}

function derive(th, ssKem, ssX, k) {
  const prk = concat(ssKem, ssX, k);
  const out = (label, n) => hkdf(sha256, prk, th, enc.encode(`tallow-v1 ${label}`), n);
  return {
    confirmA: out('confirm A', 32),
    confirmB: out('confirm B', 32),
    aToB: out('key A->B', 32),
    bToA: out('key B->A', 32),
    words: out('words', 4),
  };
}

const ONSET = ['b', 'd', 'f', 'g', 'h', 'j', 'k', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'z'];
const VOWEL = ['a', 'e', 'i', 'o'];
const CODA = ['l', 'n', 'r', 's'];
export const word = (i) => ONSET[i >> 4] + VOWEL[(i >> 2) & 3] + CODA[i & 3];

/** Fresh randomness for one side. */
export function freshRandomness() {
  const r = (n) => crypto.getRandomValues(new Uint8Array(n));
  return { mlkemSeed: r(64), mlkemM: r(32), x25519: r(32), cpace: r(64) };
}

/** A: returns { state, hello }. */
export function start(code, sid, rnd) {
  const g = generator(normalize(code), sid);
  const { publicKey: ek, secretKey: dk } = ml_kem768.keygen(rnd.mlkemSeed);
  const xa = x25519.getPublicKey(rnd.x25519);
  const a = scalar(rnd.cpace);
  const ya = g.multiply(a).toBytes();
  return {
    state: { sid, dk, ek, xSecret: rnd.x25519, xa, a, ya },
    hello: { t: 'hello', suite: SUITE, ek: b64.enc(ek), x: b64.enc(xa), y: b64.enc(ya) },
  };
}

/** A: takes B's reply; returns { session, confirm }. */
export function finish(state, reply) {
  if (reply?.t !== 'reply') malformed('expected reply');
  if (reply.suite !== SUITE) fail('downgrade', `the peer offered suite ${reply.suite}: refusing a downgrade`);
  const ct = b64.dec(reply.ct, 'ML-KEM ciphertext', CT_LEN);
  const xb = b64.dec(reply.x, 'X25519 key', 32);
  const yb = b64.dec(reply.y, 'CPace share', 32);
  const mb = b64.dec(reply.mac, 'confirmation', 32);
  const k = point(yb).multiply(state.a);
  const ssKem = ml_kem768.decapsulate(ct, state.dk);
  const ssX = x25519Shared(state.xSecret, xb);
  const th = transcript(state.sid, state.ek, state.xa, state.ya, ct, xb, yb);
  const keys = derive(th, ssKem, ssX, k.toBytes());
  if (!ctEqual(hmac(sha256, keys.confirmB, th), mb)) fail('confirmation', CONFIRMATION_FAILED);
  return {
    session: new Session(keys.aToB, keys.bToA, keys.words),
    confirm: { t: 'confirm', mac: b64.enc(hmac(sha256, keys.confirmA, th)) },
  };
}

const CONFIRMATION_FAILED = 'key confirmation failed: the other side used a different code, or a message was altered';

/** B: takes A's hello; returns { state, reply }. */
export function respond(code, sid, hello, rnd) {
  if (hello?.t !== 'hello') malformed('expected hello');
  if (hello.suite !== SUITE) fail('downgrade', `the peer offered suite ${hello.suite}: refusing a downgrade`);
  const g = generator(normalize(code), sid);
  const ek = b64.dec(hello.ek, 'ML-KEM encapsulation key');
  checkEncapsulationKey(ek);
  const xa = b64.dec(hello.x, 'X25519 key', 32);
  const ya = b64.dec(hello.y, 'CPace share', 32);
  const b = scalar(rnd.cpace);
  const yb = g.multiply(b).toBytes();
  const k = point(ya).multiply(b);
  const { cipherText: ct, sharedSecret: ssKem } = ml_kem768.encapsulate(ek, rnd.mlkemM);
  const xb = x25519.getPublicKey(rnd.x25519);
  const ssX = x25519Shared(rnd.x25519, xa);
  const th = transcript(sid, ek, xa, ya, ct, xb, yb);
  const keys = derive(th, ssKem, ssX, k.toBytes());
  return {
    state: { th, keys },
    reply: { t: 'reply', suite: SUITE, ct: b64.enc(ct), x: b64.enc(xb), y: b64.enc(yb), mac: b64.enc(hmac(sha256, keys.confirmB, th)) },
  };
}

/** B: takes A's confirm; returns the session. */
export function accept(state, confirm) {
  if (confirm?.t !== 'confirm') malformed('expected confirm');
  const ma = b64.dec(confirm.mac, 'confirmation', 32);
  if (!ctEqual(hmac(sha256, state.keys.confirmA, state.th), ma)) fail('confirmation', CONFIRMATION_FAILED);
  return new Session(state.keys.bToA, state.keys.aToB, state.keys.words);
}

function nonce(n) {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, BigInt(n));
  return iv;
}

/** An established session: seal and open in order, one key per direction. */
export class Session {
  constructor(sendKey, recvKey, words) {
    this.sendKey = crypto.subtle.importKey('raw', sendKey, 'AES-GCM', false, ['encrypt']);
    this.recvKey = crypto.subtle.importKey('raw', recvKey, 'AES-GCM', false, ['decrypt']);
    this.sendN = 0;
    this.recvN = 0;
    this.words = Array.from(words, word);
  }

  async seal(plaintext) {
    const n = this.sendN++;
    const data = typeof plaintext === 'string' ? enc.encode(plaintext) : plaintext;
    const c = await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce(n), additionalData: SEAL_AAD }, await this.sendKey, data);
    return { t: 'sealed', n, c: b64.enc(new Uint8Array(c)) };
  }

  async open(msg) {
    if (msg?.t !== 'sealed') malformed('expected sealed');
    if (msg.n !== this.recvN) fail('replay', `sealed message ${msg.n} arrived where ${this.recvN} was due: replayed or reordered`);
    // Outside the try: a key this browser failed to import is a local
    // failure, not tampering.
    const key = await this.recvKey;
    let plain;
    try {
      const c = b64.dec(msg.c, 'sealed');
      plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: nonce(msg.n), additionalData: SEAL_AAD }, key, c);
    } catch {
      fail('tampered', 'a sealed message did not open: it was altered or is not for this session');
    }
    this.recvN++;
    return new Uint8Array(plain);
  }
}
