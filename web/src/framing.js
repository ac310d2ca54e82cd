// The file's framing on the data channel (the same format as the Rust peer,
// peer/src/transfer.rs; docs/PROTOCOL.md, "The data channel"). The channel is
// ordered and reliable. Control messages are TEXT frames holding one JSON
// object of at most 16384 bytes; file bytes are BINARY frames of at most
// 65536 bytes:
//
//   {"t":"file","name":STRING,"size":INT}   then `size` bytes,
//   {"t":"end","sha256":HEX64}               answered by
//   {"t":"received","ok":BOOL,"sha256":HEX64}
//   {"t":"cancel","reason":STRING}           either side, any time
//
// Pure (no DOM): parseControl, encodeControl and FileReceiver are tested in
// Node (test/framing.test.js).

import { sha256 } from '@noble/hashes/sha2.js';
import { neutral, sanitizeName } from './names.js';

export const MAX_CONTROL = 16384;
export const MAX_DATA = 65536;
export const MAX_NAME_BYTES = 4096;
export const MAX_REASON = 256;
export const STALL_MS = 30_000;
const HEX64 = /^[0-9a-f]{64}$/;

export class FramingError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'FramingError';
    this.kind = kind;
  }
}
const error = (kind, message) => { throw new FramingError(kind, message); };

export const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');

function utf8Length(s) {
  let n = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0);
    n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return n;
}

const isString = (v) => typeof v === 'string' && v.isWellFormed();

// serde_json, which the Rust peer parses with, refuses 128 levels of
// nesting; so does this parser, so the two agree on every frame.
const MAX_NESTING = 128;

/** The deepest nesting of arrays and objects in `text`, outside strings. */
function nesting(text) {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      depth++;
      if (depth > max) max = depth;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return max;
}

function field(obj, name, check, what) {
  if (!Object.hasOwn(obj, name) || !check(obj[name])) error('malformed', `control message ${obj.t}: ${name} must be ${what}`);
  return obj[name];
}

function digest(d) {
  if (!HEX64.test(d)) error('bad_digest', 'sha256 must be 64 lowercase hex characters');
  return d;
}

/** Parses one control (text) frame; returns a fresh object with the known
 * fields only, or throws FramingError. */
export function parseControl(text) {
  if (typeof text !== 'string') error('malformed', 'a control message must be a text frame');
  if (text.length > MAX_CONTROL || utf8Length(text) > MAX_CONTROL) error('too_large', `control message over ${MAX_CONTROL} bytes`);
  let m;
  // What the Rust parser refuses anywhere in the frame is refused here too:
  // a number no double holds (1e400) and a lone surrogate (not Unicode).
  const finite = (k, v) => {
    if (typeof v === 'number' && !Number.isFinite(v)) throw new RangeError('number out of range');
    if ((typeof v === 'string' && !v.isWellFormed()) || !k.isWellFormed()) throw new RangeError('lone surrogate');
    return v;
  };
  if (nesting(text) >= MAX_NESTING) error('malformed', 'control message nested too deeply');
  try {
    m = JSON.parse(text, finite);
  } catch {
    error('malformed', 'control message is not JSON');
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) error('malformed', 'control message is not a JSON object');
  if (typeof m.t !== 'string') error('malformed', 'control message without a string t');
  switch (m.t) {
    case 'file': {
      // In the order the Rust parser checks: name, its length, then size.
      const name = field(m, 'name', isString, 'a string');
      if (utf8Length(name) > MAX_NAME_BYTES) error('bad_name', `name over ${MAX_NAME_BYTES} bytes`);
      const size = field(m, 'size', (v) => typeof v === 'number', 'a number');
      if (!Number.isSafeInteger(size) || size < 0) error('bad_size', 'size must be a safe non-negative integer');
      // JSON -0 is 0 (as in Rust), not JavaScript's -0.
      return { t: 'file', name, size: size === 0 ? 0 : size };
    }
    case 'end':
      return { t: 'end', sha256: digest(field(m, 'sha256', isString, 'a string')) };
    case 'received': {
      const ok = field(m, 'ok', (v) => typeof v === 'boolean', 'a boolean');
      return { t: 'received', ok, sha256: digest(field(m, 'sha256', isString, 'a string')) };
    }
    case 'cancel':
      return { t: 'cancel', reason: field(m, 'reason', (v) => isString(v) && Array.from(v).length <= MAX_REASON, `a string of at most ${MAX_REASON} characters`) };
    default:
      return error('unknown_type', `unknown control message type ${neutral(m.t, 32)}`);
  }
}

