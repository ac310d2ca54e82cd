//! The TURN server as a sans-IO state machine: packets and time in, packets
//! out through the [`Io`] the shell provides. It owns every allocation and is
//! owned by one thread, so the data path takes no lock; per packet it does a
//! hash lookup, a permission scan and one `send`, and allocates nothing.
//!
//! When a client sends to a relayed address of this same server (both
//! browsers of a transfer on one relay, the common case), the packet is
//! handed to the other allocation directly instead of taking a round trip
//! through the kernel; each side still sees exactly what RFC 8656 describes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun_codec::rfc5389::attributes::{
    ErrorCode, Fingerprint, MessageIntegrity, Nonce, Realm, Software, Username, XorMappedAddress,
};
use stun_codec::rfc5389::{errors as e5389, methods::BINDING};
use stun_codec::rfc5766::attributes::{
    Lifetime, RequestedTransport, ReservationToken, XorRelayAddress,
};
use stun_codec::rfc5766::errors as e5766;
use stun_codec::rfc5766::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};
use stun_codec::rfc8656::attributes::{AddressFamily, RequestedAddressFamily};
use stun_codec::rfc8656::errors as e8656;
use stun_codec::{Message, MessageClass, Method, TransactionId};

use crate::allocation::{Allocation, ClientAddr, RelayId, Transport};
use crate::codec::{self, Attr, ChannelNumber, Msg, Packet};
use crate::config::Secret;
use crate::credentials;
use crate::metrics::RelayMetrics;
use crate::nonce::{NonceCheck, Nonces};
use crate::peer_policy::PeerPolicy;

/// What the core needs from its surroundings.
pub trait Io {
    fn send_to_client(&mut self, client: &ClientAddr, data: &[u8]);
    fn send_to_peer(&mut self, relay: RelayId, peer: SocketAddr, data: &[u8]);
    /// Bind a relay socket (IPv6 if asked, even port if asked). Returns its
    /// handle and its address, with a concrete IP.
    fn open_relay(
        &mut self,
        client: &ClientAddr,
        ipv6: bool,
        even: bool,
    ) -> Option<(RelayId, SocketAddr)>;
    fn close_relay(&mut self, relay: RelayId);
}

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub realm: String,
    pub secret: Secret,
    pub policy: PeerPolicy,
    /// Advertised instead of the bound IPv4 address (1:1 NAT).
    pub external_ip: Option<std::net::IpAddr>,
    /// Whether IPv6 relayed addresses can be had.
    pub ipv6: bool,
    pub user_quota: usize,
    pub total_quota: usize,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    /// Bytes per second per allocation, both directions together; 0: no cap.
    pub bandwidth: u64,
    pub nonce_lifetime_secs: u64,
}

impl CoreConfig {
    pub fn new(realm: impl Into<String>, secret: Secret) -> Self {
        CoreConfig {
            realm: realm.into(),
            secret,
            policy: PeerPolicy::default(),
            external_ip: None,
            ipv6: false,
            user_quota: 10,
            total_quota: 10_000,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            bandwidth: 0,
            nonce_lifetime_secs: 600,
        }
    }
}

const SOFTWARE: &str = concat!("tallow-relay/", env!("CARGO_PKG_VERSION"));
const UDP: u8 = 17;

/// Credentials of an authenticated request, to sign its response.
struct Auth {
    username: Username,
    realm: Realm,
    password: String,
}

