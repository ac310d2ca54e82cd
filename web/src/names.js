// Peer-supplied text made safe to show and to save as. The rules of
// sanitizeName are shared with the Rust peer (peer/src/names.rs): keep
// them in this order. Pure; tested in test/names.test.js.

// Controls, the Arabic letter mark, zero-width and bidirectional marks,
// overrides and isolates, word joiner and invisible operators, BOM.
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/gu;
const PATH = /[/\\<>:"|?*]/g;
const DEVICE = /^(con|prn|aux|nul|com[1-9]|lpt[1-9])$/i;
const utf8Len = (cp) => (cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4);

function stripEnds(s) {
  return s.replace(/ +$/, '').replace(/\.+$/, '').replace(/ +$/, '');
}

/** A file name the peer sent, made safe for display and for the download. */
export function sanitizeName(name) {
  // (1) invisible, control and path characters
  let s = String(name).replace(INVISIBLE, '_').replace(PATH, '_');
  // (2) leading and trailing spaces, trailing dots, trailing spaces
  s = stripEnds(s.replace(/^ +/, ''));
  // (3) nothing left, or a directory name
  if (s === '' || s === '.' || s === '..') s = 'file';
  // (4) Windows device names, with or without an extension
  if (DEVICE.test(s.split('.')[0])) s = `_${s}`;
  // (5) at most 255 UTF-8 bytes, cut between code points
  let bytes = 0;
  let out = '';
  for (const ch of s) {
    bytes += utf8Len(ch.codePointAt(0));
    if (bytes > 255) break;
    out += ch;
  }
  // ... then no trailing spaces or dots, in any mix
  s = out.replace(/[ .]+$/, '');
  if (s === '') s = 'file';
  // (6) the cut can expose a device name ("aux" + 300 spaces + "x")
  if (DEVICE.test(s.split('.')[0])) s = `_${s}`;
  return s;
}

// What neutral() also takes out (not sanitizeName: its rules are shared
// with the Rust peer): line and paragraph separators, which break a line,
// and the deprecated format controls U+206A-F, as the server refuses them
// in display names.
const UNSHOWN = /[\u2028\u2029\u206a-\u206f]/gu;

/** Any other peer- or server-supplied text (a reason, a display name):
 * invisible, bidirectional and line-breaking characters replaced, at most
 * `max` characters. */
export function neutral(text, max = 256) {
  if (typeof text !== 'string') return '';
  return Array.from(text.replace(INVISIBLE, '_').replace(UNSHOWN, '_')).slice(0, max).join('');
}
