//! One WebRTC peer connection (webrtc-rs 0.20): its events, from the
//! library's handler callbacks, become one channel the session reads.

use std::sync::Arc;

use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, SettingEngine,
};

use crate::signal::IceServer;

/// The send buffer of a data channel: `send` waits above it, which is our
/// back-pressure (the browser's bufferedAmount high-water mark).
pub const SEND_BUFFER: usize = 4 * 1024 * 1024;

pub enum RtcEvent {
    Candidate(RTCIceCandidateInit),
    DataChannel(Arc<dyn DataChannel>),
    State(RTCPeerConnectionState),
}

struct Handler(mpsc::UnboundedSender<RtcEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(c) = event.candidate.to_json() {
            let _ = self.0.send(RtcEvent::Candidate(c));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(RtcEvent::State(state));
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.0.send(RtcEvent::DataChannel(dc));
    }
}

/// A new peer connection with the server's ICE servers; `relay_only` keeps
/// only relayed candidates. `bind`: the local UDP address to gather from.
pub async fn peer_connection(
    ice: &[IceServer],
    relay_only: bool,
    bind: &str,
) -> webrtc::error::Result<(Arc<dyn PeerConnection>, mpsc::UnboundedReceiver<RtcEvent>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let servers = ice
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(servers)
        .with_ice_transport_policy(if relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        })
        .build();
    // webrtc-rs advertises RFC 8841's default max-message-size (64 KiB), and
    // a sealed data record is 64 KiB + 29 bytes: such records were dropped.
    // Browsers take 256 KiB, which the web client relies on; so do we.
    let mut settings = SettingEngine::default();
    settings.set_sctp_max_message_size(SctpMaxMessageSize::Bounded(
        SctpMaxMessageSize::MAX_MESSAGE_SIZE,
    ));
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_setting_engine(settings)
        .with_handler(Arc::new(Handler(tx)))
        .with_runtime(crate::driver_tick::Ticking::runtime())
        .with_udp_addrs(vec![bind.to_owned()])
        .with_data_channel_send_buffer_limit(SEND_BUFFER)
        .build()
        .await?;
    Ok((Arc::new(pc), rx))
}

/// The candidate pair a connection selected: which kind of path the bytes
/// take (`host`, `srflx`, `prflx` or `relay` at each end) and the addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedPath {
    pub local_type: String,
    pub local_addr: String,
    pub remote_type: String,
    pub remote_addr: String,
}

impl std::fmt::Display for SelectedPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "local={} {} remote={} {}",
            self.local_type, self.local_addr, self.remote_type, self.remote_addr
        )
    }
}

/// Reads the selected pair from the connection's statistics, as a browser's
/// `getStats()` gives it (transport -> selectedCandidatePairId).
pub async fn selected_path(pc: &dyn PeerConnection) -> Option<SelectedPath> {
    use webrtc::peer_connection::{RTCStatsReportEntry as E, StatsSelector};
    let report = pc
        .get_stats(std::time::Instant::now(), StatsSelector::None)
        .await;
    let pair_id = &report.transport()?.selected_candidate_pair_id;
    let E::IceCandidatePair(pair) = report.get(pair_id)? else {
        return None;
    };
    // The pair names its candidates by the ICE agent's ids, the report
    // keys them with a prefix (rtc 0.20.5); accept either.
    let find = |prefix: &str, id: &str| {
        report
            .get(id)
            .or_else(|| report.get(&format!("{prefix}{id}")))
    };
    let Some(E::LocalCandidate(l)) = find("RTCLocalIceCandidate_", &pair.local_candidate_id) else {
        return None;
    };
    let addr = |c: &rtc::statistics::stats::ice_candidate::RTCIceCandidateStats| {
        format!("{}:{}", c.address.clone().unwrap_or_default(), c.port)
    };
    // A remote candidate learnt from a check, not signalled, is peer
    // reflexive and has no entry of its own.
    let (remote_type, remote_addr) = match find("RTCRemoteIceCandidate_", &pair.remote_candidate_id)
    {
        Some(E::RemoteCandidate(r)) => (r.candidate_type.to_string(), addr(r)),
        _ => ("prflx".to_owned(), "?".to_owned()),
    };
    Some(SelectedPath {
        local_type: l.candidate_type.to_string(),
        local_addr: addr(l),
        remote_type,
        remote_addr,
    })
}