pub struct Core {
    cfg: CoreConfig,
    nonces: Nonces,
    allocs: Vec<Option<Allocation>>,
    free: Vec<usize>,
    by_client: HashMap<ClientAddr, usize>,
    by_relayed: HashMap<SocketAddr, usize>,
    /// Relayed IPs in use (a handful), to skip the `by_relayed` lookup for
    /// the usual external peer.
    relayed_ips: Vec<(std::net::IpAddr, usize)>,
    /// Allocation by relay socket handle; handles are small dense integers.
    by_relay: Vec<Option<usize>>,
    per_user: HashMap<String, usize>,
    live: usize,
    scratch: Vec<u8>,
    txid_counter: u64,
    anchor: (Instant, u64),
    pub metrics: RelayMetrics,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Core {
    pub fn new(cfg: CoreConfig, metrics: RelayMetrics, now: Instant) -> Self {
        metrics
            .max_allocations
            .set(i64::try_from(cfg.total_quota).unwrap_or(i64::MAX));
        Core {
            nonces: Nonces::new(rand::random(), cfg.nonce_lifetime_secs),
            cfg,
            allocs: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
            by_relayed: HashMap::new(),
            relayed_ips: Vec::new(),
            by_relay: Vec::new(),
            per_user: HashMap::new(),
            live: 0,
            scratch: Vec::with_capacity(2048),
            txid_counter: rand::random(),
            anchor: (now, unix_now()),
            metrics,
        }
    }

    /// Unix time at `now`, on the clock the core started with.
    fn unix(&self, now: Instant) -> u64 {
        self.anchor.1 + now.saturating_duration_since(self.anchor.0).as_secs()
    }

    pub fn allocation_count(&self) -> usize {
        self.live
    }

    /// A datagram or TCP frame from a client.
    pub fn on_client(&mut self, io: &mut impl Io, client: &ClientAddr, buf: &[u8], now: Instant) {
        match codec::classify(buf) {
            Packet::ChannelData { channel, data } => {
                let Some(&idx) = self.by_client.get(client) else {
                    self.metrics.dropped_no_allocation.inc();
                    return;
                };
                let a = self.allocs[idx].as_ref().expect("indexed allocation");
                match a.channel_peer(channel, now) {
                    Some(peer) if a.permitted(peer.ip(), now) => {
                        self.forward(io, idx, peer, data, now)
                    }
                    _ => {
                        self.metrics.dropped_no_permission.inc();
                    }
                }
            }
            Packet::Stun => {
                if let Some((peer, data)) = codec::parse_send_indication(buf) {
                    let Some(&idx) = self.by_client.get(client) else {
                        self.metrics.dropped_no_allocation.inc();
                        return;
                    };
                    let a = self.allocs[idx].as_ref().expect("indexed allocation");
                    if a.permitted(peer.ip(), now) {
                        self.forward(io, idx, peer, data, now);
                    } else {
                        self.metrics.dropped_no_permission.inc();
                    }
                    return;
                }
                match codec::decode(buf) {
                    Ok(msg) => self.control(io, client, msg, now),
                    Err(codec::DecodeError::Broken {
                        class: MessageClass::Request,
                        method,
                        transaction_id,
                    }) => {
                        let resp = error(method, transaction_id, e5389::BadRequest);
                        self.send(io, client, resp, None);
                    }
                    Err(_) => {}
                }
            }
            Packet::Invalid => {
                self.metrics.dropped_invalid.inc();
            }
        }
    }

    /// A datagram that arrived on relay socket `relay` from `from`.
    pub fn on_peer(
        &mut self,
        io: &mut impl Io,
        relay: RelayId,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        match self.by_relay.get(relay as usize).copied().flatten() {
            // A permission for an internal IP exists only for another
            // allocation's relayed address, and those datagrams come
            // in-process: through a socket, an internal source is refused.
            // Nor does the relay's own address: its listener, or a service
            // on its host, answering what a relay socket sent there.
            Some(idx) if self.cfg.policy.allows(from.ip()) && !self.is_own_ip(from) => {
                self.deliver(io, idx, from, data, now)
            }
            Some(_) => {
                self.metrics.dropped_no_permission.inc();
            }
            None => {
                self.metrics.dropped_no_allocation.inc();
            }
        }
    }

    /// Whether `addr` is this host as far as loopback goes: on an IP this
    /// relay hands out relayed addresses on, with loopback peers refused.
    fn is_own_ip(&self, addr: SocketAddr) -> bool {
        !self.cfg.policy.allow_loopback && self.relayed_ips.iter().any(|(ip, _)| *ip == addr.ip())
    }

    /// A TCP client connection closed: its allocation goes with it.
    pub fn client_gone(&mut self, io: &mut impl Io, client: &ClientAddr) {
        if let Some(&idx) = self.by_client.get(client) {
            self.remove(io, idx);
        }
    }

    /// Expire allocations, permissions and channels. Call about once a second.
    pub fn tick(&mut self, io: &mut impl Io, now: Instant) {
        for idx in 0..self.allocs.len() {
            let expired = match &mut self.allocs[idx] {
                Some(a) if a.expires <= now => true,
                Some(a) => {
                    a.prune(now);
                    false
                }
                None => false,
            };
            if expired {
                self.remove(io, idx);
            }
        }
    }

    /// Client of allocation `idx` sends `data` to `peer`.
    fn forward(
        &mut self,
        io: &mut impl Io,
        idx: usize,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let a = self.allocs[idx].as_mut().expect("indexed allocation");
        if !a.bucket.admit(data.len(), now) {
            self.metrics.dropped_bandwidth.inc();
            return;
        }
        self.metrics.packets_to_peer.inc();
        self.metrics.bytes_to_peer.inc_by(data.len() as u64);
        let ours = self.relayed_ips.iter().any(|(ip, _)| *ip == peer.ip());
        match ours.then(|| self.by_relayed.get(&peer)).flatten() {
            // The peer is another allocation of this server: skip the kernel.
            Some(&other) if other != idx => {
                let from = a.relayed;
                self.deliver(io, other, from, data, now);
            }
            // Any other port of the relay's own address (its TURN listener,
            // UDP services on the wildcard) is this host: a peer only where
            // loopback is, public address or not.
            _ if ours && !self.cfg.policy.allow_loopback => {
                self.metrics.dropped_no_permission.inc();
            }
            _ if self.cfg.policy.allows(peer.ip()) => io.send_to_peer(a.relay, peer, data),
            // An internal IP permitted for another allocation's address:
            // any other port of it (or that address once released) is not.
            _ => {
                self.metrics.dropped_no_permission.inc();
            }
        }
    }

    /// `data` from `from` arrives at the relayed address of allocation `idx`.
    fn deliver(
        &mut self,
        io: &mut impl Io,
        idx: usize,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let Some(a) = self.allocs[idx].as_mut() else {
            return;
        };
        if !a.permitted(from.ip(), now) {
            self.metrics.dropped_no_permission.inc();
            return;
        }
        if !a.bucket.admit(data.len(), now) {
            self.metrics.dropped_bandwidth.inc();
            return;
        }
        // Counted here, the one way into a client: from a socket (on_peer)
        // and from another allocation of this relay (forward).
        self.metrics.packets_to_client.inc();
        self.metrics.bytes_to_client.inc_by(data.len() as u64);
        match a.channel_for(from, now) {
            Some(ch) => {
                let pad = a.client.transport == Transport::Tcp;
                codec::write_channel_data(&mut self.scratch, ch, data, pad);
            }
            None => {
                self.txid_counter = self.txid_counter.wrapping_add(1);
                let mut txid = [0u8; 12];
                txid[4..].copy_from_slice(&self.txid_counter.to_be_bytes());
                codec::write_data_indication(&mut self.scratch, &txid, from, data);
            }
        }
        io.send_to_client(&a.client, &self.scratch);
    }

    fn remove(&mut self, io: &mut impl Io, idx: usize) {
        let Some(a) = self.allocs[idx].take() else {
            return;
        };
        self.by_client.remove(&a.client);
        self.by_relayed.remove(&a.relayed);
        if let Some(slot) = self.by_relay.get_mut(a.relay as usize) {
            *slot = None;
        }
        if let Some(pos) = self
            .relayed_ips
            .iter()
            .position(|(ip, _)| *ip == a.relayed.ip())
        {
            self.relayed_ips[pos].1 -= 1;
            if self.relayed_ips[pos].1 == 0 {
                self.relayed_ips.swap_remove(pos);
            }
        }
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
        io.close_relay(a.relay);
        self.free.push(idx);
        self.live -= 1;
        self.metrics.allocations.set(self.live as i64);
    }

    fn control(&mut self, io: &mut impl Io, client: &ClientAddr, msg: Msg, now: Instant) {
        if msg.class() != MessageClass::Request {
            // Responses are not for a server; other indications are ignored.
            return;
        }
        let (method, txid) = (msg.method(), msg.transaction_id());
        if method == BINDING {
            let mut resp = Message::new(MessageClass::SuccessResponse, BINDING, txid);
            resp.add_attribute(XorMappedAddress::new(client.addr));
            return self.send(io, client, resp, None);
        }
        if ![ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND].contains(&method) {
            return self.send(io, client, error(method, txid, e5389::BadRequest), None);
        }
        let auth = match self.authenticate(&msg, now) {
            Ok(auth) => auth,
            Err(resp) => return self.send(io, client, resp, None),
        };
        let resp = match method {
            ALLOCATE => self.allocate(io, client, &msg, &auth, now),
            _ => self.on_allocation(io, client, &msg, &auth, now),
        };
        self.send(io, client, resp, Some(&auth));
    }

    /// Long-term credentials with TURN REST API passwords (RFC 8489 §9.2).
    fn authenticate(&mut self, msg: &Msg, now: Instant) -> Result<Auth, Msg> {
        let (method, txid) = (msg.method(), msg.transaction_id());
        let unix = self.unix(now);
        let challenge = |core: &Core, code: ErrorCode| {
            let mut m = Message::new(MessageClass::ErrorResponse, method, txid);
            m.add_attribute(code);
            m.add_attribute(Realm::new(core.cfg.realm.clone()).expect("configured realm is valid"));
            m.add_attribute(Nonce::new(core.nonces.issue(unix)).expect("hex nonce is valid"));
            m
        };
        let (Some(mi), Some(username)) = (
            msg.get_attribute::<MessageIntegrity>(),
            msg.get_attribute::<Username>(),
        ) else {
            // The first request of every client: not a failure, a challenge.
            return Err(challenge(self, e5389::Unauthorized.into()));
        };
        let (Some(realm), Some(nonce)) =
            (msg.get_attribute::<Realm>(), msg.get_attribute::<Nonce>())
        else {
            return Err(error(method, txid, e5389::BadRequest));
        };
        if self.nonces.check(nonce.value(), unix) != NonceCheck::Valid {
            return Err(challenge(self, e5389::StaleNonce.into()));
        }
        let password = match (realm.text() == self.cfg.realm).then(|| {
            credentials::expected_password(self.cfg.secret.expose(), username.name(), unix)
        }) {
            Some(Ok(p)) => p,
            _ => {
                self.metrics.auth_failures.inc();
                return Err(challenge(self, e5389::Unauthorized.into()));
            }
        };
        if mi
            .check_long_term_credential(username, realm, &password)
            .is_err()
        {
            self.metrics.auth_failures.inc();
            return Err(challenge(self, e5389::Unauthorized.into()));
        }
        Ok(Auth {
            username: username.clone(),
            realm: realm.clone(),
            password,
        })
    }

    fn allocate(
        &mut self,
        io: &mut impl Io,
        client: &ClientAddr,
        msg: &Msg,
        auth: &Auth,
        now: Instant,
    ) -> Msg {
        let txid = msg.transaction_id();
        if let Some(&idx) = self.by_client.get(client) {
            let a = self.allocs[idx].as_ref().expect("indexed allocation");
            // A retransmitted Allocate gets the same answer; anything else
            // on this 5-tuple is a mismatch.
            if a.txid == txid {
                let lifetime = a.expires.saturating_duration_since(now);
                return allocate_success(txid, a.relayed, client.addr, lifetime);
            }
            return error(ALLOCATE, txid, e5766::AllocationMismatch);
        }
        match msg.get_attribute::<RequestedTransport>() {
            None => return error(ALLOCATE, txid, e5389::BadRequest),
            Some(t) if t.protocol() != UDP => {
                return error(ALLOCATE, txid, e5766::UnsupportedTransportProtocol)
            }
            Some(_) => {}
        }
        if msg.get_attribute::<ReservationToken>().is_some() {
            // Reservations (EVEN-PORT with R) are not kept.
            return error(ALLOCATE, txid, e5766::InsufficientCapacity);
        }
        let ipv6 = match msg.get_attribute::<RequestedAddressFamily>() {
            Some(f) if f.address_family() == AddressFamily::V6 => {
                if !self.cfg.ipv6 {
                    return error(ALLOCATE, txid, e8656::AddressFamilyNotSupported);
                }
                true
            }
            _ => false,
        };
        let user = auth.username.name();
        if self.live >= self.cfg.total_quota
            || self.per_user.get(user).copied().unwrap_or(0) >= self.cfg.user_quota
        {
            self.metrics.quota_refusals.inc();
            return error(ALLOCATE, txid, e5766::AllocationQuotaReached);
        }
        let even = msg.attributes().any(|a| matches!(a, Attr::EvenPort(_)));
        let Some((relay, bound)) = io.open_relay(client, ipv6, even) else {
            return error(ALLOCATE, txid, e5766::InsufficientCapacity);
        };
        let relayed = match (self.cfg.external_ip, ipv6) {
            (Some(ip), false) => SocketAddr::new(ip, bound.port()),
            _ => bound,
        };
        let lifetime = self.lifetime(msg).max(self.cfg.default_lifetime);
        let alloc = Allocation::new(
            *client,
            relay,
            relayed,
            user.to_owned(),
            auth.password.clone(),
            txid,
            now + lifetime,
            self.cfg.bandwidth,
            now,
        );
        let idx = match self.free.pop() {
            Some(i) => {
                self.allocs[i] = Some(alloc);
                i
            }
            None => {
                self.allocs.push(Some(alloc));
                self.allocs.len() - 1
            }
        };
        self.by_client.insert(*client, idx);
        self.by_relayed.insert(relayed, idx);
        let r = relay as usize;
        if self.by_relay.len() <= r {
            self.by_relay.resize(r + 1, None);
        }
        self.by_relay[r] = Some(idx);
        match self
            .relayed_ips
            .iter_mut()
            .find(|(ip, _)| *ip == relayed.ip())
        {
            Some(entry) => entry.1 += 1,
            None => self.relayed_ips.push((relayed.ip(), 1)),
        }
        *self.per_user.entry(user.to_owned()).or_insert(0) += 1;
        self.live += 1;
        self.metrics.allocations.set(self.live as i64);
        self.metrics.allocations_total.inc();
        allocate_success(txid, relayed, client.addr, lifetime)
    }

    /// The requested lifetime, capped at the maximum.
    fn lifetime(&self, msg: &Msg) -> Duration {
        msg.get_attribute::<Lifetime>()
            .map_or(self.cfg.default_lifetime, |l| l.lifetime())
            .min(self.cfg.max_lifetime)
    }

    /// Refresh, CreatePermission and ChannelBind: requests on an existing
    /// allocation.
    fn on_allocation(
        &mut self,
        io: &mut impl Io,
        client: &ClientAddr,
        msg: &Msg,
        auth: &Auth,
        now: Instant,
    ) -> Msg {
        let (method, txid) = (msg.method(), msg.transaction_id());
        let Some(&idx) = self.by_client.get(client) else {
            return error(method, txid, e5766::AllocationMismatch);
        };
        let a = self.allocs[idx].as_ref().expect("indexed allocation");
        if a.username != auth.username.name() {
            return error(method, txid, e5766::WrongCredentials);
        }
        let relayed_v6 = a.relayed.is_ipv6();
        if method == REFRESH {
            if let Some(f) = msg.get_attribute::<RequestedAddressFamily>() {
                if (f.address_family() == AddressFamily::V6) != relayed_v6 {
                    return error(method, txid, e8656::PeerAddressFamilyMismatch);
                }
            }
            let lifetime = self.lifetime(msg);
            if lifetime.is_zero() {
                self.remove(io, idx);
            } else if let Some(a) = self.allocs[idx].as_mut() {
                a.expires = now + lifetime;
            }
            let mut resp = Message::new(MessageClass::SuccessResponse, REFRESH, txid);
            resp.add_attribute(lifetime_attr(lifetime));
            return resp;
        }
        let peers: Vec<SocketAddr> = msg
            .attributes()
            .filter_map(|a| match a {
                Attr::XorPeerAddress(p) => Some(p.address()),
                _ => None,
            })
            .collect();
        if peers.is_empty() || (method == CHANNEL_BIND && peers.len() != 1) {
            return error(method, txid, e5389::BadRequest);
        }
        for p in &peers {
            if p.is_ipv6() != relayed_v6 {
                return error(method, txid, e8656::PeerAddressFamilyMismatch);
            }
            // Another allocation of this relay is reached in-process and
            // leads to no internal service: allowed whatever the policy.
            if !self.cfg.policy.allows(p.ip()) && !self.by_relayed.contains_key(p) {
                self.metrics.refused_peers.inc();
                return error(method, txid, e5766::Forbidden);
            }
        }
        let a = self.allocs[idx].as_mut().expect("indexed allocation");
        if method == CHANNEL_BIND {
            let number = match msg.get_attribute::<ChannelNumber>() {
                Some(n) if (codec::CHANNEL_MIN..=codec::CHANNEL_MAX).contains(&n.value()) => {
                    n.value()
                }
                _ => return error(method, txid, e5389::BadRequest),
            };
            if a.bind(number, peers[0], now).is_err() {
                return error(method, txid, e5389::BadRequest);
            }
        }
        for p in &peers {
            a.permit(p.ip(), now);
        }
        Message::new(MessageClass::SuccessResponse, method, txid)
    }

    /// Encode and send a response: SOFTWARE, then MESSAGE-INTEGRITY when the
    /// request was authenticated, then FINGERPRINT.
    fn send(&mut self, io: &mut impl Io, client: &ClientAddr, mut msg: Msg, auth: Option<&Auth>) {
        msg.add_attribute(Software::new(SOFTWARE.to_owned()).expect("short software name"));
        if let Some(a) = auth {
            match MessageIntegrity::new_long_term_credential(
                &msg,
                &a.username,
                &a.realm,
                &a.password,
            ) {
                Ok(mi) => msg.add_attribute(mi),
                Err(_) => return,
            }
        }
        if let Ok(fp) = Fingerprint::new(&msg) {
            msg.add_attribute(fp);
        }
        let bytes = codec::encode(msg);
        io.send_to_client(client, &bytes);
    }
}

fn error(method: Method, txid: TransactionId, code: impl Into<ErrorCode>) -> Msg {
    let mut m = Message::new(MessageClass::ErrorResponse, method, txid);
    m.add_attribute(code.into());
    m
}

fn lifetime_attr(d: Duration) -> Lifetime {
    Lifetime::from_u32(d.as_secs().min(u64::from(u32::MAX)) as u32)
}

fn allocate_success(
    txid: TransactionId,
    relayed: SocketAddr,
    mapped: SocketAddr,
    lifetime: Duration,
) -> Msg {
    let mut m = Message::new(MessageClass::SuccessResponse, ALLOCATE, txid);
    m.add_attribute(XorRelayAddress::new(relayed));
    m.add_attribute(lifetime_attr(lifetime));
    m.add_attribute(XorMappedAddress::new(mapped));
    m
}

#[cfg(test)]
mod tests;
