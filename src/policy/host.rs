//! Which host an address is on, for every per-host count of the swarm
//! (the download's vote, the lookup's per-host limit and sample, the
//! tracker's per-host cap and bucket, a round's holders per host, the
//! holder subset): an IPv4 address, or an IPv6 address's /64. Pure.

/// The host an IP is on, for every per-host count (votes, samples, caps,
/// subsets): an IPv4 address (also written v4-mapped), or an IPv6
/// address's /64 (one machine holds a whole /64 as easily as one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Host {
    /// An IPv4 host.
    V4(std::net::Ipv4Addr),
    /// An IPv6 /64: the address's top 64 bits.
    V6Net(u64),
}

impl Host {
    /// The host `ip` is on.
    pub(crate) fn of(ip: std::net::IpAddr) -> Host {
        match ip {
            std::net::IpAddr::V4(v4) => Host::V4(v4),
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Host::V4(v4),
                None => Host::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }

    /// The host of an `ip:port` address, if it parses.
    pub(crate) fn of_addr(addr: &str) -> Option<Host> {
        addr.parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| Host::of(a.ip()))
    }

    /// As one number: an IPv4 address as itself, a /64 with the top bit
    /// set (never equal to an IPv4 host's).
    pub(crate) fn bits(self) -> u64 {
        match self {
            Host::V4(v4) => u64::from(u32::from(v4)),
            Host::V6Net(net) => net | 1 << 63,
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::V4(v4) => write!(f, "{v4}"),
            Host::V6Net(net) => {
                let s = |i: u32| (net >> (48 - 16 * i)) as u16;
                write!(f, "{:x}:{:x}:{:x}:{:x}::/64", s(0), s(1), s(2), s(3))
            }
        }
    }
}

/// The [`Host`] an `ip:port` address is on, as text (votes, samples and
/// caps keyed by it); the address itself if it does not parse.
pub(crate) fn host_group(addr: &str) -> String {
    Host::of_addr(addr).map_or_else(|| addr.to_string(), |h| h.to_string())
}

/// The host of a peer dialled at `addrs` (its first address's; see
/// [`host_group`]).
pub(crate) fn host_of_addrs(addrs: &[String]) -> String {
    host_group(addrs.first().map_or("", String::as_str))
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
        assert_eq!(host_group("[::ffff:198.18.0.1]:7070"), "198.18.0.1");
        assert_ne!(
            Host::of_addr("198.18.0.1:1").map(Host::bits),
            Host::of_addr("[::c612:1]:1").map(Host::bits),
            "a /64 never takes an IPv4 host's number"
        );
        assert_eq!(host_of_addrs(&[]), "");
        assert_eq!(
            host_of_addrs(&["[2001:db8::1]:1".into(), "198.18.0.1:1".into()]),
            "2001:db8:0:0::/64"
        );
    }
}
