//! tallow-relay driven by clients nobody here wrote: coturn's
//! turnutils_stunclient and turnutils_uclient, with turnutils_peer as the
//! echo peer, over UDP and TCP, with TURN REST API credentials.

mod common;

use std::time::Duration;

use common::{echo_peer, output_text, relay, run_tool, totals, SECRET};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn stunclient_learns_its_reflexive_address() {
    let (_relay, addr) = relay(&[]);
    let port = addr.port().to_string();
    let out = run_tool("turnutils_stunclient", &["-p", &port, "127.0.0.1"], LIMIT);
    let text = output_text(&out);
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

fn uclient_round_trip(extra: &[&str], clients: u64, msgs: u64) {
    let (_relay, addr) = relay(&[]);
    let (_peer, peer_port) = echo_peer();
    let (port, peer_port) = (addr.port().to_string(), peer_port.to_string());
    let (m, n) = (clients.to_string(), msgs.to_string());
    let mut args = vec!["-c", "-W", SECRET, "-e", "127.0.0.1", "-r", &peer_port];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-p",
        &port,
        "-m",
        &m,
        "-n",
        &n,
        "-l",
        "180",
        "-z",
        "2",
        "127.0.0.1",
    ]);
    let out = run_tool("turnutils_uclient", &args, LIMIT);
    let (sent, recv) = totals(&out).unwrap_or_else(|| panic!("no summary:\n{}", output_text(&out)));
    assert_eq!(sent, clients * msgs, "{}", output_text(&out));
    assert_eq!(
        recv,
        sent,
        "every message comes back\n{}",
        output_text(&out)
    );
}

#[test]
fn uclient_over_udp_gets_every_message_back() {
    uclient_round_trip(&[], 5, 200);
}

#[test]
fn uclient_over_tcp_gets_every_message_back() {
    uclient_round_trip(&["-t"], 5, 200);
}

#[test]
fn uclient_client_to_client_through_two_allocations() {
    // -y: the clients send to each other's relayed addresses, which this
    // relay forwards internally.
    let (_relay, addr) = relay(&[]);
    let port = addr.port().to_string();
    for transport in [None, Some("-t")] {
        let mut args = vec!["-y", "-c", "-W", SECRET];
        args.extend(transport);
        args.extend_from_slice(&[
            "-p",
            &port,
            "-m",
            "4",
            "-n",
            "200",
            "-l",
            "180",
            "-z",
            "2",
            "127.0.0.1",
        ]);
        let out = run_tool("turnutils_uclient", &args, LIMIT);
        let (sent, recv) = totals(&out).expect("summary");
        assert_eq!(sent, 800, "{}", output_text(&out));
        assert_eq!(recv, sent, "{}", output_text(&out));
    }
}

#[test]
fn a_wrong_secret_gets_no_allocation() {
    let (_relay, addr) = relay(&[]);
    let (_peer, peer_port) = echo_peer();
    let (port, peer_port) = (addr.port().to_string(), peer_port.to_string());
    let out = run_tool(
        "turnutils_uclient",
        &[
            "-c",
            "-W",
            "not-the-secret",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
            "-p",
            &port,
            "-m",
            "1",
            "-n",
            "10",
            "-l",
            "100",
            "127.0.0.1",
        ],
        Duration::from_secs(20),
    );
    let text = output_text(&out);
    assert!(totals(&out).is_none_or(|(_, recv)| recv == 0), "{text}");
    assert!(
        text.contains("Cannot complete Allocation") || text.contains("401"),
        "{text}"
    );
}

#[test]
fn loopback_peers_are_refused_by_default() {
    let (_relay, addr) = relay(&[("TURN_ALLOW_LOOPBACK", "false")]);
    let (_peer, peer_port) = echo_peer();
    let (port, peer_port) = (addr.port().to_string(), peer_port.to_string());
    let out = run_tool(
        "turnutils_uclient",
        &[
            "-c",
            "-W",
            SECRET,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
            "-p",
            &port,
            "-m",
            "1",
            "-n",
            "10",
            "-l",
            "100",
            "127.0.0.1",
        ],
        Duration::from_secs(20),
    );
    let text = output_text(&out);
    assert!(text.contains("403"), "{text}");
    assert!(totals(&out).is_none_or(|(_, recv)| recv == 0), "{text}");
}

#[test]
fn uclient_over_tls_gets_every_message_back() {
    let dir = std::env::temp_dir().join(format!("tallow-relay-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let tls_port = common::free_port();
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let (_relay, _addr) = relay(&[
        ("TURN_TLS_LISTEN", tls_listen.as_str()),
        ("TURN_TLS_CERT", cert.to_str().unwrap()),
        ("TURN_TLS_KEY", key.to_str().unwrap()),
    ]);
    let (_peer, peer_port) = echo_peer();
    let (port, peer_port) = (tls_port.to_string(), peer_port.to_string());
    let out = run_tool(
        "turnutils_uclient",
        &[
            "-t",
            "-S",
            "-c",
            "-W",
            SECRET,
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
            "-p",
            &port,
            "-m",
            "3",
            "-n",
            "100",
            "-l",
            "150",
            "-z",
            "2",
            "127.0.0.1",
        ],
        LIMIT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let (sent, recv) = totals(&out).unwrap_or_else(|| panic!("{}", output_text(&out)));
    assert_eq!((sent, recv), (300, 300), "{}", output_text(&out));
}

#[test]
fn ipv6_relayed_addresses_when_configured() {
    let (_relay, addr) = relay(&[("TURN_RELAY_IPV6", "::1")]);
    let peer_port = common::free_port();
    let _peer = common::Proc(
        std::process::Command::new(common::tool("turnutils_peer"))
            .args(["-L", "::1", "-p", &peer_port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(200));
    let (port, peer_port) = (addr.port().to_string(), peer_port.to_string());
    let out = run_tool(
        "turnutils_uclient",
        &[
            "-x",
            "-c",
            "-W",
            SECRET,
            "-e",
            "::1",
            "-r",
            &peer_port,
            "-p",
            &port,
            "-m",
            "2",
            "-n",
            "100",
            "-l",
            "120",
            "-z",
            "2",
            "127.0.0.1",
        ],
        LIMIT,
    );
    let (sent, recv) = totals(&out).unwrap_or_else(|| panic!("{}", output_text(&out)));
    assert_eq!((sent, recv), (200, 200), "{}", output_text(&out));
}
