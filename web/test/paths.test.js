// Offered paths made safe and distinct (web/src/paths.js), and the vectors
// the Rust peer checks too (peer/vectors/paths-v1.json).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { MAX_DEPTH, numbered, PathAllocator, sanitizePath } from '../src/paths.js';

const vectors = JSON.parse(readFileSync(new URL('../../peer/vectors/paths-v1.json', import.meta.url)));
const utf8 = (s) => new TextEncoder().encode(s).length;

test('hostile paths become relative, safe components', () => {
  assert.deepEqual(sanitizePath('../../etc/passwd'), ['file', 'file', 'etc', 'passwd']);
  assert.deepEqual(sanitizePath('/etc/shadow'), ['etc', 'shadow']);
  assert.deepEqual(sanitizePath('C:\\Windows\\system32\\x.dll'), ['C_', 'Windows', 'system32', 'x.dll']);
  assert.deepEqual(sanitizePath('\\\\server\\share\\f'), ['server', 'share', 'f']);
  assert.deepEqual(sanitizePath('./a//b/./c'), ['a', 'b', 'c']);
  assert.deepEqual(sanitizePath('dir/CON.txt'), ['dir', '_CON.txt']);
  assert.deepEqual(sanitizePath('a\u0000b/\u202Egpj.exe'), ['a_b', '_gpj.exe']);
  assert.deepEqual(sanitizePath(''), ['file']);
  assert.deepEqual(sanitizePath('///'), ['file']);
  const deep = Array.from({ length: 50 }, (_, i) => `d${i}`).join('/') + '/leaf';
  const p = sanitizePath(deep);
  assert.equal(p.length, MAX_DEPTH);
  assert.equal(p[p.length - 1], 'leaf');
  for (const c of sanitizePath(`${'é'.repeat(300)}/x`)) assert.ok(utf8(c) <= 255);
});

test('duplicates are renamed, case- and normalisation-insensitively, files and folders alike', () => {
  const a = new PathAllocator();
  const placed = ['a.txt', 'A.TXT', 'a.txt', 'dir/x', 'DIR/x', 'e\u0301.txt', '\u00e9.txt', 'f', 'f/inner', 'g/h', 'g', 'a (2).txt', '.env', '.env']
    .map((p) => a.place(p).join('/'));
  assert.deepEqual(placed, [
    'a.txt', 'A (2).TXT', 'a (3).txt', 'dir/x', 'dir/x (2)', 'e\u0301.txt', '\u00e9 (2).txt',
    'f', 'f (2)/inner', 'g/h', 'g (2)', 'a (2) (2).txt', '.env', '.env (2)',
  ]);
});

test('a renamed folder is not merged with one the peer named like it', () => {
  const a = new PathAllocator();
  const placed = ['a', 'a/x', 'a (2)/y', 'a/z'].map((p) => a.place(p).join('/'));
  assert.deepEqual(placed, ['a', 'a (2)/x', 'a (2) (2)/y', 'a (2)/z']);
});

test('numbering stays within 255 bytes', () => {
  const long = `${'x'.repeat(250)}.tar.gz`;
  const n = numbered(long, 12);
  assert.ok(utf8(n) <= 255, n);
  assert.ok(n.endsWith(' (12).gz'), n);
  const ext = `a.${'y'.repeat(254)}`;
  assert.ok(utf8(numbered(ext, 3)) <= 255);
});

test('the shared vectors', () => {
  for (const v of vectors.sanitize) assert.deepEqual(sanitizePath(v.raw), v.parts, JSON.stringify(v.raw));
  for (const v of vectors.offers) {
    const a = new PathAllocator();
    assert.deepEqual(v.paths.map((p) => a.place(p).join('/')), v.placed, JSON.stringify(v.paths));
  }
});

test('numbering always keeps its tag, so a name whose extension fills 255 bytes can still be placed twice', { timeout: 5000 }, () => {
  const name = `a.${'é'.repeat(126)}`; // 254 bytes, the extension 253 of them
  const two = numbered(name, 2);
  const three = numbered(name, 3);
  assert.notEqual(two, three);
  assert.ok(two.endsWith('(2)') && three.endsWith('(3)'), `${two} / ${three}`);
  for (const n of [two, three]) assert.ok(utf8(n) <= 255);
  const a = new PathAllocator();
  const placed = [name, name, name].map((p) => a.place(p).join('/'));
  assert.equal(new Set(placed).size, 3, 'three distinct names, and placing ends');
});

test('a thousand files of one name are placed in linear time', { timeout: 10_000 }, () => {
  const a = new PathAllocator();
  const t0 = performance.now();
  for (let i = 0; i < 20_000; i++) a.place('same.txt');
  assert.equal(a.place('same.txt').join('/'), 'same (20001).txt');
  assert.ok(performance.now() - t0 < 5000, 'not quadratic');
});
