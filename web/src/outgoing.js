// The sending side of a transfer, as a state machine (docs/PROTOCOL.md,
// "Transfers"). The shell asks it which block to send next, tells it each
// block's digest as it reads it, and hands it the receiver's sealed
// messages; it answers with messages to seal and with the transfer's state.
//
// Order: files in offer order, blocks in order; a block the receiver
// wants again comes before anything new; after a resume, blocks the
// receiver holds are skipped. Each block's digest is announced once (in
// `hashes`, batched), then the file's whole digest (`sent`), which the
// shell computes on the first, in-order read. Pure; tested in
// test/outgoing.test.js.

import { BLOCK, blocksOf, ControlError, MAX_LIST, offerParts, parseTransfer, WINDOW } from './control.js';

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const bad = (kind, message) => { throw new ControlError(kind, message); };

export class Outgoing {
  /** files: [{ path, size }] in the order they will be sent. */
  constructor(id, files) {
    this.id = id;
    this.files = files.map((f) => ({ path: f.path, size: f.size, blocks: blocksOf(f.size), got: null }));
    this.state = 'offered'; // -> sending -> done | stopped
    this.cursor = { file: 0, block: 0 }; // next new block
    this.hashed = this.files.map(() => 0); // blocks whose digest we announced
    this.digests = this.files.map(() => []); // per file, each block's digest (hex), kept to announce again after a break
    this.pendingHashes = []; // { file, block, digest } not yet sent
    this.sentWhole = this.files.map(() => null); // whole-file digest, once computed
    this.announced = this.files.map(() => false); // `sent` went out
    this.announceFrom = 0;
    this.wanted = []; // [file, block] to send again first
    this.wanting = new Set(); // `${file}/${block}` of each in `wanted`: a block is queued once
    this.skip = new Map(); // file -> Set of blocks the receiver holds (after resume)
    this.gotCount = 0;
    this.total = files.reduce((n, f) => n + f.size, 0);
    this.acked = 0; // bytes of files the receiver confirmed
    // Flow control, per channel: file bytes of blocks started, and the
    // receiver's last `ack`.
    this.started = 0;
    this.windowAcked = 0;
    this.windowFull = false;
  }

  /** The offer's sealed messages. */
  offer() {
    return offerParts(this.id, this.files);
  }

