//! [`NetworkHolders`]: the download's [`HolderSource`] over the network:
//! the registered peers from etcd, their catalogs (cached per generation),
//! and the holders of one sha1. Each re-query of a running download reads
//! etcd once and asks only the peers whose index changed.

use parking_lot::Mutex;

use super::{Catalog, Refresh};
use crate::discovery::{self, DiscoveryError};
use crate::etcd::Client;
use crate::fetch::{Holder, HolderSource, HoldersError};
use crate::Sha1Digest;

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
    }

    /// Reads the peers from etcd and refreshes the catalog, merging only
    /// the entries of `sha1` ([`Catalog::refresh_for`]).
    pub fn refresh_for(&self, sha1: &Sha1Digest) -> Result<Refresh, DiscoveryError> {
        self.refresh_with(|catalog, peers| catalog.refresh_for(peers, sha1))
    }

    fn refresh_with(
        &self,
        f: impl FnOnce(&mut Catalog, &[discovery::PeerInfo]) -> Refresh,
    ) -> Result<Refresh, DiscoveryError> {
        let peers = discovery::list_peers(&self.client, &self.namespace)?;
        // Refreshed outside the lock (no lock across I/O), moved out rather
        // than copied (a copy would double the lists held).
        let mut catalog = std::mem::take(&mut *self.catalog.lock());
        let refresh = f(&mut catalog, &peers);
        *self.catalog.lock() = catalog;
        Ok(refresh)
    }

    /// The catalog (with its refreshed cache), to save it.
    pub fn into_catalog(self) -> Catalog {
        self.catalog.into_inner()
    }
}

impl HolderSource for NetworkHolders {
    fn holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        let refresh = self
            .refresh_for(sha1)
            .map_err(|e| HoldersError(e.to_string()))?;
        Ok(refresh
            .find(sha1)
            .map(|f| f.holders.clone())
            .unwrap_or_default())
    }
}
