//! Who holds a file: the [`Holder`] type and the [`HolderSource`] the
//! download asks, at the start and again every few seconds, so peers that
//! appear mid-download are used. The network implementation (etcd + the
//! catalog) is `catalog::NetworkHolders`; a fixed list works without etcd.

use serde::{Deserialize, Serialize};

use crate::digest::Sha1Digest;

/// A peer that holds a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Holder {
    /// The peer id (as registered in etcd), used in logs and summaries.
    pub id: String,
    /// The best `ip:port` to dial (the first of `addrs`), shown in logs.
    pub addr: String,
    /// Every address to try, best first (see [`crate::discovery::PeerRecord::dial_addrs`]).
    #[serde(default)]
    pub addrs: Vec<String>,
}

impl Holder {
    /// A holder with this id and one address.
    pub fn new(id: impl Into<String>, addr: impl Into<String>) -> Self {
        let addr = addr.into();
        Holder {
            id: id.into(),
            addrs: vec![addr.clone()],
            addr,
        }
    }

    /// A holder with this id and these addresses, best first (none: an
    /// empty address that fails to dial).
    pub fn with_addrs(id: impl Into<String>, addrs: Vec<String>) -> Self {
        Holder {
            id: id.into(),
            addr: addrs.first().cloned().unwrap_or_default(),
            addrs,
        }
    }

    /// The addresses to dial: `addrs`, or `addr` for a holder built without them.
    pub fn dial_addrs(&self) -> &[String] {
        if self.addrs.is_empty() {
            std::slice::from_ref(&self.addr)
        } else {
            &self.addrs
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.id, self.addr)
    }
}

/// Why the holders of a file could not be found: the [`HolderSource`]'s
/// own error (for the network's holders, a
/// [`DiscoveryError`](crate::discovery::DiscoveryError)).
#[derive(Debug, thiserror::Error)]
#[error("cannot find the holders: {source}")]
pub struct HoldersError {
    /// What the source reported.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl HoldersError {
    /// Wraps a holder source's error.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        HoldersError {
            source: source.into(),
        }
    }
}

/// Where the download learns who holds a file. Called from the download's
/// own thread, at the start and then every `requery_interval`.
pub trait HolderSource: Send + Sync {
    /// The peers that hold `sha1` right now.
    fn holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError>;

    /// Every holder the download knew failed (or none gave a usable piece
    /// list): look further than [`HolderSource::holders`] would, if the
    /// source has more to look at (a lookup that stopped at its first
    /// whole copy goes on asking the peers it did not ask). The default:
    /// [`HolderSource::holders`].
    fn more_holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        self.holders(sha1)
    }
}

/// A fixed list of holders.
impl HolderSource for Vec<Holder> {
    fn holders(&self, _sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        Ok(self.clone())
    }
}

/// Any function that returns the holders.
impl<F> HolderSource for F
where
    F: Fn(&Sha1Digest) -> Result<Vec<Holder>, HoldersError> + Send + Sync,
{
    fn holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        self(sha1)
    }
}
