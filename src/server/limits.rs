//! Who a connection counts against, and how many may be open.
//!
//! A client is a [`ClientKey`]: its IPv4 address, or the /64 prefix of its
//! IPv6 address (one host commonly owns a whole /64). [`Admission`] counts
//! open connections in total and per client; each admitted connection holds
//! a [`Slot`] that gives its place back when dropped, so the counts stay
//! right whichever path closes the connection. The caps themselves come
//! from [`ServerConfig`](super::ServerConfig); the process's open-file limit
//! is raised (or the total cap lowered) by [`fit_fd_limit`] so the caps can
//! be reached without `accept` failing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// File descriptors kept for everything but client connections (the
/// listener, epoll, files being sent, the index, etcd connections, and
/// the peer's descriptors kept open for serving: at most 2 x 32, see
/// `crate::kept`).
const FD_RESERVE: u64 = 320;

/// The unit of fairness and of the per-client cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of a connection from `ip`: IPv4 (also when mapped into
    /// IPv6) as is, IPv6 reduced to its /64.
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}"),
            IpAddr::V6(ip) => write!(f, "{ip}/64"),
        }
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds its maximum of connections.
    Total,
    /// This client holds its maximum of connections.
    PerClient,
}

/// Open-connection counts, total and per client.
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_client: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<ClientKey, usize>,
}

/// An admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    key: ClientKey,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_client,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a place for a connection from `key`, unless a cap is reached.
    pub(crate) fn admit(self: &Arc<Self>, key: ClientKey) -> Result<Slot, Refusal> {
        let mut counts = self.counts.lock();
        let mine = counts.per_client.get(&key).copied().unwrap_or(0);
        if mine >= self.max_per_client {
            return Err(Refusal::PerClient);
        }
        if counts.total >= self.max_total {
            return Err(Refusal::Total);
        }
        counts.total += 1;
        counts.per_client.insert(key, mine + 1);
        crate::metrics::CONNECTIONS_OPEN.inc();
        Ok(Slot {
            admission: Arc::clone(self),
            key,
        })
    }

    /// Open connections in total.
    pub(crate) fn total(&self) -> usize {
        self.counts.lock().total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::CONNECTIONS_OPEN.dec();
        let mut counts = self.admission.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&self.key);
            }
        }
    }
}

/// Raises the soft open-file limit so `max_connections` connections fit
/// beside [`FD_RESERVE`] other descriptors; where the hard limit does not
/// allow it, returns a lower connection cap that fits.
pub(crate) fn fit_fd_limit(max_connections: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};

    let wanted = max_connections as u64 + FD_RESERVE;
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return max_connections;
    }
    let raised = limit.maximum.map_or(wanted, |max| max.min(wanted));
    let new = rustix::process::Rlimit {
        current: Some(raised),
        maximum: limit.maximum,
    };
    let now = match setrlimit(Resource::Nofile, new) {
        Ok(()) => raised,
        Err(_) => current,
    };
    if now >= wanted {
        return max_connections;
    }
    let fits = now.saturating_sub(FD_RESERVE).max(16) as usize;
    log::warn!(
        "the open-file limit ({now}) allows {fits} client connections, not {max_connections}: \
         raise it (ulimit -n) to serve more"
    );
    fits.min(max_connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let a = ClientKey::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientKey::of("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = ClientKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        let mapped = ClientKey::of("::ffff:10.0.0.7".parse().unwrap());
        assert_eq!(mapped, ClientKey::of("10.0.0.7".parse().unwrap()));
    }

    #[test]
    fn caps_hold_per_client_and_in_total_and_slots_give_back() {
        let admission = Admission::new(3, 2);
        let k1 = ClientKey::of("10.0.0.1".parse().unwrap());
        let k2 = ClientKey::of("10.0.0.2".parse().unwrap());
        let k3 = ClientKey::of("10.0.0.3".parse().unwrap());
        let a = admission.admit(k1).unwrap();
        let _b = admission.admit(k1).unwrap();
        assert_eq!(admission.admit(k1).unwrap_err(), Refusal::PerClient);
        let _c = admission.admit(k2).unwrap();
        assert_eq!(admission.admit(k3).unwrap_err(), Refusal::Total);
        drop(a);
        assert_eq!(admission.total(), 2);
        let _d = admission.admit(k3).unwrap();
        assert_eq!(admission.admit(k1).unwrap_err(), Refusal::Total);
    }
}
