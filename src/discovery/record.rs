//! The peer record: what a peer publishes about itself under its key.

use serde::{Deserialize, Serialize};

/// JSON stored at `/<ns>/peers/<id>`, attached to the peer's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer id (also the last key segment).
    pub id: String,
    /// The best `ip:port` to dial (the first of `addrs`).
    pub addr: String,
    /// Every `ip:port` another host could dial, best first (records of
    /// older peers have none: [`PeerRecord::dial_addrs`] falls back on `addr`).
    #[serde(default)]
    pub addrs: Vec<String>,
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

impl PeerRecord {
    /// The addresses to try, best first: `addrs` (at most 8, duplicates
    /// dropped), else `addr`.
    pub fn dial_addrs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self.addrs.iter().chain(std::iter::once(&self.addr)) {
            if !a.is_empty() && !out.contains(a) && out.len() < super::MAX_ADDRS {
                out.push(a.clone());
            }
        }
        out
    }
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

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> PeerRecord {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn old_records_without_addrs_dial_addr() {
        let r =
            record(r#"{"id":"a","addr":"10.0.0.1:7070","name":"h","version":"0","started_at":1}"#);
        assert_eq!(r.dial_addrs(), vec!["10.0.0.1:7070"]);
    }

    #[test]
    fn addrs_are_tried_in_order_deduplicated_and_capped() {
        let many: Vec<String> = (0..20).map(|i| format!("\"10.0.0.{i}:1\"")).collect();
        let r = record(&format!(
            r#"{{"id":"a","addr":"10.0.0.0:1","addrs":[{}],"name":"h","version":"0","started_at":1}}"#,
            many.join(",")
        ));
        let d = r.dial_addrs();
        assert_eq!(d.len(), super::super::MAX_ADDRS);
        assert_eq!(d[0], "10.0.0.0:1");
        assert_eq!(d[1], "10.0.0.1:1");
    }
}
