// The receiving side of a transfer, as a state machine (docs/PROTOCOL.md,
// "Transfers"). It takes the sender's sealed messages, the data frames and
// the digests the shell computed, and returns actions for the shell:
//
//   { t: 'send', msg }                 a sealed message for the sender
//   { t: 'offer', offer }              the whole offer, to show the user
//   { t: 'write', file, offset, data } a whole block, to write at offset
//   { t: 'digest', file, block, data } SHA-256 this block, then blockDigest()
//   { t: 'readBack', file, from }      read the file from `from` and feed
//                                      readBack() then readBackDone()
//   { t: 'fileDone', file, ok, sha256 } the file is complete (ok) or bad
//   { t: 'done' } / { t: 'stopped', why, by }
//
// Memory: one block buffer being filled, and at most HELD verified or
// landed blocks (all files together) waiting for the whole-file hash; beyond that the hash
// reads those blocks back from the sink at the end. The sender's digests
// are kept only until their block is verified, at most AHEAD of them in
// all; verified blocks are counted, not listed, while they come in order.
// Pure; tested in test/transfer-machines.test.js and test/lying-peer.test.js.

import { sha256 } from '@noble/hashes/sha2.js';
import { ACK_EVERY, BLOCK, blocksOf, ControlError, MAX_OFFER_PATH_BYTES, MAX_RANGES, parseTransfer, WINDOW } from './control.js';
import { PathAllocator } from './paths.js';

export const HELD = 16;
/** Most digests of blocks not yet verified the sender may have given (an
 * honest one announces a block just before its frames). */
export const AHEAD = 4096;
const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');
const bad = (kind, message) => { throw new ControlError(kind, message); };
const enc = new TextEncoder();

class FileState {
  constructor(size) {
    this.size = size;
    this.blocks = blocksOf(size);
    // Sparse, filled as blocks arrive: an offer of huge files costs nothing
    // until its bytes do.
    this.theirs = new Map(); // block -> the sender's digest (hex), until verified
    this.ours = new Map(); // block -> our digest of what landed, until verified
    this.landing = new Set(); // blocks written whose digest the shell is computing
    this.verifiedTo = 0; // blocks below it are all verified
    this.verifiedAbove = new Set(); // verified blocks past verifiedTo
    this.nVerified = 0;
    this.held = new Map(); // block -> data, until the whole-file hash takes it
    this.hashedTo = 0; // blocks fed to the whole-file hash
    this.readBackFrom = null; // offset the whole-file hash must read back from
    this.current = null; // { block, buf, filled } being received
    this.sent = null; // sender's whole-file digest
    this.done = false;
    this.landed = 0; // bytes of verified or landed blocks, for progress
  }

  isVerified(b) {
    return b < this.verifiedTo || this.verifiedAbove.has(b);
  }

  markVerified(b) {
    this.nVerified += 1;
    if (b !== this.verifiedTo) {
      this.verifiedAbove.add(b);
      return;
    }
    this.verifiedTo += 1;
    while (this.verifiedAbove.delete(this.verifiedTo)) this.verifiedTo += 1;
  }

  blockLength(b) {
    return Math.min(BLOCK, this.size - b * BLOCK);
  }
}

export class Incoming {
  constructor({ createHasher = () => sha256.create() } = {}) {
    this.createHasher = createHasher;
    this.state = 'offering'; // -> offered -> receiving -> done | stopped
    this.id = null;
    this.parts = [];
    this.offer = null;
    this.files = [];
    this.hashers = new Map();
    this.doneFiles = 0;
    this.ahead = 0; // digests given for blocks not yet verified, all files
    // Memory, across files (a sender spread over many files gains
    // nothing): blocks held for the whole-file hash, and the one file
    // whose block is partly received.
    this.heldBlocks = 0;
    this.partial = null;
    // Flow control, per channel: file bytes of frames received, of those
    // the shell finished with, and the count our last `ack` carried.
    this.received = 0;
    this.finished = 0;
    this.ackSent = 0;
  }

  /** A sealed transfer message from the sender (already JSON). */
  onMessage(raw) {
    // Kept to answer even an offer that fails its checks with a cancel.
    if (this.id === null && typeof raw?.id === 'string' && /^[0-9a-f]{16}$/.test(raw.id)) this.replyId = raw.id;
    const m = parseTransfer(raw);
    if (this.id !== null && m.id !== this.id) bad('unexpected', `a message for transfer ${m.id} during ${this.id}`);
    if (this.state === 'stopped') return m.kind === 'files' ? this.onPart(m) : [];
    if (m.kind === 'cancel') {
      if (this.state === 'done') return [];
      return this.stop(`the sender cancelled: ${m.reason || 'no reason given'}`, 'peer');
    }
    if (this.state === 'done' && m.kind !== 'files') return this.gotAgain(m);
    switch (m.kind) {
      case 'files':
        return this.onPart(m);
      case 'hashes':
        return this.onHashes(m);
      case 'sent':
        return this.onSent(m);
      default:
        return bad('unexpected', `${m.kind} is not for the receiving side`);
    }
  }

