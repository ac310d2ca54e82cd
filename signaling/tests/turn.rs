//! The embedded relay accepts the credentials /signal hands out, and only
//! those: a client nobody here wrote (coturn's turnutils_uclient) relays
//! with them, and fails with a forged one.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::free_port;
use common::turn::{uclient, Proc};

#[tokio::test]
async fn credentials_from_signal_work_on_the_embedded_relay() {
    let server = common::start(&[
        "--turn-enabled",
        "true",
        "--turn-listen",
        "127.0.0.1:0",
        "--turn-allow-loopback",
        "true",
        "--turn-port-range",
        "45000-45999",
    ])
    .await;
    let turn = server.turn_addr().expect("embedded relay runs");
    // The joiner's `paired` names the relay and carries its credentials.
    let mut a = common::Client::connect(server.local_addr()).await;
    a.send(serde_json::json!({"type": "create"})).await;
    let created = a.expect("created").await;
    let mut j = common::Client::connect(server.local_addr()).await;
    j.send(serde_json::json!({"type": "join", "nameplate": created["nameplate"]}))
        .await;
    j.expect("joined").await;
    let paired = j.expect("paired").await;
    let servers = paired["ice_servers"].as_array().unwrap();
    let stun = &servers[0];
    let turn_server = &servers[1];
    assert_eq!(stun["urls"][0], format!("stun:127.0.0.1:{}", turn.port()));
    assert_eq!(
        turn_server["urls"],
        serde_json::json!([
            format!("turn:127.0.0.1:{}?transport=udp", turn.port()),
            format!("turn:127.0.0.1:{}?transport=tcp", turn.port()),
        ])
    );
    let user = turn_server["username"].as_str().unwrap().to_owned();
    let pass = turn_server["credential"].as_str().unwrap().to_owned();

    let peer_port = free_port();
    let _peer = Proc(
        Command::new("/usr/bin/turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer"),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let port = turn.port().to_string();
    let peer = peer_port.to_string();
    for transport in [None, Some("-t")] {
        let mut args = vec![
            "-c",
            "-u",
            &user,
            "-w",
            &pass,
            "-e",
            "127.0.0.1",
            "-r",
            &peer,
        ];
        args.extend(transport);
        args.extend_from_slice(&["-p", &port, "-m", "2", "-n", "50", "-l", "100", "127.0.0.1"]);
        let text = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            move || uclient(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        assert!(
            text.contains("tot_send_msgs=100, tot_recv_msgs=100"),
            "{transport:?}: {text}"
        );
    }

    // A forged password for the same username is refused.
    let forged = format!("{}x", &pass[..pass.len() - 1]);
    let text = tokio::task::spawn_blocking({
        let (user, port, peer) = (user.clone(), port.clone(), peer.clone());
        move || {
            uclient(&[
                "-c",
                "-u",
                &user,
                "-w",
                &forged,
                "-e",
                "127.0.0.1",
                "-r",
                &peer,
                "-p",
                &port,
                "-m",
                "1",
                "-n",
                "5",
                "-l",
                "100",
                "127.0.0.1",
            ])
        }
    })
    .await
    .unwrap();
    assert!(!text.contains("tot_recv_msgs=5"), "{text}");
    let (_, metrics) = common::http_get(server.local_addr(), "/metrics").await;
    assert!(
        metrics.contains("tallow_turn_auth_failures_total"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tallow_turn_auth_failures_total 0\n"),
        "{metrics}"
    );
    // Both directions are counted: the echo peer answered every message.
    for direction in ["client_to_peer", "peer_to_client"] {
        let series = format!("tallow_turn_packets_relayed_total{{direction=\"{direction}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{metrics}"));
        assert!(n >= 200, "{direction}: {n}\n{metrics}");
    }
}
