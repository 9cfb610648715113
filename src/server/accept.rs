//! The accept loop: a blocking `TcpListener::accept` on its own thread,
//! handing each connection to the worker pool over the bounded channel.
//!
//! The accept thread never blocks on a client: when the queue is full it
//! writes a fixed `503` with `Retry-After: 1` on a non-blocking socket (the
//! few bytes fit in an empty send buffer) and closes. It stops when the
//! close flag is set; [`wake`] connects to the listener to unblock it.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Timeout of the connection that wakes the accept loop.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// The whole answer to a connection that finds the queue full.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Retry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 33\r\n\
Connection: close\r\n\
\r\n\
server busy: retry in one second\n";

/// An accepted connection on its way to a worker.
pub(crate) struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
}

/// Runs the accept loop until `closing` is set.
pub(crate) fn run(listener: TcpListener, queue: Sender<Accepted>, closing: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if closing.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => match queue.try_send(Accepted { stream, peer }) {
                Ok(()) => {}
                Err(TrySendError::Full(conn)) => reject_busy(conn),
                Err(TrySendError::Disconnected(_)) => {
                    log::error!("bug: every worker is gone; the accept loop stops");
                    return;
                }
            },
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("cannot accept a connection: {e}");
                std::thread::sleep(ACCEPT_ERROR_BACKOFF);
            }
        }
    }
}

/// Answers `503` without ever blocking, then closes.
fn reject_busy(conn: Accepted) {
    let started = Instant::now();
    let mut stream = &conn.stream;
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let written = stream.write(BUSY_RESPONSE).unwrap_or(0);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Drain what already arrived, so the close does not turn into a reset
    // that could destroy the answer before the client reads it.
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
    }
    log::info!(
        "{} \"- -\" 503 {written} {:?} (queue full)",
        conn.peer,
        started.elapsed()
    );
}

/// Unblocks the accept loop of a listener bound to `addr` by connecting to it.
pub(crate) fn wake(addr: SocketAddr) -> std::io::Result<()> {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    TcpStream::connect_timeout(&SocketAddr::new(ip, addr.port()), WAKE_TIMEOUT).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_response_is_a_whole_503_with_retry_after() {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut slots);
        let httparse::Status::Complete(head_len) = resp.parse(BUSY_RESPONSE).unwrap() else {
            panic!("incomplete head");
        };
        assert_eq!(resp.code, Some(503));
        let header = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).unwrap().to_owned())
        };
        assert_eq!(header("retry-after").as_deref(), Some("1"));
        let body = &BUSY_RESPONSE[head_len..];
        assert_eq!(header("content-length"), Some(body.len().to_string()));
        assert!(body.ends_with(b"\n") && !body[..body.len() - 1].contains(&b'\n'));
    }

    #[test]
    fn wake_targets_loopback_for_unspecified_addresses() {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        wake(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert!(peer.ip().is_loopback());
    }
}
