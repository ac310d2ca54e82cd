// Relative paths from the peer (the `path` of each file in an offer) made
// safe to create under the folder the receiver chose, and made distinct.
// The same rules as the Rust peer (peer/src/paths.rs; docs/PROTOCOL.md,
// "Paths"). Pure; tested in test/paths.test.js against shared vectors.

import { sanitizeName } from './names.js';

export const MAX_DEPTH = 32;
const utf8Len = (s) => new TextEncoder().encode(s).length;

/**
 * A peer's path as safe components: split on `/` and `\`, empty and `.`
 * components dropped (so absolute, UNC and `./` forms become relative),
 * every other component through sanitizeName (so `..` is `file` and `C:` is
 * `C_`), at most MAX_DEPTH components (the directories beyond are dropped,
 * the file name kept). Never empty.
 */
export function sanitizePath(raw) {
  const parts = String(raw).split(/[/\\]/).filter((c) => c !== '' && c !== '.').map(sanitizeName);
  if (parts.length === 0) return ['file'];
  if (parts.length > MAX_DEPTH) return [...parts.slice(0, MAX_DEPTH - 1), parts[parts.length - 1]];
  return parts;
}

/** How two names compare on the file systems people use: case and
 * Unicode normalisation ignored (NTFS, APFS and HFS+ do). */
export const foldName = (s) => s.normalize('NFC').toLowerCase();

/** `name` with ` (n)` before its extension, within 255 UTF-8 bytes. The
 * tag always stays, so different numbers give different names (the same
 * rule as peer/src/paths.rs). */
export function numbered(name, n) {
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  const tag = ` (${n})`;
  const cut = Array.from(stem);
  while (cut.length > 1 && utf8Len(cut.join('') + tag + ext) > 255) cut.pop();
  const out = cut.join('') + tag + ext;
  if (utf8Len(out) <= 255) return out;
  // The extension alone leaves no room: number the whole name, cut to 200
  // code points and so that the tag fits after sanitising.
  const close = `(${n})`;
  for (let limit = 255; ; limit--) {
    let head = '';
    for (const c of Array.from(name).slice(0, 200)) {
      if (utf8Len(head + c + tag) > limit) break;
      head += c;
    }
    const named = sanitizeName(head + tag);
    if (named.endsWith(close) || head === '') return named;
  }
}

/**
 * Hands out distinct paths, in offer order: a file never lands on a path
 * taken by an earlier file or directory (case- and normalisation-
 * insensitively), and no directory on an earlier file; the later one is
 * renamed `name (2).ext`, `name (3).ext`, ... (a directory component the
 * same way, for that file and the ones after it that share it).
 */
export class PathAllocator {
  constructor() {
    this.files = new Set(); // folded full paths of the files placed
    this.dirs = new Map(); // folded (chosen parent + offered name) -> chosen name
    this.chosen = new Set(); // folded full paths of the directories made
    this.next = new Map(); // folded parent + name -> the next number to try
  }

  /** The first free `numbered(name, n)` under `out`, n from where the last
   * search for this name stopped (so many files of one name stay linear). */
  free(out, name, taken) {
    if (!taken(name)) return name;
    const memo = foldName([...out, name].join('/'));
    let n = this.next.get(memo) ?? 2;
    let candidate = numbered(name, n);
    while (taken(candidate)) candidate = numbered(name, ++n);
    this.next.set(memo, n + 1);
    return candidate;
  }

  /** Safe, distinct components for the next file of the offer. */
  place(raw) {
    const parts = sanitizePath(raw);
    const out = [];
    const key = (name) => foldName([...out, name].join('/'));
    const free = (name) => !this.files.has(key(name)) && !this.chosen.has(key(name));
    for (const dir of parts.slice(0, -1)) {
      const offered = key(dir);
      let name = this.dirs.get(offered);
      if (name === undefined) {
        name = this.free(out, dir, (nm) => !free(nm));
        this.dirs.set(offered, name);
        this.chosen.add(key(name));
      }
      out.push(name);
    }
    const name = this.free(out, parts[parts.length - 1], (nm) => !free(nm));
    out.push(name);
    this.files.add(foldName(out.join('/')));
    return out;
  }
}
