//! One client connection on a worker: read request heads under a deadline,
//! answer them, keep the connection alive while the client wants it, and
//! write one access-log line per request.
//!
//! Timeouts on every read: each read blocks at most `read_timeout`, and
//! never past the header deadline, which runs from the first byte of a
//! request (or from the worker taking the connection), so a client that
//! drips one byte a second is cut off all the same. Between requests the
//! connection may idle for `keepalive_idle`, then it is closed silently;
//! it is closed sooner if other connections wait in the queue, so idle
//! keep-alive clients cannot starve new ones of workers (clients retry a
//! request on a reused connection that closed, as RFC 9112 section 9.3.1
//! allows for idempotent requests).
//!
//! A client that goes quiet inside a head while other connections wait in
//! the queue is cut off after 250 ms (408): a few hundred stalled clients
//! then cost seconds, not `header_deadline` per worker round.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::body::{send_file, SendError};
use super::handler::{handle, Body, Response};
use super::{FileSource, ServerConfig};
use crate::http::response::http_date;
use crate::http::{parse_head, HeadError, Method, ParsedHead, RequestHead, Status, MAX_HEAD_BYTES};

/// Bytes read from the socket at a time while receiving a head.
const READ_CHUNK: usize = 8 * 1024;
/// How often an idle kept-alive connection checks whether other
/// connections wait for its worker (it then closes to make room).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long a client receiving no answer yet may stay silent in the middle
/// of its request head while other connections wait for a worker.
const BUSY_HEAD_GRACE: Duration = Duration::from_millis(250);
/// How long a closing connection waits for the client to stop sending.
const LINGER_TIMEOUT: Duration = Duration::from_millis(500);
/// How much a closing connection discards at most.
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// Value of the `Server` header.
const SERVER_NAME: &str = concat!("piratebay-sync/", env!("CARGO_PKG_VERSION"));

/// What a worker needs to serve a connection.
pub(crate) struct Context<'a> {
    pub config: &'a ServerConfig,
    pub source: &'a dyn FileSource,
    pub closing: &'a AtomicBool,
    /// How many accepted connections wait for a worker.
    pub waiting: &'a dyn Fn() -> usize,
}

/// How reading the next request head ended, other than with a head.
enum ReadEnd {
    /// The client closed, or idled out between requests: close silently.
    Closed,
    /// The client sent something this server refuses: answer, then close.
    Refused(HeadError),
    /// The head did not arrive before the deadline: answer 408, then close.
    TimedOut,
}

/// Serves `stream` until the client or a limit closes it.
pub(crate) fn serve(stream: TcpStream, peer: SocketAddr, ctx: &Context<'_>) {
    if let Err(e) = configure(&stream, ctx.config) {
        log::debug!("{peer}: cannot configure the socket: {e}");
        return;
    }
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut served = 0usize;
    loop {
        if ctx.closing.load(Ordering::Acquire) {
            return;
        }
        let started = Instant::now();
        let first = served == 0;
        let (request, used) = match read_head(&stream, &mut buf, ctx, first) {
            Ok(parsed) => parsed,
            Err(ReadEnd::Closed) => return,
            Err(ReadEnd::Refused(e)) => {
                let response = Response::error(e.status(), &e.to_string());
                log::debug!("{peer}: refused request head: {e}");
                respond(&stream, peer, None, response, false, started, true);
                return;
            }
            Err(ReadEnd::TimedOut) => {
                let response = Response::error(
                    Status::REQUEST_TIMEOUT,
                    "request head not received in time: send it in one go",
                );
                // A stalled client is not worth a linger while others wait.
                let linger = (ctx.waiting)() == 0;
                respond(&stream, peer, None, response, false, started, linger);
                return;
            }
        };
        buf.drain(..used);
        served += 1;
        let keep_alive = request.keep_alive()
            && served < ctx.config.max_requests_per_connection
            && !ctx.closing.load(Ordering::Acquire);
        let response = handle(&request, ctx.source);
        let kept = respond(
            &stream,
            peer,
            Some(&request),
            response,
            keep_alive,
            started,
            true,
        );
        if !kept {
            return;
        }
    }
}

fn configure(stream: &TcpStream, config: &ServerConfig) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(config.write_timeout))?;
    stream.set_read_timeout(Some(config.read_timeout))
}

