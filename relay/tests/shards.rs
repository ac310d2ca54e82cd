//! The relay across shards (TURN_THREADS), against the real binary over
//! real UDP sockets: allocations spread over shards, allocations on
//! different shards reach each other, both quotas hold across shards, and a
//! 100,000-message run through several shards loses and reorders nothing.
//!
//! Which shard holds an allocation is read from its relayed port: the relay
//! splits TURN_PORT_RANGE between shards by port pairs (relay/src/shard.rs).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{code, free_port, relay, udp, Client, Proc, SECRET};
use stun_codec::rfc5766::attributes::{Lifetime, XorPeerAddress, XorRelayAddress};
use stun_codec::rfc5766::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};
use tallow_relay::codec::{self, Attr, ChannelNumber, Packet};

const SHARDS: usize = 4;
const CHANNEL: u16 = 0x4000;

/// A relay of SHARDS shards over its own `ports`-wide range, with metrics.
struct Relay {
    _proc: Proc,
    addr: SocketAddr,
    metrics: SocketAddr,
    low: u16,
}

impl Relay {
    fn start(ports: u16, env: &[(&str, &str)]) -> Relay {
        let metrics_port = free_port();
        // A range of its own per test process, clear of common::relay's.
        let low = 20000 + (std::process::id() % 40) as u16 * 500;
        let range = format!("{low}-{}", low + ports - 1);
        let metrics = format!("127.0.0.1:{metrics_port}");
        let threads = SHARDS.to_string();
        let mut all = vec![
            ("TURN_THREADS", threads.as_str()),
            ("TURN_PORT_RANGE", range.as_str()),
            ("TURN_METRICS_LISTEN", metrics.as_str()),
        ];
        all.extend_from_slice(env);
        let (proc, addr) = relay(&all);
        Relay {
            _proc: proc,
            addr,
            metrics: metrics.parse().unwrap(),
            low,
        }
    }

    /// The shard owning a relayed address.
    fn shard_of(&self, relayed: SocketAddr) -> usize {
        usize::from((relayed.port() - self.low) / 2) % SHARDS
    }

