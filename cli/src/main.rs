//! `tallow send PATH` / `tallow receive CODE`: one file, end to end
//! encrypted, over a WebRTC data channel set up through a tallow-server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tallow_cli::session::{self, Options};
use tallow_cli::{transfer, ws};

#[derive(Parser)]
#[command(
    name = "tallow",
    version,
    about = "Send and receive files, end-to-end encrypted"
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
    /// Use only relayed (TURN) candidates.
    #[arg(long, env = "TALLOW_RELAY_ONLY", global = true)]
    relay_only: bool,
    /// Local UDP address to gather candidates from.
    #[arg(long, env = "TALLOW_BIND", default_value = "0.0.0.0:0", global = true)]
    bind: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send a file: prints the share code to give the receiver.
    Send { path: PathBuf },
    /// Receive with a share code into DIR.
    Receive {
        code: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Accept the offer without asking (required for now).
        #[arg(long)]
        yes: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tallow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = Options {
        relay_only: cli.relay_only,
        bind: cli.bind,
    };
    let sig = ws::connect(&cli.server).await?;
    match cli.cmd {
        Cmd::Send { path } => {
            anyhow::ensure!(path.is_file(), "{} is not a file", path.display());
            let mut c = session::create(sig, &opts, |code| {
                println!("code: {code}");
                eprintln!("On the other side: tallow receive {code}");
            })
            .await?;
            eprintln!("verification words: {}", c.words.join(" "));
            report_path(&c).await;
            let moved = transfer::send_file(&mut c.link, &path).await?;
            for (p, sha) in &moved.files {
                println!("sent {} sha256 {sha}", p.display());
            }
            c.leave();
        }
        Cmd::Receive { code, dir, yes } => {
            anyhow::ensure!(
                yes,
                "asking before writing is not implemented yet: pass --yes"
            );
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut c = session::join(sig, &code, &opts).await?;
            eprintln!("verification words: {}", c.words.join(" "));
            report_path(&c).await;
            let moved = transfer::receive(&mut c.link, &dir).await?;
            for (p, sha) in &moved.files {
                println!("received {} sha256 {sha}", p.display());
            }
            c.leave();
        }
    }
    // A moment for the last frames (leave) to go out.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(())
}

/// The selected candidate pair, on stderr: whether the bytes go direct or
/// through the relay (the NAT tests read this line).
async fn report_path(c: &session::Connected) {
    if let Some(p) = tallow_cli::rtc::selected_path(c.pc.as_ref()).await {
        eprintln!("path: {p}");
    }
}
