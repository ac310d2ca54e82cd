//! CLI to CLI through a real tallow-server, relay-only ICE on loopback:
//! folders, the receiver's questions and refusals, wrong codes, Ctrl-C.
//! Every received file is compared by SHA-256 with its source.

mod common;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const GUARD: Duration = Duration::from_secs(180);

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nested_folder_moves_with_every_file_verified() {
    let (_server, url) = server().await;
    let tmp = scratch("folder");
    let src = tmp.join("src");
    // (path under src, bytes, where the receiver must put it)
    let files: Vec<(&str, Vec<u8>, &str)> = vec![
        ("album/readme.txt", b"hello".to_vec(), "album/readme.txt"),
        ("album/empty.dat", Vec::new(), "album/empty.dat"),
        (
            "album/big/photo.raw",
            pattern(1024 * 1024 + 512 * 1024 + 7, 1),
            "album/big/photo.raw",
        ),
        (
            "album/a/b/c/d/deep.txt",
            pattern(4000, 2),
            "album/a/b/c/d/deep.txt",
        ),
        (
            "album/odd/CON.txt",
            b"device".to_vec(),
            "album/odd/_CON.txt",
        ),
        ("album/odd/what?.txt", b"q".to_vec(), "album/odd/what_.txt"),
        (
            "album/odd/trailing dot.",
            b"dot".to_vec(),
            "album/odd/trailing dot",
        ),
        (
            "album/odd/Same.txt",
            b"upper".to_vec(),
            "album/odd/Same.txt",
        ),
        (
            "album/odd/same.txt",
            b"lower".to_vec(),
            "album/odd/same (2).txt",
        ),
        ("single.bin", pattern(70_000, 3), "single.bin"),
        // Last in the offer: an empty file has no block to send, only its
        // `sent` (which once never went out, and the transfer stalled).
        ("last-empty.txt", Vec::new(), "last-empty.txt"),
    ];
    for (p, data, _) in &files {
        write(&src.join(p), data);
    }
    std::fs::create_dir_all(src.join("album/nothing-here")).unwrap();

    let send = start_sender(
        &url,
        &[
            "send",
            src.join("album").to_str().unwrap(),
            src.join("single.bin").to_str().unwrap(),
            src.join("last-empty.txt").to_str().unwrap(),
        ],
    );
    let out = tmp.join("out");
    let recv = tallow(
        &url,
        &[
            "--json",
            "receive",
            &send.code,
            "--dir",
            out.to_str().unwrap(),
            "--yes",
        ],
    )
    .spawn()
    .unwrap();
    let (s, r) = wait_pair(send, recv, GUARD).await;
    assert!(
        s.status.success() && r.status.success(),
        "sender: {}\nreceiver: {}",
        s.all(),
        r.all()
    );
    let mut want: Vec<String> = files.iter().map(|f| f.2.to_owned()).collect();
    want.sort();
    assert_eq!(files_under(&out), want, "nothing else, no .part left");
    let events = json_events(&r.stdout);
    for (p, _, dest) in &files {
        let sha = sha256_file(&src.join(p));
        assert_eq!(sha256_file(&out.join(dest)), sha, "{p}");
        assert!(
            events.iter().any(|e| e["event"] == "file"
                && e["sha256"] == sha.as_str()
                && e["path"].as_str().unwrap().ends_with(dest)),
            "no file event for {dest}: {}",
            r.stdout
        );
    }
    let offer = events.iter().find(|e| e["event"] == "offer").unwrap();
    assert_eq!(offer["count"], files.len());
    let total: usize = files.iter().map(|f| f.1.len()).sum();
    assert_eq!(offer["total"], total);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "done", "{}", r.stdout);
    assert_eq!(last["exit"], 0);
    assert!(s.stderr.contains("path: local=relay"), "{}", s.stderr);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_mb_file_moves_through_the_relay() {
    let (_server, url) = server().await;
    let tmp = scratch("big");
    let src = tmp.join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        for i in 0..200u32 {
            f.write_all(&pattern(1_000_000, i)).unwrap();
        }
    }
    let started = Instant::now();
    let send = start_sender(&url, &["send", src.to_str().unwrap()]);
    let out = tmp.join("out");
    let recv = receive_yes(&url, &send.code, &out);
    let (s, r) = wait_pair(send, recv, Duration::from_secs(1500)).await;
    let took = started.elapsed();
    assert!(
        s.status.success() && r.status.success(),
        "sender: {}\nreceiver: {}",
        s.all(),
        r.all()
    );
    let sha = sha256_file(&src);
    assert_eq!(sha256_file(&out.join("big.bin")), sha);
    assert!(r.stdout.contains(&sha) && s.stdout.contains(&sha));
    // A figure for the record (the test does not judge by it).
    eprintln!(
        "200 MB relay-only CLI to CLI: {:.1} s ({:.1} MB/s)",
        took.as_secs_f64(),
        200.0 / took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_code_fails_cleanly_on_both_sides() {
    let (_server, url) = server().await;
    let tmp = scratch("wrong");
    write(&tmp.join("secret.txt"), b"not for you");
    let send = start_sender(&url, &["send", tmp.join("secret.txt").to_str().unwrap()]);
    let nameplate = send.code.split('-').next().unwrap().to_owned();
    let wrong = format!("{nameplate}-wrong-words-here");
    let out = tmp.join("out");
    let recv = receive_yes(&url, &wrong, &out);
    let (s, r) = wait_pair(send, recv, GUARD).await;
    assert_eq!(s.code(), Some(4), "sender: {}", s.all());
    assert_eq!(r.code(), Some(4), "receiver: {}", r.all());
    for e in [&s, &r] {
        assert!(e.stderr.contains("check the code"), "{}", e.all());
    }
    assert!(files_under(&out).is_empty(), "{:?}", files_under(&out));

    // A nameplate nobody holds: refused by the server, also 4.
    let recv = tallow(&url, &["receive", "999999999-no-such-code", "--yes"])
        .spawn()
        .unwrap();
    let r = wait_one(recv, GUARD).await;
    assert_eq!(r.code(), Some(4), "{}", r.all());
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `tallow receive` on a pseudo-terminal (util-linux `script`), `answers`
/// typed into it.
fn on_a_terminal(url: &str, args: &[&str], answers: &str) -> std::process::Child {
    let mut line = format!(
        "{} --server {url} --relay-only --bind 127.0.0.1:0",
        env!("CARGO_BIN_EXE_tallow")
    );
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut c = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(answers.as_bytes()).unwrap();
    // Kept open: `script` ends the session when its input ends.
    std::mem::forget(stdin);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_offer_ends_both_sides_and_writes_nothing() {
    let (_server, url) = server().await;
    let tmp = scratch("decline");
    write(&tmp.join("offered.txt"), b"no thanks");
    let send = start_sender(&url, &["send", tmp.join("offered.txt").to_str().unwrap()]);
    let out = tmp.join("out");
    let recv = on_a_terminal(
        &url,
        &["receive", &send.code, "--dir", out.to_str().unwrap()],
        "n\n",
    );
    let (s, r) = wait_pair(send, recv, GUARD).await;
    assert_eq!(r.code(), Some(3), "receiver: {}", r.all());
    assert!(
        r.stdout.contains("offered.txt"),
        "the offer is shown: {}",
        r.all()
    );
    assert_eq!(s.code(), Some(3), "sender: {}", s.all());
    assert!(s.stderr.contains("declined"), "{}", s.all());
    assert!(!out.exists() || files_under(&out).is_empty());
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_a_conflict_is_asked_and_overwrite_is_honoured() {
    let (_server, url) = server().await;
    let tmp = scratch("ask");
    write(&tmp.join("src/note.txt"), b"new words");
    write(&tmp.join("out/note.txt"), b"old words");
    let send = start_sender(&url, &["send", tmp.join("src/note.txt").to_str().unwrap()]);
    let out = tmp.join("out");
    let recv = on_a_terminal(
        &url,
        &["receive", &send.code, "--dir", out.to_str().unwrap()],
        "y\no\n",
    );
    let (s, r) = wait_pair(send, recv, GUARD).await;
    assert!(
        s.status.success() && r.status.success(),
        "sender: {}\nreceiver: {}",
        s.all(),
        r.all()
    );
    assert!(r.stdout.contains("exists"), "asked: {}", r.all());
    assert_eq!(std::fs::read(out.join("note.txt")).unwrap(), b"new words");
    assert_eq!(files_under(&out), ["note.txt"]);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_yes_an_existing_file_is_never_overwritten() {
    let (_server, url) = server().await;
    let tmp = scratch("keep");
    write(&tmp.join("src/payload.txt"), b"incoming");
    write(&tmp.join("out/payload.txt"), b"mine");
    write(&tmp.join("out/payload (2).txt"), b"also mine");
    let send = start_sender(
        &url,
        &["send", tmp.join("src/payload.txt").to_str().unwrap()],
    );
    let out = tmp.join("out");
    let recv = receive_yes(&url, &send.code, &out);
    let (s, r) = wait_pair(send, recv, GUARD).await;
    assert!(
        s.status.success() && r.status.success(),
        "sender: {}\nreceiver: {}",
        s.all(),
        r.all()
    );
    assert_eq!(std::fs::read(out.join("payload.txt")).unwrap(), b"mine");
    assert_eq!(
        std::fs::read(out.join("payload (2).txt")).unwrap(),
        b"also mine"
    );
    assert_eq!(
        std::fs::read(out.join("payload (3).txt")).unwrap(),
        b"incoming"
    );
    assert_eq!(
        files_under(&out),
        ["payload (2).txt", "payload (3).txt", "payload.txt"]
    );
    assert!(r.stdout.contains("payload (3).txt"), "{}", r.stdout);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_terminal_receive_refuses_unless_yes() {
    let (_server, url) = server().await;
    let recv = tallow(&url, &["receive", "12-some-code-words"])
        .spawn()
        .unwrap();
    let r = wait_one(recv, GUARD).await;
    assert_eq!(r.code(), Some(2), "{}", r.all());
    assert!(r.stderr.contains("--yes"), "{}", r.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_cancels_the_transfer_on_both_sides() {
    let (_server, url) = server().await;
    let tmp = scratch("ctrl-c");
    // Interrupt once bytes flow (the first progress event).
    let (send, recv, seen) =
        long_transfer_acting_at_progress(&url, &tmp, |receiver, _| signal("-INT", receiver));
    let out = tmp.join("out");
    let (s, r) = wait_pair(send, recv, GUARD).await;
    let r_stdout = seen.await.unwrap();
    assert_eq!(r.code(), Some(130), "receiver: {r_stdout}{}", r.all());
    let last = json_events(&r_stdout).pop().unwrap();
    assert_eq!(last["event"], "error");
    assert_eq!(last["exit"], 130);
    assert_eq!(s.code(), Some(3), "sender: {}", s.all());
    assert!(s.stderr.contains("cancelled by the user"), "{}", s.all());
    assert!(
        files_under(&out).is_empty(),
        "nothing left: {:?}",
        files_under(&out)
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Ctrl-C while the peer is frozen (SIGSTOP): the polite cancel cannot
/// finish (the peer acknowledges nothing), so the receiver gives up on it,
/// and yet it still exits 130 with the JSON `error` event as its last line.
/// A second Ctrl-C exits at once, with the same last line.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_with_a_frozen_peer_still_ends_with_the_error_event() {
    for presses in [1, 2] {
        let (_server, url) = server().await;
        let tmp = scratch(&format!("ctrl-c-frozen-{presses}"));
        let (send, recv, seen) =
            long_transfer_acting_at_progress(&url, &tmp, move |receiver, sender| {
                signal("-STOP", sender);
                for _ in 0..presses {
                    signal("-INT", receiver);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        let sender = send.child.id();
        let r = wait_one(recv, GUARD).await;
        let r_stdout = seen.await.unwrap();
        signal("-CONT", sender);
        signal("-KILL", sender);
        assert_eq!(
            r.code(),
            Some(130),
            "presses {presses}: {r_stdout}{}",
            r.all()
        );
        let last = json_events(&r_stdout).pop().unwrap();
        assert_eq!(last["event"], "error", "presses {presses}: {r_stdout}");
        assert_eq!(last["exit"], 130);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// A 100 MB file from `tallow send` to a `--json --yes` receiver writing
/// into `tmp/out`. `at_progress(receiver_pid, sender_pid)` runs once, on the
/// receiver's first progress event (bytes flow). Returns the sender, the
/// receiver, and the receiver's whole stdout once it closes.
fn long_transfer_acting_at_progress(
    url: &str,
    tmp: &Path,
    at_progress: impl FnOnce(u32, u32) + Send + 'static,
) -> (Sender, std::process::Child, tokio::task::JoinHandle<String>) {
    let src = tmp.join("long.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        for i in 0..100u32 {
            f.write_all(&pattern(1_000_000, i)).unwrap();
        }
    }
    let send = start_sender(url, &["send", src.to_str().unwrap()]);
    let out = tmp.join("out");
    let mut recv = tallow(
        url,
        &[
            "--json",
            "receive",
            &send.code,
            "--dir",
            out.to_str().unwrap(),
            "--yes",
        ],
    )
    .spawn()
    .unwrap();
    let mut lines = std::io::BufReader::new(recv.stdout.take().unwrap());
    let (receiver, sender) = (recv.id(), send.child.id());
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = String::new();
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            seen.push_str(&line);
            if line.contains("\"progress\"") {
                at_progress(receiver, sender);
                break;
            }
            line.clear();
        }
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut lines, &mut rest);
        seen + &rest
    });
    (send, recv, seen)
}
