//! `tallow send` -> `tallow receive` across real NATs: network namespaces
//! built by the test (cli/tests/nat/topology.rs), each peer behind its own
//! nftables masquerade, tallow-server with its embedded STUN/TURN relay on
//! the "public" segment. Needs root (CI runs as root); fails, never skips,
//! without it.
//!
//! - symmetric (endpoint-dependent) NATs: the transfer succeeds through
//!   the relay (a selected pair goes through a relayed address, and the
//!   relay's counters carried at least the file);
//! - endpoint-independent NATs: it goes direct (server-reflexive or
//!   peer-reflexive candidates, no relay, and the relay carried less than a
//!   tenth of the file);
//! - the relay's path cut mid-transfer, long enough that the session must
//!   resume (see `CUT`): the transfer completes, SHA-256 compared, after
//!   a new ICE negotiation.

#[path = "nat/procs.rs"]
mod procs;
#[path = "nat/topology.rs"]
mod topology;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use procs::Proc;
use topology::{in_ns, nft, Nat, Topology};

/// Extra tallow-server flags every test here passes: the one place to
/// change the relay's settings for these tests. None: the relay keeps its
/// defaults, including the 12.5 MB/s per-allocation cap that stalled SCTP
/// on loopback (docs/notes/cli-webrtc.md); here a debug build moves well
/// under 1 MB/s through the relay, so the cap is not reached.
const SERVER_FLAGS: &[&str] = &[];

/// The server binary, built beside the `tallow` binary under test.
fn server_bin() -> PathBuf {
    let tallow = Path::new(env!("CARGO_BIN_EXE_tallow"));
    let server = tallow.with_file_name("tallow-server");
    assert!(
        server.exists(),
        "{} is missing: build it first (`cargo build -p tallow-signaling --bins`; CI runs \
         `cargo build --workspace --bins`)",
        server.display()
    );
    server
}

