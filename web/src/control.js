// The transfer's messages (docs/PROTOCOL.md, "Transfers"), sealed in
// control records (./records.js), and the header of its data records. The peer authenticated what arrives here, but
// a peer is still a stranger: every field is checked before use, and a bad
// one is a ControlError whose kind the receiver reports in its `cancel`.
// Pure; tested in test/control.test.js.

export const BLOCK = 1 << 20; // bytes per hashed block
export const MAX_PAYLOAD = 64 * 1024; // bytes of file per data frame
export const HEADER = 12; // file index (4), offset (8), inside a sealed data record
export const MAX_FILES = 100_000;
export const MAX_PARTS = 4096;
export const MAX_PATH_BYTES = 4096;
export const MAX_OFFER_PATH_BYTES = 16 * 1024 * 1024; // all of an offer's paths, UTF-8
export const MAX_LIST = 256; // digests per `hashes`, blocks per `want`
export const MAX_RANGES = 64; // per file in `resume`
export const MAX_REASON = 256;
export const PART_BYTES = 32 * 1024; // the sender keeps each `files` part under this
export const WINDOW = 16 * 1024 * 1024; // file bytes a sender may be ahead of the receiver's ack
export const ACK_EVERY = 4 * 1024 * 1024; // the receiver acks each time this many more are finished
const MAX_SIZE = Number.MAX_SAFE_INTEGER;
const HEX64 = /^[0-9a-f]{64}$/;
const ID = /^[0-9a-f]{16}$/;

export class ControlError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'ControlError';
    this.kind = kind;
  }
}
const bad = (kind, message) => { throw new ControlError(kind, message); };

export const blocksOf = (size) => Math.ceil(size / BLOCK);

const utf8Length = (s) => new TextEncoder().encode(s).length;
const isInt = (v, max = MAX_SIZE) => Number.isInteger(v) && v >= 0 && v <= max;

function int(m, field, max = MAX_SIZE) {
  if (!isInt(m[field], max)) bad('malformed', `${m.kind}.${field} must be an integer in 0..=${max}`);
  return m[field];
}

function list(m, field, max) {
  const v = m[field];
  if (!Array.isArray(v) || v.length === 0 || v.length > max) bad('malformed', `${m.kind}.${field} must be a list of 1..=${max}`);
  return v;
}

/**
 * Checks a sealed transfer message (already JSON). `kind` must be one of
 * the transfer kinds; returns the message with only the known fields.
 */
export function parseTransfer(m) {
  if (m === null || typeof m !== 'object' || Array.isArray(m)) bad('malformed', 'not an object');
  if (typeof m.id !== 'string' || !ID.test(m.id)) bad('malformed', `${m.kind}.id must be 16 lowercase hex digits`);
  const { kind, id } = m;
  switch (kind) {
    case 'files': {
      const parts = int(m, 'parts', MAX_PARTS);
      if (parts < 1) bad('malformed', 'files.parts must be at least 1');
      const part = int(m, 'part', parts - 1);
      const count = int(m, 'count', MAX_FILES);
      if (count < 1) bad('malformed', 'an offer holds at least one file');
      const total = int(m, 'total');
      const files = list(m, 'files', count).map((f, i) => {
        if (f === null || typeof f !== 'object' || typeof f.path !== 'string' || !f.path.isWellFormed()) bad('malformed', `files[${i}].path must be a string`);
        if (utf8Length(f.path) > MAX_PATH_BYTES) bad('bad_name', `files[${i}].path is over ${MAX_PATH_BYTES} bytes`);
        if (!isInt(f.size)) bad('bad_size', `files[${i}].size must be an integer in 0..=2^53-1`);
        return { path: f.path, size: f.size };
      });
      return { kind, id, part, parts, count, total, files };
    }
    case 'accept':
    case 'decline':
      return { kind, id };
    case 'cancel': {
      const reason = typeof m.reason === 'string' ? m.reason : '';
      return { kind, id, reason: Array.from(reason).slice(0, MAX_REASON).join('') };
    }
    case 'hashes': {
      const digests = list(m, 'sha256', MAX_LIST);
      for (const d of digests) if (typeof d !== 'string' || !HEX64.test(d)) bad('bad_digest', 'hashes.sha256 holds a digest that is not 64 lowercase hex digits');
      return { kind, id, file: int(m, 'file', MAX_FILES - 1), first: int(m, 'first'), sha256: digests };
    }
    case 'sent':
      if (typeof m.sha256 !== 'string' || !HEX64.test(m.sha256)) bad('bad_digest', 'sent.sha256 must be 64 lowercase hex digits');
      return { kind, id, file: int(m, 'file', MAX_FILES - 1), sha256: m.sha256 };
    case 'want': {
      const blocks = list(m, 'blocks', MAX_LIST);
      for (const b of blocks) if (!isInt(b)) bad('malformed', 'want.blocks must hold block numbers');
      return { kind, id, file: int(m, 'file', MAX_FILES - 1), blocks };
    }
    case 'resume': {
      if (!Array.isArray(m.files) || m.files.length > MAX_RANGES) bad('malformed', `resume.files must be a list of at most ${MAX_RANGES}`);
      const files = m.files.map((f) => {
        if (f === null || typeof f !== 'object') bad('malformed', 'resume.files holds a non-object');
        const file = int(f, 'file', MAX_FILES - 1);
        if (!Array.isArray(f.have) || f.have.length > MAX_RANGES) bad('malformed', `resume.have must be a list of at most ${MAX_RANGES} ranges`);
        let end = -1;
        const have = f.have.map((r) => {
          if (!Array.isArray(r) || r.length !== 2 || !isInt(r[0]) || !isInt(r[1]) || r[0] >= r[1] || r[0] <= end) bad('malformed', 'resume.have ranges must be [start, end) in order, apart');
          end = r[1];
          return [r[0], r[1]];
        });
        return { file, have };
      });
      return { kind, id, files };
    }
    case 'got':
      if (typeof m.ok !== 'boolean') bad('malformed', 'got.ok must be a boolean');
      if (typeof m.sha256 !== 'string' || !HEX64.test(m.sha256)) bad('bad_digest', 'got.sha256 must be 64 lowercase hex digits');
      return { kind, id, file: int(m, 'file', MAX_FILES - 1), ok: m.ok, sha256: m.sha256 };
    case 'ack':
      return { kind, id, bytes: int(m, 'bytes') };
    default:
      return bad('unknown_type', `unknown transfer message ${String(kind).slice(0, 32)}`);
  }
}

