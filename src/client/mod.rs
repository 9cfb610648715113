//! A minimal HTTP/1.1 client over a blocking [`TcpStream`], for talking to
//! peers: the catalog (`GET /v1/files`), piece lists and range requests.
//!
//! Why not `ureq`: the download reads each piece straight from the socket
//! into the piece buffer while hashing it, needs the exact byte count of
//! every body (a short or long body is a peer fault, not an end of stream),
//! a per-read timeout that turns a stall into an error, a check between
//! reads to abandon a piece another peer already delivered, and keep-alive
//! under its own control (one connection per worker, reused for every
//! piece). That is a hundred lines over `httparse`; ureq would hide the
//! socket behind its pool and body readers. The etcd client keeps ureq.
//!
//! The wire format (the request written, the response head parsed, how a
//! body is framed) is [`crate::http::reply`]'s; this module owns the
//! socket: timeouts, deadlines, keep-alive, body reads. `Content-Encoding:
//! gzip` is reported in the [`Head`] (asked for by [`PeerConn::get_gzip`],
//! the catalog only); inflating it is the caller's, under its own limit.
//!
//! It sits beside the wire code, below everything that talks to peers:
//! the catalog, the one-file lookup, the status monitor and the download.
//!
//! - `dial`: racing a peer's addresses, remembering the one that answered.

mod dial;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub(crate) use crate::http::reply::Head;
use crate::http::reply::{self, Framing, ReplyError, MAX_RESPONSE_HEAD};

/// Read size for heads and small bodies.
const READ_CHUNK: usize = 16 * 1024;

