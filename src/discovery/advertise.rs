//! Which addresses a peer advertises: every `ip:port` another host could
//! dial, best first, each with the reason it was chosen (`serve` logs them).
//!
//! Order, for a listener on `0.0.0.0` / `::`:
//! 1. the source IP of the route to the first etcd endpoint that resolves,
//!    when it is not loopback (the interface other peers share with etcd);
//! 2. the host's other interface addresses: IPv4 first, then global IPv6
//!    (IPv6 link-local needs a scope id and is never advertised);
//! 3. IPv4 link-local and container or virtual bridges (`docker0`, `br-*`,
//!    `virbr*`, `veth*`, ...): usually not reachable from another host;
//! 4. `127.0.0.1`, so a single machine still works.
//!
//! A listener on a specific IP advertises that IP only. At most
//! [`MAX_ADDRS`] addresses are kept (loopback always last).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};

/// Most addresses a record carries (readers ignore the rest).
pub const MAX_ADDRS: usize = 8;

/// Interface name prefixes of container and virtual bridges.
const VIRTUAL_PREFIXES: &[&str] = &[
    "docker", "br-", "virbr", "veth", "vnet", "cni", "flannel", "cali", "weave", "lxcbr", "lxdbr",
    "podman", "vboxnet", "vmnet", "kube",
];

/// Why an address was advertised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Given in the configuration (`PeerConfig::advertise`).
    Configured,
    /// The listener is bound to this specific IP.
    ListenIp,
    /// The source IP of the route to this etcd endpoint.
    RouteToEtcd(String),
    /// An address of this interface.
    Interface(String),
    /// An address of a container/virtual bridge or a link-local address.
    Virtual(String),
    /// Loopback, for peers on this machine.
    Loopback,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Configured => f.write_str("configured"),
            Reason::ListenIp => f.write_str("listen address"),
            Reason::RouteToEtcd(ep) => write!(f, "route to etcd {ep}"),
            Reason::Interface(name) => write!(f, "interface {name}"),
            Reason::Virtual(name) => write!(f, "virtual or link-local interface {name}"),
            Reason::Loopback => f.write_str("loopback, this machine only"),
        }
    }
}

/// The addresses to advertise for a listener bound to `bound`, best first.
pub fn detect_advertise(bound: SocketAddr, etcd_endpoints: &[String]) -> Vec<(SocketAddr, Reason)> {
    if !bound.ip().is_unspecified() {
        return vec![(bound, Reason::ListenIp)];
    }
    let port = bound.port();
    let mut out: Vec<(SocketAddr, Reason)> = Vec::new();
    if let Some((ip, ep)) = etcd_endpoints
        .iter()
        .find_map(|ep| route_ip(ep).map(|ip| (ip, ep.clone())))
    {
        if !ip.is_loopback() {
            out.push((SocketAddr::new(ip, port), Reason::RouteToEtcd(ep)));
        }
    }
    let mut ifaces: Vec<(u8, IpAddr, Reason)> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| {
            let ip = i.ip();
            rank(&i.name, ip).map(|r| (r, ip, reason_for(r, &i.name)))
        })
        .collect();
    ifaces.sort_by_key(|(r, _, _)| *r);
    for (_, ip, reason) in ifaces {
        if out.iter().all(|(a, _)| a.ip() != ip) {
            out.push((SocketAddr::new(ip, port), reason));
        }
    }
    out.truncate(MAX_ADDRS - 1);
    out.push((
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Reason::Loopback,
    ));
    out
}

/// Rank of an interface address (lower is better), `None` for addresses
/// never advertised (loopback, unspecified, IPv6 link-local, multicast).
fn rank(name: &str, ip: IpAddr) -> Option<u8> {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    let is_virtual = VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p));
    match ip {
        IpAddr::V4(v4) if v4.is_link_local() => Some(3),
        IpAddr::V4(_) if is_virtual => Some(2),
        IpAddr::V4(_) => Some(0),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => None,
        IpAddr::V6(_) if is_virtual => Some(2),
        IpAddr::V6(_) => Some(1),
    }
}

fn reason_for(rank: u8, name: &str) -> Reason {
    if rank >= 2 {
        Reason::Virtual(name.to_string())
    } else {
        Reason::Interface(name.to_string())
    }
}

/// The local IP used to reach `endpoint` (a URL), found by connecting a UDP
/// socket (no packet is sent).
fn route_ip(endpoint: &str) -> Option<IpAddr> {
    let rest = endpoint.split("://").nth(1).unwrap_or(endpoint);
    let hostport = rest.split('/').next()?;
    let target = hostport.to_socket_addrs().ok()?.next()?;
    let any: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(any).ok()?;
    sock.connect(target).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Parses a list of addresses to advertise ([`PeerConfig::advertise`](crate::PeerConfig::advertise),
/// `--advertise`): one or more comma-separated `ip:port`, none of them
/// unspecified or on port 0, duplicates dropped, at most 8 kept. Returns
/// the first bad item on error.
pub fn parse_advertise(list: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let addr: SocketAddr = item.parse().map_err(|_| item.to_string())?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(item.to_string());
        }
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err(list.to_string());
    }
    out.truncate(MAX_ADDRS);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_listen_ip_is_the_only_address() {
        let bound: SocketAddr = "127.0.0.7:4000".parse().unwrap();
        assert_eq!(
            detect_advertise(bound, &["http://127.0.0.1:2379".into()]),
            vec![(bound, Reason::ListenIp)]
        );
    }

    #[test]
    fn wildcard_listener_ends_with_loopback_and_never_unspecified() {
        let bound: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        for eps in [
            vec!["http://127.0.0.1:2379".to_string()],
            vec!["http://no-such-host.invalid:2379".to_string()],
        ] {
            let a = detect_advertise(bound, &eps);
            assert!(a.len() <= MAX_ADDRS);
            let (last, why) = a.last().unwrap();
            assert_eq!(*last, "127.0.0.1:4000".parse().unwrap());
            assert_eq!(*why, Reason::Loopback);
            for (addr, _) in &a {
                assert!(!addr.ip().is_unspecified());
                assert_eq!(addr.port(), 4000);
            }
            // Loopback only once, and only at the end.
            assert_eq!(a.iter().filter(|(x, _)| x.ip().is_loopback()).count(), 1);
        }
    }

    #[test]
    fn ranks_put_real_interfaces_before_bridges_and_link_local() {
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        let bridge: IpAddr = "172.17.0.1".parse().unwrap();
        let ll: IpAddr = "169.254.3.4".parse().unwrap();
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        let v6ll: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(rank("eth0", lan), Some(0));
        assert_eq!(rank("eth0", v6), Some(1));
        assert_eq!(rank("docker0", bridge), Some(2));
        assert_eq!(rank("br-0a1b", bridge), Some(2));
        assert_eq!(rank("eth1", ll), Some(3));
        assert_eq!(rank("eth0", v6ll), None);
        assert_eq!(rank("lo", "127.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn advertise_flag_takes_a_list() {
        let got = parse_advertise("198.18.0.2:7070, 10.0.0.2:7070,198.18.0.2:7070").unwrap();
        assert_eq!(
            got,
            vec![
                "198.18.0.2:7070".parse().unwrap(),
                "10.0.0.2:7070".parse().unwrap()
            ]
        );
        assert_eq!(parse_advertise("0.0.0.0:7070").unwrap_err(), "0.0.0.0:7070");
        assert_eq!(parse_advertise("1.2.3.4:0").unwrap_err(), "1.2.3.4:0");
        assert_eq!(parse_advertise("a,b").unwrap_err(), "a");
        assert!(parse_advertise(" , ").is_err());
    }
}
