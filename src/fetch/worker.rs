//! One connection to one holder: pull a piece from the scheduler, fetch it
//! with a `Range` request into a buffer while hashing it, verify it, write
//! it with `write_at`, repeat on the same kept-alive connection.
//!
//! Failures: bad data (a piece that does not match its hash, or a file of
//! another size) drops the holder for this download at once; anything else
//! (refused, died, stalled, short body, error status) gives the piece
//! back, counts a failure for the holder and backs off (100 ms doubling to
//! 2 s); after `max_retries` consecutive failures the holder is dropped.
//! A `503` (the holder's queue is full) is not a failure: the piece goes
//! back and the worker asks again after a second, up to 30 times in a row.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sha1::{Digest, Sha1};

use super::client::{self, ClientError, PeerConn};
use super::round::Round;
use super::scheduler::Next;
use super::FetchError;
use crate::protocol::FILES_PATH;
use crate::Sha1Digest;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Consecutive `503` (busy) answers a worker waits out before counting
/// one as a failure of the holder.
const MAX_BUSY_WAITS: u32 = 30;

/// Why one piece was not delivered.
enum Fail {
    /// Another copy won, or the round ends.
    Abandoned,
    /// `503`: the holder's queue is full; ask again after `BUSY_RETRY`.
    Busy,
    /// The holder sent data that is provably wrong.
    Bad(String),
    /// The transfer failed.
    Io(String),
}

/// A connection with its registration in the round's socket table.
struct Conn {
    conn: PeerConn,
    socket: Option<u64>,
}

/// The worker loop for the holder in slot `slot`.
pub(crate) fn run(round: &Round<'_>, slot: usize) {
    let (holder, addrs) = {
        let slots = round.slots.lock();
        (
            slots[slot].holder.to_string(),
            slots[slot].holder.dial_addrs().to_vec(),
        )
    };
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::new();
    let mut busy_waits = 0u32;
    loop {
        if round.stopping() || round.slots.lock()[slot].dropped.is_some() {
            break;
        }
        let i = match round.sched.next(slot) {
            Next::Stop => break,
            Next::Wait => {
                round.sched.wait(IDLE_WAIT);
                continue;
            }
            Next::Piece(i) => i,
        };
        let mut result = fetch_piece(round, &mut conn, &addrs, i, &mut buf);
        if matches!(result, Err(Fail::Busy)) {
            busy_waits += 1;
            if busy_waits > MAX_BUSY_WAITS {
                result = Err(Fail::Io(format!("busy (503) {busy_waits} times in a row")));
                busy_waits = 0;
            }
        } else {
            busy_waits = 0;
        }
        match result {
            Err(Fail::Busy) => {
                round.sched.release(i, slot);
                close(round, &mut conn);
                round.sleep(client::BUSY_RETRY);
            }
            Ok(len) => {
                if round.sched.claim(i) {
                    let (start, _) = round.piece_range(i);
                    if let Err(source) = round.part.write_all_at(&buf[..len], start) {
                        round.set_fatal(FetchError::output(round.part_path, source));
                        break;
                    }
                    round.sched.written(i, len as u64, slot);
                    let mut slots = round.slots.lock();
                    slots[slot].pieces += 1;
                    slots[slot].failures = 0;
                } else {
                    round.sched.release(i, slot);
                }
            }
            Err(Fail::Abandoned) => {
                round.sched.release(i, slot);
                close(round, &mut conn);
            }
            Err(Fail::Bad(reason)) => {
                round.sched.release(i, slot);
                round.retried.fetch_add(1, Ordering::Relaxed);
                log::warn!("dropping peer {holder} for this download: {reason}");
                let mut slots = round.slots.lock();
                let s = &mut slots[slot];
                if s.dropped.is_none() {
                    s.dropped = Some(reason);
                    s.bad = true;
                }
                break;
            }
            Err(Fail::Io(reason)) => {
                round.sched.release(i, slot);
                round.retried.fetch_add(1, Ordering::Relaxed);
                close(round, &mut conn);
                let failures = {
                    let mut slots = round.slots.lock();
                    let s = &mut slots[slot];
                    s.failures += 1;
                    if s.failures > round.opts.max_retries && s.dropped.is_none() {
                        log::warn!(
                            "dropping peer {holder} for this download after {} failures: {reason}",
                            s.failures
                        );
                        s.dropped = Some(reason);
                    } else {
                        log::info!("peer {holder}: piece {i} failed, retrying elsewhere: {reason}");
                    }
                    s.failures
                };
                let backoff = BACKOFF_MIN
                    .saturating_mul(1 << failures.saturating_sub(1).min(8))
                    .min(BACKOFF_MAX);
                round.sleep(backoff);
            }
        }
    }
    close(round, &mut conn);
    round.slots.lock()[slot].workers -= 1;
    round.sched.wake_all();
}

