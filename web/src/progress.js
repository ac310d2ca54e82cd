// Progress with speed and time left, and waiting for a data channel to
// drain. Pure timing helpers; no DOM.

export const STALL_MS = 30_000;

export class StallError extends Error {
  constructor(message) {
    super(message);
    this.name = 'StallError';
    this.kind = 'stalled';
  }
}

/** Progress reporting: bytes done, rate over the last seconds, time left. */
export class Progress {
  constructor(total, report) {
    this.total = total;
    this.report = report;
    this.started = performance.now();
    this.samples = [[this.started, 0]];
    this.lastReport = 0;
    this.rate = 0;
  }

  update(done, force = false) {
    const now = performance.now();
    if (!force && now - this.lastReport < 100) return;
    this.lastReport = now;
    this.samples.push([now, done]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 3000) this.samples.shift();
    const [t0, d0] = this.samples[0];
    const rate = now > t0 ? ((done - d0) * 1000) / (now - t0) : 0;
    const left = rate > 0 ? (this.total - done) / rate : Infinity;
    this.rate = rate;
    this.report({ done, total: this.total, rate, secondsLeft: left });
  }
}

const lost = () => Object.assign(new Error('the connection to your peer was lost'), { linkClosed: true });

/**
 * Resolves once the channel has drained to `level` bytes or below; rejects
 * if it closes, or with a StallError if nothing drains for `stallMs`.
 */
export function drained(channel, level, stallMs = STALL_MS) {
  return new Promise((resolve, reject) => {
    let last = channel.bufferedAmount;
    let since = performance.now();
    const check = () => {
      if (channel.readyState !== 'open') return done(lost());
      if (channel.bufferedAmount <= level) return done();
      if (channel.bufferedAmount !== last) {
        last = channel.bufferedAmount;
        since = performance.now();
      } else if (performance.now() - since > stallMs) {
        return done(new StallError(`nothing could be sent for ${Math.round(stallMs / 1000)} s`));
      }
      return undefined;
    };
    const timer = setInterval(check, 250);
    const onLow = () => check();
    const onClose = () => check();
    channel.bufferedAmountLowThreshold = level;
    channel.addEventListener('bufferedamountlow', onLow);
    channel.addEventListener('close', onClose);
    function done(err) {
      clearInterval(timer);
      channel.removeEventListener('bufferedamountlow', onLow);
      channel.removeEventListener('close', onClose);
      if (err) reject(err);
      else resolve();
    }
    check();
  });
}
