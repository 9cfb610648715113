//! [`NetworkHolders`]: the download's [`HolderSource`] over the network:
//! the registered peers from etcd, their catalogs (cached per generation),
//! and the holders of one sha1. Each re-query of a running download reads
//! etcd once and asks only the peers whose index changed.
//!
//! Partial holders (peers still downloading the file into their dataset,
//! which catalogs never list) are found by asking the other registered
//! peers `GET /v1/files/<sha1>/have` in parallel, at most
//! [`MAX_PROBED`] of them, each within [`PROBE_DEADLINE`]; a peer that holds
//! at least one piece joins as a holder after the complete ones.

use std::time::Duration;

use parking_lot::Mutex;

use super::{Catalog, Refresh};
use crate::client::{self, Timeouts};
use crate::digest::Sha1Digest;
use crate::discovery::PeerInfo;
use crate::discovery::{self, DiscoveryError};
use crate::etcd::Client;
use crate::holders::{Holder, HolderSource, HoldersError};
use crate::protocol::{Bitfield, FILES_PATH, HAVE_SEGMENT};

/// Holders found through etcd and the peers' catalogs.
pub struct NetworkHolders {
    client: Client,
    namespace: String,
    catalog: Mutex<Catalog>,
}

impl NetworkHolders {
    /// Holders of the peers registered under `namespace`, with `catalog`'s cache.
    pub fn new(client: Client, namespace: impl Into<String>, catalog: Catalog) -> Self {
        NetworkHolders {
            client,
            namespace: namespace.into(),
            catalog: Mutex::new(catalog),
        }
    }

    /// Reads the peers from etcd and refreshes the catalog.
    pub fn refresh(&self) -> Result<Refresh, DiscoveryError> {
        self.refresh_with(|catalog, peers| catalog.refresh(peers))
            .map(|(_, r)| r)
    }

    /// Reads the peers from etcd and refreshes the catalog, merging only
    /// the entries of `sha1` ([`Catalog::refresh_for`]).
    pub fn refresh_for(&self, sha1: &Sha1Digest) -> Result<Refresh, DiscoveryError> {
        self.refresh_with(|catalog, peers| catalog.refresh_for(peers, sha1))
            .map(|(_, r)| r)
    }

    fn refresh_with(
        &self,
        f: impl FnOnce(&mut Catalog, &[PeerInfo]) -> Refresh,
    ) -> Result<(Vec<PeerInfo>, Refresh), DiscoveryError> {
        let peers = discovery::list_peers(&self.client, &self.namespace)?;
        // Refreshed outside the lock (no lock across I/O), moved out rather
        // than copied (a copy would double the lists held).
        let mut catalog = std::mem::take(&mut *self.catalog.lock());
        let refresh = f(&mut catalog, &peers);
        *self.catalog.lock() = catalog;
        Ok((peers, refresh))
    }

    /// The catalog (with its refreshed cache), to save it.
    pub fn into_catalog(self) -> Catalog {
        self.catalog.into_inner()
    }
}

impl HolderSource for NetworkHolders {
    fn holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        let (peers, refresh) = self
            .refresh_with(|catalog, peers| catalog.refresh_for(peers, sha1))
            .map_err(HoldersError::new)?;
        let mut holders = refresh
            .find(sha1)
            .map(|f| f.holders.clone())
            .unwrap_or_default();
        let others: Vec<&PeerInfo> = peers
            .iter()
            .filter(|p| !holders.iter().any(|h| h.id == p.record.id))
            .filter(|p| !refresh.failed.iter().any(|(h, _)| h.id == p.record.id))
            .take(MAX_PROBED)
            .collect();
        holders.extend(partial_holders(sha1, &others));
        Ok(holders)
    }
}

/// Most peers asked for their availability of one file per query.
pub const MAX_PROBED: usize = 64;
/// Deadline of one availability probe.
pub const PROBE_DEADLINE: Duration = Duration::from_millis(750);
/// Probes at once.
const PROBE_FAN_OUT: usize = 16;

/// The peers among `peers` that hold some pieces of `sha1` (partial holders).
fn partial_holders(sha1: &Sha1Digest, peers: &[&PeerInfo]) -> Vec<Holder> {
    let path = format!("{FILES_PATH}/{sha1}/{HAVE_SEGMENT}");
    let timeouts = Timeouts {
        connect: Duration::from_millis(300),
        io: PROBE_DEADLINE,
    };
    let held = crate::fanout::map(peers, PROBE_FAN_OUT, "pbs-probe", |p| {
        let addrs = p.record.dial_addrs();
        match client::get_small(&addrs, &path, timeouts, 1 << 20, PROBE_DEADLINE) {
            Ok((head, body)) if head.status == 200 => {
                // The length is checked against the piece list later;
                // here any piece held is enough.
                Bitfield::from_bytes(&body, body.len() * 8).is_some_and(|b| b.count() > 0)
            }
            Ok(_) => false,
            Err(e) => {
                log::debug!("peer {} not asked about {sha1}: {e}", p.record.id);
                false
            }
        }
    });
    let mut found: Vec<Holder> = peers
        .iter()
        .zip(held)
        .filter(|(_, h)| *h)
        .map(|(p, _)| Holder::with_addrs(&p.record.id, p.record.dial_addrs()))
        .collect();
    super::rotate_randomly(&mut found);
    found
}
