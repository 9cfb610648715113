//! One client connection as a small state machine: receive a request head,
//! send the answer, then wait for the next request (keep-alive) or linger
//! and close. Workers run one bounded [`Conn::step`] at a time on a
//! non-blocking socket; whenever the socket is not ready the step returns
//! [`Next::Park`] and the connection waits in the parking lot, holding no
//! thread. One access-log line is written per request.
//!
//! A step never blocks on the client: it reads what has arrived, or sends
//! what the socket buffer takes and at most [`SLICE`] bytes of a body. A
//! client that reads slowly, drips its head or idles therefore costs a
//! socket and a few hundred bytes, not a worker.
//!
//! Clocks, all enforced by the parking lot while the connection waits:
//! - the header deadline runs from the first byte of a request (from the
//!   accept for a new connection), however slowly the head drips in; then
//!   `408` and close (a connection that sent nothing is closed silently);
//! - a kept-alive connection may idle `keepalive_idle` between requests,
//!   then it is closed silently (clients retry an idempotent request on a
//!   reused connection that closed, RFC 9112 section 9.3.1);
//! - an answer that makes no progress for `write_timeout` is abandoned;
//! - a closing connection discards what the client still sends for
//!   [`LINGER_TIMEOUT`], so the close does not turn into a reset that could
//!   destroy the answer before the client reads it.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::body::{send_some, Progress};
use super::handler::{handle, Body, CatalogCache, HaveWait, PartialHave, Response};
use super::limits::{ClientKey, Slot};
use super::{FileSource, ServerConfig};
use crate::http::response::http_date;
use crate::http::{parse_head, HeadError, Method, ParsedHead, RequestHead, Status, MAX_HEAD_BYTES};

/// Bytes read from the socket at a time while receiving a head.
const READ_CHUNK: usize = 8 * 1024;
/// Most body bytes sent in one step; then the connection goes behind the
/// ones waiting for a worker (if any).
const SLICE: u64 = 1024 * 1024;
/// How long a request head may have been silent before the connection
/// counts as stalled, and may be closed to make room for its client's or
/// another client's new connection when a cap is reached.
const STALLED_HEAD: Duration = Duration::from_millis(250);
/// How long a closing connection waits for the client to stop sending.
const LINGER_TIMEOUT: Duration = Duration::from_millis(500);
/// How much a closing connection discards at most.
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// Value of the `Server` header.
const SERVER_NAME: &str = concat!("piratebay-sync/", env!("CARGO_PKG_VERSION"));

/// What a step needs besides the connection.
pub(crate) struct Context<'a> {
    pub config: &'a ServerConfig,
    pub source: &'a dyn FileSource,
    pub catalog: &'a CatalogCache,
    pub closing: &'a AtomicBool,
    pub slots: &'a std::sync::Arc<super::slots::Slots>,
}

/// What a connection waits for in the parking lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Bytes from the client (or its close).
    Read,
    /// Room in the socket buffer.
    Write,
}

/// What to do with a connection after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait until the socket is ready for `Want`, or until the instant
    /// (then [`Conn::expire`]).
    Park(Want, Instant),
    /// More to do at once: a body slice was sent and more remains, or a
    /// pipelined request is buffered.
    Again,
    /// Finished: dropping the connection closes it.
    Close,
}

/// A client connection.
pub(crate) struct Conn {
    id: u64,
    key: ClientKey,
    stream: TcpStream,
    peer: SocketAddr,
    /// Whether the socket is in the parking lot's epoll set.
    pub(crate) registered: bool,
    _slot: Slot,
    buf: Vec<u8>,
    served: usize,
    phase: Phase,
}

enum Phase {
    /// Waiting for (the rest of) a request head.
    Head {
        /// The header deadline, once this request's clock runs.
        deadline: Option<Instant>,
        /// When an idle kept-alive connection is closed.
        idle_until: Instant,
        /// The first byte of this request (for the access log).
        started: Option<Instant>,
        /// The last bytes of this request.
        last_data: Option<Instant>,
        /// Since when the connection waits (for eviction of idle ones).
        since: Instant,
    },
    /// A `have` request waiting for a piece the client wants (see
    /// [`PartialHave::wait`]): answered when the poll thread sees one held, when
    /// the client sends more or closes, or at the wait's end.
    Waiting(Box<Waiting>),
    /// Sending an answer.
    Send(Box<Outgoing>),
    /// Closed for writing; discarding what the client still sends.
    Linger { until: Instant, discarded: usize },
}

