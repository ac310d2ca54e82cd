//! Network namespaces for one NAT test: two LANs, each behind its own
//! router namespace doing NAT with nftables masquerade, and a "public"
//! segment (a bridge in the server's namespace) that the routers' WAN sides
//! and the server share.
//!
//! ```text
//!  a (10.K.1.2) --lan-- rA [masquerade] (203.0.113.16K+2) --+
//!                                                           br (203.0.113.16K+1): pub, tallow-server
//!  b (10.K.2.2) --lan-- rB [masquerade] (203.0.113.16K+3) --+
//! ```
//!
//! The public segment uses TEST-NET-3 (RFC 5737) addresses: they are public
//! unicast to the relay's peer policy (relay/src/peer_policy.rs), as a real
//! deployment's peers are, so the relay runs with its default deny list
//! (no TURN_ALLOW_LOOPBACK / TURN_ALLOW_PRIVATE). The LANs are RFC 1918,
//! which the relay refuses as peers, as it would on the internet. Every
//! namespace is isolated, so tests running in parallel cannot see each
//! other's addresses; K (the test's index) still gives each test its own
//! subnets, and names carry the process id and K.

use std::process::{Command, Output};

/// How a router maps a LAN socket to its public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// `masquerade`: the source port is kept, so one LAN socket has one
    /// public address and port whatever the destination (endpoint-
    /// independent mapping). Filtering is still conntrack's: only replies
    /// to what went out come in.
    EndpointIndependent,
    /// `masquerade fully-random`: every new destination gets a random
    /// public port (endpoint-dependent, "symmetric" NAT), so the mapping a
    /// STUN server sees is useless to the peer.
    EndpointDependent,
}

/// One side's addresses.
pub struct Side {
    /// The peer's namespace.
    pub ns: String,
    /// The peer's address on its LAN.
    pub lan_ip: String,
    /// Its router's namespace.
    pub router: String,
    /// The router's public (WAN) address: what the world sees.
    pub wan_ip: String,
}

