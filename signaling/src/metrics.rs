//! Prometheus metrics, rendered in the OpenMetrics text format that
//! Prometheus scrapes.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::protocol::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub sessions: Gauge,
    pub nameplates: Gauge,
    pub rooms: Gauge,
    pub sessions_created: Counter,
    pub sessions_paired: Counter,
    pub rooms_created: Counter,
    pub room_invites: Counter,
    pub messages_forwarded: Counter,
    pub errors: Family<CodeLabel, Counter>,
}

impl Metrics {
    /// Metrics of this node, with the embedded relay's when it runs.
    pub fn new(relay: Option<&tallow_relay::metrics::RelayMetrics>) -> Self {
        let mut registry = Registry::with_prefix("tallow");
        if let Some(relay) = relay {
            relay.register(&mut registry);
        }
        let m = Metrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            sessions: Gauge::default(),
            nameplates: Gauge::default(),
            rooms: Gauge::default(),
            sessions_created: Counter::default(),
            sessions_paired: Counter::default(),
            rooms_created: Counter::default(),
            room_invites: Counter::default(),
            messages_forwarded: Counter::default(),
            errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections on this node",
            m.connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "sessions",
            "Live sessions in the presence store",
            m.sessions.clone(),
        );
        registry.register(
            "nameplates",
            "Nameplates waiting for a joiner",
            m.nameplates.clone(),
        );
        registry.register(
            "rooms",
            "Rooms live in the presence store (named and nearby)",
            m.rooms.clone(),
        );
        registry.register(
            "sessions_created",
            "Sessions created on this node",
            m.sessions_created.clone(),
        );
        registry.register(
            "sessions_paired",
            "Sessions paired on this node",
            m.sessions_paired.clone(),
        );
        registry.register(
            "rooms_created",
            "Rooms created on this node",
            m.rooms_created.clone(),
        );
        registry.register(
            "room_invites",
            "Pairwise sessions opened by room invitations on this node",
            m.room_invites.clone(),
        );
        registry.register(
            "messages_forwarded",
            "Messages delivered to clients of this node",
            m.messages_forwarded.clone(),
        );
        registry.register(
            "errors",
            "Protocol errors sent to clients, by code",
            m.errors.clone(),
        );
        // Every code appears from the start so that rate() works from zero.
        for code in ErrorCode::ALL {
            let _ = m.errors.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
        Metrics { registry, ..m }
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("metrics encode");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}