/// How long to wait before asking a busy peer (`503`, `Retry-After: 1`) again.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// `GET path` on a new connection and its whole body (at most `limit`
/// bytes), all within `deadline`. A `503` (the peer's queue is full) is
/// asked again every [`BUSY_RETRY`] while the deadline allows; the last
/// answer is returned whatever its status.
pub fn get_small(
    addrs: &[String],
    path: &str,
    timeouts: Timeouts,
    limit: u64,
    deadline: Duration,
) -> Result<(Head, Vec<u8>), ClientError> {
    let ask = Ask {
        limit,
        deadline,
        keep: false,
        retry_busy: true,
    };
    get_small_on(None, addrs, path, timeouts, ask).map(|(head, body, _)| (head, body))
}

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No address answered within the connect timeout (refused, unreachable,
    /// or did not resolve).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The addresses dialled, comma-separated.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// Sending the request failed.
    #[error("cannot send the request to {addr}: {source}")]
    Send {
        /// The peer.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The peer sent nothing for longer than the read timeout.
    #[error("peer {addr} stalled: no data for {timeout:?}")]
    Stalled {
        /// The peer.
        addr: String,
        /// The read timeout.
        timeout: Duration,
    },
    /// The whole request took longer than its deadline.
    #[error("peer {addr} too slow: request not done within {limit:?}")]
    Deadline {
        /// The peer.
        addr: String,
        /// The deadline.
        limit: Duration,
    },
    /// The connection closed before the response head.
    #[error("peer {addr} closed the connection before answering")]
    ClosedBeforeHead {
        /// The peer.
        addr: String,
    },
    /// Reading failed.
    #[error("cannot read from peer {addr}: {source}")]
    Read {
        /// The peer.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The response head is not valid HTTP/1.1 or too large.
    #[error("peer {addr} sent a bad response head: {source}")]
    BadHead {
        /// The peer.
        addr: String,
        /// What was wrong.
        source: ReplyError,
    },
    /// The body ended before its announced length.
    #[error("peer {addr} sent a short body: {got} of {expected} bytes")]
    ShortBody {
        /// The peer.
        addr: String,
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The body is larger than the caller accepts.
    #[error("peer {addr} sent a body over the {limit}-byte limit")]
    TooLarge {
        /// The peer.
        addr: String,
        /// The limit.
        limit: u64,
    },
    /// The caller abandoned the request (another peer delivered the data).
    #[error("request abandoned")]
    Abandoned,
}

impl ClientError {
    /// True if the request failed because a kept-alive connection was closed
    /// by the peer before it answered (retry on a new connection at no cost).
    pub fn is_stale_connection(&self) -> bool {
        match self {
            ClientError::ClosedBeforeHead { .. } => true,
            ClientError::Send { source, .. } | ClientError::Read { source, .. } => matches!(
                source.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// Timeouts of one peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for the TCP connection.
    pub connect: Duration,
    /// Longest a single read or write may block (a stall).
    pub io: Duration,
}

/// One connection to a peer, reused for successive requests while the
/// peer keeps it alive.
pub struct PeerConn {
    stream: TcpStream,
    addr: String,
    timeouts: Timeouts,
    /// Bytes read past the current head or body (the start of a body).
    pending: Vec<u8>,
    /// The connection can carry another request.
    reusable: bool,
    /// Requests sent ahead ([`PeerConn::send_ahead`]) whose heads are not
    /// read yet.
    queued: u32,
    /// Requests sent on this connection so far.
    requests: u64,
}

impl std::fmt::Debug for PeerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConn")
            .field("addr", &self.addr)
            .field("requests", &self.requests)
            .finish()
    }
}

/// Opens a TCP connection to the first of a peer's addresses (`ip:port` or
/// `host:port`, best first) that answers within the connect timeout
/// (`dial` races them and remembers which one answered).
pub fn connect(addrs: &[String], timeouts: Timeouts) -> Result<PeerConn, ClientError> {
    let (stream, addr) = dial::dial(addrs, timeouts.connect).map_err(|e| ClientError::Connect {
        addr: e.addrs,
        source: e.source,
    })?;
    stream
        .set_read_timeout(Some(timeouts.io))
        .and_then(|()| stream.set_write_timeout(Some(timeouts.io)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    Ok(PeerConn {
        stream,
        addr: addr.to_string(),
        timeouts,
        pending: Vec::new(),
        reusable: true,
        queued: 0,
        requests: 0,
    })
}

impl PeerConn {
    /// The address that answered.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True if another request may be sent on this connection.
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Requests sent on this connection so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// A second handle on the socket, so another thread can shut it down
    /// and unblock a read in progress.
    pub fn try_clone_stream(&self) -> std::io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Sends `GET path` (with `Range: bytes=a-b` if `range` is given) and
    /// reads the response head. The body must then be read in full with
    /// [`PeerConn::read_body`] or [`PeerConn::read_body_to_vec`], or the
    /// connection dropped.
    pub fn get(&mut self, path: &str, range: Option<(u64, u64)>) -> Result<Head, ClientError> {
        self.send_get(path, range, false)
    }

    /// Sends `GET path` with `Accept-Encoding: gzip` and reads the response
    /// head: the body may come compressed ([`Head::gzip`]).
    pub fn get_gzip(&mut self, path: &str) -> Result<Head, ClientError> {
        self.send_get(path, None, true)
    }

    /// Sends `GET path` with `Range: bytes=a-b` without waiting for its
    /// answer, while the body of the previous one is still being read
    /// (HTTP/1.1 pipelining: the peer answers in order, and the link does
    /// not idle for a round trip between pieces). Its head is read with
    /// [`PeerConn::next_head`] once that body is read in full.
    pub fn send_ahead(&mut self, path: &str, range: (u64, u64)) -> Result<(), ClientError> {
        let req = reply::get_request(&self.addr, path, Some(range), false);
        self.queued += 1;
        self.write_request(&req)
    }

    /// Reads the head of the answer to the oldest request sent ahead.
    pub fn next_head(&mut self) -> Result<Head, ClientError> {
        self.queued = self.queued.saturating_sub(1);
        self.reusable = false;
        self.read_head()
    }

    /// Sends `HEAD path` and reads the response head (there is no body:
    /// the connection is reusable at once unless the peer closes it).
    pub fn head(&mut self, path: &str) -> Result<Head, ClientError> {
        let req = reply::head_request(&self.addr, path);
        let head = self.send(&req)?;
        self.finish(&head);
        Ok(head)
    }

    fn send_get(
        &mut self,
        path: &str,
        range: Option<(u64, u64)>,
        gzip: bool,
    ) -> Result<Head, ClientError> {
        let req = reply::get_request(&self.addr, path, range, gzip);
        self.send(&req)
    }

    fn send(&mut self, req: &str) -> Result<Head, ClientError> {
        self.write_request(req)?;
        self.read_head()
    }

    /// Writes one request; the connection is not reusable until its answer
    /// is read in full.
    fn write_request(&mut self, req: &str) -> Result<(), ClientError> {
        self.requests += 1;
        self.reusable = false;
        self.stream
            .write_all(req.as_bytes())
            .map_err(|source| ClientError::Send {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Reads the next response head, within twice the read timeout in all
    /// (a head dripped a byte per read timeout would otherwise take hours
    /// to fill its 16 KiB limit).
    fn read_head(&mut self) -> Result<Head, ClientError> {
        let mut chunk = [0u8; READ_CHUNK];
        let started = Instant::now();
        let limit = self.timeouts.io.saturating_mul(2);
        loop {
            let parsed =
                reply::parse_head(&self.pending).map_err(|source| ClientError::BadHead {
                    addr: self.addr.clone(),
                    source,
                })?;
            if let Some((head, used)) = parsed {
                self.pending.drain(..used);
                return Ok(head);
            }
            if self.pending.len() > MAX_RESPONSE_HEAD {
                return Err(ClientError::BadHead {
                    addr: self.addr.clone(),
                    source: ReplyError::TooLarge,
                });
            }
            if started.elapsed() > limit {
                return Err(ClientError::Deadline {
                    addr: self.addr.clone(),
                    limit,
                });
            }
            match self.stream.read(&mut chunk) {
                Ok(0) if self.pending.is_empty() => {
                    return Err(ClientError::ClosedBeforeHead {
                        addr: self.addr.clone(),
                    })
                }
                Ok(0) => {
                    return Err(ClientError::BadHead {
                        addr: self.addr.clone(),
                        source: ReplyError::Truncated,
                    })
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
    }

    fn read_error(&self, e: std::io::Error) -> ClientError {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            ClientError::Stalled {
                addr: self.addr.clone(),
                timeout: self.timeouts.io,
            }
        } else {
            ClientError::Read {
                addr: self.addr.clone(),
                source: e,
            }
        }
    }

    /// Reads a body of exactly `buf.len()` bytes into `buf`. `before_read`
    /// runs before every socket read with the bytes still wanted and returns
    /// how many to read at most (rate limiting) or `None` to abandon the
    /// request; `on_data` sees every chunk as it lands (hashing). After an
    /// abandon or an error the connection must not be reused.
    pub fn read_body(
        &mut self,
        buf: &mut [u8],
        mut before_read: impl FnMut(usize) -> Option<usize>,
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let expected = buf.len();
        let mut filled = self.pending.len().min(expected);
        buf[..filled].copy_from_slice(&self.pending[..filled]);
        on_data(&buf[..filled]);
        self.pending.drain(..filled);
        while filled < expected {
            let want = before_read(expected - filled).ok_or(ClientError::Abandoned)?;
            let end = filled + want.clamp(1, expected - filled);
            match self.stream.read(&mut buf[filled..end]) {
                Ok(0) => {
                    return Err(ClientError::ShortBody {
                        addr: self.addr.clone(),
                        got: filled as u64,
                        expected: expected as u64,
                    })
                }
                Ok(n) => {
                    on_data(&buf[filled..filled + n]);
                    filled += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
        Ok(())
    }

    /// Marks the connection reusable after a body was read in full (the
    /// caller knows the head did not ask to close).
    pub fn finish(&mut self, head: &Head) {
        self.reusable = !head.close && self.queued == 0 && self.pending.is_empty();
    }

    /// Reads a whole body of at most `limit` bytes, finishing within
    /// `deadline` of `started`. Without `Content-Length` the body runs to
    /// the end of the connection.
    pub fn read_body_to_vec(
        &mut self,
        head: &Head,
        limit: u64,
        started: Instant,
        deadline: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let too_large = || ClientError::TooLarge {
            addr: self.addr.clone(),
            limit,
        };
        let check_deadline = |addr: &str| {
            if started.elapsed() > deadline {
                Err(ClientError::Deadline {
                    addr: addr.to_string(),
                    limit: deadline,
                })
            } else {
                Ok(())
            }
        };
        if let Framing::Length(len) = head.framing() {
            if len > limit {
                return Err(too_large());
            }
            let mut body = vec![0u8; len as usize];
            let addr = self.addr.clone();
            let mut late = false;
            let result = self.read_body(
                &mut body,
                |want| {
                    late = check_deadline(&addr).is_err();
                    (!late).then_some(want)
                },
                |_| {},
            );
            match result {
                Err(ClientError::Abandoned) if late => {
                    return Err(ClientError::Deadline {
                        addr,
                        limit: deadline,
                    })
                }
                other => other?,
            }
            self.finish(head);
            return Ok(body);
        }
        // No length: read to the end of the connection.
        let mut body = std::mem::take(&mut self.pending);
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            if body.len() as u64 > limit {
                return Err(too_large());
            }
            check_deadline(&self.addr)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
        self.reusable = false;
        Ok(body)
    }
}

/// Idle kept-alive connections shared by the downloads of a batch, by the
/// peer's address list: piece-list requests and new workers take one
/// instead of dialling (a stale one is noticed on its first request and
/// replaced); a piece-list request puts its connection back, and so does a
/// worker that ends between requests with its socket not shut down by the
/// end of its round (the worker that writes a round's last piece takes its
/// socket out of the round's table first: see `worker`).
#[derive(Debug, Default)]
pub struct ConnPool {
    idle: parking_lot::Mutex<std::collections::HashMap<Vec<String>, Vec<PeerConn>>>,
}

/// Idle connections kept per peer at most.
const MAX_IDLE_PER_PEER: usize = 32;

impl ConnPool {
    /// An empty pool.
    pub fn new() -> Self {
        ConnPool::default()
    }

    /// An idle connection to the peer at `addrs`, if any.
    pub fn take(&self, addrs: &[String]) -> Option<PeerConn> {
        self.idle.lock().get_mut(addrs)?.pop()
    }

    /// Keeps `conn` for the next request to the peer at `addrs` (if it can
    /// carry one and the peer has fewer than 32 idle ones).
    pub fn put(&self, addrs: &[String], conn: PeerConn) {
        if !conn.is_reusable() {
            return;
        }
        let mut idle = self.idle.lock();
        let list = idle.entry(addrs.to_vec()).or_default();
        if list.len() < MAX_IDLE_PER_PEER {
            list.push(conn);
        }
    }
}

/// [`get_small`] on a connection of `pool` (a new one if none is idle, or
/// if the idle one turns out closed); the connection goes back to the pool
/// after a complete answer. A `503` is asked again as `get_small` does
/// when `retry_busy`, else it is the answer.
pub fn get_small_pooled(
    pool: &ConnPool,
    addrs: &[String],
    path: &str,
    timeouts: Timeouts,
    limit: u64,
    deadline: Duration,
    retry_busy: bool,
) -> Result<(Head, Vec<u8>), ClientError> {
    let ask = Ask {
        limit,
        deadline,
        keep: false,
        retry_busy,
    };
    get_small_on(Some(pool), addrs, path, timeouts, ask).map(|(head, body, _)| (head, body))
}

/// [`get_small`] that hands back its connection when it can carry the
/// next request (`None` if the peer closes it).
/// The body is asked in gzip (`Accept-Encoding`) and comes as sent: see
/// `Head::gzip`. A `503` is asked again when `retry_busy`.
pub fn get_small_keep(
    addrs: &[String],
    path: &str,
    timeouts: Timeouts,
    limit: u64,
    deadline: Duration,
    retry_busy: bool,
) -> Result<(Head, Vec<u8>, Option<PeerConn>), ClientError> {
    let ask = Ask {
        limit,
        deadline,
        keep: true,
        retry_busy,
    };
    get_small_on(None, addrs, path, timeouts, ask)
}

/// How [`get_small_on`] asks.
struct Ask {
    /// Most bytes of body read.
    limit: u64,
    /// For the whole exchange (and its `503` retries).
    deadline: Duration,
    /// The body asked in gzip and the connection handed back; else it goes
    /// back to the pool, if any.
    keep: bool,
    /// A `503` is asked again every [`BUSY_RETRY`] while the deadline
    /// allows; else it is the answer.
    retry_busy: bool,
}

/// The one loop behind [`get_small`] (no pool), [`get_small_pooled`] and
/// [`get_small_keep`].
fn get_small_on(
    pool: Option<&ConnPool>,
    addrs: &[String],
    path: &str,
    timeouts: Timeouts,
    ask: Ask,
) -> Result<(Head, Vec<u8>, Option<PeerConn>), ClientError> {
    let Ask {
        limit,
        deadline,
        keep,
        retry_busy,
    } = ask;
    let started = Instant::now();
    loop {
        let (mut conn, head) = loop {
            match pool.and_then(|p| p.take(addrs)) {
                Some(mut idle) => match idle.get(path, None) {
                    Ok(head) => break (idle, head),
                    Err(e) if e.is_stale_connection() => continue,
                    Err(e) => return Err(e),
                },
                None => {
                    let mut conn = connect(addrs, timeouts)?;
                    let head = if keep {
                        conn.get_gzip(path)?
                    } else {
                        conn.get(path, None)?
                    };
                    break (conn, head);
                }
            }
        };
        let body = conn.read_body_to_vec(&head, limit, started, deadline)?;
        conn.finish(&head);
        let busy = retry_busy && head.status == 503 && started.elapsed() + BUSY_RETRY < deadline;
        if busy {
            log::debug!("peer {} busy (503) for {path}; asking again", conn.addr());
        }
        if busy {
            if let Some(p) = pool {
                p.put(addrs, conn);
            }
            std::thread::sleep(BUSY_RETRY);
            continue;
        }
        let kept = match pool {
            _ if keep => Some(conn).filter(PeerConn::is_reusable),
            Some(p) => {
                p.put(addrs, conn);
                None
            }
            None => None,
        };
        return Ok((head, body, kept));
    }
}