/// The namespaces; dropping it deletes them (and with them every veth and
/// rule), also when the test panics.
pub struct Topology {
    pub public: String,
    pub server_ip: String,
    pub a: Side,
    pub b: Side,
    /// Namespaces created so far, deleted in reverse on drop.
    created: Vec<String>,
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("{shown}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip netns exec NS PROGRAM ARGS...` (the program replaces `ip`, so the
/// child's pid is the program's).
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

impl Topology {
    /// Builds the namespaces for test `k` (1..=13, unique per test in the
    /// file) with `nat` on both routers. Panics with what to fix when the
    /// machine cannot (not root, no netns, no nft): CI runs as root with
    /// nftables installed, so a skip would hide a broken test.
    pub fn build(k: u8, nat: Nat) -> Topology {
        assert!(
            (1..=13).contains(&k),
            "k={k}: subnets are laid out for 1..=13"
        );
        for tool in ["ip", "nft"] {
            let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .any(|d| std::path::Path::new(d).join(tool).exists());
            assert!(
                found,
                "the NAT tests need `{tool}` (Debian packages iproute2 and nftables; scripts/test.sh installs them)"
            );
        }
        remove_stale();
        let pid = std::process::id();
        let tag = format!("tn{pid}k{k}");
        let net = |host: u8| format!("203.0.113.{}", 16 * k + host);
        let mut t = Topology {
            public: format!("{tag}pub"),
            server_ip: net(1),
            a: Side {
                ns: format!("{tag}a"),
                lan_ip: format!("10.{k}.1.2"),
                router: format!("{tag}ra"),
                wan_ip: net(2),
            },
            b: Side {
                ns: format!("{tag}b"),
                lan_ip: format!("10.{k}.2.2"),
                router: format!("{tag}rb"),
                wan_ip: net(3),
            },
            created: Vec::new(),
        };
        if let Err(e) = t.setup(pid, k, nat) {
            panic!(
                "building the NAT test's network namespaces failed (these tests need root and \
                 network namespaces, as CI has): {e}"
            );
        }
        t
    }

    fn setup(&mut self, pid: u32, k: u8, nat: Nat) -> Result<(), String> {
        for ns in [
            &self.public,
            &self.a.router,
            &self.b.router,
            &self.a.ns,
            &self.b.ns,
        ] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
            self.created.push(ns.clone());
            run(in_ns(ns, "ip").args(["link", "set", "lo", "up"]))?;
        }
        // Interface names: at most 15 bytes, unique per process and test
        // although each lives in its own namespace.
        let short = pid % 1_000_000;
        let ifname = |role: &str| format!("v{short}{k}{role}");
        let bridge = ifname("br");
        let p = &self.public;
        run(in_ns(p, "ip").args(["link", "add", &bridge, "type", "bridge"]))?;
        run(in_ns(p, "ip").args([
            "addr",
            "add",
            &format!("{}/28", self.server_ip),
            "dev",
            &bridge,
        ]))?;
        run(in_ns(p, "ip").args(["link", "set", &bridge, "up"]))?;

        let mode = match nat {
            Nat::EndpointIndependent => "masquerade",
            Nat::EndpointDependent => "masquerade fully-random",
        };
        for (side, s, net) in [("a", &self.a, 1), ("b", &self.b, 2)] {
            let wan = ifname(&format!("{side}w"));
            let port = ifname(&format!("{side}p"));
            let lan = ifname(&format!("{side}l"));
            let eth = ifname(&format!("{side}e"));
            // WAN: router <-> a port of the public bridge.
            run(Command::new("ip").args([
                "link", "add", &wan, "netns", &s.router, "type", "veth", "peer", "name", &port,
                "netns", p,
            ]))?;
            run(in_ns(p, "ip").args(["link", "set", &port, "master", &bridge, "up"]))?;
            run(in_ns(&s.router, "ip").args([
                "addr",
                "add",
                &format!("{}/28", s.wan_ip),
                "dev",
                &wan,
            ]))?;
            run(in_ns(&s.router, "ip").args(["link", "set", &wan, "up"]))?;
            run(in_ns(&s.router, "ip").args(["route", "add", "default", "via", &self.server_ip]))?;
            // LAN: router <-> peer.
            run(Command::new("ip").args([
                "link", "add", &lan, "netns", &s.router, "type", "veth", "peer", "name", &eth,
                "netns", &s.ns,
            ]))?;
            let gw = format!("10.{k}.{net}.1");
            run(in_ns(&s.router, "ip").args(["addr", "add", &format!("{gw}/24"), "dev", &lan]))?;
            run(in_ns(&s.router, "ip").args(["link", "set", &lan, "up"]))?;
            run(in_ns(&s.ns, "ip").args([
                "addr",
                "add",
                &format!("{}/24", s.lan_ip),
                "dev",
                &eth,
            ]))?;
            run(in_ns(&s.ns, "ip").args(["link", "set", &eth, "up"]))?;
            run(in_ns(&s.ns, "ip").args(["route", "add", "default", "via", &gw]))?;
            run(in_ns(&s.router, "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
            // The NAT, and a home router's firewall: the LAN may go out,
            // only conntrack's replies come in. Unsolicited datagrams to
            // the router itself are dropped too, before conntrack confirms
            // an entry for them: otherwise a peer's first check, arriving
            // before this side's own packet went out, holds the public
            // port as a connection to the router, masquerade must pick
            // another port for the LAN's packet, and hole punching through
            // even a port-preserving NAT fails.
            let rules = format!(
                "table ip nat {{\n\
                   chain post {{ type nat hook postrouting priority srcnat; policy accept;\n\
                     oifname \"{wan}\" {mode}\n\
                   }}\n\
                 }}\n\
                 table ip home {{\n\
                   chain guard {{ type filter hook forward priority filter; policy drop;\n\
                     iifname \"{lan}\" oifname \"{wan}\" accept\n\
                     ct state established,related accept\n\
                   }}\n\
                   chain wall {{ type filter hook input priority filter; policy accept;\n\
                     iifname \"{wan}\" ct state new drop\n\
                   }}\n\
                 }}\n"
            );
            nft(&s.router, &rules)?;
        }
        Ok(())
    }
}

/// Loads an nftables ruleset (`nft -f -`) into namespace `ns`.
pub fn nft(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = in_ns(ns, "nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns} refused\n{rules}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Namespaces (and the processes in them) left by a test process that was
/// killed before its guards ran (a nextest timeout sends SIGKILL): named
/// `tn<pid>k...` with no process `<pid>` alive.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some((pid, _)) = name.strip_prefix("tn").and_then(|r| r.split_once('k')) else {
            continue;
        };
        if pid.is_empty()
            || !pid.bytes().all(|b| b.is_ascii_digit())
            || std::path::Path::new("/proc").join(pid).exists()
        {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", p]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
