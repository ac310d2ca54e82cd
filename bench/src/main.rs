//! `signal-load`: load for the signaling benchmark (scripts/bench-signaling.sh).
//! Not a test. Two measurements against tallow-server or a PeerJS server:
//!
//! - `forward`: P pairs; in each, one peer sends to the other at an even
//!   rate, the message carrying its send time; the receiver records the
//!   latency. Prints delivered count and latency percentiles as JSON.
//! - `idle`: N connections opened and held, to weigh the server's memory per
//!   connection (the script reads its RSS).
//!
//! Every run is bounded by count and time and stops by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Target {
    Tallow,
    Peerjs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Forward,
    Idle,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    #[arg(long, value_enum)]
    mode: Mode,
    /// host:port of the server.
    #[arg(long)]
    addr: String,
    /// Pairs (forward mode).
    #[arg(long, default_value_t = 100)]
    pairs: usize,
    /// Messages per second over all pairs (forward mode).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds of sending (forward mode).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections (idle mode).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Seconds to hold idle connections once all are open.
    #[arg(long, default_value_t = 5)]
    hold: u64,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("connect {url}"))?;
    Ok(ws)
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no frame in 10 s")?
            .context("closed")??;
        if let Message::Text(t) = m {
            return Ok(serde_json::from_str(t.as_str())?);
        }
    }
}

async fn expect(ws: &mut Ws, ty: &str) -> anyhow::Result<Value> {
    let v = next_json(ws).await?;
    if v["type"] != ty {
        bail!("expected {ty}, got {v}");
    }
    Ok(v)
}

async fn send(ws: &mut Ws, v: Value) -> anyhow::Result<()> {
    ws.send(Message::Text(v.to_string().into())).await?;
    Ok(())
}

/// Connect one pair; returns (sender, receiver, first send seq).
async fn tallow_pair(addr: &str) -> anyhow::Result<(Ws, Ws, u64)> {
    let url = format!("ws://{addr}/signal");
    let mut a = open(&url).await?;
    expect(&mut a, "welcome").await?;
    send(&mut a, json!({"type": "create"})).await?;
    let created = expect(&mut a, "created").await?;
    let mut b = open(&url).await?;
    expect(&mut b, "welcome").await?;
    send(
        &mut b,
        json!({"type": "join", "nameplate": created["nameplate"]}),
    )
    .await?;
    expect(&mut b, "joined").await?;
    expect(&mut b, "paired").await?;
    expect(&mut a, "paired").await?;
    let sid = created["session"].as_str().unwrap_or_default();
    let (_, hello) = tallow_peer::Initiator::start(
        "1-bench-code-words",
        sid,
        &tallow_peer::Randomness::fresh(),
    )?;
    send(
        &mut a,
        json!({"type": "hello", "seq": 1, "body": hello.to_json()}),
    )
    .await?;
    expect(&mut a, "ack").await?;
    expect(&mut b, "message").await?;
    send(&mut b, json!({"type": "ack", "seq": 1})).await?;
    Ok((a, b, 2))
}

