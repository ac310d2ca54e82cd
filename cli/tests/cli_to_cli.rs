//! `tallow send` to `tallow receive` through a real tallow-server with its
//! embedded relay, relay-only ICE on loopback, SHA-256 compared.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use sha2::{Digest, Sha256};
use tallow_signaling::config::Config;
use tallow_signaling::server::Server;

async fn server() -> Server {
    let cfg = Config::try_parse_from([
        "tallow-server",
        "--listen",
        "127.0.0.1:0",
        "--turn-enabled",
        "true",
        "--turn-listen",
        "127.0.0.1:0",
        // Both peers and the relay are on loopback here.
        "--turn-allow-loopback",
        "true",
        "--turn-port-range",
        "46000-46999",
        // Under the default 12.5 MB/s per allocation the relay drops the
        // bursts webrtc-rs's SCTP sends on loopback, and its association
        // stalls until ICE fails (docs/notes/cli-webrtc.md).
        "--turn-max-bytes-per-sec",
        "1000000000",
    ])
    .expect("flags parse");
    Server::start(cfg).await.expect("server starts")
}

fn tallow(url: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tallow"));
    c.args(["--server", url, "--relay-only", "--bind", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn one_file_moves_cli_to_cli_through_the_relay() {
    let server = server().await;
    let url = format!("ws://{}/signal", server.local_addr());
    let tmp = std::env::temp_dir().join(format!("tallow-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("out")).unwrap();
    // 6 MiB and a bit: several blocks, a short last one, acks past 4 MiB.
    let data: Vec<u8> = (0..6 * 1024 * 1024 + 12345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let src = tmp.join("payload.bin");
    std::fs::write(&src, &data).unwrap();

    let mut send = tallow(&url, &["send", src.to_str().unwrap()])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(send.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let code = line
        .trim()
        .strip_prefix("code: ")
        .unwrap_or_else(|| panic!("no code: {line:?}"))
        .to_owned();

    let recv = tallow(
        &url,
        &[
            "receive",
            &code,
            "--dir",
            tmp.join("out").to_str().unwrap(),
            "--yes",
        ],
    )
    .spawn()
    .unwrap();
    let pids = [send.id(), recv.id()];
    let waited = tokio::task::spawn_blocking(move || {
        let r = recv.wait_with_output().unwrap();
        let s = send.wait().unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let mut err = String::new();
        send.stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (r, s, rest, err)
    });
    let Ok(joined) = tokio::time::timeout(Duration::from_secs(120), waited).await else {
        for pid in pids {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        panic!("the transfer did not end within 2 minutes");
    };
    let (recv_out, send_status, send_rest, send_err) = joined.unwrap();
    let recv_stdout = String::from_utf8_lossy(&recv_out.stdout);
    let recv_stderr = String::from_utf8_lossy(&recv_out.stderr);
    assert!(
        recv_out.status.success() && send_status.success(),
        "receiver: {recv_stdout}{recv_stderr}\nsender: {send_rest}{send_err}"
    );
    let want = hex::encode(Sha256::digest(&data));
    let got = std::fs::read(tmp.join("out/payload.bin")).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&got)), want);
    assert!(send_err.contains("path: local=relay"), "{send_err}");
    assert!(recv_stdout.contains(&want), "{recv_stdout}");
    assert!(send_rest.contains(&want), "{send_rest}");
    let _ = std::fs::remove_dir_all(&tmp);
}