/// A request waiting before its answer.
struct Waiting {
    request: RequestHead,
    wait: HaveWait,
    keep_alive: bool,
    started: Instant,
}

/// An answer being sent.
struct Outgoing {
    /// The head, followed by a small body.
    head: Vec<u8>,
    head_sent: usize,
    /// A shared body and how much of it is sent.
    shared: Option<(Arc<Vec<u8>>, usize)>,
    file: Option<FileBody>,
    keep_alive: bool,
    /// Body bytes sent.
    body_sent: u64,
    status: Status,
    /// `METHOD target` for the access log.
    line: String,
    started: Instant,
    /// Abandoned if nothing more is sent by then.
    stall_until: Instant,
    /// What counts a file body's bytes ([`FileSource::start_upload`](super::FileSource::start_upload)).
    upload: Option<Box<dyn super::UploadCounter>>,
    /// The upload slot a piece answer holds until it ends (dropped with
    /// this answer, sent or cut).
    slot: Option<super::slots::SlotGuard>,
}

struct FileBody {
    file: Arc<File>,
    offset: u64,
    end: u64,
}

/// How pushing bytes of an answer ended.
enum Pushed {
    Done,
    Blocked,
    Slice,
    /// The client is gone: close at once.
    Gone(String),
    /// The file shrank: the answer is short; close.
    Truncated(String),
}

