//! Loopback addressing: free ports and distinct 127.0.x.y addresses.
//!
//! Tests run in parallel, as threads (cargo test) or as processes
//! (nextest), so addresses come from a per-process counter that starts at
//! an offset derived from the pid and the clock, and every address is
//! probed by binding it. A port from [`free_port`] is free when returned;
//! another process may still take it before it is used, so fixtures that
//! start servers on such ports retry on "address in use".

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Number of addresses in 127.0.0.2 ..= 127.0.255.254 (the pool).
const POOL: u32 = 0xfffe - 1;

/// A TCP port on `ip` that nothing listens on right now (bind port 0, read
/// the port, close).
pub fn free_port(ip: impl Into<IpAddr>) -> u16 {
    let ip = ip.into();
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind a free port on {ip}: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address on {ip}: {e}"))
        .port()
}

/// A free `ip:port` address on a fresh loopback IP.
pub fn free_addr() -> SocketAddr {
    let ip = next_loopback_ip();
    SocketAddr::new(ip.into(), free_port(ip))
}

/// A loopback address no other call in this process returned, in
/// 127.0.0.2 ..= 127.0.255.254, and unlikely to be used by another test
/// process (the sequence starts at an offset from the pid and the clock).
/// The address is checked by binding it once.
pub fn next_loopback_ip() -> Ipv4Addr {
    static START: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Spread processes apart: 97 addresses per pid step, plus clock noise.
        (std::process::id().wrapping_mul(97) ^ (nanos >> 10)) % POOL
    });
    for _ in 0..POOL {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let ip = ip_of(start.wrapping_add(n) % POOL);
        if TcpListener::bind((ip, 0)).is_ok() {
            return ip;
        }
    }
    panic!("no usable loopback address in 127.0.0.2..=127.0.255.254");
}

/// The `i`-th address of the pool (0 is 127.0.0.2).
fn ip_of(i: u32) -> Ipv4Addr {
    let v = i + 2; // 2 ..= 0xfffe
    Ipv4Addr::new(127, 0, (v >> 8) as u8, (v & 0xff) as u8)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pool_bounds() {
        assert_eq!(super::ip_of(0), std::net::Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            super::ip_of(super::POOL - 1),
            std::net::Ipv4Addr::new(127, 0, 255, 254)
        );
    }
}