    fn scrape(&self) -> String {
        // The metrics server starts just after the relay: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match TcpStream::connect(self.metrics) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("metrics: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of the series starting `name` (with labels, if any).
    fn metric(&self, text: &str, series: &str) -> i64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// The relayed-packet counters once they reach `want` each (a shard adds
    /// its per-packet counts once per batch, possibly just after the last
    /// packet left), read again for at most 5 s.
    fn relayed_packets_reach(&self, want: i64) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.scrape();
            let counts: Vec<i64> = ["client_to_peer", "peer_to_client"]
                .iter()
                .map(|dir| {
                    let series =
                        format!("tallow_turn_packets_relayed_total{{direction=\"{dir}\"}}");
                    self.metric(&text, &series)
                })
                .collect();
            if counts == [want, want] || Instant::now() > deadline {
                assert_eq!(counts, [want, want], "packets relayed each way");
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shard_gauges(&self) -> Vec<i64> {
        let text = self.scrape();
        (0..SHARDS)
            .map(|i| {
                self.metric(
                    &text,
                    &format!("tallow_turn_shard_allocations{{shard=\"{i}\"}}"),
                )
            })
            .collect()
    }
}

fn allocate(c: &mut Client) -> Result<SocketAddr, u16> {
    let resp = c.request(ALLOCATE, &[udp()]);
    match resp.get_attribute::<XorRelayAddress>() {
        Some(r) => Ok(r.address()),
        None => Err(code(&resp).unwrap_or(0)),
    }
}

fn release(c: &mut Client) {
    let zero: Attr = Lifetime::new(Duration::ZERO).unwrap().into();
    assert_eq!(code(&c.request(REFRESH, &[zero])), None);
}

/// Clients, one socket each, with the shard their 5-tuple lands on
/// (learned by allocating under their own name, then released).
fn clients_by_shard(relay: &Relay, n: usize) -> Vec<(Client, usize)> {
    (0..n)
        .map(|i| {
            let mut c = Client::new(relay.addr, &format!("probe{i}"), SECRET);
            let relayed = allocate(&mut c).expect("allocation");
            release(&mut c);
            let shard = relay.shard_of(relayed);
            (c, shard)
        })
        .collect()
}

/// Permit `peer` and bind CHANNEL to it.
fn bind(c: &mut Client, peer: SocketAddr) {
    let p: Attr = XorPeerAddress::new(peer).into();
    assert_eq!(
        code(&c.request(CREATE_PERMISSION, std::slice::from_ref(&p))),
        None
    );
    let ch: Attr = ChannelNumber(CHANNEL).into();
    assert_eq!(code(&c.request(CHANNEL_BIND, &[ch, p])), None);
}

#[test]
fn allocations_spread_over_every_shard() {
    let relay = Relay::start(1000, &[]);
    // 64 sources over 4 shards: the kernel's hash leaves one empty with
    // odds about 4 * (3/4)^64, below 1e-7.
    let mut clients: Vec<Client> = (0..64)
        .map(|i| Client::new(relay.addr, &format!("c{i}"), SECRET))
        .collect();
    let mut by_ports = [0i64; SHARDS];
    for c in &mut clients {
        by_ports[relay.shard_of(allocate(c).expect("allocation"))] += 1;
    }
    let gauges = relay.shard_gauges();
    assert_eq!(gauges, by_ports, "per-shard gauge against relayed ports");
    assert!(gauges.iter().all(|&n| n > 0), "{gauges:?}");
    let text = relay.scrape();
    assert_eq!(relay.metric(&text, "tallow_turn_allocations"), 64);
}

#[test]
fn allocations_on_different_shards_exchange_data() {
    // Loopback peers refused: only the in-process path between two
    // allocations of this relay can carry these packets.
    let relay = Relay::start(200, &[("TURN_ALLOW_LOOPBACK", "false")]);
    let mut pool = clients_by_shard(&relay, 16);
    let (mut a, sa) = pool.remove(0);
    let at = pool
        .iter()
        .position(|(_, s)| *s != sa)
        .expect("a client on another shard");
    let (mut b, sb) = pool.remove(at);
    let ra = allocate(&mut a).unwrap();
    let rb = allocate(&mut b).unwrap();
    assert_eq!((relay.shard_of(ra), relay.shard_of(rb)), (sa, sb));
    assert_ne!(sa, sb);
    bind(&mut a, rb);
    bind(&mut b, ra);
    let mut buf = [0u8; 2048];
    let mut frame = Vec::new();
    for (from, to, what) in [(&a, &b, &b"a to b"[..]), (&b, &a, &b"b to a"[..])] {
        codec::write_channel_data(&mut frame, CHANNEL, what, false);
        from.sock.send_to(&frame, relay.addr).unwrap();
        let (n, _) = to.sock.recv_from(&mut buf).expect("relayed data");
        assert_eq!(
            codec::classify(&buf[..n]),
            Packet::ChannelData {
                channel: CHANNEL,
                data: what
            }
        );
    }
    relay.relayed_packets_reach(2);
}

/// Clients on `k` distinct shards (one each), from a pool.
fn on_distinct_shards(pool: Vec<(Client, usize)>, k: usize) -> Vec<(Client, usize)> {
    let mut seen = BTreeSet::new();
    let picked: Vec<_> = pool.into_iter().filter(|(_, s)| seen.insert(*s)).collect();
    assert!(picked.len() >= k, "clients on only {} shards", picked.len());
    picked.into_iter().take(k).collect()
}

#[test]
fn the_per_user_quota_holds_across_shards() {
    let relay = Relay::start(200, &[("TURN_USER_QUOTA", "2")]);
    let mut picked = on_distinct_shards(clients_by_shard(&relay, 24), 4);
    // One user on four shards: two allocations, on two shards; the next
    // two shards refuse with 486 although they hold nothing for it.
    let alice = Client::new(relay.addr, "alice", SECRET);
    for (c, _) in &mut picked {
        c.username = alice.username.clone();
        c.password = alice.password.clone();
    }
    let results: Vec<_> = picked
        .iter_mut()
        .map(|(c, _)| allocate(c).map(drop))
        .collect();
    assert_eq!(results, [Ok(()), Ok(()), Err(486), Err(486)]);
    assert_eq!(relay.shard_gauges().iter().sum::<i64>(), 2);
    // Freed on one shard, the room is there on another.
    release(&mut picked[0].0);
    assert_eq!(allocate(&mut picked[2].0).map(drop), Ok(()));
    let text = relay.scrape();
    assert_eq!(relay.metric(&text, "tallow_turn_quota_refusals_total"), 2);
}

#[test]
fn the_total_quota_holds_across_shards() {
    let relay = Relay::start(200, &[("TURN_TOTAL_QUOTA", "3")]);
    let mut picked = on_distinct_shards(clients_by_shard(&relay, 24), 4);
    let results: Vec<_> = picked
        .iter_mut()
        .map(|(c, _)| allocate(c).map(drop))
        .collect();
    assert_eq!(results, [Ok(()), Ok(()), Ok(()), Err(486)]);
    assert_eq!(relay.shard_gauges().iter().filter(|&&n| n == 1).count(), 3);
    release(&mut picked[1].0);
    assert_eq!(allocate(&mut picked[3].0).map(drop), Ok(()));
    let text = relay.scrape();
    assert_eq!(relay.metric(&text, "tallow_turn_max_allocations"), 3);
}

/// 100,000 sequence-numbered messages over 8 flows (4 client pairs, both
/// ways), pairs chosen across shards: every message arrives, in order, on
/// its channel. A window of messages in flight per flow keeps socket buffers
/// from overflowing (loss there would be the test's, not the relay's);
/// bounded by a deadline and a stall check.
#[test]
fn a_hundred_thousand_messages_through_several_shards_lose_and_reorder_nothing() {
    const TOTAL: u64 = 100_000;
    const WINDOW: u64 = 32;
    const SIZE: usize = 200;
    let relay = Relay::start(400, &[("TURN_MAX_BYTES_PER_SEC", "0")]);
    let mut pool = clients_by_shard(&relay, 32);
    // Four pairs, each across two shards where possible.
    let mut pairs = Vec::new();
    while pairs.len() < 4 {
        let (a, sa) = pool.remove(0);
        let at = pool.iter().position(|(_, s)| *s != sa).unwrap_or(0);
        let (b, sb) = pool.remove(at);
        pairs.push(((a, sa), (b, sb)));
    }
    let shards_used: BTreeSet<usize> = pairs.iter().flat_map(|(a, b)| [a.1, b.1]).collect();
    assert!(shards_used.len() >= 2, "{shards_used:?}");
    let mut ends = Vec::new();
    for ((mut a, _), (mut b, _)) in pairs {
        let ra = allocate(&mut a).unwrap();
        let rb = allocate(&mut b).unwrap();
        bind(&mut a, rb);
        bind(&mut b, ra);
        ends.push(a);
        ends.push(b);
    }
    for c in &ends {
        // Room for the whole window several times over.
        let s = socket2::SockRef::from(&c.sock);
        let _ = s.set_recv_buffer_size(1 << 20);
        c.sock.set_nonblocking(true).unwrap();
    }
    // Flow f: from ends[f] to its partner ends[f ^ 1].
    let flows = ends.len();
    let per_flow = TOTAL / flows as u64;
    let mut sent = vec![0u64; flows];
    let mut got = vec![0u64; flows];
    let mut frame = Vec::with_capacity(SIZE + 4);
    let mut payload = vec![0u8; SIZE];
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_progress = Instant::now();
    while got.iter().sum::<u64>() < TOTAL {
        let now = Instant::now();
        assert!(now < deadline, "deadline: got {got:?} of {per_flow} each");
        assert!(
            now - last_progress < Duration::from_secs(5),
            "stalled: sent {sent:?}, got {got:?}: messages lost"
        );
        for f in 0..flows {
            while sent[f] < per_flow && sent[f] - got[f] < WINDOW {
                payload[..8].copy_from_slice(&sent[f].to_be_bytes());
                payload[8] = f as u8;
                codec::write_channel_data(&mut frame, CHANNEL, &payload, false);
                ends[f].sock.send_to(&frame, relay.addr).unwrap();
                sent[f] += 1;
            }
        }
        let mut progressed = false;
        for (r, end) in ends.iter().enumerate() {
            loop {
                let n = match end.sock.recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv: {e}"),
                };
                let Packet::ChannelData { channel, data } = codec::classify(&buf[..n]) else {
                    panic!("not ChannelData: {:?}", &buf[..n.min(32)]);
                };
                assert_eq!((channel, data.len()), (CHANNEL, SIZE));
                let f = usize::from(data[8]);
                assert_eq!(f, r ^ 1, "flow {f} arrived at end {r}");
                let seq = u64::from_be_bytes(data[..8].try_into().unwrap());
                assert_eq!(seq, got[f], "flow {f}: lost or reordered");
                got[f] += 1;
                progressed = true;
            }
        }
        if progressed {
            last_progress = Instant::now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    assert_eq!(got, vec![per_flow; flows]);
    let text = relay.relayed_packets_reach((per_flow * flows as u64) as i64);
    for reason in ["shard_queue_full", "send_failed"] {
        let series = format!("tallow_turn_dropped_packets_total{{reason=\"{reason}\"}}");
        assert_eq!(relay.metric(&text, &series), 0);
    }
}
