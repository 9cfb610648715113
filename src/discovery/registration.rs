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
//! The thread also watches its own key: when anyone else overwrites it (a
//! value or lease that is not this peer's) or deletes it, the record is put
//! back at once (within a second; at most every [`RECLAIM_EVERY`] so two
//! processes sharing an id do not hammer etcd). [`Registration::start`]
//! opens a watch of its own for that; [`Registration::start_fed`] opens
//! none and is fed the events of a watch the caller already has over the
//! key (a peer's [`super::PeerCache`] watches every peer, its own key
//! included), so a running peer keeps one watch on etcd, not two.
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
use crate::etcd::{Client, KeyValue, LeaseId, WatchEvent, Watcher};

/// Shortest and longest wait between failed attempts. The longest bounds
/// how late a peer registers again once etcd is reachable again: one
/// connect timeout (500 ms) in flight plus this wait stays under a second
/// (tests/it/lan.rs); an unreachable etcd costs each peer about one
/// connection attempt per 0.75 s.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_millis(250);
/// Shortest time between two re-registrations caused by someone else
/// changing the key.
pub const RECLAIM_EVERY: Duration = Duration::from_millis(300);
/// Shortest time between two warnings about the key being taken.
const WARN_EVERY: Duration = Duration::from_secs(10);

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
    /// The own key as the watch saw it at `revision`: `None` if absent.
    Key {
        revision: i64,
        kv: Option<KeyValue>,
    },
    Stop,
}

/// Feeds a registration started with [`Registration::start_fed`] the
/// events of a watch over its key (events of other keys are ignored).
#[derive(Clone)]
pub(crate) struct KeyFeed {
    tx: Sender<Msg>,
    key: Vec<u8>,
}

impl KeyFeed {
    /// Passes on what `ev` says of the registration's key, if anything.
    pub(crate) fn observe(&self, ev: &WatchEvent) {
        let key = &self.key;
        let msg = match ev {
            WatchEvent::Snapshot { kvs, revision } => Msg::Key {
                revision: *revision,
                kv: kvs.iter().find(|kv| kv.key == *key).cloned(),
            },
            WatchEvent::Put(kv) if kv.key == *key => Msg::Key {
                revision: kv.mod_revision,
                kv: Some(kv.clone()),
            },
            WatchEvent::Delete { key: k, revision } if k == key => Msg::Key {
                revision: *revision,
                kv: None,
            },
            _ => return,
        };
        let _ = self.tx.send(msg);
    }
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
    ttl: Duration,
    /// When the key was last put or the lease last renewed.
    last_ok: Mutex<Option<std::time::SystemTime>>,
    /// The last failure, while failing.
    last_error: Mutex<Option<String>>,
}

/// A registration's state as last seen by its thread (for the status page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationState {
    /// Whether the key is in etcd (as far as this peer knows).
    pub registered: bool,
    /// The lease held, if any.
    pub lease: Option<LeaseId>,
    /// The lease TTL.
    pub ttl: Duration,
    /// When the key was last put or the lease last renewed.
    pub last_ok: Option<std::time::SystemTime>,
    /// The last failure, while etcd fails.
    pub last_error: Option<String>,
}

/// Reads a running registration's state from any thread.
#[derive(Clone)]
pub struct RegistrationView {
    shared: Arc<Shared>,
}

impl RegistrationView {
    /// The state now.
    pub fn state(&self) -> RegistrationState {
        RegistrationState {
            registered: self.shared.registered.load(Ordering::SeqCst),
            lease: *self.shared.lease.lock(),
            ttl: self.shared.ttl,
            last_ok: *self.shared.last_ok.lock(),
            last_error: self.shared.last_error.lock().clone(),
        }
    }
}

impl Registration {
    /// Starts the renewal thread. The first registration is attempted at
    /// once, on that thread; use [`Registration::wait_registered`] to wait.
    /// The thread watches the own key on a watch of its own.
    pub fn start(client: Client, cfg: RegistrationConfig) -> Result<Registration, DiscoveryError> {
        Self::start_inner(client, cfg, true).map(|(r, _)| r)
    }

    /// Like [`Registration::start`], without a watch: the caller passes the
    /// events of a watch over the key (e.g. the peers prefix) to the
    /// returned [`KeyFeed`]. Without them a key taken by someone else is
    /// noticed only when the lease is found gone.
    pub(crate) fn start_fed(
        client: Client,
        cfg: RegistrationConfig,
    ) -> Result<(Registration, KeyFeed), DiscoveryError> {
        Self::start_inner(client, cfg, false)
    }

    fn start_inner(
        client: Client,
        cfg: RegistrationConfig,
        own_watch: bool,
    ) -> Result<(Registration, KeyFeed), DiscoveryError> {
        if cfg.ttl < Duration::from_secs(2) {
            return Err(DiscoveryError::Ttl(cfg.ttl.as_secs()));
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            lease: Mutex::new(None),
            registered: AtomicBool::new(false),
            ttl: cfg.ttl,
            last_ok: Mutex::new(None),
            last_error: Mutex::new(None),
        });
        let key = peer_key(&cfg.namespace, &cfg.record.id);
        let feed = KeyFeed {
            tx: tx.clone(),
            key: key.clone().into_bytes(),
        };
        let keeper = Keeper {
            feed: own_watch.then(|| feed.clone()),
            client,
            key,
            ttl: cfg.ttl,
            record: cfg.record,
            rx,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("pbs-lease".into())
            .spawn(move || keeper.run())
            .map_err(DiscoveryError::Thread)?;
        Ok((
            Registration {
                tx,
                shared,
                thread: Some(thread),
            },
            feed,
        ))
    }

