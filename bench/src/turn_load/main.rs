//! `turn-load`: a TURN load generator for the relay benchmark
//! (scripts/bench-relay-load.sh). Not a test.
//!
//! It speaks TURN over UDP itself: long-term credentials in the TURN REST
//! API form, Allocate (401, then authenticated), CreatePermission,
//! ChannelBind, ChannelData, Refresh keepalives on long runs and a release
//! at the end. Thousands of allocations (one socket each) send ChannelData
//! at a fixed offered packet rate for a fixed time, in `peer` mode (to an
//! echo peer the generator runs itself; the echo returns through the relay)
//! or `c2c` mode (pairs send to each other's relayed address). It prints
//! one JSON line: offered and achieved rates, sent, received, loss, latency
//! percentiles, its own CPU time and, given `--server-pid`, the server's
//! CPU time over the data phase and its RSS before and after setup.
//!
//! Every run is bounded: setup by `--setup-timeout`, the data phase by
//! `--duration` plus `--grace`, the release by a short deadline.

mod batch;
mod client;
mod echo;
mod probe;
mod procstat;
mod stun;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use serde_json::json;

use client::SetupLimits;
use worker::{DataPhase, Mode, Tally, Worker};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Peer,
    C2c,
}

#[derive(Debug, Parser)]
#[command(
    name = "turn-load",
    about = "TURN load generator (benchmark, not a test)"
)]
struct Args {
    /// The TURN server, UDP.
    #[arg(long)]
    server: SocketAddr,
    #[arg(long, value_enum, default_value_t = ModeArg::Peer)]
    mode: ModeArg,
    /// TURN REST API shared secret.
    #[arg(long)]
    secret: String,
    /// Username label prefix (each allocation gets `<expiry>:<user>-<i>`).
    #[arg(long, default_value = "load")]
    user: String,
    /// Allocations (even in c2c mode).
    #[arg(long, default_value_t = 1000)]
    allocs: u32,
    /// Offered packets per second from all clients together; 0 holds the
    /// allocations for the duration without sending.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds to wait for packets still in flight after the last send.
    #[arg(long, default_value_t = 1.0)]
    grace: f64,
    /// ChannelData payload bytes (at least 20).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Generator threads (each with its share of clients and its own echo
    /// peer); pin them with taskset.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// IP the echo peer binds (peer mode).
    #[arg(long, default_value = "127.0.0.1")]
    peer_ip: IpAddr,
    /// Keepalive period in seconds (Refresh, CreatePermission, ChannelBind).
    #[arg(long, default_value_t = 60.0)]
    refresh: f64,
    /// Setup transactions in flight per thread.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Seconds allowed for the whole setup.
    #[arg(long, default_value_t = 120.0)]
    setup_timeout: f64,
    /// The server's pid: its CPU time over the data phase and its RSS
    /// before and after setup go into the report.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Free text copied into the report.
    #[arg(long, default_value = "")]
    label: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mode = match args.mode {
        ModeArg::Peer => Mode::Peer,
        ModeArg::C2c => Mode::C2c,
    };
    if args.threads == 0 || args.allocs < args.threads {
        bail!("need at least one allocation per thread");
    }
    if mode == Mode::C2c && args.allocs % (2 * args.threads) != 0 {
        bail!(
            "c2c mode pairs allocations within a thread: allocs must be a multiple of 2 x threads"
        );
    }
    if args.size < probe::HEADER || args.size > 1400 {
        bail!("size must be within {}..=1400", probe::HEADER);
    }
    procstat::raise_open_files_limit(u64::from(args.allocs) + 64)?;