  /** A sealed transfer message from the receiver (already JSON). */
  onMessage(raw) {
    const m = parseTransfer(raw);
    if (m.id !== this.id) bad('unexpected', `a message for transfer ${m.id} during ${this.id}`);
    if (this.state === 'stopped' || this.state === 'done') return [];
    switch (m.kind) {
      case 'accept':
        // Again after a break (answering the offer sent again): nothing new.
        if (this.state === 'sending') return [];
        this.state = 'sending';
        return [{ t: 'accepted' }];
      case 'decline':
        if (this.state !== 'offered') bad('unexpected', 'decline after accept');
        this.state = 'stopped';
        return [{ t: 'stopped', why: 'your peer declined the files', by: 'peer' }];
      case 'cancel':
        this.state = 'stopped';
        return [{ t: 'stopped', why: `your peer cancelled: ${m.reason || 'no reason given'}`, by: 'peer' }];
      case 'want': {
        this.sending(m.kind);
        const f = this.file(m.file);
        for (const b of m.blocks) {
          if (b >= f.blocks) bad('malformed', `want of block ${b} of a file of ${f.blocks}`);
          // Only what we already sent can be wanted again.
          if (b >= this.hashed[m.file]) bad('unexpected', `want of block ${b} before it was sent`);
          const key = `${m.file}/${b}`;
          if (this.wanting.has(key)) continue;
          this.wanting.add(key);
          this.wanted.push([m.file, b]);
        }
        return [];
      }
      case 'resume': {
        // Only an accepted transfer is resumed: its accept was lost.
        const accepted = this.state === 'offered' ? [{ t: 'accepted' }] : [];
        if (accepted.length) this.state = 'sending';
        this.skip.clear();
        this.wanted = [];
        this.wanting.clear();
        for (const { file, have } of m.files) {
          const f = this.file(file);
          const set = new Set();
          for (const [a, b] of have) {
            if (b > f.blocks) bad('malformed', `resume of blocks up to ${b} of a file of ${f.blocks}`);
            // Only what we already sent can be held.
            if (b > this.hashed[file]) bad('unexpected', `resume of blocks up to ${b} of file ${file} when ${this.hashed[file]} were sent`);
            for (let k = a; k < b; k++) set.add(k);
          }
          this.skip.set(file, set);
        }
        // Back to the first file not confirmed; held blocks are skipped.
        const first = this.files.findIndex((f) => f.got === null);
        this.cursor = { file: first < 0 ? this.files.length : first, block: 0 };
        // What went out on the old channel may not have arrived: announce
        // every digest (and whole digest) of unconfirmed files again. The
        // receiver takes a repeated digest only if it is the same.
        this.pendingHashes = [];
        for (let i = Math.max(first, 0); first >= 0 && i < this.files.length && this.hashed[i] > 0; i++) {
          if (this.files[i].got !== null) continue;
          this.digests[i].forEach((digest, block) => this.pendingHashes.push({ file: i, block, digest }));
        }
        const out = this.flushHashes();
        for (let i = Math.max(first, 0); first >= 0 && i < this.announceFrom; i++) {
          if (this.files[i].got === null) out.push({ t: 'send', msg: { kind: 'sent', id: this.id, file: i, sha256: this.sentWhole[i] } });
        }
        return [...accepted, ...out, { t: 'resumed' }];
      }
      case 'ack':
        this.sending(m.kind);
        if (m.bytes < this.windowAcked || m.bytes > this.started) bad('unexpected', `ack of ${m.bytes} bytes where ${this.windowAcked}..=${this.started} was possible`);
        this.windowAcked = m.bytes;
        this.windowFull = false;
        return [];
      case 'got': {
        this.sending(m.kind);
        const f = this.file(m.file);
        if (f.got !== null) bad('unexpected', `file ${m.file} confirmed twice`);
        if (!this.announced[m.file]) bad('unexpected', `file ${m.file} confirmed before it was sent`);
        f.got = m;
        if (!m.ok || m.sha256 !== this.sentWhole[m.file]) {
          this.state = 'stopped';
          return [{ t: 'stopped', why: `file ${m.file + 1} arrived damaged`, by: 'peer' }];
        }
        this.gotCount += 1;
        this.acked += f.size;
        const out = [{ t: 'fileConfirmed', file: m.file, sha256: m.sha256 }];
        if (this.gotCount === this.files.length) {
          this.state = 'done';
          out.push({ t: 'done' });
        }
        return out;
      }
      default:
        return bad('unexpected', `${m.kind} is not for the sending side`);
    }
  }

  sending(kind) {
    if (this.state !== 'sending') bad('unexpected', `${kind} in state ${this.state}`);
  }

  file(i) {
    const f = this.files[i];
    if (!f) bad('malformed', `file ${i} is not in the offer`);
    return f;
  }

  /**
   * A new data channel opened (the first, or one after a break). An offer
   * not yet answered goes again (its answer may have been lost); a cancel
   * of ours goes again. While sending, the receiver's `resume` leads.
   */
  onChannel() {
    this.started = 0;
    this.windowAcked = 0;
    this.windowFull = false;
    if (this.state === 'offered') return this.offer().map((msg) => ({ t: 'send', msg }));
    if (this.state === 'stopped' && this.stoppedBy === 'us') return [{ t: 'send', msg: { kind: 'cancel', id: this.id, reason: this.stopReason } }];
    return [];
  }

  /** We stop: the user cancelled, or something failed. */
  cancel(reason) {
    if (this.state === 'stopped' || this.state === 'done') return [];
    this.state = 'stopped';
    this.stoppedBy = 'us';
    this.stopReason = reason;
    return [{ t: 'send', msg: { kind: 'cancel', id: this.id, reason } }, { t: 'stopped', why: reason, by: 'us' }];
  }

