// Where received files are written as they land, so the page never holds a
// file in memory (README, "Where received files go"):
//
// - `picker`: the File System Access API, where the browser has it
//   (Chromium on the desktop): a save picker for one file, a folder picker
//   for several; files are written straight into what the user chose.
// - `browser`: the origin private file system (Chromium, Firefox, Safari):
//   files are written under tallow/<transfer id>/ and offered with Save
//   links whose downloads read from disk. Where the browser lacks
//   createWritable on the main thread (Safari), a worker writes through a
//   sync access handle (./sink-worker.js).
//
// A file is written through a FileSystemWritableFileStream at positions
// (blocks may come again after a resume or a bad digest), made visible when
// closed; the whole-file hash may read it back from a position.

import { numbered } from './paths.js';

const writableOk = () => typeof FileSystemFileHandle !== 'undefined' && 'createWritable' in FileSystemFileHandle.prototype;

/** Which kinds this browser can do. */
export function sinkKinds() {
  return {
    picker: typeof window !== 'undefined' && typeof window.showDirectoryPicker === 'function' && typeof window.showSaveFilePicker === 'function',
    browser: typeof navigator !== 'undefined' && typeof navigator.storage?.getDirectory === 'function',
  };
}

async function dirFor(root, parts, create = true) {
  let dir = root;
  for (const p of parts) dir = await dir.getDirectoryHandle(p, { create });
  return dir;
}

const KEEP_MS = 24 * 3600 * 1000;

/** Files of earlier transfers left in the browser's storage (their Save
 * links died with their page) are removed after a day. Not at once: another
 * tab of this origin may be receiving into it right now. */
export async function clearBrowserStore(now = Date.now()) {
  if (!sinkKinds().browser) return;
  try {
    const root = await navigator.storage.getDirectory();
    const parent = await root.getDirectoryHandle('tallow');
    for await (const name of parent.keys()) {
      const made = Number(name.split('-')[0]);
      if (!Number.isFinite(made) || now - made > KEEP_MS) await parent.removeEntry(name, { recursive: true });
    }
  } catch { /* nothing there, or not allowed */ }
}

class Sink {
  /** files: [{ parts, size }] from the offer (paths already safe). */
  constructor(kind, files, fileHandle, dirHandle, label) {
    this.kind = kind;
    this.files = files;
    this.single = fileHandle; // picker, one file
    this.root = dirHandle;
    this.label = label; // what the user chose, for the status line
    this.open = new Map(); // file index -> { handle, writer }
    this.created = new Set(); // files this transfer created
    this.parent = null; // browser: the tallow/ folder holding `id`
    this.id = null;
  }

  async handle(i) {
    if (this.single) return this.single;
    const parts = this.files[i].parts;
    const dir = await dirFor(this.root, parts.slice(0, -1));
    let name = parts[parts.length - 1];
    if (!this.created.has(i)) {
      // Never overwrite what the user already has in the chosen folder.
      const exists = (n) => dir.getFileHandle(n).then(() => true, () => false);
      for (let n = 2; this.kind === 'picker' && await exists(name); n++) name = numbered(parts[parts.length - 1], n);
      parts[parts.length - 1] = name;
      this.created.add(i);
    }
    return dir.getFileHandle(name, { create: true });
  }

  async writer(i) {
    let w = this.open.get(i);
    if (!w) {
      const handle = await this.handle(i);
      w = { handle, writer: await handle.createWritable({ keepExistingData: false }) };
      this.open.set(i, w);
    }
    return w.writer;
  }

  async write(i, offset, data) {
    const w = await this.writer(i);
    await w.write({ type: 'write', position: offset, data });
  }

  /** Makes what was written visible (and closes the file). */
  async close(i) {
    const w = this.open.get(i);
    if (w) {
      this.open.delete(i);
      await w.writer.close();
      return w.handle;
    }
    // Nothing written (an empty file): it still exists.
    const handle = await this.handle(i);
    if (!this.single) {
      const writer = await handle.createWritable({ keepExistingData: false });
      await writer.close();
    }
    return handle;
  }

  /** The file's bytes from `offset`, in chunks (after close). */
  async *read(i, offset) {
    const file = await (await this.close(i)).getFile();
    const reader = file.slice(offset).stream().getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  }

  /** The received file, disk-backed, for a Save link (browser sink). */
  async file(i) {
    return (await this.handle(i)).getFile();
  }

  /** Stop: abandon what is half written. In the browser's storage the
   * whole transfer goes; in a folder the user chose, the files that were
   * not complete (complete ones stay, they are verified). */
  async abort(complete = new Set()) {
    for (const { writer } of this.open.values()) {
      try { await writer.abort(); } catch { /* already gone */ }
    }
    this.open.clear();
    try {
      if (this.kind === 'browser') {
        await this.parent.removeEntry(this.id, { recursive: true });
      } else if (this.root) {
        for (const i of this.created) {
          if (complete.has(i)) continue;
          const parts = this.files[i].parts;
          const dir = await dirFor(this.root, parts.slice(0, -1), false);
          await dir.removeEntry(parts[parts.length - 1]);
        }
      }
    } catch { /* best effort: the user may have moved things */ }
  }
}

/**
 * A sink for an accepted offer. `prefer`: 'picker' or 'browser'. With the
 * picker, call from the user's click (browsers require it). Throws
 * AbortError if the user closes the picker.
 */
export async function openSink(id, files, prefer) {
  const kinds = sinkKinds();
  if (prefer === 'picker' && kinds.picker) {
    if (files.length === 1) {
      const handle = await window.showSaveFilePicker({ suggestedName: files[0].parts[files[0].parts.length - 1] });
      return new Sink('picker', files, handle, null, handle.name);
    }
    const dir = await window.showDirectoryPicker({ id: 'tallow', mode: 'readwrite' });
    return new Sink('picker', files, null, dir, dir.name);
  }
  if (!kinds.browser) throw new Error('this browser can neither save files as they arrive nor keep them in its storage');
  if (!writableOk()) throw new Error('this browser cannot write files as they arrive (no createWritable)');
  const root = await navigator.storage.getDirectory();
  const parent = await dirFor(root, ['tallow']);
  const name = `${Date.now()}-${id}`;
  const sink = new Sink('browser', files, null, await dirFor(parent, [name]), 'this browser');
  sink.parent = parent;
  sink.id = name;
  return sink;
}