fn close(round: &Round<'_>, conn: &mut Option<Conn>) {
    if let Some(c) = conn.take() {
        round.unregister(c.socket);
    }
}

/// Fetches and verifies piece `i` into `buf`; returns its length.
fn fetch_piece(
    round: &Round<'_>,
    conn: &mut Option<Conn>,
    addrs: &[String],
    i: usize,
    buf: &mut Vec<u8>,
) -> Result<usize, Fail> {
    let (start, len) = round.piece_range(i);
    let size = round.list.size;
    let path = format!("{FILES_PATH}/{}", round.list.sha1);
    let range = (start, start + len as u64 - 1);
    let mut attempt = 0;
    let head = loop {
        attempt += 1;
        if conn.as_ref().is_none_or(|c| !c.conn.is_reusable()) {
            close(round, conn);
            let c = client::connect(addrs, round.timeouts).map_err(|e| Fail::Io(e.to_string()))?;
            let socket = round.register(&c);
            *conn = Some(Conn { conn: c, socket });
        }
        let Some(c) = conn.as_mut() else {
            return Err(Fail::Io("bug: no connection".into()));
        };
        let reused = c.conn.requests() > 0;
        match c.conn.get(&path, Some(range)) {
            Ok(head) => break head,
            Err(e) if reused && attempt == 1 && e.is_stale_connection() => {
                close(round, conn);
            }
            Err(e) => return Err(io_fail(round, e)),
        }
    };
    match head.status {
        206 => match head.content_range {
            Some((a, b, total)) if total != size => {
                return Err(Fail::Bad(format!(
                    "it serves {total} bytes for a {size}-byte file (bytes {a}-{b})"
                )))
            }
            Some(r) if r == (range.0, range.1, size) => {}
            other => {
                return Err(Fail::Io(format!(
                    "asked bytes {}-{}, got content-range {other:?}",
                    range.0, range.1
                )))
            }
        },
        200 if start == 0 && len as u64 == size => {}
        503 => return Err(Fail::Busy),
        status => return Err(Fail::Io(format!("status {status} for piece {i}"))),
    }
    match head.content_length {
        Some(l) if l == len as u64 => {}
        Some(l) if head.status == 200 => {
            return Err(Fail::Bad(format!(
                "it serves {l} bytes for a {size}-byte file"
            )))
        }
        other => {
            return Err(Fail::Io(format!(
                "content-length {other:?} for a {len}-byte piece"
            )))
        }
    }
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let Some(c) = conn.as_mut() else {
        return Err(Fail::Io("bug: no connection".into()));
    };
    let mut hasher = Sha1::new();
    let rate = round.rate;
    let read = c.conn.read_body(
        &mut buf[..len],
        |want| {
            if round.stopping() || round.sched.is_done(i) {
                return None;
            }
            Some(rate.map_or(want, |r| want.min(r.chunk())))
        },
        |chunk| {
            hasher.update(chunk);
            round
                .received
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if let Some(r) = rate {
                round.sleep(r.reserve(chunk.len()));
            }
        },
    );
    match read {
        Ok(()) => c.conn.finish(&head),
        Err(ClientError::Abandoned) => return Err(Fail::Abandoned),
        Err(e) => return Err(io_fail(round, e)),
    }
    let got = Sha1Digest::from_hasher(hasher);
    if got != round.list.pieces[i] {
        return Err(Fail::Bad(format!(
            "piece {i} failed verification (sha1 {got}, want {})",
            round.list.pieces[i]
        )));
    }
    Ok(len)
}

/// An I/O failure, or an abandon when the round is ending (its sockets are
/// shut down under the workers, which is not the peer's fault).
fn io_fail(round: &Round<'_>, e: ClientError) -> Fail {
    if round.stopping() {
        Fail::Abandoned
    } else {
        Fail::Io(e.to_string())
    }
}