    /// Publishes a new index generation in the peer record.
    pub fn set_index_gen(&self, generation: u64) {
        let _ = self.tx.send(Msg::IndexGen(generation));
    }

    /// A handle other threads can use to publish index generations.
    pub(crate) fn publisher(&self) -> GenPublisher {
        GenPublisher {
            tx: self.tx.clone(),
        }
    }

    /// A handle that reads the state from any thread.
    pub(crate) fn view(&self) -> RegistrationView {
        RegistrationView {
            shared: self.shared.clone(),
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
    /// Set when the keeper watches its key itself (fed by that watch).
    feed: Option<KeyFeed>,
    client: Client,
    key: String,
    ttl: Duration,
    record: PeerRecord,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
}

impl Keeper {
    /// Watches the own key, feeding what it sees back into the loop (unless
    /// the caller feeds it).
    fn watch_own_key(&self) -> Option<Watcher> {
        let feed = self.feed.clone()?;
        let on_event = move |ev: WatchEvent| feed.observe(&ev);
        match self.client.watch_prefix(self.key.as_bytes(), on_event) {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "cannot watch {}: {e}; a stolen key is noticed only at renewal",
                    self.key
                );
                None
            }
        }
    }

    fn run(mut self) {
        let mut lease: Option<LeaseId> = None;
        let mut dirty = true;
        let mut ever_registered = false;
        let mut failing = false;
        let mut retry = RETRY_MIN;
        let watcher = self.watch_own_key();
        let mut put_revision = 0i64;
        let mut last_reclaim: Option<std::time::Instant> = None;
        let mut last_warn: Option<std::time::Instant> = None;
        loop {
            let step = self.step(
                &mut lease,
                &mut dirty,
                &mut ever_registered,
                &mut put_revision,
            );
            *self.shared.lease.lock() = lease;
            self.shared
                .registered
                .store(lease.is_some() && !dirty, Ordering::SeqCst);
            let wait = match step {
                Ok(()) => {
                    *self.shared.last_ok.lock() = Some(std::time::SystemTime::now());
                    *self.shared.last_error.lock() = None;
                    if failing {
                        log::info!("etcd reachable again; {} is registered", self.key);
                        failing = false;
                    }
                    retry = RETRY_MIN;
                    self.ttl / 3
                }
                Err(e) => {
                    crate::metrics::LEASE_FAILURES.inc();
                    *self.shared.last_error.lock() = Some(e.to_string());
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
                Ok(Msg::Key { revision, kv }) => {
                    let Some(id) = lease.filter(|_| !dirty && revision > put_revision) else {
                        continue;
                    };
                    let ours = kv.as_ref().is_some_and(|kv| {
                        kv.lease == id.0
                            && serde_json::from_slice::<PeerRecord>(&kv.value)
                                .is_ok_and(|r| r == self.record)
                    });
                    if ours {
                        continue;
                    }
                    if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        log::warn!(
                            "{} was {} by someone else; registering again",
                            self.key,
                            if kv.is_some() {
                                "overwritten"
                            } else {
                                "deleted"
                            }
                        );
                        last_warn = Some(std::time::Instant::now());
                    }
                    if let Some(t) = last_reclaim {
                        std::thread::sleep(RECLAIM_EVERY.saturating_sub(t.elapsed()));
                    }
                    last_reclaim = Some(std::time::Instant::now());
                    dirty = true;
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
        drop(watcher);
    }

    /// One pass of the state machine: make sure a lease exists and the key is
    /// current, or renew the lease.
    fn step(
        &mut self,
        lease: &mut Option<LeaseId>,
        dirty: &mut bool,
        ever_registered: &mut bool,
        put_revision: &mut i64,
    ) -> Result<(), DiscoveryError> {
        if let (Some(id), false) = (*lease, *dirty) {
            match self.client.lease_keepalive(id)? {
                Some(_) => {
                    crate::metrics::LEASE_RENEWALS.inc();
                    return Ok(());
                }
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
        let value = serde_json::to_vec(&self.record).map_err(DiscoveryError::Encode)?;
        // A lease found gone by the put (expired while etcd was out of
        // reach, noticed through the watch) is replaced at once, not after
        // a retry backoff: at most one new lease per step.
        let mut granted = false;
        let id = loop {
            let id = match *lease {
                Some(id) => id,
                None => {
                    let ttl_secs = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
                    let l = self.client.lease_grant(ttl_secs)?;
                    *lease = Some(l.id);
                    *dirty = true;
                    granted = true;
                    l.id
                }
            };
            match self.client.put(self.key.as_bytes(), &value, Some(id)) {
                Ok(revision) => {
                    *put_revision = revision;
                    break id;
                }
                Err(e) if e.is_lease_not_found() => {
                    *lease = None;
                    if granted {
                        return Err(DiscoveryError::LeaseLost);
                    }
                    log::warn!(
                        "lease {} of {} is gone (expired or etcd lost its data); registering again",
                        id.hex(),
                        self.key
                    );
                }
                Err(e) => return Err(e.into()),
            }
        };
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