  onPart(m) {
    if (this.state !== 'offering') {
      // The offer again, after a break: our answer may have been lost.
      if (m.part < m.parts - 1) return [];
      return this.answerAgain();
    }
    if (this.id === null) this.id = m.id;
    if (m.part === 0) {
      // Sent again from the start.
      this.parts = [];
      this.partFiles = 0;
      this.partNames = 0;
    }
    const first = this.parts[0];
    if (m.part !== this.parts.length) bad('unexpected', `offer part ${m.part} where ${this.parts.length} was due`);
    if (first && (m.parts !== first.parts || m.count !== first.count || m.total !== first.total)) bad('malformed', 'offer parts disagree on parts, count or total');
    // Counted as the parts come, so a lying offer is refused before the
    // page holds it whole.
    for (const f of m.files) this.partNames += enc.encode(f.path).length;
    if (this.partNames > MAX_OFFER_PATH_BYTES) bad('bad_name', `the offer's paths add up to more than ${MAX_OFFER_PATH_BYTES} bytes`);
    this.parts.push(m);
    this.partFiles += m.files.length;
    const files = this.partFiles;
    if (files > m.count) bad('malformed', `the offer lists more than its ${m.count} files`);
    if (m.part < m.parts - 1) return [];
    if (files !== m.count) bad('malformed', `the offer lists ${files} files, not ${m.count}`);
    const all = this.parts.flatMap((p) => p.files);
    const total = all.reduce((n, f) => n + f.size, 0);
    if (total !== m.total) bad('bad_size', `the files add up to ${total} bytes, not ${m.total}`);
    const paths = new PathAllocator();
    this.offer = { id: m.id, count: m.count, total, files: all.map((f) => ({ parts: paths.place(f.path), size: f.size })) };
    this.files = all.map((f) => new FileState(f.size));
    this.parts = [];
    this.state = 'offered';
    return [{ t: 'offer', offer: this.offer }];
  }

  answerAgain() {
    if (this.state === 'receiving' || this.state === 'done') return [{ t: 'send', msg: { kind: 'accept', id: this.id } }];
    if (this.state === 'stopped' && this.stoppedBy === 'us') return [{ t: 'send', msg: this.finalWord }];
    return [];
  }

  /** The user's answer. */
  accept() {
    if (this.state !== 'offered') bad('unexpected', `accept in state ${this.state}`);
    this.state = 'receiving';
    const out = [{ t: 'send', msg: { kind: 'accept', id: this.id } }];
    // Empty files need no bytes: each is complete once its `sent` arrives.
    return out;
  }

  decline() {
    if (this.state !== 'offered') bad('unexpected', `decline in state ${this.state}`);
    this.state = 'stopped';
    this.stoppedBy = 'us';
    this.finalWord = { kind: 'decline', id: this.id };
    return [{ t: 'send', msg: this.finalWord }, { t: 'stopped', why: 'you declined', by: 'us' }];
  }

  /** We stop (the user cancelled, or a check failed): tell the sender. */
  cancel(reason) {
    if (this.state === 'stopped' || this.state === 'done') return [];
    const id = this.id ?? this.replyId;
    if (!id) return this.stop(reason, 'us');
    this.finalWord = { kind: 'cancel', id, reason };
    return [{ t: 'send', msg: this.finalWord }, ...this.stop(reason, 'us')];
  }

  stop(why, by) {
    this.state = 'stopped';
    this.stoppedBy = by;
    for (const f of this.files) {
      f.held.clear();
      f.current = null;
    }
    this.heldBlocks = 0;
    this.partial = null;
    return [{ t: 'stopped', why, by }];
  }

  file(i) {
    const f = this.files[i];
    if (!f) bad('bad_frame', `file ${i} is not in the offer of ${this.files.length}`);
    return f;
  }

  onHashes(m) {
    if (this.state !== 'receiving') bad('unexpected', `hashes in state ${this.state}`);
    const f = this.file(m.file);
    if (m.first + m.sha256.length > f.blocks) bad('malformed', `hashes for blocks ${m.first}..${m.first + m.sha256.length} of a file of ${f.blocks}`);
    const out = [];
    m.sha256.forEach((d, k) => {
      const b = m.first + k;
      // Given again after a break: a verified block needs it no more.
      if (f.isVerified(b)) return;
      // A digest once given stays: a sender that changes it is lying.
      if (f.theirs.has(b)) {
        if (f.theirs.get(b) !== d) bad('malformed', `block ${b} of file ${m.file} was given two digests`);
      } else {
        if (this.ahead >= AHEAD) bad('unexpected', `digests of more than ${AHEAD} blocks that have not arrived`);
        f.theirs.set(b, d);
        this.ahead += 1;
      }
      out.push(...this.check(m.file, b));
    });
    return out;
  }

