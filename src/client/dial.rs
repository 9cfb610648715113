//! Dialling a peer that registered several addresses: which of them to try,
//! racing them within one connect timeout, and remembering which answered.
//!
//! A peer advertises every address another host might reach it on, best
//! first ([`crate::discovery::detect_advertise`]). From here some of them
//! are unreachable (another subnet, a container bridge, a firewall that
//! drops packets and so costs a whole timeout). The addresses are raced as
//! in Happy Eyeballs (RFC 8305): the first is dialled at once, the next one
//! a stagger later or as soon as an attempt fails, all polled together on
//! non-blocking sockets, and the whole thing ends at the connect timeout
//! however many addresses there are. The one that answered is remembered
//! per address list and dialled first next time.
//!
//! Loopback addresses are dialled only when the peer is on this machine
//! (one of its other addresses is local here) or when it has no other
//! address: from another host `127.0.0.1:7070` reaches that host's own
//! peer, not the one that advertised it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Longest pause before the next address is tried while one is pending.
const MAX_STAGGER: Duration = Duration::from_millis(250);
/// Shortest pause.
const MIN_STAGGER: Duration = Duration::from_millis(20);
/// Address lists whose answering address is remembered (cleared when full).
const MEMORY_CAP: usize = 4096;

/// The address that answered last, per address list.
static ANSWERED: Mutex<Option<HashMap<String, SocketAddr>>> = Mutex::new(None);

/// Why no address of a peer could be dialled.
#[derive(Debug)]
pub(crate) struct DialError {
    /// The addresses, as given, joined by commas.
    pub addrs: String,
    /// The last failure (or why nothing was dialled).
    pub source: std::io::Error,
}

/// Connects to the first of `addrs` (`ip:port` or `host:port`, best first)
/// that answers within `timeout`. Returns the stream and the address.
pub(crate) fn dial(
    addrs: &[String],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), DialError> {
    let key = addrs.join(",");
    let fail = |source| DialError {
        addrs: key.clone(),
        source,
    };
    let mut candidates = resolve(addrs).map_err(fail)?;
    if let Some(prev) = ANSWERED.lock().as_ref().and_then(|m| m.get(&key).copied()) {
        if let Some(i) = candidates.iter().position(|a| *a == prev) {
            let a = candidates.remove(i);
            candidates.insert(0, a);
        }
    }
    let (stream, addr) = race(&candidates, timeout).map_err(fail)?;
    let mut memory = ANSWERED.lock();
    let map = memory.get_or_insert_with(HashMap::new);
    if map.len() >= MEMORY_CAP {
        map.clear();
    }
    map.insert(key, addr);
    Ok((stream, addr))
}

/// The socket addresses to try, in order, with loopback ones dropped when
/// the peer is elsewhere.
fn resolve(addrs: &[String]) -> std::io::Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut last = None;
    for a in addrs {
        match a.to_socket_addrs() {
            Ok(it) => {
                for sa in it {
                    if !out.contains(&sa) {
                        out.push(sa);
                    }
                }
            }
            Err(e) => last = Some(e),
        }
    }
    let remote: Vec<IpAddr> = out
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_loopback())
        .collect();
    if !remote.is_empty() && !remote.iter().any(|ip| is_local(*ip)) {
        out.retain(|a| !a.ip().is_loopback());
    }
    if out.is_empty() {
        return Err(last.unwrap_or_else(|| std::io::Error::other("no address to dial")));
    }
    Ok(out)
}

/// True if `ip` is an address of this machine (binding to it works).
fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn stagger(timeout: Duration, n: usize) -> Duration {
    let per = timeout / u32::try_from(n + 1).unwrap_or(u32::MAX);
    per.clamp(MIN_STAGGER, MAX_STAGGER)
}