/** The kinds parseTransfer takes. */
export const TRANSFER_KINDS = new Set(['files', 'accept', 'decline', 'cancel', 'hashes', 'sent', 'want', 'resume', 'got', 'ack']);

/** An offer's `files` messages, each part's JSON under PART_BYTES. */
export function offerParts(id, files) {
  const total = files.reduce((n, f) => n + f.size, 0);
  if (!Number.isSafeInteger(total)) bad('bad_size', 'the files add up to more than 2^53-1 bytes');
  if (files.length === 0 || files.length > MAX_FILES) bad('malformed', `an offer holds 1..=${MAX_FILES} files`);
  const names = files.reduce((n, f) => n + utf8Length(f.path), 0);
  if (names > MAX_OFFER_PATH_BYTES) bad('bad_name', `the files' names and folders add up to ${names} bytes, over the 16 MiB one offer may hold: offer fewer files at a time`);
  const pages = [];
  let page = [];
  let bytes = 0;
  for (const f of files) {
    const entry = { path: f.path, size: f.size };
    const n = utf8Length(JSON.stringify(entry)) + 1;
    if (page.length > 0 && bytes + n > PART_BYTES - 256) {
      pages.push(page);
      page = [];
      bytes = 0;
    }
    page.push(entry);
    bytes += n;
  }
  pages.push(page);
  if (pages.length > MAX_PARTS) bad('malformed', 'the offer does not fit in its parts');
  return pages.map((p, part) => ({ kind: 'files', id, part, parts: pages.length, count: files.length, total, files: p }));
}

/** A data frame: header and payload in one buffer. */
export function encodeFrame(file, offset, payload) {
  const out = new Uint8Array(HEADER + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, file);
  v.setBigUint64(4, BigInt(offset));
  out.set(payload, HEADER);
  return out;
}

/** Splits a data frame; checks only its shape (the receiver checks it
 * against the offer). */
export function decodeFrame(buf) {
  const u8 = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  if (u8.length <= HEADER || u8.length > HEADER + MAX_PAYLOAD) bad('bad_frame', `a data frame of ${u8.length} bytes (header ${HEADER}, payload 1..=${MAX_PAYLOAD})`);
  const v = new DataView(u8.buffer, u8.byteOffset, u8.length);
  const offset = v.getBigUint64(4);
  if (offset > BigInt(MAX_SIZE)) bad('bad_frame', 'data frame offset beyond 2^53-1');
  return { file: v.getUint32(0), offset: Number(offset), data: u8.subarray(HEADER) };
}
