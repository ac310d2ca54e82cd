//! The in-memory presence store: the pure [`Registry`] behind a mutex, with
//! notices handed straight to the subscribed node. Critical sections are a
//! few map operations and never await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use rand::RngExt;
use tokio::sync::mpsc;

use super::{
    Counts, Created, Joined, Notice, Owner, Presence, PresenceConfig, PresenceError, PushOutcome,
    Resumed, Seat, SeatStatus,
};
use crate::client_addr::IpKey;
use crate::mailbox::Envelope;
use crate::registry::{Pushed, Registry, RegistryConfig};

pub struct MemoryPresence {
    cfg: RegistryConfig,
    registry: Mutex<Registry>,
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
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock would be a bug in the registry; the
        // data is still consistent per operation, so keep serving.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
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
        let r = self.registry();
        Ok(Counts {
            sessions: r.sessions(),
            nameplates: r.nameplates(),
        })
    }
}
