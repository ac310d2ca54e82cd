//! `tallow send PATH...` / `tallow receive CODE`: files and folders, end to
//! end encrypted, over a WebRTC data channel set up through a tallow-server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tallow_cli::offer::{self, OfferError};
use tallow_cli::output::{Mode, Output};
use tallow_cli::prompt::{Decide, Terminal, Unattended};
use tallow_cli::session::{self, Connected, Options, SessionError};
use tallow_cli::transfer::{self, TransferError};
use tallow_cli::{share, ws};
use tallow_peer::outgoing::By;
use tokio::sync::watch;

const EXIT_CODES: &str = "\
Exit codes:
  0    done: every file verified (SHA-256) on both sides
  1    error: the transfer failed (a damaged file, the disk, the peer broke the protocol)
  2    usage: bad arguments, nothing to send, a malformed code, no terminal to ask on without --yes
  3    declined or cancelled: by the peer, or the offer declined here
  4    wrong code: the server knows no such code, or the handshake failed (the codes differ)
  5    no connection: the server or the peer could not be reached, or the connection was lost or stalled
  130  interrupted (Ctrl-C): the peer is told the transfer was cancelled";

#[derive(Parser)]
#[command(
    name = "tallow",
    version,
    about = "Send and receive files and folders, end-to-end encrypted (post-quantum), peer to peer",
    after_help = EXIT_CODES
)]
struct Cli {
    /// The signaling server's /signal URL.
    #[arg(
        long,
        env = "TALLOW_SERVER",
        default_value = "ws://127.0.0.1:8080/signal",
        global = true
    )]
    server: String,
    /// Use only relayed (TURN) candidates: the peer never learns your address.
    #[arg(long, env = "TALLOW_RELAY_ONLY", global = true)]
    relay_only: bool,
    /// Local UDP address to gather candidates from.
    #[arg(long, env = "TALLOW_BIND", default_value = "0.0.0.0:0", global = true)]
    bind: String,
    /// Print only errors (and the share code, which the sender needs).
    #[arg(long, short, global = true, conflicts_with = "json")]
    quiet: bool,
    /// One JSON object per line on stdout, for scripts (see README).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send files and folders: prints the share code to give the receiver.
    Send {
        /// Files and folders (folders with everything in them).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also print a QR code of the share link.
        #[arg(long)]
        qr: bool,
    },
    /// Receive with a share code: shows the offer and asks before writing.
    Receive {
        code: String,
        /// Folder to save into (made if missing).
        #[arg(long, env = "TALLOW_DIR", default_value = ".")]
        dir: PathBuf,
        /// Accept without asking; an existing file is then never
        /// overwritten: the incoming one is saved as "name (2).ext".
        #[arg(long, short)]
        yes: bool,
    },
}

/// Why the run ended, as an exit code.
struct Fail {
    exit: u8,
    message: String,
}

impl Fail {
    fn new(exit: u8, message: impl Into<String>) -> Self {
        Fail {
            exit,
            message: message.into(),
        }
    }
}

fn session_fail(e: SessionError) -> Fail {
    let exit = match &e {
        SessionError::Signal(_) | SessionError::Rtc(_) | SessionError::Failed => 5,
        SessionError::Link(_) => 5,
        SessionError::Refused { code, .. } => match code.as_str() {
            "unknown_nameplate"
            | "nameplate_expired"
            | "session_full"
            | "too_many_failed_joins" => 4,
            _ => 5,
        },
        SessionError::Handshake(_) | SessionError::OutOfTurn(_) | SessionError::Malformed(_) => 4,
        SessionError::PeerAborted(reason) => match reason.as_str() {
            "confirmation" | "downgrade" | "out_of_turn" | "replay" | "tampered" | "malformed" => 4,
            _ => 3,
        },
        SessionError::PeerLeft | SessionError::Ended => 3,
        SessionError::ReconnectTimedOut => 5,
    };
    let hint = if exit == 4 {
        " (check the code: it must be the one the sender printed)"
    } else {
        ""
    };
    Fail::new(exit, format!("{e}{hint}"))
}

fn transfer_fail(e: TransferError) -> Fail {
    let exit = match &e {
        TransferError::Stopped { by: By::Peer, .. } | TransferError::Declined => 3,
        TransferError::Interrupted => 130,
        TransferError::Lost(_) | TransferError::Link(_) | TransferError::Stalled(_) => 5,
        _ => 1,
    };
    Fail::new(exit, e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mode = if cli.json {
        Mode::Json
    } else if cli.quiet {
        Mode::Quiet
    } else {
        Mode::Human
    };
    let mut output = Output::new(mode);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output.error(&format!("cannot start: {e}"), 1);
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(on_ctrl_c(stop_tx, mode));
        run(cli, &mut output, stop_rx).await
    });
    // A question may still be reading the terminal on a blocking thread:
    // do not wait for it.
    rt.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            output.error(&f.message, f.exit);
            ExitCode::from(f.exit)
        }
    }
}

