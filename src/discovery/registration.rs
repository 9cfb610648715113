//! Keeping this peer registered: a lease, a key attached to it, and a
//! dedicated thread that renews the lease every TTL/3.
//!
//! The thread owns the whole registration state machine:
//!
//! ```text
//!   no lease ──grant──> lease ──put──> registered ──keepalive every TTL/3──┐
//!      ^                  ^                 │  ^                            │
//!      │                  └──record changed─┘  └────────── ok ─────────────┘
//!      └───── lease gone (expired, etcd wiped/restarted) ─────────────────────
//! ```
//!
//! Failures (etcd unreachable, no leader) are retried with backoff on every
//! endpoint; the first failure of a run of failures is logged at warn level,
//! the recovery at info. Stopping revokes the lease so the peer disappears at
//! once; a crash lets the lease expire after the TTL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::{peer_key, DiscoveryError, PeerRecord};
use crate::etcd::{Client, LeaseId};

/// Shortest and longest wait between failed attempts. The longest bounds
/// how late a peer registers again once etcd is reachable again: one
/// connect timeout (500 ms) in flight plus this wait stays under a second
/// (tests/it/lan.rs); an unreachable etcd costs each peer about one
/// connection attempt per 0.75 s.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_millis(250);

/// What to register and how.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// Key namespace (`/<ns>/peers/<id>`).
    pub namespace: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// The record to publish.
    pub record: PeerRecord,
}

enum Msg {
    IndexGen(u64),
    Stop,
}

/// Publishes index generations into a running registration's record.
#[derive(Clone)]
pub struct GenPublisher {
    tx: Sender<Msg>,
}

impl GenPublisher {
    /// Publishes a new index generation (ignored once the registration stopped).
    pub fn set_index_gen(&self, generation: u64) {
        let _ = self.tx.send(Msg::IndexGen(generation));
    }
}

/// A running registration. Dropping it revokes the lease and joins the thread.
pub struct Registration {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    lease: Mutex<Option<LeaseId>>,
    registered: AtomicBool,
}

impl Registration {
    /// Starts the renewal thread. The first registration is attempted at
    /// once, on that thread; use [`Registration::wait_registered`] to wait.
    pub fn start(client: Client, cfg: RegistrationConfig) -> Result<Registration, DiscoveryError> {
        if cfg.ttl < Duration::from_secs(2) {
            return Err(DiscoveryError::Ttl(cfg.ttl.as_secs()));
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            lease: Mutex::new(None),
            registered: AtomicBool::new(false),
        });
        let keeper = Keeper {
            client,
            key: peer_key(&cfg.namespace, &cfg.record.id),
            ttl: cfg.ttl,
            record: cfg.record,
            rx,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("pbs-lease".into())
            .spawn(move || keeper.run())
            .map_err(DiscoveryError::Thread)?;
        Ok(Registration {
            tx,
            shared,
            thread: Some(thread),
        })
    }

    /// Publishes a new index generation in the peer record.
    pub fn set_index_gen(&self, generation: u64) {
        let _ = self.tx.send(Msg::IndexGen(generation));
    }

    /// A handle other threads can use to publish index generations.
    pub fn publisher(&self) -> GenPublisher {
        GenPublisher {
            tx: self.tx.clone(),
        }
    }

    /// The lease currently held, if registered.
    pub fn lease(&self) -> Option<LeaseId> {
        *self.shared.lease.lock()
    }

    /// Whether the key is currently in etcd (as far as this peer knows).
    pub fn is_registered(&self) -> bool {
        self.shared.registered.load(Ordering::SeqCst)
    }

    /// Polls until registered or `timeout` passes.
    pub fn wait_registered(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.is_registered() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Revokes the lease (the peer disappears at once) and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Keeper {
    client: Client,
    key: String,
    ttl: Duration,
    record: PeerRecord,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
}

impl Keeper {
    fn run(mut self) {
        let mut lease: Option<LeaseId> = None;
        let mut dirty = true;
        let mut ever_registered = false;
        let mut failing = false;
        let mut retry = RETRY_MIN;
        loop {
            let step = self.step(&mut lease, &mut dirty, &mut ever_registered);
            *self.shared.lease.lock() = lease;
            self.shared
                .registered
                .store(lease.is_some() && !dirty, Ordering::SeqCst);
            let wait = match step {
                Ok(()) => {
                    if failing {
                        log::info!("etcd reachable again; {} is registered", self.key);
                        failing = false;
                    }
                    retry = RETRY_MIN;
                    self.ttl / 3
                }
                Err(e) => {
                    if !failing {
                        log::warn!("registration of {}: {e}; retrying", self.key);
                        failing = true;
                    }
                    let w = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    w
                }
            };
            match self.rx.recv_timeout(wait) {
                Ok(Msg::IndexGen(g)) => {
                    if g != self.record.index_gen {
                        self.record.index_gen = g;
                        dirty = true;
                    }
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        self.shared.registered.store(false, Ordering::SeqCst);
        if let Some(id) = lease {
            match self.client.lease_revoke(id) {
                Ok(()) => log::info!("unregistered {} (lease {} revoked)", self.key, id.hex()),
                Err(e) => log::warn!(
                    "could not revoke lease {}: {e}; it expires by itself",
                    id.hex()
                ),
            }
        }
    }

    /// One pass of the state machine: make sure a lease exists and the key is
    /// current, or renew the lease.
    fn step(
        &mut self,
        lease: &mut Option<LeaseId>,
        dirty: &mut bool,
        ever_registered: &mut bool,
    ) -> Result<(), DiscoveryError> {
        if let (Some(id), false) = (*lease, *dirty) {
            match self.client.lease_keepalive(id)? {
                Some(_) => return Ok(()),
                None => {
                    log::warn!(
                        "lease {} of {} is gone (expired or etcd lost its data); registering again",
                        id.hex(),
                        self.key
                    );
                    *lease = None;
                    *dirty = true;
                }
            }
        }
        let id = match *lease {
            Some(id) => id,
            None => {
                let ttl_secs = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
                let l = self.client.lease_grant(ttl_secs)?;
                *lease = Some(l.id);
                *dirty = true;
                l.id
            }
        };
        let value =
            serde_json::to_vec(&self.record).map_err(|e| DiscoveryError::Encode(e.to_string()))?;
        match self.client.put(self.key.as_bytes(), &value, Some(id)) {
            Ok(_) => {}
            Err(crate::etcd::Error::Etcd { message, .. })
                if message.contains("lease not found") =>
            {
                *lease = None;
                return Err(DiscoveryError::LeaseLost);
            }
            Err(e) => return Err(e.into()),
        }
        *dirty = false;
        if *ever_registered {
            log::info!(
                "registered {} again (lease {}, ttl {}s)",
                self.key,
                id.hex(),
                self.ttl.as_secs()
            );
        } else {
            log::info!(
                "registered {} -> {} (lease {}, ttl {}s)",
                self.key,
                self.record.addr,
                id.hex(),
                self.ttl.as_secs()
            );
            *ever_registered = true;
        }
        Ok(())
    }
}
