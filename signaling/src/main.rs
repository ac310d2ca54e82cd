//! `tallow-server`: signaling, presence, the embedded TURN relay and the web client.

use std::time::Duration;

use anyhow::Context;
use tallow_signaling::config::{Config, LogFormat};
use tallow_signaling::server::Server;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    // Configuration first, while the process is still single-threaded.
    let cfg = Config::load();
    init_logging(cfg.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(cfg))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let drain = Duration::from_secs(cfg.shutdown_timeout_secs);
    let server = Server::start(cfg).await.context("starting tallow-server")?;
    let signal = wait_for_signal().await?;
    tracing::info!(signal, "shutting down: closing clients with 1012");
    if !server.shutdown(drain).await {
        tracing::warn!(
            timeout_secs = drain.as_secs(),
            "connections still open at the drain deadline"
        );
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
