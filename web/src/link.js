// One peer connection's data channel, carrying sealed records
// (./records.js): control messages as JSON, data frames as bytes. A new
// peer connection after a break brings a new link with a new key.

import { drained } from './progress.js';
import { CONTROL, DATA, RecordError, Records } from './records.js';
import { ControlError } from './control.js';

export const HIGH_WATER = 8 * 1024 * 1024;
export const LOW_WATER = 2 * 1024 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export class Link {
  /**
   * channel: an open RTCDataChannel (binaryType arraybuffer); dk: the data
   * key of this connection; role 'A' or 'B'. onControl(msg) and
   * onData(bytes) get what opened, in order; onError(e) a record that did
   * not open or did not parse (the link is then closed).
   */
  constructor(channel, dk, role, { onControl, onData, onError }) {
    this.channel = channel;
    this.records = new Records(dk, role);
    this.broken = false;
    channel.onmessage = (e) => {
      if (this.broken) return;
      if (typeof e.data === 'string') {
        this.error(new RecordError('a text frame on a channel of sealed records'));
        return;
      }
      this.records.open(e.data).then(({ type, data }) => {
        if (this.broken) return;
        if (type === DATA) {
          onData(data);
          return;
        }
        let msg;
        try {
          msg = JSON.parse(dec.decode(data));
        } catch (err) {
          throw new ControlError('malformed', `a control record is not JSON: ${err.message}`);
        }
        onControl(msg);
      }).catch((err) => this.error(err));
    };
    this.onError = onError;
  }

  get open() {
    return !this.broken && this.channel.readyState === 'open';
  }

  error(e) {
    if (this.broken) return;
    this.broken = true;
    this.onError(e);
  }

  send(type, bytes) {
    return this.records.seal(type, bytes, (rec) => {
      if (this.channel.readyState !== 'open') throw Object.assign(new Error('the channel closed'), { linkClosed: true });
      this.channel.send(rec);
    });
  }

  /** Seals and sends a control message; a closed link drops it (the
   * transfer machines say again what matters on the next link). */
  control(msg) {
    this.send(CONTROL, enc.encode(JSON.stringify(msg))).catch(() => {});
  }

  /** Seals and sends a data frame; rejects if the channel is gone. */
  data(frame) {
    return this.send(DATA, frame);
  }

  /** Resolves once the channel is below its high-water mark. */
  async ready() {
    if (this.channel.bufferedAmount > HIGH_WATER) await drained(this.channel, LOW_WATER);
  }

  close() {
    this.broken = true;
    try { this.channel.close(); } catch { /* gone */ }
  }
}
