//! Relay metrics. prometheus-client counters are single atomics, cheap
//! enough for the data path; the embedding process registers them.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct RelayMetrics {
    pub allocations: Gauge,
    pub allocations_total: Counter,
    pub packets_relayed: Counter,
    pub bytes_relayed: Counter,
    pub auth_failures: Counter,
    pub refused_peers: Counter,
    pub quota_refusals: Counter,
    pub dropped_packets: Counter,
}

impl RelayMetrics {
    /// Register under `registry` (names get the registry's prefix, e.g.
    /// `tallow_turn_allocations`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("turn");
        r.register(
            "allocations",
            "Live TURN allocations",
            self.allocations.clone(),
        );
        r.register(
            "allocations_created",
            "TURN allocations created",
            self.allocations_total.clone(),
        );
        r.register(
            "packets_relayed",
            "Packets relayed between clients and peers",
            self.packets_relayed.clone(),
        );
        r.register(
            "bytes_relayed",
            "Payload bytes relayed between clients and peers",
            self.bytes_relayed.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused for credentials (401)",
            self.auth_failures.clone(),
        );
        r.register(
            "refused_peers",
            "Permissions or channels refused by the peer address policy (403)",
            self.refused_peers.clone(),
        );
        r.register(
            "quota_refusals",
            "Allocations refused by quota (486)",
            self.quota_refusals.clone(),
        );
        r.register(
            "dropped_packets",
            "Data packets dropped (no allocation, permission or channel; over bandwidth; send failed)",
            self.dropped_packets.clone(),
        );
    }
}
