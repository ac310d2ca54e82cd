// The sender's shell around ./outgoing.js: reads blocks with File.slice
// (never the whole file), hashes them (WebCrypto per block, the whole file
// incrementally on the first read) and sends control messages and data
// frames as sealed records on the current link (./link.js), with
// backpressure. The link is replaced after a break (a new peer
// connection); the pump then waits for the receiver's `resume`.

import { createHasher } from './hashing.js';
import { encodeFrame, MAX_PAYLOAD } from './control.js';
import { Outgoing } from './outgoing.js';

const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
const FLUSH_MS = 200;
// How long a working channel may go without a word from the receiver or
// a byte drained before we give up on it (the receiver has the same limit
// for the sender's data).
export const STALL_MS = 30_000;
const READBACK_BYTES_PER_MS = 50_000; // a slow disk: 50 MB/s

export class Sender {
  /**
   * files: [{ file: File, path }]; on(event, detail) reports 'accepted',
   * 'progress', 'confirmed', 'done', 'stopped'.
   */
  constructor(id, files, { on, stallMs = STALL_MS }) {
    this.blobs = files.map((f) => f.file);
    this.machine = new Outgoing(id, files.map((f) => ({ path: f.path, size: f.file.size })));
    this.on = on;
    this.link = null;
    this.pumping = false;
    this.waitingResume = false;
    this.hashers = files.map(() => null);
    this.bytesSent = 0; // every payload byte put on a channel, resends included
    this.firstBytes = 0; // bytes of blocks sent for the first time (progress)
    this.fileBytes = files.map(() => 0); // the same, per file
    this.flushTimer = null;
    this.stallMs = stallMs;
    this.lastActivity = Date.now();
    this.lastBuffered = -1;
  }

  get id() { return this.machine.id; }
  get total() { return this.machine.total; }

  /** The link to send on: at the start, and a new one after a break
   * (sending then waits for `resume`; an unanswered offer goes again). */
  setLink(link) {
    const first = this.link === null;
    this.link = link;
    this.lastActivity = Date.now();
    if (first) {
      for (const m of this.machine.offer()) link.control(m);
      return;
    }
    if (this.machine.state === 'sending') this.waitingResume = true;
    this.act(this.machine.onChannel());
  }

  onMessage(m) {
    this.lastActivity = Date.now();
    this.act(this.machine.onMessage(m));
    if (m.kind === 'resume') this.waitingResume = false;
    this.kick();
  }

  cancel(reason) {
    this.act(this.machine.cancel(reason));
  }

  act(actions) {
    for (const a of actions) {
      switch (a.t) {
        case 'send': this.link?.control(a.msg); break;
        case 'accepted':
          this.lastActivity = Date.now();
          this.flushTimer = setInterval(() => { this.act(this.machine.flushHashes()); this.watch(); }, FLUSH_MS);
          this.on('accepted');
          break;
        case 'fileConfirmed': this.on('confirmed', a); break;
        case 'done': this.finish(); this.on('done'); break;
        case 'stopped': this.finish(); this.on('stopped', a); break;
        default: break;
      }
    }
  }

  /**
   * Everything went out (or the window is full, or a new link waits for
   * the receiver's `resume`) and the receiver says nothing: a page that hung, or a peer that never
   * confirms, would hold this one forever. A channel still draining is not
   * silence; no link at all is the reconnect's business, with its own limit.
   */
  watch() {
    const now = Date.now();
    const buffered = this.link?.channel?.bufferedAmount ?? 0;
    if (buffered !== this.lastBuffered || this.pumping) {
      this.lastBuffered = buffered;
      this.lastActivity = now;
    }
    if (!this.link?.open || !(this.machine.drained() || this.waitingResume || this.machine.windowFull)) return;
    if (now - this.lastActivity <= this.stallMs) return;
    // The receiver may be reading a file back to hash it (blocks that came
    // out of order), which holds up its acks too: it gets time for every
    // file whose `sent` went out and that it has not confirmed (after the
    // last block, for all it has not confirmed).
    const m = this.machine;
    let reading = 0;
    if (m.drained()) reading = this.total - m.acked;
    else m.files.forEach((f, i) => { if (m.announced[i] && f.got === null) reading += f.size; });
    const allowance = this.stallMs + reading / READBACK_BYTES_PER_MS;
    if (now - this.lastActivity > allowance) {
      this.cancel(`stalled: the receiver said nothing for ${Math.round(allowance / 100) / 10} s`);
    }
  }

  finish() {
    clearInterval(this.flushTimer);
    this.flushTimer = null;
  }

  kick() {
    if (this.pumping || this.waitingResume || this.machine.state !== 'sending') return;
    this.pumping = true;
    const link = this.link;
    this.pump().catch((e) => {
      if (link.open && !e.linkClosed) {
        this.cancel(`could not send: ${e.message}`);
        return;
      }
      // The channel closed mid-block: nothing more goes until the next
      // link's `resume` says where to start (a block taken from the
      // machine and not sent is sent then).
      if (this.link === link) this.waitingResume = true;
    }).finally(() => {
      this.pumping = false;
      // Something may have arrived meanwhile (a want, a resume).
      if (!this.waitingResume && this.machine.sendable()) queueMicrotask(() => this.kick());
    });
  }

  read(b) {
    return b && this.blobs[b.file].slice(b.offset, b.offset + b.length).arrayBuffer().then((buf) => new Uint8Array(buf));
  }

  async pump() {
    const link = this.link;
    let b = this.machine.next();
    let reading = this.read(b);
    while (b) {
      const data = await reading;
      // A new link (and its `resume`) may have come while we read: the
      // next block is then the new channel's pump's to take, not ours.
      if (this.link !== link || this.machine.state !== 'sending') throw Object.assign(new Error('the link changed'), { linkClosed: true });
      if (data.length !== b.length) throw new Error(`${this.blobs[b.file].name} changed while it was being sent`);
      const next = this.machine.next();
      reading = this.read(next); // read ahead while this block goes out
      if (b.first) {
        this.act(this.machine.digested(b.file, b.block, hex(await crypto.subtle.digest('SHA-256', data))));
        const h = (this.hashers[b.file] ??= createHasher());
        h.update(data);
        if (b.block === this.machine.files[b.file].blocks - 1) {
          this.hashers[b.file] = null;
          // The `sent` waits for the worker; the frames need not.
          const file = b.file;
          h.digest().then((d) => this.act(this.machine.whole(file, d)));
        }
      }
      await link.ready(); // below the channel's high-water mark
      if (this.link !== link || this.machine.state !== 'sending') throw Object.assign(new Error('the link changed'), { linkClosed: true });
      const sent = [];
      for (let o = 0; o < data.length; o += MAX_PAYLOAD) {
        const chunk = data.subarray(o, o + MAX_PAYLOAD);
        sent.push(link.data(encodeFrame(b.file, b.offset + o, chunk)));
        this.bytesSent += chunk.length;
      }
      await Promise.all(sent); // sealed and handed to the channel
      if (b.first) {
        this.firstBytes += b.length;
        this.fileBytes[b.file] += b.length;
      }
      this.on('progress', { file: b.file });
      b = next;
    }
    this.act(this.machine.flushHashes());
  }
}
