//! Adversarial review of the CLI peer (issue 12): what a hostile sender,
//! a hostile file system neighbour or a stalled peer can make the real
//! `tallow` binaries do, through a real tallow-server on loopback.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const GUARD: Duration = Duration::from_secs(180);

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Every entry under `dir` (files, folders, links), relative, sorted.
fn entries_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A symbolic link inside the receiver's folder (planted by anyone who can
/// write there, or just there already) where an offered folder goes: the
/// received files must stay under `--dir`, as the web client's can only
/// land in its downloads. Today the receiver follows the link
/// (`create_dir_all` and the hard link go through it) and writes outside.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_folder_in_the_target_dir_does_not_lead_writes_outside_it() {
    let (_server, url) = server().await;
    let tmp = scratch("adv-symlink");
    let src = tmp.join("src");
    write(
        &src.join("album/authorized_keys"),
        b"ssh-ed25519 AAAA attacker",
    );
    let out = tmp.join("out");
    let outside = tmp.join("outside"); // stands for ~/.ssh, /etc/cron.d, ...
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("album")).unwrap();

    let send = start_sender(&url, &["send", src.join("album").to_str().unwrap()]);
    let recv = receive_yes(&url, &send.code, &out);
    let (s, r) = wait_pair(send, recv, GUARD).await;
    assert!(
        entries_under(&outside).is_empty(),
        "the receiver wrote outside --dir through a symlink: {:?}\nsender: {}\nreceiver: {}",
        entries_under(&outside),
        s.all(),
        r.all()
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// An existing *file* where an offered folder goes is a conflict like any
/// other: with `--yes` the folder gets a free name (or the offer is
/// refused before it is accepted). Today nothing notices it before the
/// first write, and the accepted transfer dies on `create_dir_all`
/// ("File exists") after the sender was told to start.
#[tokio::test(flavor = "multi_thread")]
async fn an_existing_file_where_an_offered_folder_goes_is_a_conflict_not_a_failure() {
    let (_server, url) = server().await;
    let tmp = scratch("adv-file-vs-folder");
    let src = tmp.join("src");
    write(&src.join("album/a.txt"), b"hello");
    let out = tmp.join("out");
    write(&out.join("album"), b"my own file called album");

    let send = start_sender(&url, &["send", src.join("album").to_str().unwrap()]);
    let recv = receive_yes(&url, &send.code, &out);
    let (s, r) = wait_pair(send, recv, GUARD).await;
    assert_eq!(
        std::fs::read(out.join("album")).unwrap(),
        b"my own file called album"
    );
    assert!(
        s.status.success() && r.status.success(),
        "a name conflict should not fail the accepted transfer\nsender: {}\nreceiver: {}",
        s.all(),
        r.all()
    );
    let got = files_under(&out);
    assert_eq!(got.len(), 2, "{got:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// What would steer the user's terminal if printed raw: an OSC that sets
/// the window title, a screen clear, and a fake success line.
const STEERING: &str =
    "\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[1;1Htallow: received 1 file, SHA-256 verified";

fn hostile_opts() -> tallow_cli::session::Options {
    tallow_cli::session::Options {
        relay_only: true,
        bind: "127.0.0.1:0".into(),
    }
}

async fn say(link: &mut tallow_cli::channel::Link, m: &tallow_peer::control::Message) {
    link.send(tallow_peer::RecordType::Control, m.to_json().as_bytes())
        .await
        .unwrap();
}

/// A hostile sender (the real session code, its own transfer messages)
/// offers a file, waits for the real receiver's accept, and cancels with
/// a reason full of terminal escapes. docs: `Message::Cancel`'s reason is
/// "not neutralised: do that before showing it", and output.rs promises
/// "Peer-supplied text is shown only neutralised". Today the receiver
/// prints `tallow: your peer cancelled: <raw reason>` to stderr as is.
#[tokio::test(flavor = "multi_thread")]
async fn a_peers_cancel_reason_reaches_the_terminal_only_neutralised() {
    use tallow_peer::control::{Message, OfferedFile};
    use tallow_peer::outgoing::{OutAction, Outgoing};

    let (_server, url) = server().await;
    let tmp = scratch("adv-cancel-reason");
    let out = tmp.join("out");
    let (code_tx, code_rx) = tokio::sync::oneshot::channel::<String>();
    let sig = tallow_cli::ws::connect(&url).await.unwrap();
    let hostile = tokio::spawn(async move {
        tallow_cli::session::create(sig, &hostile_opts(), |c| {
            let _ = code_tx.send(c.to_owned());
        })
        .await
    });
    let code = code_rx.await.unwrap();
    let recv = receive_yes(&url, &code, &out);
    let waited = tokio::spawn(wait_one(recv, GUARD));
    let mut conn = tokio::time::timeout(GUARD, hostile)
        .await
        .expect("connected within the guard")
        .unwrap()
        .unwrap();
    let mut m = Outgoing::new(
        "0123456789abcdef",
        &[OfferedFile {
            path: "a.txt".into(),
            size: 5,
        }],
    );
    for a in m.on_channel().unwrap() {
        if let OutAction::Send(msg) = a {
            say(&mut conn.link, &msg).await;
        }
    }
    // Until the receiver accepts (bounded: the guard).
    let accepted = tokio::time::timeout(GUARD, async {
        loop {
            let Ok(rec) = conn.link.recv().await else {
                return false;
            };
            let tallow_cli::channel::Incoming::Control(b) = rec else {
                continue;
            };
            let msg = tallow_peer::parse_message(&b).unwrap();
            if matches!(msg, Message::Accept { .. }) {
                return true;
            }
        }
    })
    .await;
    if accepted != Ok(true) {
        panic!("no accept: {}", waited.await.unwrap().all());
    }
    for a in m.cancel(STEERING) {
        if let OutAction::Send(msg) = a {
            say(&mut conn.link, &msg).await;
        }
    }
    let r = waited.await.unwrap();
    assert!(
        r.stderr.contains("owned") || r.stdout.contains("owned"),
        "the reason should be shown (neutralised): {}",
        r.all()
    );
    assert!(
        !r.stderr.contains('\u{1b}') && !r.stdout.contains('\u{1b}'),
        "raw escapes from the peer reached the terminal: {:?}",
        r.stderr
    );
    drop(conn);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A hostile (or impersonated: ws:// is plain text) signaling server
/// answers the join with an error whose message steers the terminal. The
/// server is no more trusted than the peer (docs/PROTOCOL.md), yet
/// `the server refused: {message}` is printed raw.
#[tokio::test(flavor = "multi_thread")]
async fn a_servers_error_message_reaches_the_terminal_only_neutralised() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/signal", listener.local_addr().unwrap());
    let fake = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let welcome = serde_json::json!({"type": "welcome", "limits": {}});
        ws.send(Ws::text(welcome.to_string())).await.unwrap();
        // Whatever the client says first (its join), the answer is this.
        let _ = ws.next().await;
        let err = serde_json::json!({
            "type": "error", "code": "unknown_nameplate", "message": STEERING, "retryable": false
        });
        ws.send(Ws::text(err.to_string())).await.unwrap();
        // Held open until the client goes.
        while let Some(Ok(_)) = ws.next().await {}
    });
    let tmp = scratch("adv-server-text");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tallow"));
    c.args([
        "--server",
        &url,
        "receive",
        "7-apple-banana-cherry",
        "--yes",
        "--dir",
    ])
    .arg(tmp.join("out"))
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let r = wait_one(c.spawn().unwrap(), GUARD).await;
    fake.abort();
    assert!(!r.status.success(), "{}", r.all());
    assert!(
        !r.stderr.contains('\u{1b}') && !r.stdout.contains('\u{1b}'),
        "raw escapes from the server reached the terminal: {:?}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A signaling server that takes the TCP connection and then never
/// answers the WebSocket upgrade (overloaded, a half-dead proxy, a
/// tarpit). Every later step of the session has a bound (silence
/// detection, redial within the grace), but the first `connect_async` in
/// `ws::connect` has none: `tallow receive` (and `send`) hang for ever,
/// without a word, which a script cannot tell from a slow peer. The guard
/// here is long (120 s) against any sensible connect timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_the_upgrade_does_not_hang_the_cli() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/signal", listener.local_addr().unwrap());
    let tarpit = tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: the CLI dials a few times at most.
        for _ in 0..16 {
            match listener.accept().await {
                Ok((tcp, _)) => held.push(tcp),
                Err(_) => break,
            }
        }
        std::future::pending::<()>().await;
    });
    let tmp = scratch("adv-tarpit");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tallow"));
    c.args([
        "--server",
        &url,
        "receive",
        "7-apple-banana-cherry",
        "--yes",
        "--dir",
    ])
    .arg(tmp.join("out"))
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let r = wait_one(c.spawn().unwrap(), Duration::from_secs(120)).await;
    tarpit.abort();
    assert_eq!(r.code(), Some(5), "{}", r.all());
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The receiving CLI is stopped (SIGSTOP: a laptop lid, a debugger, a
/// swapped-out box) for 20 s mid-transfer, then continued: within the
/// reconnect budget (180 s) the transfer must come back and complete,
/// SHA-256 equal, and neither side may leave a .part behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_stopped_for_20_s_mid_transfer_resumes_and_completes() {
    let (_server, url) = server().await;
    let tmp = scratch("adv-sigstop");
    let src = tmp.join("data.bin");
    // Large enough to be mid-way when seen (relayed paths are fast now).
    write(&src, &pattern(60 * 1024 * 1024 + 17, 9));
    let out = tmp.join("out");
    let send = start_sender(&url, &["send", src.to_str().unwrap()]);
    let recv = receive_yes(&url, &send.code, &out);
    let pid = recv.id().to_string();
    // Bounded wait until bytes land (a .part with something in it).
    let mut started = false;
    for _ in 0..1200 {
        let landed = std::fs::read_dir(&out).ok().is_some_and(|rd| {
            rd.flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with(".part")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
        });
        if landed {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started, "the transfer never started");
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    let (s, r) = wait_pair(send, recv, Duration::from_secs(400)).await;
    assert!(
        s.status.success() && r.status.success(),
        "sender: {}\nreceiver: {}",
        s.all(),
        r.all()
    );
    assert_eq!(files_under(&out), vec!["data.bin".to_owned()]);
    assert_eq!(sha256_file(&out.join("data.bin")), sha256_file(&src));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Bounded wait until a non-empty `.part` is in `dir`.
async fn part_lands(dir: &Path) -> bool {
    for _ in 0..1200 {
        let landed = std::fs::read_dir(dir).ok().is_some_and(|rd| {
            rd.flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with(".part")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
        });
        if landed {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Someone plants a symlink with the final name (to a file outside
/// `--dir`) while the file is on its way: the verified file must not go
/// through it, and the planted link's target must stay as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_planted_at_the_final_name_mid_transfer_is_not_followed() {
    let (_server, url) = server().await;
    let tmp = scratch("adv-plant");
    let src = tmp.join("data.bin");
    // Large enough to be mid-way when the link is planted.
    write(&src, &pattern(60 * 1024 * 1024 + 3, 4));
    let victim = tmp.join("victim.txt");
    write(&victim, b"precious");
    let out = tmp.join("out");
    let send = start_sender(&url, &["send", src.to_str().unwrap()]);
    let recv = receive_yes(&url, &send.code, &out);
    assert!(part_lands(&out).await, "the transfer never started");
    let planted = std::os::unix::fs::symlink(&victim, out.join("data.bin"));
    let (s, r) = wait_pair(send, recv, Duration::from_secs(400)).await;
    planted.expect("planted before the file completed (else the test proves nothing)");
    assert!(
        s.status.success() && r.status.success(),
        "sender: {}\nreceiver: {}",
        s.all(),
        r.all()
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(out.join("data.bin"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(sha256_file(&out.join("data (2).bin")), sha256_file(&src));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A hostile receiver accepts and then never reads again (its channel
/// stays up): the real sender must give up by itself ("stalled", exit 5)
/// rather than wait for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_accepts_and_stops_reading_stalls_the_sender_out() {
    use tallow_peer::control::Message;

    let (_server, url) = server().await;
    let tmp = scratch("adv-deaf");
    let src = tmp.join("data.bin");
    write(&src, &pattern(8 * 1024 * 1024, 5));
    let send = start_sender(&url, &["send", src.to_str().unwrap()]);
    let sig = tallow_cli::ws::connect(&url).await.unwrap();
    let mut conn = tallow_cli::session::join(sig, &send.code, &hostile_opts())
        .await
        .unwrap();
    let id = tokio::time::timeout(GUARD, async {
        loop {
            if let tallow_cli::channel::Incoming::Control(b) = conn.link.recv().await.unwrap() {
                if let Message::Files { id, .. } = tallow_peer::parse_message(&b).unwrap() {
                    return id;
                }
            }
        }
    })
    .await
    .expect("an offer");
    say(&mut conn.link, &Message::Accept { id }).await;
    // From here on nothing is read; `conn` stays alive until the sender ends.
    let pid = send.child.id();
    let waited = tokio::task::spawn_blocking(move || {
        let mut child = send.child;
        let status = child.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        (status, err)
    });
    let r = tokio::time::timeout(Duration::from_secs(300), waited).await;
    let Ok(r) = r else {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        panic!("the sender waited for ever on a deaf receiver");
    };
    let (status, err) = r.unwrap();
    drop(conn);
    assert_eq!(status.code(), Some(5), "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Lying sizes on our own side: a file whose size on disk says 0 but that
/// reads non-empty (every /proc file). Offered as 0 bytes, the receiver
/// gets an empty file "verified" and both sides report success. It should
/// be refused (as a FIFO is) or sent with what it reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_reads_longer_than_its_size_is_not_sent_empty() {
    let (_server, url) = server().await;
    let tmp = scratch("adv-proc");
    let src = Path::new("/proc/version");
    let want = std::fs::read(src).unwrap();
    assert!(!want.is_empty() && std::fs::metadata(src).unwrap().len() == 0);
    // Refused before anything is offered, as a FIFO is: no code, exit 2,
    // and the reason named.
    let sent = tallow(&url, &["send", src.to_str().unwrap()])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(!sent.status.success(), "{said}");
    assert!(!said.contains("code: "), "{said}");
    assert!(said.contains("reads more than its size"), "{said}");
    let _ = std::fs::remove_dir_all(&tmp);
}
