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

/** `name` with ` (n)` before its extension, within 255 UTF-8 bytes. */
export function numbered(name, n) {
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  const tag = ` (${n})`;
  let cut = Array.from(stem);
  while (cut.length > 1 && utf8Len(cut.join('') + tag + ext) > 255) cut.pop();
  const out = cut.join('') + tag + ext;
  // An extension alone over the limit: number the whole name, cut.
  return utf8Len(out) <= 255 ? out : sanitizeName(Array.from(name).slice(0, 200).join('') + tag);
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
        name = dir;
        for (let n = 2; !free(name); n++) name = numbered(dir, n);
        this.dirs.set(offered, name);
        this.chosen.add(key(name));
      }
      out.push(name);
    }
    const last = parts[parts.length - 1];
    let name = last;
    for (let n = 2; !free(name); n++) name = numbered(last, n);
    out.push(name);
    this.files.add(foldName(out.join('/')));
    return out;
  }
}