impl Conn {
    /// A new connection, on the header clock from now.
    pub(crate) fn new(
        id: u64,
        stream: TcpStream,
        peer: SocketAddr,
        key: ClientKey,
        slot: Slot,
        config: &ServerConfig,
    ) -> Conn {
        let now = Instant::now();
        let deadline = now + config.header_deadline;
        Conn {
            id,
            key,
            stream,
            peer,
            registered: false,
            _slot: slot,
            buf: Vec::new(),
            served: 0,
            phase: Phase::Head {
                deadline: Some(deadline),
                idle_until: deadline,
                started: None,
                last_data: None,
                since: now,
            },
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn key(&self) -> ClientKey {
        self.key
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection may be closed to make room for a new one,
    /// and in which order: `(0, since)` waits for a request of which
    /// nothing arrived (idle), `(1, since)` sits on a partial head silent
    /// for [`STALLED_HEAD`] (stalled); oldest first within each.
    pub(crate) fn evictable(&self, now: Instant) -> Option<(u8, Instant)> {
        match self.phase {
            Phase::Head { since, .. } if self.buf.is_empty() => Some((0, since)),
            Phase::Head {
                last_data: Some(last),
                ..
            } if now.saturating_duration_since(last) >= STALLED_HEAD => Some((1, last)),
            _ => None,
        }
    }

    /// Where the connection waits when parked before it has run a step.
    pub(crate) fn first_park(&self) -> Next {
        match self.phase {
            Phase::Head { idle_until, .. } => Next::Park(Want::Read, idle_until),
            _ => Next::Again,
        }
    }

    /// Does what can be done now without blocking.
    pub(crate) fn step(&mut self, ctx: &Context<'_>) -> Next {
        if ctx.closing.load(Ordering::Acquire) {
            return Next::Close;
        }
        match self.phase {
            Phase::Head { .. } => self.read_request(ctx),
            Phase::Waiting(_) => self.end_wait(true, ctx),
            Phase::Send(_) => self.send(ctx),
            Phase::Linger { .. } => self.linger(),
        }
    }

    /// What a waiting `have` request waits for, if this is one.
    pub(crate) fn waits_for(&self) -> Option<&HaveWait> {
        match &self.phase {
            Phase::Waiting(w) => Some(&w.wait),
            _ => None,
        }
    }

    /// Ends a wait: the answer now, unless the client closed (`read`: its
    /// socket woke the connection; what it sent waits in the buffer).
    fn end_wait(&mut self, read: bool, ctx: &Context<'_>) -> Next {
        if read {
            let mut chunk = [0u8; READ_CHUNK];
            match (&self.stream).read(&mut chunk) {
                Ok(0) => return Next::Close,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return Next::Close,
            }
        }
        let waiting = Phase::Linger {
            until: Instant::now(),
            discarded: 0,
        };
        let Phase::Waiting(w) = std::mem::replace(&mut self.phase, waiting) else {
            return Next::Close;
        };
        self.reply(&w.request, w.keep_alive, w.started, ctx)
    }

    /// The parked connection's deadline passed.
    pub(crate) fn expire(&mut self, ctx: &Context<'_>) -> Next {
        match &mut self.phase {
            Phase::Head {
                deadline: Some(_),
                started,
                ..
            } if !self.buf.is_empty() => {
                let started = started.unwrap_or_else(Instant::now);
                let response = Response::error(
                    Status::REQUEST_TIMEOUT,
                    "request head not received in time: send it in one go",
                );
                self.start(None, response, false, started, ctx);
                self.send(ctx)
            }
            Phase::Head { .. } | Phase::Linger { .. } => Next::Close,
            Phase::Waiting(_) => self.end_wait(false, ctx),
            Phase::Send(out) => {
                log::debug!(
                    "{}: abandoning \"{}\": nothing sent for {:?}",
                    self.peer,
                    out.line,
                    ctx.config.write_timeout
                );
                self.finish(Err("stalled".into()), false, ctx)
            }
        }
    }

    fn read_request(&mut self, ctx: &Context<'_>) -> Next {
        let Phase::Head {
            mut deadline,
            idle_until,
            mut started,
            mut last_data,
            since,
        } = self.phase
        else {
            return Next::Close;
        };
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf) {
                    Ok(ParsedHead::Complete(head, used)) => {
                        self.buf.drain(..used);
                        let started = started.unwrap_or_else(Instant::now);
                        return self.answer(head, started, ctx);
                    }
                    Ok(ParsedHead::Partial) => {}
                    Err(e) => {
                        let started = started.unwrap_or_else(Instant::now);
                        return self.refuse(e, started, ctx);
                    }
                }
            }
            let room = (MAX_HEAD_BYTES + 1)
                .saturating_sub(self.buf.len())
                .clamp(1, READ_CHUNK);
            match (&self.stream).read(&mut chunk[..room]) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    let now = Instant::now();
                    started.get_or_insert(now);
                    last_data = Some(now);
                    deadline.get_or_insert(now + ctx.config.header_deadline);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return Next::Close,
            }
        }
        self.phase = Phase::Head {
            deadline,
            idle_until,
            started,
            last_data,
            since,
        };
        let until = deadline.unwrap_or(idle_until);
        if Instant::now() >= until {
            return self.expire(ctx);
        }
        Next::Park(Want::Read, until)
    }

    fn answer(&mut self, request: RequestHead, started: Instant, ctx: &Context<'_>) -> Next {
        self.served += 1;
        let keep_alive = request.keep_alive()
            && self.served < ctx.config.max_requests_per_connection
            && !ctx.closing.load(Ordering::Acquire);
        let partial = PartialHave::of(&request, ctx.source);
        if partial.is_some() {
            ctx.slots.idle(self.key);
        }
        // Not with a request pipelined behind it (that one waits for this
        // answer).
        let wait = partial
            .filter(|_| self.buf.is_empty())
            .and_then(|p| p.wait(&request));
        if let Some(wait) = wait {
            let until = wait.until;
            self.phase = Phase::Waiting(Box::new(Waiting {
                request,
                wait,
                keep_alive,
                started,
            }));
            return Next::Park(Want::Read, until);
        }
        self.reply(&request, keep_alive, started, ctx)
    }

    /// Answers `request` (an upload slot asked for a piece) and starts
    /// sending the answer.
    fn reply(
        &mut self,
        request: &RequestHead,
        keep_alive: bool,
        started: Instant,
        ctx: &Context<'_>,
    ) -> Next {
        let key = self.key;
        let gate = || ctx.slots.admit(key);
        let response = handle(request, ctx.source, ctx.catalog, &gate);
        self.start(Some(request), response, keep_alive, started, ctx);
        self.send(ctx)
    }

    fn refuse(&mut self, e: HeadError, started: Instant, ctx: &Context<'_>) -> Next {
        log::debug!("{}: refused request head: {e}", self.peer);
        let response = Response::error(e.status(), &e.to_string());
        self.start(None, response, false, started, ctx);
        self.send(ctx)
    }

    /// Turns `response` into bytes to send and enters the sending phase.
    fn start(
        &mut self,
        request: Option<&RequestHead>,
        response: Response,
        keep_alive: bool,
        started: Instant,
        ctx: &Context<'_>,
    ) {
        let is_head = request.is_some_and(|r| r.method == Method::Head);
        let status = response.head.status;
        crate::metrics::request(
            request.map_or("other", |r| crate::http::route::label(&r.target)),
            status.0,
        );
        let mut upload = None;
        let mut slot = None;
        let head = response
            .head
            .header("Server", SERVER_NAME)
            .header("Date", http_date(SystemTime::now()))
            .header(
                "Connection",
                if keep_alive { "keep-alive" } else { "close" },
            );
        let mut bytes = Vec::with_capacity(512);
        head.write_to(&mut bytes);
        let (mut shared, mut file) = (None, None);
        match response.body {
            _ if is_head => {}
            Body::Empty => {}
            Body::Bytes(body) => bytes.extend_from_slice(&body),
            Body::Shared(body) => shared = Some((body, 0)),
            Body::File {
                file: f,
                sha1,
                name,
                start,
                len,
                slot: s,
            } => {
                slot = s;
                upload = ctx.source.start_upload(self.peer.ip(), &sha1, &name);
                file = Some(FileBody {
                    file: f,
                    offset: start,
                    end: start + len,
                })
            }
        }
        let line = request.map_or_else(
            || "- -".to_owned(),
            |r| {
                let method: String = r.method.as_str().escape_debug().take(32).collect();
                format!("{method} {}", r.target.escape_debug())
            },
        );
        self.phase = Phase::Send(Box::new(Outgoing {
            head: bytes,
            head_sent: 0,
            shared,
            file,
            keep_alive,
            body_sent: 0,
            status,
            line,
            started,
            stall_until: Instant::now() + ctx.config.write_timeout,
            upload,
            slot,
        }));
    }

    fn send(&mut self, ctx: &Context<'_>) -> Next {
        let Phase::Send(out) = &mut self.phase else {
            return Next::Close;
        };
        match out.push(&self.stream, ctx.config.write_timeout) {
            Pushed::Done => self.finish(Ok(()), true, ctx),
            Pushed::Blocked => Next::Park(Want::Write, out.stall_until),
            Pushed::Slice => Next::Again,
            Pushed::Gone(e) => self.finish(Err(e), false, ctx),
            Pushed::Truncated(e) => {
                log::warn!("{}: closing after a short body: {e}", self.peer);
                self.finish(Err(e), true, ctx)
            }
        }
    }

    /// Logs the answer and moves on: the next request, or a close
    /// (lingering first if `linger`).
    fn finish(&mut self, result: Result<(), String>, linger: bool, ctx: &Context<'_>) -> Next {
        let now = Instant::now();
        let waiting = Phase::Linger {
            until: now,
            discarded: 0,
        };
        let Phase::Send(out) = std::mem::replace(&mut self.phase, waiting) else {
            return Next::Close;
        };
        log::info!(
            "{} \"{}\" {} {} {:?}{}",
            self.peer,
            out.line,
            out.status.0,
            out.body_sent,
            out.started.elapsed(),
            if result.is_ok() { "" } else { " (incomplete)" }
        );
        if let Err(e) = &result {
            log::debug!("{}: cannot send the answer: {e}", self.peer);
        }
        if result.is_ok() && out.keep_alive && !ctx.closing.load(Ordering::Acquire) {
            let pipelined = !self.buf.is_empty();
            self.phase = Phase::Head {
                deadline: pipelined.then(|| now + ctx.config.header_deadline),
                idle_until: now + ctx.config.keepalive_idle,
                started: pipelined.then_some(now),
                last_data: pipelined.then_some(now),
                since: now,
            };
            if pipelined {
                return Next::Again;
            }
            self.buf = Vec::new();
            return Next::Park(Want::Read, now + ctx.config.keepalive_idle);
        }
        if !linger {
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            return Next::Close;
        }
        // Errors here only mean the client is already gone.
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        self.buf = Vec::new();
        self.phase = Phase::Linger {
            until: now + LINGER_TIMEOUT,
            discarded: 0,
        };
        self.linger()
    }

    /// Discards input until the client closes, too much came, or time is up.
    fn linger(&mut self) -> Next {
        let Phase::Linger { until, discarded } = &mut self.phase else {
            return Next::Close;
        };
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match (&self.stream).read(&mut chunk) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    *discarded += n;
                    if *discarded >= LINGER_MAX_BYTES {
                        return Next::Close;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Next::Park(Want::Read, *until);
                }
                Err(_) => return Next::Close,
            }
        }
    }
}