/// Reads until `buf` starts with a complete head; returns it and its length.
fn read_head(
    mut stream: &TcpStream,
    buf: &mut Vec<u8>,
    ctx: &Context<'_>,
    first: bool,
) -> Result<(RequestHead, usize), ReadEnd> {
    let config = ctx.config;
    let now = Instant::now();
    // A pipelined or first request is on the header clock at once; a
    // kept-alive connection may idle first.
    let mut deadline = (first || !buf.is_empty()).then(|| now + config.header_deadline);
    let idle_until = now + config.keepalive_idle;
    let mut last_data = now;
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Ok(ParsedHead::Complete(head, used)) => return Ok((head, used)),
                Ok(ParsedHead::Partial) => {}
                Err(e) => return Err(ReadEnd::Refused(e)),
            }
        }
        let until = deadline.unwrap_or(idle_until);
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(if deadline.is_some() && !buf.is_empty() {
                ReadEnd::TimedOut
            } else {
                ReadEnd::Closed
            });
        }
        let idle = deadline.is_none();
        // Short reads, so the loop sees waiting connections and shutdown.
        let timeout = left.min(config.read_timeout).min(IDLE_POLL);
        stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|_| ReadEnd::Closed)?;
        let room = (MAX_HEAD_BYTES + 1)
            .saturating_sub(buf.len())
            .min(READ_CHUNK);
        match stream.read(&mut chunk[..room.max(1)]) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                last_data = Instant::now();
                deadline.get_or_insert_with(|| last_data + config.header_deadline);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if idle {
                    // Between requests: give the worker to a waiting
                    // connection, or to shutdown, rather than idle on.
                    if (ctx.waiting)() > 0 || ctx.closing.load(Ordering::Acquire) {
                        return Err(ReadEnd::Closed);
                    }
                    continue;
                }
                // Receiving a head: wait for the deadline, unless the
                // client went quiet for a whole read timeout, or for
                // BUSY_HEAD_GRACE while other connections wait for a
                // worker (stalled clients must not hold the workers).
                let quiet = last_data.elapsed();
                let busy = (ctx.waiting)() > 0 || ctx.closing.load(Ordering::Acquire);
                if quiet < config.read_timeout && !(busy && quiet >= BUSY_HEAD_GRACE) {
                    continue;
                }
                if buf.is_empty() && first {
                    // Nothing of a request arrived: nothing to answer.
                    return Err(ReadEnd::Closed);
                }
                return Err(ReadEnd::TimedOut);
            }
            Err(_) => return Err(ReadEnd::Closed),
        }
    }
}

/// Writes `response`, logs it, and says whether the connection stays open;
/// a connection that closes lingers first if `linger` (see [`linger_close`]).
fn respond(
    mut stream: &TcpStream,
    peer: SocketAddr,
    request: Option<&RequestHead>,
    response: Response,
    keep_alive: bool,
    started: Instant,
    linger: bool,
) -> bool {
    let is_head = request.is_some_and(|r| r.method == Method::Head);
    let status = response.head.status;
    let head = response
        .head
        .header("Server", SERVER_NAME)
        .header("Date", http_date(SystemTime::now()))
        .header(
            "Connection",
            if keep_alive { "keep-alive" } else { "close" },
        );
    let mut out = Vec::with_capacity(512);
    head.write_to(&mut out);
    let mut sent = 0u64;
    let mut complete = true;
    let result = match response.body {
        Body::Bytes(bytes) if !is_head => {
            out.extend_from_slice(&bytes);
            sent = bytes.len() as u64;
            stream.write_all(&out).map_err(|e| e.to_string())
        }
        Body::File { file, start, len } if !is_head => match stream.write_all(&out) {
            Ok(()) => match send_file(&file, start, len, stream) {
                Ok(n) => {
                    sent = n;
                    Ok(())
                }
                Err(e) => {
                    complete = false;
                    sent = match &e {
                        SendError::Copy { sent, .. } | SendError::Truncated { sent, .. } => *sent,
                        SendError::Seek { .. } => 0,
                    };
                    if matches!(e, SendError::Truncated { .. } | SendError::Seek { .. }) {
                        log::warn!("{peer}: closing after a short body: {e}");
                    }
                    Err(e.to_string())
                }
            },
            Err(e) => Err(e.to_string()),
        },
        _ => stream.write_all(&out).map_err(|e| e.to_string()),
    };
    let (method, target) = request.map_or(("-", "-".into()), |r| {
        (r.method.as_str(), r.target.escape_debug().to_string())
    });
    let method: String = method.escape_debug().take(32).collect();
    log::info!(
        "{peer} \"{method} {target}\" {} {sent} {:?}{}",
        status.0,
        started.elapsed(),
        if complete { "" } else { " (incomplete)" }
    );
    if let Err(e) = &result {
        log::debug!("{peer}: cannot send the answer: {e}");
    }
    let kept = result.is_ok() && keep_alive;
    if !kept {
        if linger {
            linger_close(stream);
        } else {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
    kept
}

/// Closes our side, then discards what the client still sends for a short
/// while: closing a socket with unread input makes the kernel send a reset,
/// which can destroy the answer before the client reads it.
pub(crate) fn linger_close(mut stream: &TcpStream) {
    // Errors here only mean the client is already gone.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if stream.set_read_timeout(Some(LINGER_TIMEOUT)).is_err() {
        return;
    }
    let mut chunk = [0u8; READ_CHUNK];
    let mut discarded = 0usize;
    while discarded < LINGER_MAX_BYTES {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}