/// How long the first Ctrl-C's polite cancel may take before the process
/// exits anyway: longer than the cancel's own bounds (the last word and the
/// linger in transfer.rs, 3 + 2 s, then closing the connection, 2 s), so
/// a cancel that can finish does.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// The first Ctrl-C asks the transfer to cancel (it tells the peer, then
/// exits 130); a second one, or `CANCEL_GRACE` without an exit (a peer
/// that acknowledges nothing), exits at once, with the same last word.
async fn on_ctrl_c(stop: watch::Sender<bool>, mode: Mode) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    let _ = stop.send(true);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = tokio::time::sleep(CANCEL_GRACE) => {}
    }
    Output::new(mode).error("interrupted", 130);
    std::process::exit(130);
}

/// `fut` unless Ctrl-C comes first.
async fn or_stop<T>(
    fut: impl std::future::Future<Output = Result<T, SessionError>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<T, Fail> {
    tokio::select! {
        r = fut => match r {
            Ok(c) => Ok(c),
            Err(e) => {
                // A moment for the session's last frame (an abort telling
                // the peer why) to leave before the runtime ends.
                tokio::time::sleep(Duration::from_millis(300)).await;
                Err(session_fail(e))
            }
        },
        _ = stop.wait_for(|v| *v) => Err(Fail::new(130, "interrupted")),
    }
}

async fn run(cli: Cli, output: &mut Output, mut stop: watch::Receiver<bool>) -> Result<(), Fail> {
    let opts = Options {
        relay_only: cli.relay_only,
        bind: cli.bind,
    };
    match cli.cmd {
        Cmd::Send { paths, qr } => {
            // Everything is checked before the server hears of us.
            let files = offer::collect(&paths).map_err(|e| match e {
                OfferError::Nothing(_) | OfferError::TooMany(_) => Fail::new(2, e.to_string()),
                OfferError::Refused(_) => Fail::new(1, e.to_string()),
            })?;
            let sig = ws::connect(&cli.server)
                .await
                .map_err(|e| Fail::new(5, e.to_string()))?;
            let server = cli.server.clone();
            let out: &Output = output;
            let mut c = or_stop(
                session::create(sig, &opts, |code| {
                    let link = share::link(&server, code);
                    out.code(code, &link);
                    if qr {
                        // On stderr: stdout carries the code (or the JSON stream).
                        if let Some(q) = share::qr(&link) {
                            eprintln!("{q}");
                        }
                    }
                }),
                &mut stop,
            )
            .await?;
            connected(&c, output).await;
            let r = transfer::send(&mut c, &files, output, &mut stop).await;
            finish(&c, r, output).await
        }
        Cmd::Receive { code, dir, yes } => {
            let code = code.trim().to_lowercase();
            if !well_formed(&code) {
                return Err(Fail::new(
                    2,
                    format!(
                        "{:?} is not a share code (it looks like 7-word-word-word)",
                        tallow_cli::output::neutral(&code, 64)
                    ),
                ));
            }
            if dir.exists() && !dir.is_dir() {
                return Err(Fail::new(2, format!("{} is not a folder", dir.display())));
            }
            let mut decide: Box<dyn Decide> = if yes {
                Box::new(Unattended)
            } else {
                match Terminal::new() {
                    Some(t) => Box::new(t),
                    None => {
                        return Err(Fail::new(
                            2,
                            "no terminal to ask whether to accept (stdin is not a TTY): pass --yes to accept unattended",
                        ))
                    }
                }
            };
            let sig = ws::connect(&cli.server)
                .await
                .map_err(|e| Fail::new(5, e.to_string()))?;
            let mut c = or_stop(session::join(sig, &code, &opts), &mut stop).await?;
            connected(&c, output).await;
            let r = transfer::receive(&mut c, &dir, decide.as_mut(), output, &mut stop).await;
            finish(&c, r, output).await
        }
    }
}

/// The code's shape as the web client takes it from a link.
fn well_formed(code: &str) -> bool {
    let mut parts = code.split('-');
    let nameplate = parts.next().unwrap_or_default();
    let words: Vec<&str> = parts.collect();
    (1..=9).contains(&nameplate.len())
        && nameplate.bytes().all(|b| b.is_ascii_digit())
        && !words.is_empty()
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

async fn connected(c: &Connected, output: &Output) {
    output.words(&c.words);
    // The selected candidate pair: whether the bytes go direct or through
    // the relay (the NAT tests read this line).
    // The stats may not name the pair the instant the channel opens.
    for _ in 0..20 {
        if let Some(p) = tallow_cli::rtc::selected_path(c.pc.as_ref()).await {
            output.path(&p.to_string());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn finish(
    c: &Connected,
    r: Result<transfer::Moved, TransferError>,
    output: &mut Output,
) -> Result<(), Fail> {
    c.leave();
    // A moment for the last frames (leave) to go out; then the connection
    // closes, so the peer hears it at once rather than after ICE gives up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), c.pc.close()).await;
    let moved = r.map_err(transfer_fail)?;
    output.done(moved.files.len(), moved.bytes);
    Ok(())
}
