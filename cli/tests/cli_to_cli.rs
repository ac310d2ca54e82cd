//! `tallow send` to `tallow receive` through a real tallow-server with its
//! embedded relay, relay-only ICE on loopback, SHA-256 compared.

mod common;

use std::time::Duration;

use common::{pattern, receive_yes, scratch, server, start_sender, wait_pair};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread")]
async fn one_file_moves_cli_to_cli_through_the_relay() {
    let (_server, url) = server().await;
    let tmp = scratch("one-file");
    // 6 MiB and a bit: several blocks, a short last one, acks past 4 MiB.
    let data = pattern(6 * 1024 * 1024 + 12345, 0);
    let src = tmp.join("payload.bin");
    std::fs::write(&src, &data).unwrap();

    let send = start_sender(&url, &["send", src.to_str().unwrap()]);
    let out = tmp.join("out");
    let recv = receive_yes(&url, &send.code, &out);
    let (s, r) = wait_pair(send, recv, Duration::from_secs(120)).await;
    assert!(
        r.status.success() && s.status.success(),
        "receiver: {}\nsender: {}",
        r.all(),
        s.all()
    );
    let want = hex::encode(Sha256::digest(&data));
    let got = std::fs::read(out.join("payload.bin")).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&got)), want);
    assert!(s.stderr.contains("path: local=relay"), "{}", s.stderr);
    assert!(r.stdout.contains(&want), "{}", r.stdout);
    assert!(s.stdout.contains(&want), "{}", s.stdout);
    let _ = std::fs::remove_dir_all(&tmp);
}