  /** After a break the sender announces unconfirmed files again: a file
   * we completed gets its `got` again (the first may have been lost). */
  gotAgain(m) {
    const f = this.files[m.file];
    if (m.kind !== 'sent' || !f?.done) return [];
    return [{ t: 'send', msg: { kind: 'got', id: this.id, file: m.file, ok: true, sha256: f.sha256 } }];
  }

  onSent(m) {
    if (this.state !== 'receiving') bad('unexpected', `sent in state ${this.state}`);
    const f = this.file(m.file);
    if (f.done) return this.gotAgain(m);
    if (f.sent !== null && f.sent !== m.sha256) bad('malformed', `file ${m.file} was given two digests`);
    // Every digest of a file goes out before its `sent`, on the same
    // ordered channel: a block without one was never going to come.
    if (f.nVerified + f.theirs.size < f.blocks) {
      let missing = 0;
      while (f.isVerified(missing) || f.theirs.has(missing)) missing += 1;
      bad('size_short', `the sender finished file ${m.file + 1} after ${Math.min(f.size, missing * BLOCK)} of the ${f.size} bytes it announced`);
    }
    f.sent = m.sha256;
    return this.finishFile(m.file);
  }

  /** A data frame ({ file, offset, data } from decodeFrame). */
  onData({ file, offset, data }) {
    if (this.state !== 'receiving') {
      if (this.state === 'stopped' || this.state === 'done') return [];
      bad('unexpected_data', `data in state ${this.state}`);
    }
    this.received += data.length;
    if (this.received > this.ackSent + WINDOW) bad('unexpected_data', `the sender went ${this.received - this.ackSent} bytes past our last ack, over the window of ${WINDOW}`);
    const f = this.file(file);
    if (offset + data.length > f.size) bad('size_exceeded', `bytes ${offset}..${offset + data.length} of file ${file} of ${f.size}`);
    const b = Math.floor(offset / BLOCK);
    const start = b * BLOCK;
    if (offset + data.length > start + f.blockLength(b)) bad('bad_frame', 'a data frame crosses a block boundary');
    // Resent after a resume: we have it. A block that landed stays as it
    // landed until its digest is compared (a mismatch asks for it again):
    // taking another copy meanwhile would put on disk bytes other than
    // those verified.
    if (f.done || f.isVerified(b) || f.landing.has(b) || f.ours.has(b)) return [];
    if (offset === start) {
      // One block at a time is partly received (an honest sender sends
      // each block's frames together): starting one abandons any other.
      if (this.partial !== null && this.partial !== file) this.files[this.partial].current = null;
      this.partial = file;
      f.current = { block: b, buf: new Uint8Array(f.blockLength(b)), filled: 0 };
    } else if (!f.current || f.current.block !== b || start + f.current.filled !== offset) {
      bad('bad_frame', `bytes at ${offset} of file ${file} do not continue block ${b}`);
    }
    const c = f.current;
    c.buf.set(data, c.filled);
    c.filled += data.length;
    if (c.filled < c.buf.length) return [];
    f.current = null;
    this.partial = null;
    f.landing.add(b);
    return [{ t: 'write', file, offset: start, data: c.buf }, { t: 'digest', file, block: b, data: c.buf }];
  }

  /** Our SHA-256 of a block that landed (the shell computed it). */
  blockDigest(file, block, digest, data) {
    if (this.state !== 'receiving') return [];
    const f = this.file(file);
    f.landing.delete(block);
    if (f.isVerified(block)) return [];
    if (!f.ours.has(block)) f.landed += f.blockLength(block);
    f.ours.set(block, digest);
    if (data && f.held.has(block)) f.held.set(block, data);
    else if (data && this.heldBlocks < HELD && block >= f.hashedTo && f.readBackFrom === null) {
      f.held.set(block, data);
      this.heldBlocks += 1;
    }
    return this.check(file, block);
  }

  check(file, b) {
    const f = this.files[file];
    if (!f.ours.has(b) || !f.theirs.has(b) || f.isVerified(b)) return [];
    if (f.ours.get(b) !== f.theirs.get(b)) {
      // Caught at once: only this block comes again.
      f.ours.delete(b);
      f.landed -= f.blockLength(b);
      if (f.held.delete(b)) this.heldBlocks -= 1;
      return [{ t: 'send', msg: { kind: 'want', id: this.id, file, blocks: [b] } }];
    }
    f.markVerified(b);
    f.ours.delete(b);
    f.theirs.delete(b);
    this.ahead -= 1;
    this.feedHash(file);
    return this.finishFile(file);
  }

