// File-name sanitising (web/src/names.js): the same rules as the Rust peer
// (peer/src/names.rs), in the order the spec gives them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { neutral, sanitizeName } from '../src/names.js';

const utf8 = (s) => new TextEncoder().encode(s).length;

test('control, bidirectional and path characters become _', () => {
  assert.equal(sanitizeName('a\u0000b\u001fc\u007fd\u009fe'), 'a_b_c_d_e');
  assert.equal(sanitizeName('invoice\u202Egpj.exe'), 'invoice_gpj.exe');
  assert.equal(sanitizeName('x\u061Cy\u200Bz\u200Fw\u202Av\u2060u\u2069t\uFEFFs'), 'x_y_z_w_v_u_t_s');
  assert.equal(sanitizeName('../../etc/passwd'), '.._.._etc_passwd');
  assert.equal(sanitizeName('a/b\\c<d>e:f"g|h?i*j'), 'a_b_c_d_e_f_g_h_i_j');
  assert.equal(sanitizeName('\u2028ok\u00a0'), '\u2028ok\u00a0', 'only the listed code points are replaced');
});

test('spaces and trailing dots are stripped; empty, . and .. become file', () => {
  assert.equal(sanitizeName('  report.pdf  '), 'report.pdf');
  assert.equal(sanitizeName('name. . '), 'name');
  assert.equal(sanitizeName('name... '), 'name');
  assert.equal(sanitizeName('name .'), 'name');
  assert.equal(sanitizeName(''), 'file');
  assert.equal(sanitizeName('   '), 'file');
  assert.equal(sanitizeName('.'), 'file');
  assert.equal(sanitizeName('..'), 'file');
  assert.equal(sanitizeName('...'), 'file');
  assert.equal(sanitizeName('.bashrc'), '.bashrc');
  assert.equal(sanitizeName('\t'), '_');
});

test('Windows device names get a _ prefix', () => {
  for (const n of ['CON', 'con', 'Prn.txt', 'aux.tar.gz', 'NUL', 'COM1', 'com9.log', 'LPT1', 'lpt9']) {
    assert.equal(sanitizeName(n), `_${n}`, n);
  }
  for (const n of ['COM0', 'COM10', 'CONSOLE', 'LPT', 'xcon', 'con_']) assert.equal(sanitizeName(n), n, n);
  assert.equal(sanitizeName(' con . '), '_con', 'checked after trimming');
});

test('truncated to 255 UTF-8 bytes on a code-point boundary', () => {
  assert.equal(sanitizeName('a'.repeat(300)), 'a'.repeat(255));
  const euro = sanitizeName('€'.repeat(100)); // 3 bytes each
  assert.equal(euro, '€'.repeat(85));
  const emoji = sanitizeName(`a${'😀'.repeat(100)}`); // 4 bytes each, surrogate pairs in JS
  assert.equal(emoji, `a${'😀'.repeat(63)}`);
  assert.ok(utf8(emoji) <= 255);
  assert.ok(emoji.isWellFormed(), 'no surrogate pair split');
  // Trailing dots and spaces left by the cut go, and an empty result is file.
  assert.equal(sanitizeName(`${'a'.repeat(250)}    . .x`), 'a'.repeat(250));
});

test('neutral() makes a peer-supplied text safe to show', () => {
  assert.equal(neutral('bad\u202Ereason\u0007'), 'bad_reason_');
  assert.equal(neutral('x'.repeat(300)).length, 256);
  assert.equal(neutral(42), '');
});

test('neutral() also takes out what the server refuses in display names: line and paragraph separators, U+206A-F', () => {
  // The server is the adversary of the peers: it can send any name.
  assert.equal(neutral('Bob\u2028owner\u2029x'), 'Bob_owner_x');
  assert.equal(neutral('a\u206Ab\u206Fc'), 'a_b_c');
});
