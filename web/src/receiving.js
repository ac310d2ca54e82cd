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
  constructor({ on }) {
    this.machine = new Incoming({ createHasher });
    this.link = null;
    this.on = on;
    this.sink = null;
    this.queue = Promise.resolve();
    this.complete = new Set();
    this.failed = false;
    this.lastActivity = Date.now();
    // A sender that goes silent on a working channel is caught; during a
    // break the reconnect has its own limit.
    this.stallTimer = setInterval(() => {
      if (this.machine.state !== 'receiving') {
        if (['done', 'stopped'].includes(this.machine.state)) clearInterval(this.stallTimer);
        return;
      }
      if (this.link?.open && Date.now() - this.lastActivity > STALL_MS) {
        this.fail(new ControlError('stalled', `nothing arrived from the sender for ${STALL_MS / 1000} s`));
      }
    }, 1000);
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
            for await (const chunk of this.sink.read(file, from)) this.machine.readBack(file, chunk);
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
          this.later(async () => {
            await this.sink?.abort(this.complete);
            this.on('stopped', { ...why, error: this.failure ?? null });
          }, true);
          break;
        }
        default: break;
      }
    }
  }

  /** Queues disk work; an error stops the transfer (unless stopping). */
  later(fn, always = false) {
    this.queue = this.queue.then(() => (this.failed && !always ? undefined : fn())).catch((e) => this.fail(e));
  }
}
