//! Finding peers: registration under a renewed etcd lease, and the
//! watch-fed peer cache.
//!
//! Key layout (namespace default `piratebay`): `/<ns>/peers/<peer-id>` ->
//! JSON [`PeerRecord`], attached to the peer's lease. A graceful stop revokes
//! the lease; a crash lets it expire after the TTL. The swarm's tracker
//! ([`tracker`]): `/<ns>/swarm/<sha1>/<bucket>/<peer-id>`.

mod advertise;
mod cache;
mod check;
mod identity;
mod record;
mod registration;
pub(crate) mod tracker;

pub use advertise::{detect_advertise, parse_advertise, Reason as AdvertiseReason, MAX_ADDRS};
pub use cache::PeerCache;
pub use check::{Skipped, MAX_RECORD};
pub use identity::{host_name, load_or_create_peer_id};
pub(crate) use identity::{jittered, random_id, random_u64};
pub use record::{unix_now, PeerInfo, PeerRecord};
pub use registration::{Registration, RegistrationConfig, RegistrationView};

use crate::etcd::{self, Client};

/// Default key namespace.
pub const DEFAULT_NAMESPACE: &str = "piratebay";
/// Default lease TTL.
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Errors of peer discovery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Talking to etcd failed.
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    /// The peer id file in the state directory could not be read.
    #[error("cannot read the peer id {}: {source}", path.display())]
    ReadPeerId {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The peer id could not be saved in the state directory (creating
    /// the directory, writing or renaming the file).
    #[error("cannot save the peer id in {}: {source}", dir.display())]
    WritePeerId {
        /// The state directory.
        dir: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TTL is too short to renew reliably.
    #[error("lease ttl {0}s is too short (at least 2 s)")]
    Ttl(u64),
    /// The lease vanished between grant and put.
    #[error("lease lost while registering")]
    LeaseLost,
    /// The record could not be encoded.
    #[error("bug: cannot encode the peer record: {0}")]
    Encode(#[source] serde_json::Error),
    /// A thread could not be started.
    #[error("cannot start a discovery thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// `/<ns>/peers/`.
pub fn peers_prefix(namespace: &str) -> String {
    format!("/{}/peers/", namespace.trim_matches('/'))
}

/// `/<ns>/peers/<id>`.
pub fn peer_key(namespace: &str, id: &str) -> String {
    format!("{}{id}", peers_prefix(namespace))
}

/// Reads the registered peers once (no watch), sorted by id. Keys that are
/// not valid peers (a record over 16 KiB, not JSON, whose id is not its
/// key's, or with an id or address no honest peer publishes) are left
/// out with one summary warning.
pub fn list_peers(client: &Client, namespace: &str) -> Result<Vec<PeerInfo>, DiscoveryError> {
    let (peers, skipped) = list_peers_counted(client, namespace)?;
    skipped.warn(&peers_prefix(namespace));
    Ok(peers)
}

/// [`list_peers`] without the warning: the peers and what was left out.
pub fn list_peers_counted(
    client: &Client,
    namespace: &str,
) -> Result<(Vec<PeerInfo>, Skipped), DiscoveryError> {
    let prefix = peers_prefix(namespace);
    let listing = client.get_prefix_capped(prefix.as_bytes(), MAX_RECORD)?;
    let mut skipped = Skipped {
        oversized: listing.oversized,
        ..Skipped::default()
    };
    let mut peers = Vec::with_capacity(listing.kvs.len());
    for kv in &listing.kvs {
        match check::peer_of(kv, prefix.as_bytes()) {
            Ok(p) => peers.push(p),
            Err(r) => skipped.count(r),
        }
    }
    Ok((peers, skipped))
}

/// Up to `want` registered peers from a random window of the peer
/// records: a bounded read whatever the number of peers, for lookups that
/// need a sample, not everyone; with the flag `true` when they are every
/// registered peer. One etcd range from the prefix's start first: when it
/// holds every record (at most `want`: a room of machines), that is the
/// read. Else one range from a random key, and one more from the prefix's
/// start when that one reaches its end. Invalid records are left out
/// (debug log only).
pub fn sample_peers(
    client: &Client,
    namespace: &str,
    want: usize,
) -> Result<(Vec<PeerInfo>, bool), DiscoveryError> {
    let prefix = peers_prefix(namespace);
    let first =
        match client.get_window(prefix.as_bytes(), prefix.as_bytes(), None, want, MAX_RECORD) {
            Ok(l) => l,
            // Records too large for one answer: the listing that pages them
            // down to one key, skipping any too large alone.
            Err(e) if e.is_too_large() => return Ok((list_peers(client, namespace)?, true)),
            Err(e) => return Err(e.into()),
        };
    if !first.more {
        let mut peers = Vec::with_capacity(first.kvs.len());
        for kv in &first.kvs {
            if let Ok(p) = check::peer_of(kv, prefix.as_bytes()) {
                peers.push(p);
            }
        }
        return Ok((peers, first.oversized == 0));
    }
    let start = format!(
        "{prefix}{}",
        crate::hex::encode(&(random_u64() as u16).to_be_bytes())
    );
    let read = |from: &[u8], until: Option<&[u8]>, limit: usize, peers: &mut Vec<PeerInfo>| {
        let listing = client.get_window(prefix.as_bytes(), from, until, limit, MAX_RECORD)?;
        let mut skipped = listing.oversized;
        for kv in &listing.kvs {
            match check::peer_of(kv, prefix.as_bytes()) {
                Ok(p) => peers.push(p),
                Err(_) => skipped += 1,
            }
        }
        Ok::<usize, DiscoveryError>(skipped)
    };
    let mut peers = Vec::with_capacity(want);
    let mut skipped = read(start.as_bytes(), None, want, &mut peers)?;
    let got = peers.len() + skipped;
    if got < want {
        skipped += read(
            prefix.as_bytes(),
            Some(start.as_bytes()),
            want - got,
            &mut peers,
        )?;
    }
    if skipped > 0 {
        log::debug!("{skipped} key(s) under {prefix} left out of a sample: not valid peer records");
    }
    Ok((peers, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        assert_eq!(peers_prefix("piratebay"), "/piratebay/peers/");
        assert_eq!(peers_prefix("/team/"), "/team/peers/");
        assert_eq!(peer_key("piratebay", "ab12"), "/piratebay/peers/ab12");
    }
}