  /**
   * The next block to read and send: { file, block, offset, length, first }
   * (`first`: never read before, so its digest and the whole-file hash need
   * it), or null when nothing is left for now.
   */
  next() {
    if (this.state !== 'sending') return null;
    while (this.wanted.length > 0) {
      const [file, block] = this.wanted[0];
      // A wanted block of a file since confirmed is dropped unsent.
      const b = this.files[file].got === null ? this.block(file, block) : null;
      if (b && !this.fits(b)) return null;
      this.wanted.shift();
      this.wanting.delete(`${file}/${block}`);
      if (b) return b;
    }
    for (;;) {
      const { file, block } = this.cursor;
      if (file >= this.files.length) return null;
      const f = this.files[file];
      if (f.blocks === 0 && this.sentWhole[file] === null) this.sentWhole[file] = EMPTY_SHA256;
      if (f.got !== null || block >= f.blocks) {
        this.cursor = { file: file + 1, block: 0 };
        continue;
      }
      if (this.skip.get(file)?.has(block)) {
        this.cursor = { file, block: block + 1 };
        continue;
      }
      const b = this.block(file, block);
      if (!this.fits(b)) return null;
      this.cursor = { file, block: block + 1 };
      return b;
    }
  }

  /** Whether block `b` fits in the window the receiver granted on this
   * channel; if so it counts as started. */
  fits(b) {
    if (this.started + b.length > this.windowAcked + WINDOW) {
      this.windowFull = true;
      return false;
    }
    this.windowFull = false;
    this.started += b.length;
    return true;
  }

  /** Whether next() may have a block now (the shell's pump loops on it). */
  sendable() {
    return this.state === 'sending' && !this.windowFull && !this.drained();
  }

  block(file, block) {
    const size = this.files[file].size;
    const offset = block * BLOCK;
    return { file, block, offset, length: Math.min(BLOCK, size - offset), first: block >= this.hashed[file] };
  }

  /** Each first-read block's digest, in order (the shell computes it). */
  digested(file, block, digest) {
    if (block !== this.hashed[file]) bad('internal', `block ${block} digested where ${this.hashed[file]} was due`);
    this.hashed[file] += 1;
    this.digests[file].push(digest);
    this.pendingHashes.push({ file, block, digest });
    return this.pendingHashes.length >= MAX_LIST / 4 ? this.flushHashes() : [];
  }

  /** The whole-file digest, once the shell hashed the file's last byte. */
  whole(file, sha256) {
    this.sentWhole[file] = sha256;
    return this.flushHashes();
  }

  /** Batched `hashes` (contiguous runs per file), then any `sent` due. */
  flushHashes() {
    const out = [];
    let run = null;
    const push = () => { if (run) out.push({ t: 'send', msg: { kind: 'hashes', id: this.id, file: run.file, first: run.first, sha256: run.digests } }); };
    for (const h of this.pendingHashes) {
      if (run && run.file === h.file && run.first + run.digests.length === h.block && run.digests.length < MAX_LIST) {
        run.digests.push(h.digest);
      } else {
        push();
        run = { file: h.file, first: h.block, digests: [h.digest] };
      }
    }
    push();
    this.pendingHashes = [];
    // Files are first read in order, so their `sent`s fall due in order.
    for (let i = this.announceFrom; i < this.files.length; i++) {
      if (this.sentWhole[i] === null || this.hashed[i] !== this.files[i].blocks) break;
      this.announced[i] = true;
      this.announceFrom = i + 1;
      out.push({ t: 'send', msg: { kind: 'sent', id: this.id, file: i, sha256: this.sentWhole[i] } });
    }
    return out;
  }

  /** Whether every byte went out and only confirmations are awaited. */
  drained() {
    return this.state === 'sending' && this.wanted.length === 0 && this.cursor.file >= this.files.length;
  }
}