impl Outgoing {
    /// Sends what the socket takes: the rest of the head, then at most
    /// [`SLICE`] bytes of the body. Any progress moves the stall clock.
    fn push(&mut self, stream: &TcpStream, write_timeout: Duration) -> Pushed {
        let before = self.head_sent as u64 + self.body_sent;
        let pushed = self.push_slice(stream);
        if self.head_sent as u64 + self.body_sent != before {
            self.stall_until = Instant::now() + write_timeout;
        }
        pushed
    }

    fn push_slice(&mut self, stream: &TcpStream) -> Pushed {
        // The head does not count against the slice: with it counted, a
        // 1 MiB piece's last few hundred bytes waited for another turn
        // behind every other connection (two steps per piece instead of one).
        let mut head_budget = self.head.len() as u64;
        // A file body follows at once: the head waits for it in the socket
        // (`MSG_MORE`) and leaves in the body's first segment. Sent alone,
        // each piece's head was one more packet through the whole stack
        // on both sides (50 pieces of 64 KiB over loopback: 150 data
        // segments, now 101).
        let more = self.file.as_ref().is_some_and(|f| f.offset < f.end);
        if let Err(pushed) = write_some(
            stream,
            &self.head,
            &mut self.head_sent,
            &mut head_budget,
            more,
        ) {
            return pushed;
        }
        let mut budget = SLICE;
        if let Some((body, sent)) = &mut self.shared {
            let before = *sent;
            let result = write_some(stream, body, sent, &mut budget, false);
            self.body_sent += (*sent - before) as u64;
            if let Err(pushed) = result {
                return pushed;
            }
        }
        if let Some(f) = &mut self.file {
            while f.offset < f.end {
                if budget == 0 {
                    return Pushed::Slice;
                }
                match send_some(&f.file, f.offset, (f.end - f.offset).min(budget), stream) {
                    Ok(Progress::Sent(n)) => {
                        f.offset += n;
                        budget = budget.saturating_sub(n);
                        self.body_sent += n;
                        crate::metrics::SERVED_BYTES.add(n);
                        if let Some(u) = &self.upload {
                            u.add(n);
                        }
                        if let Some(s) = &mut self.slot {
                            s.add(n);
                        }
                    }
                    Ok(Progress::Blocked) => return Pushed::Blocked,
                    Ok(Progress::Ended) => {
                        return Pushed::Truncated(format!(
                            "the file ended {} bytes early: it shrank since it was indexed",
                            f.end - f.offset
                        ));
                    }
                    Err(e) => return Pushed::Gone(format!("cannot send the body: {e}")),
                }
            }
        }
        Pushed::Done
    }
}

