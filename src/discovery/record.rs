//! The peer record: what a peer publishes about itself under its key.

use serde::{Deserialize, Serialize};

use crate::etcd::KeyValue;

/// JSON stored at `/<ns>/peers/<id>`, attached to the peer's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer id (also the last key segment).
    pub id: String,
    /// The `ip:port` other peers dial.
    pub addr: String,
    /// Host name of the machine.
    pub name: String,
    /// piratebay-sync version.
    pub version: String,
    /// Unix time (seconds) the peer started.
    pub started_at: u64,
    /// The peer's index generation; 0 until its index exists.
    #[serde(default)]
    pub index_gen: u64,
}

/// A registered peer as seen in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    /// What the peer published.
    #[serde(flatten)]
    pub record: PeerRecord,
    /// The lease its key is attached to (decimal; etcdctl shows it in hex).
    pub lease: i64,
    /// The etcd revision of the last change to its key.
    pub mod_revision: i64,
}

impl PeerInfo {
    /// Decodes a key-value read under the peers prefix. `None` (with a
    /// warning) for a value that is not a peer record.
    pub fn from_kv(kv: &KeyValue) -> Option<PeerInfo> {
        match serde_json::from_slice::<PeerRecord>(&kv.value) {
            Ok(record) => Some(PeerInfo {
                record,
                lease: kv.lease,
                mod_revision: kv.mod_revision,
            }),
            Err(e) => {
                log::warn!("ignoring {}: not a peer record ({e})", kv.key_str());
                None
            }
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