  feedHash(file) {
    const f = this.files[file];
    let h = this.hashers.get(file);
    if (!h) {
      h = this.createHasher();
      this.hashers.set(file, h);
    }
    while (f.readBackFrom === null && f.hashedTo < f.blocks && f.isVerified(f.hashedTo)) {
      const data = f.held.get(f.hashedTo);
      if (!data) {
        f.readBackFrom = f.hashedTo * BLOCK; // the rest comes from the sink
        break;
      }
      h.update(data);
      f.held.delete(f.hashedTo);
      this.heldBlocks -= 1;
      f.hashedTo += 1;
    }
  }

  finishFile(file) {
    const f = this.files[file];
    if (f.done || f.finishing || f.sent === null || f.nVerified < f.blocks) return [];
    if (f.readBackFrom !== null) {
      if (f.readingBack) return [];
      f.readingBack = true;
      return [{ t: 'readBack', file, from: f.readBackFrom }];
    }
    return this.complete(file);
  }

  /** Bytes of the file read back from the sink, in order from `from`. */
  readBack(file, data) {
    const h = this.hashers.get(file) ?? this.createHasher();
    this.hashers.set(file, h);
    h.update(data);
  }

  readBackDone(file) {
    const f = this.file(file);
    f.readBackFrom = null;
    f.hashedTo = f.blocks;
    return this.complete(file);
  }

  complete(file) {
    const f = this.files[file];
    const h = this.hashers.get(file) ?? this.createHasher();
    this.hashers.delete(file);
    const d = h.digest();
    // A hasher in a worker answers later: the shell calls finish() then.
    if (typeof d?.then === 'function') {
      f.finishing = true;
      return [{ t: 'wholeDigest', file, digest: d }];
    }
    return this.finish(file, typeof d === 'string' ? d : hex(d));
  }

  /** The file's whole SHA-256 as we computed it. */
  finish(file, ours) {
    const f = this.files[file];
    if (f.done || this.state !== 'receiving') return [];
    const ok = ours === f.sent;
    f.done = true;
    f.sha256 = ours;
    this.heldBlocks -= f.held.size;
    f.held.clear();
    this.doneFiles += 1;
    const out = [
      { t: 'send', msg: { kind: 'got', id: this.id, file, ok, sha256: ours } },
      { t: 'fileDone', file, ok, sha256: ours },
    ];
    if (!ok) return [...out, { t: 'send', msg: { kind: 'cancel', id: this.id, reason: `file ${file} arrived damaged` } }, ...this.stop(`file ${file + 1} arrived damaged (its SHA-256 does not match)`, 'us')];
    if (this.doneFiles === this.files.length) {
      this.state = 'done';
      out.push({ t: 'done' });
    }
    return out;
  }

  /** A new data channel opened: a cancel or decline of ours goes again;
   * while receiving, `resume` tells the sender what we hold. */
  /** The shell is finished with a frame of `bytes` file bytes (written
   * out, or ignored): every ACK_EVERY of them, the sender hears so. */
  consumed(bytes) {
    this.finished += bytes;
    if (this.state !== 'receiving' || this.finished - this.ackSent < ACK_EVERY) return [];
    this.ackSent = this.finished;
    return [{ t: 'send', msg: { kind: 'ack', id: this.id, bytes: this.finished } }];
  }

  onChannel() {
    this.received = 0;
    this.finished = 0;
    this.ackSent = 0;
    if (this.state === 'stopped' && this.stoppedBy === 'us' && this.finalWord) return [{ t: 'send', msg: this.finalWord }];
    if (this.state === 'offering') this.parts = [];
    return this.resume();
  }

  /** What we hold, for the sender to skip. A block half received is
   * dropped; it comes again whole. */
  resume() {
    if (this.state !== 'receiving') return [];
    const files = [];
    this.partial = null;
    this.files.forEach((f, i) => {
      f.current = null;
      if (f.done || files.length >= MAX_RANGES) return;
      const have = f.verifiedTo > 0 ? [[0, f.verifiedTo]] : [];
      const held = [...f.verifiedAbove, ...f.ours.keys(), ...f.landing].sort((x, y) => x - y);
      for (const b of held) {
        const last = have[have.length - 1];
        if (last && last[1] >= b + 1) continue;
        if (last && last[1] === b) last[1] = b + 1;
        else if (have.length < MAX_RANGES) have.push([b, b + 1]);
        else break;
      }
      if (have.length > 0) files.push({ file: i, have });
    });
    return [{ t: 'send', msg: { kind: 'resume', id: this.id, files } }];
  }

  progress() {
    let done = 0;
    this.files.forEach((f) => { done += f.done ? f.size : f.landed; });
    return { done, total: this.offer?.total ?? 0, files: this.doneFiles, count: this.files.length };
  }
}
