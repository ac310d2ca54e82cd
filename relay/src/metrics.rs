//! Relay metrics. prometheus-client counters are single atomics, cheap
//! enough for the data path; the embedding process registers them.
//!
//! Labelled series (direction, drop reason) are created once here and the
//! data path holds a handle to each: a `Counter` clone shares its atomic, so
//! counting costs what an unlabelled counter does, with no family lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Label values of `tallow_turn_{packets,bytes}_relayed_total`.
pub const CLIENT_TO_PEER: &str = "client_to_peer";
pub const PEER_TO_CLIENT: &str = "peer_to_client";

/// Label values of `tallow_turn_dropped_packets_total`.
pub mod drop_reason {
    /// From a client without an allocation, or to a relay socket whose
    /// allocation is gone.
    pub const NO_ALLOCATION: &str = "no_allocation";
    /// No permission or channel for that peer, or the peer address policy
    /// refuses it.
    pub const NO_PERMISSION: &str = "no_permission";
    /// Over the allocation's bandwidth cap (TURN_MAX_BYTES_PER_SEC).
    pub const BANDWIDTH: &str = "bandwidth";
    /// The socket refused the datagram, or a slow TCP client's queue was full.
    pub const SEND_FAILED: &str = "send_failed";
    /// Neither STUN nor ChannelData.
    pub const INVALID: &str = "invalid";
    pub const ALL: [&str; 5] = [
        NO_ALLOCATION,
        NO_PERMISSION,
        BANDWIDTH,
        SEND_FAILED,
        INVALID,
    ];
}

#[derive(Clone)]
pub struct RelayMetrics {
    pub allocations: Gauge,
    /// The configured limit on live allocations (TURN_TOTAL_QUOTA).
    pub max_allocations: Gauge,
    pub allocations_total: Counter,
    packets: Family<DirectionLabel, Counter>,
    bytes: Family<DirectionLabel, Counter>,
    dropped: Family<ReasonLabel, Counter>,
    pub packets_to_peer: Counter,
    pub packets_to_client: Counter,
    pub bytes_to_peer: Counter,
    pub bytes_to_client: Counter,
    pub auth_failures: Counter,
    pub refused_peers: Counter,
    pub quota_refusals: Counter,
    pub dropped_no_allocation: Counter,
    pub dropped_no_permission: Counter,
    pub dropped_bandwidth: Counter,
    pub dropped_send_failed: Counter,
    pub dropped_invalid: Counter,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        let packets = Family::<DirectionLabel, Counter>::default();
        let bytes = Family::<DirectionLabel, Counter>::default();
        let dropped = Family::<ReasonLabel, Counter>::default();
        let dir = |f: &Family<DirectionLabel, Counter>, direction| {
            f.get_or_create(&DirectionLabel { direction }).clone()
        };
        let why = |reason| dropped.get_or_create(&ReasonLabel { reason }).clone();
        RelayMetrics {
            allocations: Gauge::default(),
            max_allocations: Gauge::default(),
            allocations_total: Counter::default(),
            packets_to_peer: dir(&packets, CLIENT_TO_PEER),
            packets_to_client: dir(&packets, PEER_TO_CLIENT),
            bytes_to_peer: dir(&bytes, CLIENT_TO_PEER),
            bytes_to_client: dir(&bytes, PEER_TO_CLIENT),
            auth_failures: Counter::default(),
            refused_peers: Counter::default(),
            quota_refusals: Counter::default(),
            dropped_no_allocation: why(drop_reason::NO_ALLOCATION),
            dropped_no_permission: why(drop_reason::NO_PERMISSION),
            dropped_bandwidth: why(drop_reason::BANDWIDTH),
            dropped_send_failed: why(drop_reason::SEND_FAILED),
            dropped_invalid: why(drop_reason::INVALID),
            packets,
            bytes,
            dropped,
        }
    }
}

impl RelayMetrics {
    /// Dropped packets of every reason together.
    pub fn dropped_total(&self) -> u64 {
        [
            &self.dropped_no_allocation,
            &self.dropped_no_permission,
            &self.dropped_bandwidth,
            &self.dropped_send_failed,
            &self.dropped_invalid,
        ]
        .iter()
        .map(|c| c.get())
        .sum()
    }

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
            "max_allocations",
            "Configured limit on live TURN allocations (TURN_TOTAL_QUOTA)",
            self.max_allocations.clone(),
        );
        r.register(
            "allocations_created",
            "TURN allocations created",
            self.allocations_total.clone(),
        );
        r.register(
            "packets_relayed",
            "Packets relayed, by direction (client_to_peer, peer_to_client)",
            self.packets.clone(),
        );
        r.register(
            "bytes_relayed",
            "Payload bytes relayed, by direction (client_to_peer, peer_to_client)",
            self.bytes.clone(),
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
            "Data packets dropped, by reason (no_allocation, no_permission, bandwidth, send_failed, invalid)",
            self.dropped.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_handles_share_the_exported_series() {
        let m = RelayMetrics::default();
        m.packets_to_client.inc();
        m.bytes_to_client.inc_by(7);
        m.packets_to_peer.inc_by(2);
        m.dropped_bandwidth.inc();
        m.max_allocations.set(42);
        let mut registry = Registry::with_prefix("tallow");
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for line in [
            "tallow_turn_packets_relayed_total{direction=\"peer_to_client\"} 1\n",
            "tallow_turn_packets_relayed_total{direction=\"client_to_peer\"} 2\n",
            "tallow_turn_bytes_relayed_total{direction=\"peer_to_client\"} 7\n",
            "tallow_turn_bytes_relayed_total{direction=\"client_to_peer\"} 0\n",
            "tallow_turn_dropped_packets_total{reason=\"bandwidth\"} 1\n",
            "tallow_turn_dropped_packets_total{reason=\"no_permission\"} 0\n",
            "tallow_turn_max_allocations 42\n",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
        // Every reason is exported from the start, so rate() works from zero.
        for reason in drop_reason::ALL {
            assert!(out.contains(&format!("reason=\"{reason}\"")), "{reason}");
        }
        assert_eq!(m.dropped_total(), 1);
    }
}