/// Writes `bytes[*sent..]` within `budget`; `Err` when the caller must
/// stop. `more`: more bytes follow at once (`MSG_MORE`: the kernel holds
/// a last partial segment for them; the next send without it, or an
/// acknowledgement, pushes it).
fn write_some(
    stream: &TcpStream,
    bytes: &[u8],
    sent: &mut usize,
    budget: &mut u64,
    more: bool,
) -> Result<(), Pushed> {
    use rustix::net::SendFlags;
    let flags = if more {
        SendFlags::MORE | SendFlags::NOSIGNAL
    } else {
        SendFlags::NOSIGNAL
    };
    while *sent < bytes.len() {
        if *budget == 0 {
            return Err(Pushed::Slice);
        }
        let end = bytes
            .len()
            .min(*sent + usize::try_from(*budget).unwrap_or(usize::MAX));
        let written: std::io::Result<usize> =
            rustix::net::send(stream, &bytes[*sent..end], flags).map_err(Into::into);
        match written {
            Ok(0) => return Err(Pushed::Gone("the client closed".into())),
            Ok(n) => {
                *sent += n;
                *budget = budget.saturating_sub(n as u64);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(Pushed::Blocked),
            Err(e) => return Err(Pushed::Gone(format!("cannot send the answer: {e}"))),
        }
    }
    Ok(())
}
