//! The in-memory presence store: the pure [`Registry`] behind a mutex, with
//! notices handed straight to the subscribed node. Critical sections are a
//! few map operations and never await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use rand::RngExt;
use tokio::sync::mpsc;

use super::room_table::RoomTable;
use super::{
    Counts, Created, Event, Joined, Notice, Owner, Presence, PresenceConfig, PresenceError,
    PushOutcome, Resumed, RoomKey, RoomPut, RoomWrite, RoomsDue, Seat, SeatStatus,
};
use crate::client_addr::IpKey;
use crate::mailbox::Envelope;
use crate::registry::{Pushed, Registry, RegistryConfig};
use crate::room::Room;

pub struct MemoryPresence {
    cfg: RegistryConfig,
    registry: Mutex<Registry>,
    rooms: Mutex<RoomTable>,
    /// The rooms' clock: milliseconds since the store was made.
    epoch: Instant,
    nodes: Mutex<HashMap<Arc<str>, mpsc::UnboundedSender<Notice>>>,
}

impl MemoryPresence {
    pub fn new(cfg: PresenceConfig) -> Self {
        MemoryPresence {
            cfg: RegistryConfig {
                nameplate_ttl: cfg.nameplate_ttl,
                resume_grace: cfg.resume_grace,
                mailbox_cap: cfg.mailbox_cap,
                mailbox_bytes: cfg.mailbox_bytes,
                max_seats_per_ip: cfg.max_seats_per_ip,
            },
            registry: Mutex::new(Registry::default()),
            rooms: Mutex::new(RoomTable::default()),
            epoch: Instant::now(),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock would be a bug in the registry; the
        // data is still consistent per operation, so keep serving.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rooms(&self) -> MutexGuard<'_, RoomTable> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn deliver(&self, notices: impl IntoIterator<Item = Notice>) {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        for n in notices {
            if let Some(tx) = nodes.get(&n.to.node) {
                // A closed receiver means the node is shutting down.
                let _ = tx.send(n);
            }
        }
    }
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[async_trait]
impl Presence for MemoryPresence {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn durable(&self) -> bool {
        false
    }

    async fn create(
        &self,
        owner: &Owner,
        token: &str,
        ip: IpKey,
    ) -> Result<Created, PresenceError> {
        let mut rng = rand::rng();
        let created = self.registry().create(
            &self.cfg,
            random_id(),
            token.to_owned(),
            owner.clone(),
            ip,
            |lo, hi| rng.random_range(lo..=hi),
            Instant::now(),
        )?;
        Ok(created)
    }

    async fn join(
        &self,
        nameplate: u32,
        owner: &Owner,
        token: &str,
        ip: IpKey,
    ) -> Result<Joined, PresenceError> {
        let (joined, notice) = self.registry().join(
            &self.cfg,
            nameplate,
            token.to_owned(),
            owner.clone(),
            ip,
            Instant::now(),
        )?;
        self.deliver(notice);
        Ok(joined)
    }

    async fn resume(
        &self,
        token: &str,
        owner: &Owner,
        last_seq: u64,
    ) -> Result<Resumed, PresenceError> {
        let (resumed, notices) =
            self.registry()
                .resume(token, owner.clone(), last_seq, Instant::now())?;
        self.deliver(notices);
        Ok(resumed)
    }

    async fn push(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        seq: u64,
        body: Arc<str>,
    ) -> Result<PushOutcome, PresenceError> {
        let pushed = self.registry().push(session, seat, owner, seq, body)?;
        Ok(match pushed {
            Pushed::Stored { notice } => {
                self.deliver(notice);
                PushOutcome::Stored
            }
            Pushed::Duplicate => PushOutcome::Duplicate,
        })
    }

    async fn status(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
    ) -> Result<SeatStatus, PresenceError> {
        Ok(self.registry().status(session, seat, owner)?)
    }

    async fn fetch(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        after: u64,
        max: usize,
    ) -> Result<Vec<Envelope>, PresenceError> {
        Ok(self.registry().fetch(session, seat, owner, after, max)?)
    }

    async fn ack(
        &self,
        session: &str,
        seat: Seat,
        owner: &Owner,
        seq: u64,
    ) -> Result<(), PresenceError> {
        Ok(self.registry().ack(session, seat, owner, seq)?)
    }

    async fn detach(&self, session: &str, seat: Seat, owner: &Owner) -> Result<(), PresenceError> {
        let notices = self
            .registry()
            .detach(&self.cfg, session, seat, owner, Instant::now());
        self.deliver(notices);
        Ok(())
    }

    async fn leave(&self, session: &str, seat: Seat, owner: &Owner) -> Result<(), PresenceError> {
        let notices = self
            .registry()
            .leave(&self.cfg, session, seat, owner, Instant::now())?;
        self.deliver(notices);
        Ok(())
    }

    async fn abandon(&self, token: &str, owner: &Owner, leave: bool) -> Result<(), PresenceError> {
        let notices = self
            .registry()
            .abandon(&self.cfg, token, owner, leave, Instant::now());
        self.deliver(notices);
        Ok(())
    }

    async fn create_pair(
        &self,
        tokens: [String; 2],
        ips: [IpKey; 2],
    ) -> Result<String, PresenceError> {
        Ok(self
            .registry()
            .create_pair(&self.cfg, random_id(), tokens, ips, Instant::now())?)
    }

    async fn room_get(&self, key: &RoomKey) -> Result<(Option<Room>, u64), PresenceError> {
        Ok((self.rooms().get(key), self.now_ms()))
    }

    async fn room_put(&self, w: &RoomWrite<'_>) -> Result<RoomPut, PresenceError> {
        let put = self.rooms().put(w);
        if put == RoomPut::Saved {
            self.deliver(w.notify.iter().filter_map(|o| {
                let (node, conn) = o.rsplit_once('|')?;
                Some(Notice {
                    to: Owner {
                        node: Arc::from(node),
                        conn: conn.parse().ok()?,
                    },
                    session: w.id.to_owned(),
                    event: Event::Room,
                })
            }));
        }
        Ok(put)
    }

    async fn rooms_due(&self, _node: &str, max: usize) -> Result<RoomsDue, PresenceError> {
        Ok(RoomsDue {
            rooms: self.rooms().due(self.now_ms(), max),
            dead_nodes: Vec::new(),
        })
    }

    async fn rooms_of(&self, node: &str) -> Result<Vec<String>, PresenceError> {
        Ok(self.rooms().of_node(node))
    }

    fn subscribe(&self, node: &str) -> mpsc::UnboundedReceiver<Notice> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Arc::from(node), tx);
        rx
    }

    async fn heartbeat(&self, _node: &str) -> Result<(), PresenceError> {
        // One process is one node: it cannot outlive itself.
        Ok(())
    }

    async fn sweep(&self, _node: &str) -> Result<(), PresenceError> {
        let notices = self.registry().sweep(Instant::now());
        self.deliver(notices);
        Ok(())
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        Ok(())
    }

    async fn counts(&self) -> Result<Counts, PresenceError> {
        let rooms = self.rooms().len();
        let r = self.registry();
        Ok(Counts {
            sessions: r.sessions(),
            nameplates: r.nameplates(),
            rooms,
        })
    }
}
