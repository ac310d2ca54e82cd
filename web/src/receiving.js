// The receiver's shell around ./incoming.js: opens the sink the user
// chose (./sink.js), writes each block as it completes, hashes it with
// WebCrypto, and sends the machine's messages on the current link
// (./link.js). All disk and hash work runs in one queue, in arrival order,
// so a block is on disk before the file that holds it is closed or read
// back.

import { ControlError, decodeFrame } from './control.js';
import { Incoming } from './incoming.js';
import { createHasher } from './hashing.js';
import { openSink } from './sink.js';

export const STALL_MS = 30_000;
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');

export class Receiver {
  /** on(event, detail): 'offer', 'progress', 'file', 'done', 'stopped'. */
  constructor({ on, stallMs = STALL_MS }) {
    this.machine = new Incoming({ createHasher });
    this.link = null;
    this.on = on;
    this.sink = null;
    this.queue = Promise.resolve();
    this.complete = new Set();
    this.failed = false;
    this.lastActivity = Date.now();
    this.busy = 0; // queued disk and hash steps not yet finished
    this.lastProgress = Date.now(); // when one last finished, or read on
    // A sender that goes silent on a working channel is caught; during a
    // break the reconnect has its own limit.
    this.stallTimer = setInterval(() => {
      if (this.machine.state !== 'receiving') {
        if (['done', 'stopped'].includes(this.machine.state)) clearInterval(this.stallTimer);
        return;
      }
      // Our own disk and hash work, while it moves, is not the sender's
      // silence: reading a big file back to hash it can take minutes, and
      // meanwhile the sender waits for us. A disk that stops moving is
      // caught by this limit once its work stops counting.
      if (this.busy > 0 && Date.now() - this.lastProgress < stallMs) this.lastActivity = Date.now();
      if (this.link?.open && Date.now() - this.lastActivity > stallMs) {
        this.fail(new ControlError('stalled', `nothing arrived from the sender for ${stallMs / 1000} s`));
      }
    }, Math.min(1000, stallMs / 3));
  }

  get offer() { return this.machine.offer; }
  get state() { return this.machine.state; }

  onMessage(m) {
    this.lastActivity = Date.now();
    this.run(() => this.machine.onMessage(m));
  }

  onFrame(buf) {
    this.lastActivity = Date.now();
    if (this.failed) return;
    let frame;
    this.run(() => this.machine.onData(frame = decodeFrame(buf)));
    if (!frame) return;
    // Once the disk work this frame caused is done, its bytes count
    // toward the next `ack` (flow control); a frame of a channel since
    // replaced counts for nothing on the new one.
    const link = this.link;
    const bytes = frame.data.length;
    this.later(async () => { if (this.link === link) this.run(() => this.machine.consumed(bytes)); });
  }

  /** The user accepted: from their click, so a picker may open. */
  async accept(prefer) {
    this.sink = await openSink(this.machine.id, this.machine.offer.files, prefer);
    this.lastActivity = Date.now();
    this.run(() => this.machine.accept());
  }

  decline() {
    this.run(() => this.machine.decline());
  }

  cancel(reason) {
    this.run(() => this.machine.cancel(reason));
  }

  /** The link to answer on; a new one after a break (a lost cancel goes
   * again; while receiving, `resume` tells the sender what we hold). */
  setLink(link, { afterBreak = false } = {}) {
    this.link = link;
    this.lastActivity = Date.now();
    if (afterBreak) this.run(() => this.machine.onChannel());
  }

  /** Runs a machine step and its actions now; disk work goes in the queue. */
  run(step) {
    let actions;
    try {
      actions = step();
    } catch (e) {
      this.fail(e);
      return;
    }
    this.act(actions);
  }

  fail(e) {
    if (this.failed) return;
    this.failed = true;
    this.failure = e;
    const reason = e?.kind ? `${e.kind}: ${e.message}` : `this browser could not save the files: ${e?.message ?? e}`;
    let actions = [];
    try { actions = this.machine.cancel(reason); } catch { /* already stopped */ }
    this.act(actions);
  }

  act(actions) {
    for (const a of actions) {
      switch (a.t) {
        case 'send': this.link?.control(a.msg); break;
        case 'offer': this.on('offer', a.offer); break;
        case 'write': {
          const { file, offset, data } = a;
          this.later(() => this.sink.write(file, offset, data));
          break;
        }
        case 'digest': {
          const { file, block, data } = a;
          this.later(async () => {
            const d = hex(await crypto.subtle.digest('SHA-256', data));
            this.run(() => this.machine.blockDigest(file, block, d, data));
            this.on('progress', { file });
          });
          break;
        }
        case 'readBack': {
          const { file, from } = a;
          this.later(async () => {
            for await (const chunk of this.sink.read(file, from)) {
              this.machine.readBack(file, chunk);
              this.lastProgress = Date.now();
            }
            this.run(() => this.machine.readBackDone(file));
          });
          break;
        }
        case 'wholeDigest': {
          const { file, digest } = a;
          this.later(async () => {
            const d = await digest;
            this.run(() => this.machine.finish(file, d));
          });
          break;
        }
        case 'fileDone': {
          const { file, ok, sha256 } = a;
          this.later(async () => {
            if (ok) {
              await this.sink.close(file);
              this.complete.add(file);
            }
            this.on('file', { file, ok, sha256 });
          });
          break;
        }
        case 'done': this.later(async () => this.on('done')); break;
        case 'stopped': {
          const why = a;
          // Said after the disk work before it, so that files it finished
          // are reported first; but a disk that hangs must not keep the
          // page from hearing it: after 2 s it is said anyway.
          let said = false;
          const say = () => {
            if (said) return;
            said = true;
            this.on('stopped', { ...why, error: this.failure ?? null });
          };
          const late = setTimeout(say, 2000);
          this.later(async () => {
            await this.sink?.abort(this.complete);
            clearTimeout(late);
            say();
          }, true);
          break;
        }
        default: break;
      }
    }
  }

  /** Queues disk work; an error stops the transfer (unless stopping). */
  later(fn, always = false) {
    this.busy += 1;
    this.queue = this.queue.then(() => (this.failed && !always ? undefined : fn())).catch((e) => this.fail(e)).finally(() => {
      this.busy -= 1;
      this.lastProgress = Date.now();
    });
  }
}
