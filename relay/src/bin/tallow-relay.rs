//! `tallow-relay`: the TURN relay on its own, for deployments that run it
//! apart from the signaling service (they share TURN_SECRET).

use std::net::SocketAddr;

use anyhow::{bail, Context};
use axum::routing::get;
use clap::{Parser, ValueEnum};
use prometheus_client::registry::Registry;
use tallow_relay::config::TurnConfig;
use tallow_relay::event_loop;
use tallow_relay::metrics::RelayMetrics;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Parser)]
#[command(name = "tallow-relay", version, about = "Tallow TURN relay (RFC 8656)")]
struct Args {
    #[command(flatten)]
    turn: TurnConfig,

    /// Log output format.
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,

    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long = "metrics-listen", env = "TURN_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
    let Some(secret) = args.turn.secret.clone() else {
        bail!("TURN_SECRET is required: the signaling service must hand out credentials under the same secret");
    };
    args.turn.validate().map_err(anyhow::Error::msg)?;
    let metrics = RelayMetrics::default();
    let relay = event_loop::start(args.turn.relay_config(secret), metrics.clone())
        .with_context(|| format!("starting the relay on {}", args.turn.listen))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        if let Some(addr) = args.metrics_listen {
            let mut registry = Registry::with_prefix("tallow");
            metrics.register(&mut registry);
            let registry = std::sync::Arc::new(registry);
            let app = axum::Router::new().route(
                "/metrics",
                get(move || {
                    let registry = registry.clone();
                    async move {
                        let mut out = String::new();
                        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            out,
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics listener on {addr}"))?;
            tracing::info!(%addr, "metrics listening");
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping relay");
        relay.stop();
        anyhow::Ok(())
    })
}
