// Writes peer/vectors/transfer-v2.json from the web client's own code
// (web/src/control.js, web/src/records.js): what each control record's
// plaintext parses to (or the kind of error it is refused with), how an
// offer is paged, data-frame headers, and sealed records under a fixed key.
// The Rust peer (peer/tests/transfer_v2.rs) and the web client
// (web/test/transfer-v2-vectors.test.js) are both checked against it.
//
// Run by hand after a change to either format, and commit the output:
//   node web/tools/transfer-vectors.mjs > peer/vectors/transfer-v2.json

import { decodeFrame, encodeFrame, offerParts, parseTransfer } from '../src/control.js';
import { CONTROL, DATA, Records } from '../src/records.js';
import { pathToFileURL } from 'node:url';

const enc = new TextEncoder();
const hex = (u8) => Buffer.from(u8).toString('hex');
const unhex = (s) => Uint8Array.from(Buffer.from(s, 'hex'));

/** A control record's plaintext as the web client takes it (web/src/link.js:
 * UTF-8, fatal, then JSON.parse), then parseTransfer. */
export function parseRecord(bytes) {
  let m;
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return { error: 'malformed' };
  }
  try {
    return { parsed: wellFormed(parseTransfer(m)) };
  } catch (e) {
    if (typeof e.kind !== 'string') throw e;
    return { error: e.kind };
  }
}

/** The parsed form as plain JSON: a cancel reason holding an unpaired
 * surrogate (which JavaScript keeps and Rust cannot) with U+FFFD in its
 * place; -0 as 0. */
function wellFormed(m) {
  const out = JSON.parse(JSON.stringify(m));
  if (typeof out.reason === 'string') out.reason = out.reason.toWellFormed();
  return out;
}

const id = '00112233445566aa';
const d = (c) => c.repeat(64);
const files = (over) => ({ kind: 'files', id, part: 0, parts: 1, count: 1, total: 1, files: [{ path: 'a', size: 1 }], ...over });
const obj = (o) => JSON.stringify(o);

