//! The accept loop: a blocking `TcpListener::accept` on its own thread that
//! admits each connection under the caps and parks it to wait for its
//! request.
//!
//! A connection over a cap (per client, or in total) first makes room by
//! closing a waiting connection of that client (of anyone, for the total
//! cap): the oldest idle one (nothing of a request received), else the
//! one whose partial head has been silent longest (over 250 ms). When there is none, the
//! accept thread answers `503` with `Retry-After: 1` itself on the
//! non-blocking socket (the few bytes fit in an empty send buffer) and
//! closes: it never blocks on a client. Refusals are logged once per
//! [`REFUSAL_LOG_EVERY`] with a count. The loop stops when the close flag
//! is set; [`wake`] connects to the listener to unblock it.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::limits::{ClientKey, Refusal};
use super::shared::Shared;
use super::ServerConfig;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Timeout of the connection that wakes the accept loop.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Refused connections are summed up in the log at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// The whole answer to a connection that finds the server full.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Retry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 33\r\n\
Connection: close\r\n\
\r\n\
server busy: retry in one second\n";
/// The whole answer to a connection over its client's cap.
const CLIENT_CAP_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Retry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 70\r\n\
Connection: close\r\n\
\r\n\
too many connections from your address: close some, retry in a second\n";

/// Runs the accept loop until the server closes.
pub(crate) fn run(listener: TcpListener, shared: &Shared, config: &ServerConfig) {
    let mut refusals = RefusalLog::new();
    loop {
        let accepted = listener.accept();
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => admit(stream, peer, shared, config, &mut refusals),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("cannot accept a connection: {e}");
                std::thread::sleep(ACCEPT_ERROR_BACKOFF);
            }
        }
        refusals.flush_if_due();
    }
}

fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    config: &ServerConfig,
    refusals: &mut RefusalLog,
) {
    if let Err(e) = stream
        .set_nonblocking(true)
        .and_then(|()| stream.set_nodelay(true))
    {
        log::debug!("{peer}: cannot configure the socket: {e}");
        return;
    }
    let key = ClientKey::of(peer.ip());
    let slot = shared.admission.admit(key).or_else(|refusal| {
        let victim_of = match refusal {
            Refusal::PerClient => Some(key),
            Refusal::Total => None,
        };
        if shared.parking.make_room(victim_of) {
            shared.admission.admit(key)
        } else {
            Err(refusal)
        }
    });
    match slot {
        Ok(slot) => {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let conn = Box::new(Conn::new(id, stream, peer, key, slot, config));
            let next = conn.first_park();
            shared
                .parking
                .place(conn, next, &shared.ready, &shared.closing);
        }
        Err(refusal) => {
            let answer = match refusal {
                Refusal::PerClient => {
                    crate::metrics::REFUSED_CLIENT_CAP.inc();
                    CLIENT_CAP_RESPONSE
                }
                Refusal::Total => {
                    crate::metrics::REFUSED_BUSY.inc();
                    BUSY_RESPONSE
                }
            };
            reject(&stream, peer, answer);
            refusals.note(refusal, key);
        }
    }
}

/// Counts refusals between two log lines.
struct RefusalLog {
    since: Instant,
    per_client: u64,
    total: u64,
    last_client: Option<ClientKey>,
}

impl RefusalLog {
    fn new() -> Self {
        RefusalLog {
            since: Instant::now(),
            per_client: 0,
            total: 0,
            last_client: None,
        }
    }

    fn note(&mut self, refusal: Refusal, key: ClientKey) {
        match refusal {
            Refusal::PerClient => {
                self.per_client += 1;
                self.last_client = Some(key);
            }
            Refusal::Total => self.total += 1,
        }
    }

    fn flush_if_due(&mut self) {
        if self.since.elapsed() < REFUSAL_LOG_EVERY {
            return;
        }
        if self.per_client > 0 {
            let last = self.last_client.map(|k| k.to_string()).unwrap_or_default();
            log::warn!(
                "refused {} connections in {:?} from clients at their connection cap (last: {last})",
                self.per_client,
                self.since.elapsed()
            );
        }
        if self.total > 0 {
            log::warn!(
                "refused {} connections in {:?}: the server holds its maximum of connections",
                self.total,
                self.since.elapsed()
            );
        }
        *self = RefusalLog::new();
    }
}

/// Answers `503` on the non-blocking `stream` without ever blocking, then
/// closes.
fn reject(mut stream: &TcpStream, peer: SocketAddr, answer: &[u8]) {
    let started = Instant::now();
    let written = stream.write(answer).unwrap_or(0);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Drain what already arrived, so the close does not turn into a reset
    // that could destroy the answer before the client reads it.
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
    }
    log::debug!(
        "{peer} \"- -\" 503 {written} {:?} (refused)",
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
    fn refusals_are_whole_503s_with_retry_after() {
        check_refusal(BUSY_RESPONSE);
        check_refusal(CLIENT_CAP_RESPONSE);
    }

    fn check_refusal(answer: &[u8]) {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut slots);
        let httparse::Status::Complete(head_len) = resp.parse(answer).unwrap() else {
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
        let body = &answer[head_len..];
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