/// Dials `candidates` in order, overlapping attempts, within `timeout`.
#[cfg(target_os = "linux")]
fn race(candidates: &[SocketAddr], timeout: Duration) -> std::io::Result<(TcpStream, SocketAddr)> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::net::{connect, socket_with, sockopt, AddressFamily, SocketFlags, SocketType};
    use std::os::fd::OwnedFd;

    let started = Instant::now();
    let deadline = started + timeout;
    let step = stagger(timeout, candidates.len());
    let mut pending: Vec<(OwnedFd, SocketAddr)> = Vec::new();
    let mut next = 0;
    let mut next_at = started;
    let mut last: Option<std::io::Error> = None;
    let ready = |fd: OwnedFd, addr: SocketAddr| -> std::io::Result<(TcpStream, SocketAddr)> {
        let stream = TcpStream::from(fd);
        stream.set_nonblocking(false)?;
        Ok((stream, addr))
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(last
                .filter(|_| pending.is_empty())
                .unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut)));
        }
        while next < candidates.len() && (now >= next_at || pending.is_empty()) {
            let addr = candidates[next];
            next += 1;
            next_at = now + step;
            let family = if addr.is_ipv4() {
                AddressFamily::INET
            } else {
                AddressFamily::INET6
            };
            let fd = match socket_with(
                family,
                SocketType::STREAM,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            ) {
                Ok(fd) => fd,
                Err(e) => {
                    last = Some(e.into());
                    continue;
                }
            };
            match connect(&fd, &addr) {
                Ok(()) => return ready(fd, addr),
                Err(rustix::io::Errno::INPROGRESS) => pending.push((fd, addr)),
                Err(e) => last = Some(e.into()),
            }
        }
        if pending.is_empty() {
            return Err(last.unwrap_or_else(|| std::io::Error::other("no address to dial")));
        }
        let mut wake = deadline;
        if next < candidates.len() {
            wake = wake.min(next_at);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        let ts = Timespec {
            tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: wait.subsec_nanos().into(),
        };
        let mut fds: Vec<PollFd<'_>> = pending
            .iter()
            .map(|(fd, _)| PollFd::new(fd, PollFlags::OUT))
            .collect();
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let done: Vec<bool> = fds.iter().map(|p| !p.revents().is_empty()).collect();
        drop(fds);
        let mut i = 0;
        let mut k = 0;
        while i < pending.len() {
            if !done[k] {
                i += 1;
                k += 1;
                continue;
            }
            k += 1;
            let (fd, addr) = pending.remove(i);
            match sockopt::socket_error(&fd) {
                Ok(Ok(())) => return ready(fd, addr),
                Ok(Err(e)) | Err(e) => {
                    last = Some(e.into());
                    // A failure starts the next address at once.
                    next_at = Instant::now();
                }
            }
        }
    }
}

/// Dials `candidates` one after the other within `timeout`.
#[cfg(not(target_os = "linux"))]
fn race(candidates: &[SocketAddr], timeout: Duration) -> std::io::Result<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    for addr in candidates {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => return Ok((s, *addr)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_refused_first_address_falls_through_to_the_next() {
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let addrs = vec![
            dead_addr.to_string(),
            live.local_addr().unwrap().to_string(),
        ];
        let (_s, got) = dial(&addrs, Duration::from_secs(2)).unwrap();
        assert_eq!(got, live.local_addr().unwrap());
        // Remembered: the live one is now tried first.
        let (_s, got) = dial(&addrs, Duration::from_secs(2)).unwrap();
        assert_eq!(got, live.local_addr().unwrap());
    }

    #[test]
    fn nothing_answers_within_the_timeout() {
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = dead.local_addr().unwrap().to_string();
        drop(dead);
        let started = Instant::now();
        let e = dial(&[a.clone(), a], Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(e.source.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn loopback_is_dropped_for_a_peer_on_another_host() {
        // 198.18.255.254 is not an address of this machine (RFC 2544 range).
        let got = resolve(&["198.18.255.254:7070".into(), "127.0.0.1:7070".into()]).unwrap();
        assert_eq!(got, vec!["198.18.255.254:7070".parse().unwrap()]);
        // A peer with only loopback addresses is on this machine.
        let got = resolve(&["127.0.0.1:7070".into()]).unwrap();
        assert_eq!(got.len(), 1);
        // Several loopback addresses: all kept.
        let got = resolve(&["127.0.0.2:7070".into(), "127.0.0.1:7070".into()]).unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn unresolvable_lists_fail_with_the_reason() {
        assert!(resolve(&["not an address".into()]).is_err());
        assert!(resolve(&[]).is_err());
    }
}