// Each: a comment, then the text (or hex, for bytes that are not UTF-8).
const MESSAGES = [
  ['accept, extra fields dropped', obj({ kind: 'accept', id, extra: 1, nested: { a: [1, 2] } })],
  ['decline', obj({ kind: 'decline', id })],
  ['cancel with a reason', obj({ kind: 'cancel', id, reason: 'stopped by the user' })],
  ['cancel without a reason', obj({ kind: 'cancel', id })],
  ['cancel, reason not a string', obj({ kind: 'cancel', id, reason: 42 })],
  ['cancel, reason cut to 256 code points', obj({ kind: 'cancel', id, reason: 'é'.repeat(300) })],
  ['cancel, reason cut to 256 code points (astral)', obj({ kind: 'cancel', id, reason: '😀'.repeat(300) })],
  ['cancel, reason with an unpaired surrogate (kept by JS, U+FFFD in Rust)', `{"kind":"cancel","id":"${id}","reason":"a\\ud800b"}`],
  ['cancel, reason with a surrogate pair escaped', `{"kind":"cancel","id":"${id}","reason":"\\ud83d\\ude00"}`],
  ['files', obj(files({ count: 2, total: 10, files: [{ path: 'dir/a.txt', size: 4 }, { path: 'b', size: 6 }] }))],
  ['files, second part', obj(files({ part: 1, parts: 2, count: 3 }))],
  ['files, empty path and size 0', obj(files({ total: 0, files: [{ path: '', size: 0 }] }))],
  ['files, path of 4096 bytes', obj(files({ files: [{ path: 'a'.repeat(4096), size: 1 }] }))],
  ['files, path of 4097 bytes', obj(files({ files: [{ path: 'a'.repeat(4097), size: 1 }] }))],
  ['files, path of 4098 UTF-8 bytes in 2049 UTF-16 units', obj(files({ files: [{ path: 'é'.repeat(2049), size: 1 }] }))],
  ['files, path with an unpaired surrogate', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"\\ud800","size":1}]}`],
  ['files, path with a lone low surrogate', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"x\\udc00","size":1}]}`],
  ['files, path not a string', obj(files({ files: [{ path: 5, size: 1 }] }))],
  ['files, entry null', obj(files({ files: [null] }))],
  ['files, entry an array', obj(files({ files: [['a', 1]] }))],
  ['files, size missing', obj(files({ files: [{ path: 'a' }] }))],
  ['files, size a string', obj(files({ files: [{ path: 'a', size: '1' }] }))],
  ['files, size -1', obj(files({ files: [{ path: 'a', size: -1 }] }))],
  ['files, size 1.5', obj(files({ files: [{ path: 'a', size: 1.5 }] }))],
  ['files, size 2^53-1', obj(files({ total: 2 ** 53 - 1, files: [{ path: 'a', size: 2 ** 53 - 1 }] }))],
  ['files, size 2^53', obj(files({ files: [{ path: 'a', size: 2 ** 53 } ] }))],
  ['files, size 2^53+1 written out (rounds to 2^53)', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":9007199254740993}]}`],
  ['files, size 2^53-1 plus a fraction that rounds away', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":9007199254740991.4}]}`],
  ['files, size 5.0', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":5.0}]}`],
  ['files, size 5e0', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":5e0}]}`],
  ['files, size 0.5e1', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":0.5E+1}]}`],
  ['files, size -0', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":-0}]}`],
  ['files, size 1e400 (Infinity in JS)', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":1e400}]}`],
  ['files, size -1e400', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":-1e400}]}`],
  ['files, size 1e-400 (0 in JS)', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":1e-400}]}`],
  ['files, size a huge integer', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1,"files":[{"path":"a","size":${'9'.repeat(400)}}]}`],
  ['files, size true', obj(files({ files: [{ path: 'a', size: true }] }))],
  ['files, part equal to parts', obj(files({ part: 1 }))],
  ['files, parts 0', obj(files({ parts: 0 }))],
  ['files, parts 4096', obj(files({ part: 4095, parts: 4096 }))],
  ['files, parts 4097', obj(files({ parts: 4097 }))],
  ['files, parts 1.0 and part -0', `{"kind":"files","id":"${id}","part":-0,"parts":1.0,"count":1,"total":1,"files":[{"path":"a","size":1}]}`],
  ['files, part missing', obj(files({ part: undefined }))],
  ['files, part a string', obj(files({ part: '0' }))],
  ['files, count 0 and no files', obj(files({ count: 0, total: 0, files: [] }))],
  ['files, count 100000', obj(files({ count: 100000 }))],
  ['files, count 100001', obj(files({ count: 100001 }))],
  ['files, more files than count', obj(files({ files: [{ path: 'a', size: 1 }, { path: 'b', size: 0 }] }))],
  ['files, files empty', obj(files({ files: [] }))],
  ['files, files not a list', obj(files({ files: { path: 'a', size: 1 } }))],
  ['files, total 2^53', obj(files({ total: 2 ** 53 }))],
  ['files, total 1e400', `{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":1e400,"files":[{"path":"a","size":1}]}`],
  ['files, total missing', obj(files({ total: undefined }))],
  ['files, a bad size after a bad path: the path counts', obj(files({ count: 2, files: [{ path: 'a'.repeat(5000), size: -1 }, { path: 'b', size: 1 }] }))],
  ['files, bad second entry', obj(files({ count: 2, files: [{ path: 'a', size: 1 }, { path: 'b', size: 0.1 }] }))],
  ['hashes', obj({ kind: 'hashes', id, file: 0, first: 0, sha256: [d('0')] })],
  ['hashes, 256 digests', obj({ kind: 'hashes', id, file: 99999, first: 2 ** 53 - 1, sha256: Array(256).fill(d('a')) })],
  ['hashes, 257 digests', obj({ kind: 'hashes', id, file: 0, first: 0, sha256: Array(257).fill(d('a')) })],
  ['hashes, no digests', obj({ kind: 'hashes', id, file: 0, first: 0, sha256: [] })],
  ['hashes, upper-case digest', obj({ kind: 'hashes', id, file: 0, first: 0, sha256: [d('A')] })],
  ['hashes, short digest', obj({ kind: 'hashes', id, file: 0, first: 0, sha256: ['0'.repeat(63)] })],
  ['hashes, digest not a string', obj({ kind: 'hashes', id, file: 0, first: 0, sha256: [1] })],
  ['hashes, sha256 a string', obj({ kind: 'hashes', id, file: 0, first: 0, sha256: d('0') })],
  ['hashes, bad digest before bad file: the digest counts', obj({ kind: 'hashes', id, file: -1, first: 0, sha256: ['x'] })],
  ['hashes, file 100000', obj({ kind: 'hashes', id, file: 100000, first: 0, sha256: [d('0')] })],
  ['hashes, first 1.5', obj({ kind: 'hashes', id, file: 0, first: 1.5, sha256: [d('0')] })],
  ['hashes, first missing', obj({ kind: 'hashes', id, file: 0, sha256: [d('0')] })],
  ['sent', obj({ kind: 'sent', id, file: 3, sha256: d('f') })],
  ['sent, digest with a newline after', obj({ kind: 'sent', id, file: 3, sha256: `${d('f')}\n` })],
  ['sent, digest with an unpaired surrogate', `{"kind":"sent","id":"${id}","file":3,"sha256":"${'f'.repeat(63)}\\ud800"}`],
  ['sent, digest missing', obj({ kind: 'sent', id, file: 3 })],
  ['sent, file missing', obj({ kind: 'sent', id, sha256: d('f') })],
  ['want', obj({ kind: 'want', id, file: 0, blocks: [0, 5, 2 ** 53 - 1] })],
  ['want, block -1', obj({ kind: 'want', id, file: 0, blocks: [-1] })],
  ['want, block 2^53', obj({ kind: 'want', id, file: 0, blocks: [2 ** 53] })],
  ['want, block a string', obj({ kind: 'want', id, file: 0, blocks: ['1'] })],
  ['want, no blocks', obj({ kind: 'want', id, file: 0, blocks: [] })],
  ['want, 257 blocks', obj({ kind: 'want', id, file: 0, blocks: Array(257).fill(1) })],
  ['want, file null', obj({ kind: 'want', id, file: null, blocks: [1] })],
  ['ack', obj({ kind: 'ack', id, bytes: 16777216 })],
  ['ack, 0', obj({ kind: 'ack', id, bytes: 0 })],
  ['ack, 2^53-1', obj({ kind: 'ack', id, bytes: 2 ** 53 - 1 })],
  ['ack, 2^53', obj({ kind: 'ack', id, bytes: 2 ** 53 })],
  ['ack, -1', obj({ kind: 'ack', id, bytes: -1 })],
  ['ack, 1.5', obj({ kind: 'ack', id, bytes: 1.5 })],
  ['ack, a string', obj({ kind: 'ack', id, bytes: '5' })],
  ['ack, no bytes', obj({ kind: 'ack', id })],
  ['resume', obj({ kind: 'resume', id, files: [{ file: 0, have: [[0, 3], [5, 6]] }, { file: 2, have: [] }] })],
  ['resume, nothing held', obj({ kind: 'resume', id, files: [] })],
  ['resume, 64 files', obj({ kind: 'resume', id, files: Array.from({ length: 64 }, (_, i) => ({ file: i, have: [] })) })],
  ['resume, 65 files', obj({ kind: 'resume', id, files: Array.from({ length: 65 }, (_, i) => ({ file: i, have: [] })) })],
  ['resume, 64 ranges', obj({ kind: 'resume', id, files: [{ file: 0, have: Array.from({ length: 64 }, (_, i) => [2 * i, 2 * i + 1]) }] })],
  ['resume, 65 ranges', obj({ kind: 'resume', id, files: [{ file: 0, have: Array.from({ length: 65 }, (_, i) => [2 * i, 2 * i + 1]) }] })],
  ['resume, empty range', obj({ kind: 'resume', id, files: [{ file: 0, have: [[3, 3]] }] })],
  ['resume, overlapping ranges', obj({ kind: 'resume', id, files: [{ file: 0, have: [[0, 4], [2, 6]] }] })],
  ['resume, adjacent ranges', obj({ kind: 'resume', id, files: [{ file: 0, have: [[0, 4], [4, 6]] }] })],
  ['resume, ranges out of order', obj({ kind: 'resume', id, files: [{ file: 0, have: [[5, 6], [0, 4]] }] })],
  ['resume, range of three', obj({ kind: 'resume', id, files: [{ file: 0, have: [[0, 4, 5]] }] })],
  ['resume, range up to 2^53', obj({ kind: 'resume', id, files: [{ file: 0, have: [[0, 2 ** 53]] }] })],
  ['resume, range as an object', obj({ kind: 'resume', id, files: [{ file: 0, have: [{ 0: 0, 1: 1 }] }] })],
  ['resume, have missing', obj({ kind: 'resume', id, files: [{ file: 0 }] })],
  ['resume, entry null', obj({ kind: 'resume', id, files: [null] })],
  ['resume, entry an array', obj({ kind: 'resume', id, files: [[0, []]] })],
  ['resume, files missing', obj({ kind: 'resume', id })],
  ['got', obj({ kind: 'got', id, file: 0, ok: true, sha256: d('a') })],
  ['got, not ok', obj({ kind: 'got', id, file: 7, ok: false, sha256: d('b') })],
  ['got, ok a string', obj({ kind: 'got', id, file: 0, ok: 'yes', sha256: d('a') })],
  ['got, ok 1', obj({ kind: 'got', id, file: 0, ok: 1, sha256: d('a') })],
  ['got, bad digest', obj({ kind: 'got', id, file: 0, ok: true, sha256: 'a' })],
  ['unknown kind', obj({ kind: 'nope', id })],
  ['kind missing', obj({ id })],
  ['kind not a string', obj({ kind: 7, id })],
  ['kind in capitals', obj({ kind: 'ACCEPT', id })],
  ['kind with an unpaired surrogate', `{"kind":"accept\\ud800","id":"${id}"}`],
  ['kind from an old version (v1 "t")', obj({ t: 'file', id, name: 'a', size: 1 })],
  ['unknown kind and a bad id: the id counts', obj({ kind: 'nope', id: 'x' })],
  ['id in capitals', obj({ kind: 'accept', id: id.toUpperCase() })],
  ['id too short', obj({ kind: 'accept', id: 'abc' })],
  ['id with a newline after', obj({ kind: 'accept', id: `${id}\n` })],
  ['id a number', obj({ kind: 'accept', id: 1234567890123456 })],
  ['id missing', obj({ kind: 'accept' })],
  ['a repeated key: the last counts', `{"kind":"nope","id":"${id}","kind":"accept"}`],
  ['a repeated key: the last counts (bad)', `{"kind":"accept","id":"${id}","id":"bad"}`],
  ['__proto__ as a key', `{"__proto__":{"kind":"x"},"kind":"accept","id":"${id}"}`],
  ['1e400 in an ignored field', `{"kind":"accept","id":"${id}","x":1e400}`],
  ['an unpaired surrogate in an ignored field and key', `{"kind":"accept","id":"${id}","\\udfff":"\\ud800"}`],
  ['200 nested arrays in an ignored field', `{"kind":"accept","id":"${id}","x":${'['.repeat(200)}${']'.repeat(200)}}`],
  ['whitespace around', ` \t\r\n{"kind":"accept","id":"${id}"} \n`],
  ['a byte-order mark first (TextDecoder drops it)', `\ufeff{"kind":"accept","id":"${id}"}`],
  ['two byte-order marks', `\ufeff\ufeff{"kind":"accept","id":"${id}"}`],
  ['a non-breaking space around (not JSON whitespace)', `\u00a0{"kind":"accept","id":"${id}"}`],
  ['not an object: null', 'null'],
  ['not an object: a list', `[{"kind":"accept","id":"${id}"}]`],
  ['not an object: a string', '"accept"'],
  ['not an object: a number', '0'],
  ['not JSON: empty', ''],
  ['not JSON: trailing comma', `{"kind":"accept","id":"${id}",}`],
  ['not JSON: two values', `{"kind":"accept","id":"${id}"}{}`],
  ['not JSON: single quotes', `{'kind':'accept','id':'${id}'}`],
  ['not JSON: NaN', `{"kind":"accept","id":"${id}","x":NaN}`],
  ['not JSON: leading zero', `{"kind":"accept","id":"${id}","x":01}`],
  ['not JSON: a raw tab in a string', `{"kind":"accept","id":"${id}","x":"a\tb"}`],
  ['not JSON: a bad escape', `{"kind":"accept","id":"${id}","x":"\\x41"}`],
  ['not JSON: a short \\u escape', `{"kind":"accept","id":"${id}","x":"\\u41"}`],
  ['not JSON: unclosed', `{"kind":"accept","id":"${id}"`],
  ['DEL and U+2028 raw in a string are fine', `{"kind":"cancel","id":"${id}","reason":"a\u007fb\u2028c"}`],
  ['escapes in a reason', `{"kind":"cancel","id":"${id}","reason":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9"}`],
];

const BYTES = [
  ['not UTF-8: a lone continuation byte', `7b226b696e64223a22616363657074222c226964223a22${hex(enc.encode(id))}22${'2c2278223a2280'}227d`],
  ['not UTF-8: an encoded surrogate (CESU)', `7b226b696e64223a2263616e63656c222c226964223a22${hex(enc.encode(id))}222c22726561736f6e223a22eda080227d`],
  ['not UTF-8: overlong slash', `7b226b696e64223a22616363657074222c226964223a22${hex(enc.encode(id))}222c2278223a22c0af227d`],
  ['a byte-order mark, then JSON', `efbbbf${hex(enc.encode(`{"kind":"decline","id":"${id}"}`))}`],
];

function messages() {
  const out = [];
  for (const [comment, text] of MESSAGES) {
    if (!text.isWellFormed()) throw new Error(`${comment}: a vector's text must be well-formed`);
    out.push({ comment, text, ...parseRecord(enc.encode(text)) });
  }
  for (const [comment, h] of BYTES) out.push({ comment, hex: h, ...parseRecord(unhex(h)) });
  return out;
}

function offers() {
  const cases = [
    ['one file', [{ path: 'a.txt', size: 3 }]],
    ['escapes count as JSON.stringify writes them', [{ path: 'q"\\\u0001\u001f\u007f\u2028é😀/x', size: 2 ** 53 - 1 }]],
    ['one long path is one part', [{ path: 'x'.repeat(4000), size: 1 }]],
    ['many files over two parts', Array.from({ length: 120 }, (_, i) => ({ path: `folder/${'s'.repeat(280)}-${i}.bin`, size: i * 1000 }))],
    ['near the page limit', Array.from({ length: 9 }, (_, i) => ({ path: `${'p'.repeat(3540)}${i}`, size: 10 ** i }))],
    ['no files', []],
    ['sizes that add up past 2^53-1', [{ path: 'a', size: 2 ** 52 }, { path: 'b', size: 2 ** 52 }]],
    ['sizes that add up to 2^53-1', [{ path: 'a', size: 2 ** 52 }, { path: 'b', size: 2 ** 52 - 1 }]],
  ];
  return cases.map(([comment, list]) => {
    try {
      return { comment, files: list, parts: offerParts(id, list) };
    } catch (e) {
      if (typeof e.kind !== 'string') throw e;
      return { comment, files: list, error: e.kind };
    }
  });
}

function frames() {
  const encode = [
    [0, 0, '01'],
    [7, 2 ** 40 + 3, '010203'],
    [99999, 2 ** 53 - 1, 'ff'],
    [0xffffffff, 0, '00'],
  ].map(([file, offset, payload]) => ({ file, offset, payload, frame: hex(encodeFrame(file, offset, unhex(payload))) }));
  // Decode cases: `head` (hex) then `pad` zero bytes.
  const decode = [
    ['smallest', '00000007000000000000000001', 0],
    ['largest payload', '000000000000000000000000', 65536],
    ['payload one over', '000000000000000000000000', 65537],
    ['header only', '000000000000000000000000', 0],
    ['shorter than a header', '0000000000', 0],
    ['empty', '', 0],
    ['offset 2^53-1', '00000001001fffffffffffffaa', 0],
    ['offset 2^53', '000000010020000000000000aa', 0],
    ['offset 2^64-1', '00000001ffffffffffffffffaa', 0],
    ['file 2^32-1', 'ffffffff0000000000000010aabbcc', 0],
    ['a v1-style version byte is just part of the file index', '020000000100000000000000000000', 0],
  ].map(([comment, head, pad]) => {
    const buf = new Uint8Array(head.length / 2 + pad);
    buf.set(unhex(head));
    try {
      const f = decodeFrame(buf);
      return { comment, head, pad, file: f.file, offset: f.offset, data_len: f.data.length, data_head: hex(f.data.subarray(0, 8)) };
    } catch (e) {
      if (typeof e.kind !== 'string') throw e;
      return { comment, head, pad, error: e.kind };
    }
  });
  return { encode, decode };
}

async function records() {
  const dk = Uint8Array.from({ length: 32 }, (_, i) => i);
  const plain = {
    A: [
      [CONTROL, enc.encode(`{"kind":"files","id":"${id}","part":0,"parts":1,"count":1,"total":3,"files":[{"path":"a.txt","size":3}]}`)],
      [DATA, encodeFrame(0, 0, enc.encode('abc'))],
      [CONTROL, new Uint8Array(0)],
      [DATA, Uint8Array.from({ length: 300 }, (_, i) => i & 0xff)],
    ],
    B: [
      [CONTROL, enc.encode(`{"kind":"accept","id":"${id}"}`)],
      [CONTROL, enc.encode(`{"kind":"got","id":"${id}","file":0,"ok":true,"sha256":"${d('0')}"}`)],
    ],
  };
  const out = { dk: hex(dk), A: [], B: [] };
  for (const role of ['A', 'B']) {
    const r = new Records(dk, role);
    const other = new Records(dk, role === 'A' ? 'B' : 'A');
    for (const [type, p] of plain[role]) {
      let rec;
      await r.seal(type, p, (x) => { rec = x; });
      const opened = await other.open(rec);
      if (opened.type !== type || hex(opened.data) !== hex(p)) throw new Error('a record did not open');
      out[role].push({ type, plain: hex(p), record: hex(rec) });
    }
  }
  // Records B (the joiner) must refuse, each on a fresh Records: the index
  // of A's record altered, and how.
  const a0 = unhex(out.A[0].record);
  const flip = (i) => { const x = Uint8Array.from(a0); x[i] ^= 1; return hex(x); };
  const retype = Uint8Array.from(a0);
  retype[0] = DATA;
  const badType = Uint8Array.from(a0);
  badType[0] = 3;
  out.refused = [
    ['a flipped bit in the ciphertext', flip(5)],
    ['a flipped bit in the tag', flip(a0.length - 1)],
    ['retyped (the type is the AAD)', hex(retype)],
    ['an unknown type', hex(badType)],
    ['the second record first (out of turn)', out.A[1].record],
    ['B\'s own record (the other direction)', out.B[0].record],
    ['shorter than a tag', '01' + '00'.repeat(15)],
    ['empty', ''],
    ['a tag alone under a wrong key', '02' + '00'.repeat(16)],
  ].map(([comment, record]) => {
    const r = new Records(dk, 'B');
    return r.open(unhex(record)).then(() => { throw new Error(`${comment} opened`); }, (e) => ({ comment, record, error: e.kind }));
  });
  out.refused = await Promise.all(out.refused);
  return out;
}

async function main() {
  const vectors = {
    comment: 'Transfers v2 (docs/PROTOCOL.md, "Transfers (v2)"), generated by web/tools/transfer-vectors.mjs from web/src/control.js and web/src/records.js. messages: a control record\'s plaintext (text as UTF-8, or hex) as the web client reads it (UTF-8 with a byte-order mark dropped, JSON.parse, parseTransfer), giving the parsed message as JSON or the error kind (a cancel reason\'s unpaired surrogates are U+FFFD here). offers: offerParts(id, files). frames: encodeFrame, and decodeFrame of `head` then `pad` zero bytes. records: sealed under dk by A (creator) and B, in order; refused: records B refuses as its first.',
    id,
    messages: messages(),
    offers: offers(),
    frames: frames(),
    records: await records(),
  };
  process.stdout.write(`${JSON.stringify(vectors, null, 1)}\n`);
}

// Imported by web/test/transfer-v2-vectors.test.js for parseRecord only.
if (import.meta.url === pathToFileURL(process.argv[1]).href) await main();