    let threads = args.threads as usize;
    let per = args.allocs / args.threads;
    let salt = std::process::id() ^ (stun::unix_now()? as u32);
    let limits = SetupLimits {
        window: args.window,
        rto: Duration::from_millis(500),
        tries: 6,
    };
    let setup_deadline = Instant::now() + Duration::from_secs_f64(args.setup_timeout);
    let ready = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let stopped = Arc::new(Barrier::new(threads + 1));
    let start = Arc::new(OnceLock::<Instant>::new());
    let failed = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));

    let t_setup = Instant::now();
    let rss_before = args.server_pid.map(procstat::rss_kb).transpose()?;
    let mut handles = Vec::new();
    for w in 0..args.threads {
        let (ready, go, stopped, start, failed, errors) = (
            ready.clone(),
            go.clone(),
            stopped.clone(),
            start.clone(),
            failed.clone(),
            errors.clone(),
        );
        let (server, secret, user, peer_ip) = (
            args.server,
            args.secret.clone(),
            args.user.clone(),
            args.peer_ip,
        );
        let data = move |start: Instant| DataPhase {
            start,
            rate: args.rate as f64 / f64::from(args.threads),
            duration: Duration::from_secs_f64(args.duration),
            grace: Duration::from_secs_f64(args.grace),
            size: args.size,
            refresh: Duration::from_secs_f64(args.refresh.max(0.1)),
        };
        handles.push(std::thread::spawn(move || -> (Option<Tally>, usize) {
            let fail = |e: anyhow::Error| {
                failed.store(true, Ordering::SeqCst);
                errors.lock().unwrap().push(format!("thread {w}: {e:#}"));
            };
            let mut worker =
                match Worker::new(server, mode, w * per, per, &secret, &user, peer_ip, salt) {
                    Ok(wk) => Some(wk),
                    Err(e) => {
                        fail(e);
                        None
                    }
                };
            if let Some(wk) = worker.as_mut() {
                if let Err(e) = wk.setup(limits, setup_deadline) {
                    fail(e);
                }
            }
            ready.wait();
            go.wait();
            let tally = match (worker.as_mut(), failed.load(Ordering::SeqCst)) {
                (Some(wk), false) => match wk.run(&data(*start.get().expect("start set"))) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        fail(e);
                        None
                    }
                },
                _ => None,
            };
            stopped.wait();
            let released = worker.as_mut().map_or(0, |wk| {
                let deadline = Instant::now() + Duration::from_secs(5);
                wk.release(limits, deadline).unwrap_or(0)
            });
            (tally, released)
        }));
    }

    ready.wait();
    let setup_s = t_setup.elapsed().as_secs_f64();
    let rss_ready = args.server_pid.map(procstat::rss_kb).transpose()?;
    if !failed.load(Ordering::SeqCst) {
        eprintln!(
            "turn-load: ready: {} allocations in {setup_s:.2} s",
            args.allocs
        );
    }
    let cpu0 = procstat::own_cpu_s()?;
    let srv0 = args.server_pid.map(procstat::cpu_s).transpose()?;
    let t0 = Instant::now() + Duration::from_millis(5);
    start.set(t0).expect("start set once");
    go.wait();
    stopped.wait();
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = procstat::own_cpu_s()?;
    let srv1 = args.server_pid.map(procstat::cpu_s).transpose()?;
    let rss_end = args.server_pid.map(procstat::rss_kb).transpose()?;

    let mut total = Tally::new()?;
    let mut released = 0;
    for h in handles {
        let (tally, rel) = h.join().map_err(|_| anyhow::anyhow!("worker panicked"))?;
        released += rel;
        if let Some(t) = tally {
            total.add(&t)?;
        }
    }
    let errors = errors.lock().unwrap().clone();
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }

    let lost = total.sent.saturating_sub(total.received);
    let pct = |q: f64| total.latency_ns.value_at_quantile(q) as f64 / 1e3;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let server_cpu = srv0.zip(srv1).map(|(a, b)| b - a);
    let report = json!({
        "tool": "turn-load",
        "label": args.label,
        "mode": match mode { Mode::Peer => "peer", Mode::C2c => "c2c" },
        "server": args.server.to_string(),
        "allocations": args.allocs,
        "threads": args.threads,
        "size": args.size,
        "offered_pps": args.rate,
        "duration_s": args.duration,
        "sent": total.sent,
        "send_failed": total.send_failed,
        "received": total.received,
        "lost": lost,
        "loss_pct": 100.0 * ratio(lost as f64, total.sent as f64),
        "sent_pps": ratio(total.sent as f64, args.duration),
        "delivered_pps": ratio(total.received as f64, args.duration),
        "latency": match mode { Mode::Peer => "round_trip", Mode::C2c => "one_way" },
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "max_us": total.latency_ns.max() as f64 / 1e3,
        "setup_s": setup_s,
        "wall_s": wall,
        "gen_cpu_s": cpu1 - cpu0,
        "gen_cpu_per_thread": ratio(cpu1 - cpu0, wall * f64::from(args.threads)),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_msg": server_cpu.map(|c| 1e6 * ratio(c, total.sent as f64)),
        "server_rss_kb_before": rss_before,
        "server_rss_kb_ready": rss_ready,
        "server_rss_kb_end": rss_end,
        "echo_dropped": total.echo_dropped,
        "refresh_ok": total.refresh_ok,
        "refresh_err": total.refresh_err,
        "released": released,
    });
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }
}
