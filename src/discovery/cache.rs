//! The peer cache: every registered peer, kept current by a watch on
//! `/<ns>/peers/`, so a lookup never costs an etcd request.
//!
//! One lock: a parking_lot `RwLock` around the map, written only by the
//! watch thread, held for map updates and copies, never across I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::{check, peers_prefix, DiscoveryError, PeerInfo};
use crate::etcd::{Client, WatchEvent, Watcher};

/// The watch-fed list of peers. Dropping it stops the watch.
pub struct PeerCache {
    shared: Arc<CacheShared>,
    _watcher: Watcher,
}

#[derive(Default)]
struct CacheShared {
    peers: RwLock<BTreeMap<String, PeerInfo>>,
    /// Bumped on every applied event; 0 until the first snapshot.
    version: AtomicU64,
}

impl PeerCache {
    /// Starts watching the peers under `namespace`. Returns at once; the
    /// cache fills when the first snapshot arrives ([`PeerCache::wait_synced`]).
    pub fn start(client: &Client, namespace: &str) -> Result<PeerCache, DiscoveryError> {
        Self::start_observed(client, namespace, |_| {})
    }

    /// Like [`PeerCache::start`], also showing every event of the watch to
    /// `observe` (on the watch thread, before the cache applies it): a
    /// `KeyFeed` of this peer's registration, so one watch serves
    /// both.
    pub(crate) fn start_observed(
        client: &Client,
        namespace: &str,
        observe: impl Fn(&WatchEvent) + Send + 'static,
    ) -> Result<PeerCache, DiscoveryError> {
        let shared = Arc::new(CacheShared::default());
        let prefix = peers_prefix(namespace);
        let feed = shared.clone();
        let key_prefix = prefix.clone().into_bytes();
        let watcher = client.watch_prefix(prefix.as_bytes(), move |ev| {
            observe(&ev);
            feed.apply(ev, &key_prefix)
        })?;
        Ok(PeerCache {
            shared,
            _watcher: watcher,
        })
    }

    /// Every registered peer, sorted by id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.shared.peers.read().values().cloned().collect()
    }

    /// Every registered peer but `id`.
    pub fn others(&self, id: &str) -> Vec<PeerInfo> {
        self.shared
            .peers
            .read()
            .values()
            .filter(|p| p.record.id != id)
            .cloned()
            .collect()
    }

    /// One peer by id.
    pub fn get(&self, id: &str) -> Option<PeerInfo> {
        self.shared.peers.read().get(id).cloned()
    }

    /// A counter that changes whenever the cache does (0 before the first sync).
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::SeqCst)
    }

    /// Whether the first snapshot has arrived.
    pub fn is_synced(&self) -> bool {
        self.version() > 0
    }

    /// Polls until the first snapshot arrived or `timeout` passes.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_synced() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl CacheShared {
    fn apply(&self, ev: WatchEvent, prefix: &[u8]) {
        let id_of = |key: &[u8]| {
            String::from_utf8_lossy(key.get(prefix.len()..).unwrap_or_default()).into_owned()
        };
        let valid = |kv: &crate::etcd::KeyValue| match check::peer_of(kv, prefix) {
            Ok(p) => Some(p),
            Err(r) => {
                log::debug!("peer cache: ignoring {} ({r:?})", kv.key_str());
                None
            }
        };
        {
            let mut peers = self.peers.write();
            match ev {
                WatchEvent::Snapshot { kvs, .. } => {
                    *peers = kvs
                        .iter()
                        .filter_map(|kv| valid(kv).map(|p| (id_of(&kv.key), p)))
                        .collect();
                }
                WatchEvent::Put(kv) => match valid(&kv) {
                    Some(p) => {
                        peers.insert(id_of(&kv.key), p);
                    }
                    None => {
                        peers.remove(&id_of(&kv.key));
                    }
                },
                WatchEvent::Delete { key, .. } => {
                    peers.remove(&id_of(&key));
                }
            }
        }
        self.version.fetch_add(1, Ordering::SeqCst);
    }
}
