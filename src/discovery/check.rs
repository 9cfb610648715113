//! Which keys under the peers prefix are peers: the value is a peer record
//! of at most [`MAX_RECORD`] bytes, the key is exactly `<prefix><id>` for
//! the record's own id, the id is a plain token and every address looks
//! like `host:port`. Everything else is left out by every reader (`list`,
//! `files`, `get`, the peer cache): someone who can write under the prefix
//! cannot make one peer's key speak for another, nor break the listing.

use super::{PeerInfo, PeerRecord};
use crate::etcd::KeyValue;

/// Largest peer record accepted, in bytes (an honest one is ~200 bytes).
pub const MAX_RECORD: usize = 16 * 1024;
/// Longest address accepted, in bytes.
const MAX_ADDR: usize = 256;
/// Most entries accepted in `addrs` (only the first `MAX_ADDRS` are dialled).
const MAX_ADDRS_LISTED: usize = 64;

/// Why a key under the prefix is not a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Over [`MAX_RECORD`] bytes.
    Oversized,
    /// Not JSON of a peer record.
    NotRecord,
    /// The key's last segment is not the record's id.
    KeyMismatch,
    /// An id or address that no honest peer publishes.
    BadField,
}

/// The peer a key-value under `prefix` describes, if it is a valid one.
pub(crate) fn peer_of(kv: &KeyValue, prefix: &[u8]) -> Result<PeerInfo, Reject> {
    if kv.value.len() > MAX_RECORD {
        return Err(Reject::Oversized);
    }
    let record: PeerRecord = serde_json::from_slice(&kv.value).map_err(|_| Reject::NotRecord)?;
    if kv.key.strip_prefix(prefix) != Some(record.id.as_bytes()) {
        return Err(Reject::KeyMismatch);
    }
    let addrs_ok = is_plain_addr(&record.addr)
        && record.addrs.len() <= MAX_ADDRS_LISTED
        && record.addrs.iter().all(|a| is_plain_addr(a));
    if !super::identity::is_valid_id(&record.id) || !addrs_ok {
        return Err(Reject::BadField);
    }
    Ok(PeerInfo {
        record,
        lease: kv.lease,
        mod_revision: kv.mod_revision,
    })
}

/// `host:port` in printable ASCII without spaces or commas, at most 256
/// bytes.
pub(super) fn is_plain_addr(addr: &str) -> bool {
    !addr.is_empty()
        && addr.len() <= MAX_ADDR
        && addr.bytes().all(|b| b.is_ascii_graphic() && b != b',')
        && addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
}

/// Counts of left-out keys, for one summary warning per listing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Values over [`MAX_RECORD`] (or over one gateway answer).
    pub oversized: usize,
    /// Values that are not peer records, or with an id or address no
    /// honest peer publishes.
    pub invalid: usize,
    /// Keys whose last segment is not the record's id.
    pub mismatched: usize,
}

impl Skipped {
    pub(crate) fn count(&mut self, r: Reject) {
        match r {
            Reject::Oversized => self.oversized += 1,
            Reject::NotRecord | Reject::BadField => self.invalid += 1,
            Reject::KeyMismatch => self.mismatched += 1,
        }
    }

    /// Keys left out in all.
    pub fn total(&self) -> usize {
        self.oversized + self.invalid + self.mismatched
    }

    /// Logs one warning if anything was left out.
    pub fn warn(&self, prefix: &str) {
        if self.total() == 0 {
            return;
        }
        log::warn!(
            "ignored {} key(s) under {prefix}: {} over {MAX_RECORD} bytes, {} not valid peer records, {} whose key does not match the record's id",
            self.total(),
            self.oversized,
            self.invalid,
            self.mismatched
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..KeyValue::default()
        }
    }

    fn record(id: &str, addr: &str) -> String {
        serde_json::json!({"id": id, "addr": addr, "name": "n", "version": "1", "started_at": 0})
            .to_string()
    }

    #[test]
    fn only_keys_naming_their_own_valid_record_are_peers() {
        let p = b"/ns/peers/";
        assert!(peer_of(&kv("/ns/peers/ab", &record("ab", "10.0.0.1:70")), p).is_ok());
        assert_eq!(
            peer_of(&kv("/ns/peers/ab", &record("cd", "10.0.0.1:70")), p).err(),
            Some(Reject::KeyMismatch)
        );
        assert_eq!(
            peer_of(&kv("/ns/peers/x/ab", &record("ab", "10.0.0.1:70")), p).err(),
            Some(Reject::KeyMismatch)
        );
        assert_eq!(
            peer_of(&kv("/ns/peers/a\u{1b}", &record("a\u{1b}", "1:1")), p).err(),
            Some(Reject::BadField)
        );
        assert_eq!(
            peer_of(&kv("/ns/peers/ab", &record("ab", "h\u{202e}:1")), p).err(),
            Some(Reject::BadField)
        );
        assert_eq!(
            peer_of(&kv("/ns/peers/ab", &record("ab", "no-port")), p).err(),
            Some(Reject::BadField)
        );
        assert_eq!(
            peer_of(&kv("/ns/peers/ab", &record("ab", "1.2.3.4:1,5.6.7.8:2")), p).err(),
            Some(Reject::BadField)
        );
        let listed = serde_json::json!({"id": "ab", "addr": "1.2.3.4:1", "addrs": ["1.2.3.4:1", "x\u{1b}:2"],
            "name": "n", "version": "1", "started_at": 0})
        .to_string();
        assert_eq!(
            peer_of(&kv("/ns/peers/ab", &listed), p).err(),
            Some(Reject::BadField)
        );
        assert_eq!(
            peer_of(&kv("/ns/peers/ab", "{"), p).err(),
            Some(Reject::NotRecord)
        );
        let big = record("ab", &format!("{}:1", "a".repeat(MAX_RECORD)));
        assert_eq!(
            peer_of(&kv("/ns/peers/ab", &big), p).err(),
            Some(Reject::Oversized)
        );
    }
}
