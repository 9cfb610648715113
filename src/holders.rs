//! Who holds a file: the [`Holder`] type and the [`HolderSource`] the
//! download asks, at the start and again every few seconds, so peers that
//! appear mid-download are used. The network implementation (etcd + the
//! catalog) is `catalog::NetworkHolders`; a fixed list works without etcd.

use serde::{Deserialize, Serialize};

use crate::digest::Sha1Digest;

/// The host an `ip:port` address is on, for every per-host count (votes,
/// samples, caps): the IP, or the /64 of an IPv6 address (one machine
/// holds a whole /64 as easily as one address); the address itself if it
/// does not parse.
pub(crate) fn host_group(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(std::net::SocketAddr::V4(a)) => a.ip().to_string(),
        Ok(std::net::SocketAddr::V6(a)) => {
            let s = a.ip().segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Err(_) => addr.to_string(),
    }
}

/// The host of a peer dialled at `addrs` (its first address's; see
/// [`host_group`]).
pub(crate) fn host_of_addrs(addrs: &[String]) -> String {
    host_group(addrs.first().map_or("", String::as_str))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_counted_by_ip_and_ipv6_by_its_64() {
        assert_eq!(host_group("198.18.0.1:7070"), host_group("198.18.0.1:9"));
        assert_ne!(host_group("198.18.0.1:7070"), host_group("198.18.0.2:7070"));
        assert_eq!(
            host_group("[2001:db8:1:2::5]:7070"),
            host_group("[2001:db8:1:2:ffff::9]:1")
        );
        assert_ne!(
            host_group("[2001:db8:1:2::5]:7070"),
            host_group("[2001:db8:1:3::5]:7070")
        );
        assert_eq!(host_group("not an address"), "not an address");
        assert_eq!(host_of_addrs(&[]), "");
        assert_eq!(
            host_of_addrs(&["[2001:db8::1]:1".into(), "198.18.0.1:1".into()]),
            "2001:db8:0:0::/64"
        );
    }
}