/** Serialises a control message, refusing one the peer would refuse. */
export function encodeControl(obj) {
  const text = JSON.stringify(obj);
  if (utf8Length(text) > MAX_CONTROL) error('too_large', `control message over ${MAX_CONTROL} bytes`);
  return text;
}

/**
 * Takes every frame the peer sends on the channel (push(string|ArrayBuffer|
 * Uint8Array)) and returns what it meant:
 *   { t: 'file', name (sanitised), size }       a file opens
 *   { t: 'data', received, size }               bytes of it
 *   { t: 'end', ok, sha256, name, size, blob }  it is complete; ok: the
 *       digest we computed (sha256) matches the sender's; blob is always
 *       application/octet-stream
 *   { t: 'received', ok, sha256 } / { t: 'cancel', reason (neutralised) }
 * or throws FramingError. While a file is open, no frame for `stallMs` calls
 * onStall(FramingError('stalled')).
 */
export class FileReceiver {
  constructor({ stallMs = STALL_MS, onStall = () => {}, onProgress = () => {}, timers = globalThis } = {}) {
    this.stallMs = stallMs;
    this.onStall = onStall;
    this.onProgress = onProgress;
    this.timers = timers;
    this.timer = null;
    this.file = null; // { name, size, received, parts, hash }
  }

  get open() {
    return this.file !== null;
  }

  push(frame) {
    if (typeof frame === 'string') return this.control(parseControl(frame));
    // A data channel hands over a fresh ArrayBuffer per frame: kept as is.
    // A view may be reused by its owner: copied.
    return this.data(ArrayBuffer.isView(frame) ? new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength).slice() : new Uint8Array(frame));
  }

  control(m) {
    switch (m.t) {
      case 'file': {
        if (this.file) error('unexpected_control', 'a new file was announced while one was still arriving');
        this.file = { name: sanitizeName(m.name), size: m.size, received: 0, parts: [], hash: sha256.create() };
        this.arm();
        return { t: 'file', name: this.file.name, size: m.size };
      }
      case 'end': {
        const f = this.file;
        if (!f) error('unexpected_control', 'end without a file');
        if (f.received < f.size) {
          this.close();
          error('size_short', `the file ended after ${f.received} of the ${f.size} bytes announced`);
        }
        this.close();
        const sum = hex(f.hash.digest());
        const blob = new Blob(f.parts, { type: 'application/octet-stream' });
        return { t: 'end', ok: sum === m.sha256, sha256: sum, name: f.name, size: f.size, blob };
      }
      case 'cancel':
        this.close();
        return { t: 'cancel', reason: neutral(m.reason, MAX_REASON) };
      default: // received
        return m;
    }
  }

  data(u8) {
    const f = this.file;
    if (!f) error('unexpected_data', 'file bytes arrived with no file open');
    if (u8.length > MAX_DATA) {
      this.close();
      error('unexpected_data', `a binary frame of ${u8.length} bytes (at most ${MAX_DATA})`);
    }
    if (f.received + u8.length > f.size) {
      this.close();
      error('size_exceeded', `the peer sent more bytes than the ${f.size} it announced`);
    }
    f.parts.push(u8);
    f.hash.update(u8);
    f.received += u8.length;
    this.arm();
    this.onProgress(f.received, f.size);
    return { t: 'data', received: f.received, size: f.size };
  }

  arm() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = this.timers.setTimeout(() => {
      this.timer = null;
      if (!this.file) return;
      const { received, size } = this.file;
      this.close();
      this.onStall(new FramingError('stalled', `nothing arrived for ${Math.round(this.stallMs / 1000)} s (${received} of ${size} bytes)`));
    }, this.stallMs);
  }

  /** Drops the open file (if any) and its timer. */
  close() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.file = null;
  }
}