async fn peerjs_pair(addr: &str, i: usize) -> anyhow::Result<(Ws, Ws, u64)> {
    let url = |id: String| format!("ws://{addr}/peerjs?key=peerjs&id={id}&token=t{id}");
    let mut a = open(&url(format!("a{i}"))).await?;
    expect(&mut a, "OPEN").await?;
    let mut b = open(&url(format!("b{i}"))).await?;
    expect(&mut b, "OPEN").await?;
    Ok((a, b, 0))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn forward(args: &Args) -> anyhow::Result<Value> {
    let mut pairs = Vec::new();
    for i in 0..args.pairs {
        pairs.push(match args.target {
            Target::Tallow => tallow_pair(&args.addr).await?,
            Target::Peerjs => peerjs_pair(&args.addr, i).await?,
        });
    }
    let per_pair = (args.rate / args.pairs as u64).max(1);
    let count = per_pair * args.seconds;
    let interval = Duration::from_nanos(1_000_000_000 / per_pair);
    let origin = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(
        (count as usize) * args.pairs,
    )));
    let mut tasks = Vec::new();
    for (i, (mut a, mut b, first)) in pairs.into_iter().enumerate() {
        let target = args.target;
        let lat = latencies.clone();
        // Receiver: record latency of every message until all arrived or the
        // run's time is up.
        let deadline = origin + Duration::from_secs(args.seconds + 10);
        tasks.push(tokio::spawn(async move {
            let mut got = 0u64;
            let mut local = Vec::with_capacity(count as usize);
            while got < count {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(left, b.next()).await
                else {
                    break;
                };
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                let sent = match target {
                    Target::Tallow if v["type"] == "message" => {
                        let seq = v["seq"].as_u64().unwrap_or(0);
                        if seq.is_multiple_of(64) {
                            let _ = b
                                .send(Message::Text(
                                    json!({"type": "ack", "seq": seq}).to_string().into(),
                                ))
                                .await;
                        }
                        v["body"].as_str().and_then(|s| s.parse::<u64>().ok())
                    }
                    Target::Peerjs if v["type"] == "CANDIDATE" => v["payload"]["t"].as_u64(),
                    _ => None,
                };
                if let Some(sent) = sent {
                    let now = origin.elapsed().as_micros() as u64;
                    local.push(now.saturating_sub(sent));
                    got += 1;
                }
            }
            lat.lock().await.extend(local);
            drop(b);
        }));
        // Sender: evenly spaced, staggered across pairs.
        tasks.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now() + interval.mul_f64(i as f64 / 100.0 % 1.0);
            let mut tick = tokio::time::interval_at(start, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut reader = Vec::new();
            for k in 0..count {
                tick.tick().await;
                let t = origin.elapsed().as_micros() as u64;
                let frame = match target {
                    Target::Tallow => {
                        json!({"type": "send", "seq": first + k, "body": t.to_string()})
                    }
                    Target::Peerjs => {
                        json!({"type": "CANDIDATE", "dst": format!("b{i}"), "payload": {"t": t}})
                    }
                };
                if a.send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
                // Drain acks now and then so the socket does not back up.
                while let Some(Some(Ok(m))) = futures_util::FutureExt::now_or_never(a.next()) {
                    reader.push(m);
                    reader.clear();
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(a);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = Arc::try_unwrap(latencies)
        .map_err(|_| anyhow::anyhow!("tasks alive"))?
        .into_inner();
    lat.sort_unstable();
    let expected = count * args.pairs as u64;
    Ok(json!({
        "target": format!("{:?}", args.target).to_lowercase(),
        "pairs": args.pairs,
        "rate": args.rate,
        "seconds": args.seconds,
        "expected": expected,
        "delivered": lat.len(),
        "p50_us": percentile(&lat, 0.50),
        "p99_us": percentile(&lat, 0.99),
        "p999_us": percentile(&lat, 0.999),
        "max_us": lat.last().copied().unwrap_or(0),
    }))
}

async fn idle(args: &Args) -> anyhow::Result<Value> {
    let mut conns = Vec::with_capacity(args.connections);
    let started = Instant::now();
    for i in 0..args.connections {
        let ws = match args.target {
            Target::Tallow => {
                let mut ws = open(&format!("ws://{}/signal", args.addr)).await?;
                expect(&mut ws, "welcome").await?;
                ws
            }
            Target::Peerjs => {
                let mut ws = open(&format!(
                    "ws://{}/peerjs?key=peerjs&id=i{i}&token=t{i}",
                    args.addr
                ))
                .await?;
                expect(&mut ws, "OPEN").await?;
                ws
            }
        };
        conns.push(ws);
    }
    let open_secs = started.elapsed().as_secs_f64();
    // Tell the script the connections are up, then hold them.
    println!("{}", json!({"ready": conns.len()}));
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    Ok(json!({
        "target": format!("{:?}", args.target).to_lowercase(),
        "connections": conns.len(),
        "open_seconds": open_secs,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let out = match args.mode {
        Mode::Forward => forward(&args).await?,
        Mode::Idle => idle(&args).await?,
    };
    println!("{out}");
    Ok(())
}