/// tallow-server in the public namespace: signaling on :8080 and the
/// embedded relay (STUN and TURN) on :3478 of the public address, which
/// is what it hands clients (the listen address is not a wildcard, so no
/// TURN_EXTERNAL_IP is needed: signaling/src/ice.rs).
fn start_server(t: &Topology) -> Proc {
    let mut cmd = in_ns(&t.public, server_bin().to_str().unwrap());
    cmd.args([
        "--listen",
        &format!("{}:8080", t.server_ip),
        "--turn-listen",
        &format!("{}:3478", t.server_ip),
    ])
    .args(SERVER_FLAGS)
    // The test's own environment must not reconfigure the server.
    .env_remove("TURN_ALLOW_LOOPBACK")
    .env_remove("TURN_ALLOW_PRIVATE")
    .env_remove("TURN_URLS")
    .env_remove("TURN_EXTERNAL_IP");
    let mut p = Proc::spawn("tallow-server", cmd);
    p.wait_for(Duration::from_secs(20), |out, err| {
        (out.contains("tallow-server listening") || err.contains("tallow-server listening"))
            .then_some(())
    });
    p
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(k: u8) -> Scratch {
        let d = std::env::temp_dir().join(format!("tallow-nat-{}-{k}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("out")).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `len` bytes that do not compress, in `dir/payload.bin`; their SHA-256.
fn payload(dir: &Path, len: usize) -> (PathBuf, String) {
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let p = dir.join("payload.bin");
    std::fs::write(&p, &data).unwrap();
    (p, hex::encode(Sha256::digest(&data)))
}

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// The CLI's `path: local=<type> <addr> remote=<type> <addr>` line.
#[derive(Debug)]
struct SelectedPath {
    local_type: String,
    local_addr: String,
    remote_type: String,
    remote_addr: String,
}

fn selected_path(stderr: &str) -> Option<SelectedPath> {
    // The last one: a resumed session reports its new connection's pair.
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("path: "))?;
    let (local, remote) = line.strip_prefix("local=")?.split_once(" remote=")?;
    let (local_type, local_addr) = local.split_once(' ')?;
    let (remote_type, remote_addr) = remote.split_once(' ')?;
    Some(SelectedPath {
        local_type: local_type.into(),
        local_addr: local_addr.into(),
        remote_type: remote_type.into(),
        remote_addr: remote_addr.into(),
    })
}

/// Whether `p`, one end's selected pair (`other` the other end's), goes
/// through a relayed address. One allocation is enough: the end behind it
/// sends from its relayed address; the other end sends from its host socket,
/// through its NAT, to that relayed address, which it may have learnt from a
/// check that came before the candidate was signalled: then its pair reads
/// host -> prflx, the prflx being the other end's relayed address.
fn through_relay(p: &SelectedPath, other: &SelectedPath) -> bool {
    p.local_type == "relay"
        || p.remote_type == "relay"
        || (p.remote_type == "prflx" && other.local_type == "relay")
}

fn ip_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(ip, _)| ip)
}

/// A `tallow` command run in namespace `ns`, from `lan_ip` (not
/// `--relay-only`: ICE picks the path).
fn tallow(ns: &str, url: &str, lan_ip: &str) -> std::process::Command {
    let mut c = in_ns(ns, env!("CARGO_BIN_EXE_tallow"));
    c.args(["--server", url, "--bind", &format!("{lan_ip}:0")])
        .env_remove("TALLOW_RELAY_ONLY")
        // Connection state changes on stderr, for a failure's dump.
        .env("TALLOW_DEBUG", "1");
    c
}

/// A running transfer: sender in LAN a, receiver in LAN b.
struct Transfer {
    send: Proc,
    recv: Proc,
    received: PathBuf,
    sha: String,
}

fn start_transfer(t: &Topology, dir: &Path, len: usize) -> Transfer {
    let url = format!("ws://{}:8080/signal", t.server_ip);
    let (src, sha) = payload(dir, len);
    let mut send = tallow(&t.a.ns, &url, &t.a.lan_ip);
    send.args(["send", src.to_str().unwrap()]);
    let mut send = Proc::spawn("sender", send);
    let code = send.wait_for(Duration::from_secs(20), |out, _| {
        out.lines()
            .find_map(|l| l.strip_prefix("code: "))
            .map(|c| c.trim().to_owned())
    });
    let out = dir.join("out");
    let mut recv = tallow(&t.b.ns, &url, &t.b.lan_ip);
    recv.args(["receive", &code, "--dir", out.to_str().unwrap(), "--yes"]);
    let recv = Proc::spawn("receiver", recv);
    Transfer {
        send,
        recv,
        received: out.join("payload.bin"),
        sha,
    }
}

impl Transfer {
    /// Waits (until `within`) for both ends to exit; asserts success and
    /// the received file's SHA-256 (and that both ends report it).
    /// On failure the message has both ends' output, how many bytes
    /// arrived and the relay's counters.
    fn finish(&mut self, t: &Topology, within: Duration) {
        let until = Instant::now() + within;
        let r = self.recv.wait_until(until);
        let s = self.send.wait_until(until);
        let dump = || {
            format!(
                "{}\n{}--- {} bytes received\n--- relay\n{}--- UDP drops\n{}",
                self.send.dump(),
                self.recv.dump(),
                std::fs::metadata(&self.received).map_or(0, |m| m.len()),
                relay_metrics(t),
                udp_errors(t)
            )
        };
        match (s, r) {
            (Some(s), Some(r)) => {
                assert!(
                    s.success() && r.success(),
                    "sender {s}, receiver {r}\n{}",
                    dump()
                )
            }
            _ => panic!("the transfer did not end within {within:?}\n{}", dump()),
        }
        assert_eq!(sha256_file(&self.received), self.sha, "{}", dump());
        assert!(self.recv.stdout().contains(&self.sha), "{}", dump());
        assert!(self.send.stdout().contains(&self.sha), "{}", dump());
    }

    /// Each end's selected pair (sender, receiver).
    fn paths(&self) -> (SelectedPath, SelectedPath) {
        let get = |p: &Proc| {
            selected_path(&p.stderr())
                .unwrap_or_else(|| panic!("{} printed no `path:` line\n{}", p.name, p.dump()))
        };
        (get(&self.send), get(&self.recv))
    }
}

#[test]
fn symmetric_nats_transfer_through_the_relay() {
    let t = Topology::build(1, Nat::EndpointDependent);
    let _server = start_server(&t);
    let dir = Scratch::new(1);
    let len = 8 * 1024 * 1024 + 4321;
    let mut x = start_transfer(&t, &dir.0, len);
    x.finish(&t, Duration::from_secs(90));
    let (s, r) = x.paths();
    eprintln!("sender path {s:?}\nreceiver path {r:?}");
    for (p, other) in [(&s, &r), (&r, &s)] {
        assert!(
            through_relay(p, other),
            "endpoint-dependent NATs on both sides leave only relayed pairs: {p:?} / {other:?}"
        );
        // Relayed addresses are the server's.
        for (ty, addr) in [
            (&p.local_type, &p.local_addr),
            (&p.remote_type, &p.remote_addr),
        ] {
            if ty == "relay" {
                assert_eq!(ip_of(addr), t.server_ip, "{p:?}");
            }
        }
    }
    // And the bytes did cross the relay: at least the file, each way being
    // counted once (client to peer, or peer to client, or both when both
    // ends hold an allocation).
    let relayed = relayed_bytes(&t);
    assert!(
        relayed >= len as u64,
        "{relayed} bytes relayed for a {len}-byte file\n{}",
        relay_metrics(&t)
    );
}

#[test]
fn endpoint_independent_nats_transfer_direct() {
    let t = Topology::build(2, Nat::EndpointIndependent);
    let _server = start_server(&t);
    let dir = Scratch::new(2);
    let len = 8 * 1024 * 1024 + 4321;
    let mut x = start_transfer(&t, &dir.0, len);
    x.finish(&t, Duration::from_secs(90));
    let (s, r) = x.paths();
    eprintln!("sender path {s:?}\nreceiver path {r:?}");
    for (p, peer, peer_wan) in [(&s, &r, &t.b.wan_ip), (&r, &s, &t.a.wan_ip)] {
        assert!(
            p.local_type != "relay" && p.remote_type != "relay",
            "not relayed: {p:?}"
        );
        // The peer is seen through its NAT: reflexive, not host (the LANs
        // cannot reach each other). webrtc-rs reports the local end by its
        // base, the host socket.
        assert!(
            ["srflx", "prflx"].contains(&p.remote_type.as_str()),
            "{p:?}"
        );
        // A signalled (srflx) candidate has its address in the report: the
        // peer's router's public address, on the port the peer's socket
        // has on its LAN (the mapping kept it, the same for the STUN server
        // and for this peer). One learnt from the peer's checks first
        // (prflx) has no address there (cli/src/rtc.rs).
        if p.remote_type == "srflx" {
            assert_eq!(ip_of(&p.remote_addr), peer_wan.as_str(), "{p:?}");
            assert_eq!(
                p.remote_addr.rsplit_once(':').map(|x| x.1),
                peer.local_addr.rsplit_once(':').map(|x| x.1),
                "{p:?} / {peer:?}"
            );
        }
    }
    // Only ICE's checks and keepalives may have gone through the relay.
    let relayed = relayed_bytes(&t);
    assert!(
        relayed < len as u64 / 10,
        "{relayed} bytes relayed for a {len}-byte file sent direct\n{}",
        relay_metrics(&t)
    );
}

/// The relay's counters (`tallow_turn_*` lines of the server's /metrics,
/// fetched with curl inside the public namespace).
fn relay_metrics(t: &Topology) -> String {
    let out = in_ns(&t.public, "curl")
        .args(["-sf", &format!("http://{}:8080/metrics", t.server_ip)])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("tallow_turn_"))
            .map(|l| format!("{l}\n"))
            .collect(),
        Ok(o) => format!("GET /metrics: {}\n", o.status),
        Err(e) => format!("curl (scripts/test.sh installs it): {e}\n"),
    }
}

/// Bytes the relay carried, both directions summed
/// (`tallow_turn_bytes_relayed_total`).
fn relayed_bytes(t: &Topology) -> u64 {
    let m = relay_metrics(t);
    let v: Vec<u64> = m
        .lines()
        .filter(|l| l.starts_with("tallow_turn_bytes_relayed_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .collect();
    assert_eq!(v.len(), 2, "both directions in the relay's metrics:\n{m}");
    v.iter().sum()
}

/// The kernel's UDP error counters in the server's and the peers'
/// namespaces (datagrams lost to full socket buffers are counted there,
/// not by the relay).
fn udp_errors(t: &Topology) -> String {
    let mut s = String::new();
    for ns in [&t.public, &t.a.ns, &t.b.ns] {
        let out = in_ns(ns, "nstat")
            .args(["-az", "UdpInErrors", "UdpRcvbufErrors", "UdpSndbufErrors"])
            .output();
        let text = out.map_or_else(
            |e| e.to_string(),
            |o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with("Udp"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        s.push_str(&format!("{ns}: {text}\n"));
    }
    s
}

/// `tallow_turn_allocations_created`: each ICE gathering through the relay
/// adds one per peer, so it grows when a new peer connection (or an ICE
/// restart) is negotiated.
fn allocations_created(t: &Topology) -> u64 {
    let m = relay_metrics(t);
    m.lines()
        .find_map(|l| {
            let (name, v) = l.split_once(' ')?;
            name.starts_with("tallow_turn_allocations_created")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no tallow_turn_allocations_created in /metrics:\n{m}"))
}

/// How long the relay's path is cut. Long enough that the session must
/// resume per docs/PROTOCOL.md "Resume" (a connection that "stays
/// disconnected for 4 s"): ICE reports disconnected after 5 s without a
/// packet (webrtc-rs's and Chrome's default), noticed at its next 2-s
/// keepalive check, plus those 4 s: 11 s at most, and a margin. A shorter
/// cut is ridden out by ICE and SCTP retransmission alone, without resume
/// (seen with 5 s and 12 s cuts while resume was a stub).
const CUT: Duration = Duration::from_secs(15);

#[test]
fn a_cut_relay_path_is_survived_by_resume() {
    let t = Topology::build(3, Nat::EndpointDependent);
    let _server = start_server(&t);
    let dir = Scratch::new(3);
    let len = 30 * 1024 * 1024;
    let mut x = start_transfer(&t, &dir.0, len);
    let out = dir.0.join("out");
    let before = wait_for_a_third(&mut x, &out, len);
    let (s, r) = x.paths();
    assert!(
        through_relay(&s, &r),
        "the path to cut is the relay's: {s:?} / {r:?}"
    );
    let allocations = allocations_created(&t);
    // Every UDP datagram to or from the server's namespace is dropped:
    // STUN, TURN and everything relayed. Signaling (TCP) stays up, as the
    // protocol's resume needs.
    cut_for_a_while(
        &t.public,
        "table ip cut {\n\
           chain inbound { type filter hook input priority -10; meta l4proto udp drop; }\n\
           chain outbound { type filter hook output priority -10; meta l4proto udp drop; }\n\
         }\n",
        &out,
        before,
    );
    x.finish(&t, Duration::from_secs(120));
    let (s2, r2) = x.paths();
    eprintln!("paths before the cut {s:?} / {r:?}; last reported {s2:?} / {r2:?}");
    assert!(
        allocations_created(&t) > allocations,
        "the transfer completed, but over the connection that was cut: no new ICE \
         negotiation after it (resume)\n{}\n{}",
        x.send.dump(),
        x.recv.dump()
    );
}

/// Waits until the receiver holds a third of `len` bytes (in its `.part`
/// file) and checks the file is not already whole: the cut comes mid-way.
fn wait_for_a_third(x: &mut Transfer, out: &Path, len: usize) -> u64 {
    let before = x.recv.wait_for(Duration::from_secs(90), |_, _| {
        let n = bytes_under(out);
        (n >= len as u64 / 3).then_some(n)
    });
    assert!(before < len as u64, "the file arrived before the cut");
    before
}

/// Applies `rules` (an nftables table named `cut`) in `ns` for `CUT`,
/// logging the receiver's bytes each second, then deletes the table.
fn cut_for_a_while(ns: &str, rules: &str, out: &Path, before: u64) {
    nft(ns, rules).unwrap();
    let mut during = Vec::new();
    for _ in 0..CUT.as_secs() {
        std::thread::sleep(Duration::from_secs(1));
        during.push(bytes_under(out));
    }
    nft(ns, "delete table ip cut\n").unwrap();
    eprintln!("received {before} bytes before the {CUT:?} cut, then each second: {during:?}");
}

/// Bytes under `dir` (the receiver writes `.part` files until each file is
/// verified, so the final name appears only at the end).
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => bytes_under(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

/// The direct path (endpoint-independent NATs) cut for longer than ICE
/// rides out: the session offers a new epoch once the path is back and the
/// transfer resumes on it, every block checked, the file whole.
#[test]
fn a_cut_direct_path_is_survived_by_resume() {
    let t = Topology::build(4, Nat::EndpointIndependent);
    let _server = start_server(&t);
    let dir = Scratch::new(4);
    let len = 30 * 1024 * 1024;
    let mut x = start_transfer(&t, &dir.0, len);
    let out = dir.0.join("out");
    let before = wait_for_a_third(&mut x, &out, len);
    let (s, r) = x.paths();
    assert!(
        s.local_type != "relay" && s.remote_type != "relay",
        "the path to cut is direct: {s:?} / {r:?}"
    );
    // Every UDP datagram through router A is dropped; signaling is TCP
    // and stays up, as resume needs.
    cut_for_a_while(
        &t.a.router,
        "table ip cut {\n\
           chain blocked { type filter hook forward priority -10; meta l4proto udp drop; }\n\
         }\n",
        &out,
        before,
    );
    x.finish(&t, Duration::from_secs(120));
    assert!(
        x.send.stderr().contains("offering epoch 2"),
        "the transfer completed, but not on a new connection: no resume\n{}",
        x.send.dump()
    );
}
