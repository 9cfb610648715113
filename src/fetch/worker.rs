//! One connection to one holder: pull a piece from the scheduler, fetch it
//! with a `Range` request into a buffer while hashing it, verify it, write
//! it with `write_at`, repeat on the same kept-alive connection. The next
//! piece's request goes out as soon as the current answer's head is good
//! (pipelining, depth 1), and the holder's bitmap (`X-Have`) or a seed's
//! offer (`X-Fresh`) riding on the answer updates the scheduler.
//!
//! A worker leaves its holder (its slot goes to another) when the holder
//! is a partial one with nothing this download lacks while a holder
//! without a connection may have something, and when it is a seed's second
//! connection once partial holders are known (see ARCHITECTURE.md, the
//! swarm).
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
use std::time::{Duration, Instant};

use super::client::{self, ClientError, PeerConn};
use super::fault::{Asked, BadData, Dropped, Transfer};
use super::round::Round;
use super::scheduler::Next;
use super::FetchError;
use crate::protocol::{Bitfield, FILES_PATH, HAVE_SEGMENT};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Consecutive `503` (busy) answers a worker waits out before counting
/// one as a failure of the holder.
const MAX_BUSY_WAITS: u32 = 30;
/// How often a partial holder's piece bitmap is asked again while it has
/// nothing this download needs.
const HAVE_POLL: Duration = Duration::from_millis(100);
/// How long a partial holder that had nothing for this download waits
/// before a connection goes back to it (when it left for another holder).
const ROTATE_AWAY: Duration = Duration::from_millis(500);
/// How often a seed's hint (its least-uploaded pieces) is asked again.
const HINT_POLL: Duration = Duration::from_millis(300);
/// Largest write into the `.part`: a verified piece goes in chunks of
/// this size. Measured with 20 concurrent `get`s of 256 MiB on 2 cores
/// (benches/bench_fair.py): one 1 MiB `pwrite` per piece cost 2-3 s more
/// system CPU than 64 KiB ones (the page-cache copy,
/// `copy_folio_from_iter_atomic`, was 29 % of all samples; the kernel
/// takes a large folio for a large write, and those came from colder
/// memory), 1-2 s of wall time; 16 KiB was no better than 64 KiB.
const WRITE_CHUNK: usize = 64 * 1024;
/// Pieces a holder may claim and then not serve (`416`) before it is
/// dropped as lying.
const MAX_NOT_THERE: u32 = 8;

/// Why one piece was not delivered.
enum Fail {
    /// Another copy won, or the round ends.
    Abandoned,
    /// `503`: the holder's queue is full; ask again after `BUSY_RETRY`.
    Busy,
    /// The holder sent data that is provably wrong.
    Bad(BadData),
    /// The transfer failed.
    Io(Transfer),
    /// `416`: the (partial) holder does not have this piece.
    NotThere,
    /// The holder serves this very download's `.part` (our own peer).
    Ourselves,
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
    let mut not_there = 0u32;
    // Every holder is asked its bitmap first; only partial ones again.
    let mut last_poll: Option<Instant> = None;
    // Left between requests (the last answer read in full, or none).
    let mut clean_exit = false;
    // The connection left the socket table after the last piece.
    let mut unhooked = false;
    // The piece whose request went out ahead on `conn` (pipelining).
    let mut ahead: Option<usize> = None;
    // This worker already gave its place back (see the seed's second
    // connection below).
    let mut retired = false;
    loop {
        if conn.is_none() {
            if let Some(j) = ahead.take() {
                round.sched.release(j, slot);
            }
        }
        if round.stopping() || round.slots.lock()[slot].dropped.is_some() {
            clean_exit = true;
            break;
        }
        if ahead.is_none() && round.sched.has_hint(slot) && round.sched.in_swarm() {
            // A seed's second connection (opened while it was the only
            // holder) goes once partial holders are known: the seed's
            // uplink is shared evenly among the downloaders, each taking
            // one offer at a time.
            let mut slots = round.slots.lock();
            if slots[slot].workers > 1 {
                slots[slot].workers -= 1;
                retired = true;
                clean_exit = true;
                break;
            }
        }
        if let Some(j) = ahead.take() {
            // Asked already: read its answer.
            let fetched = fetch_piece(
                round, slot, &mut conn, &addrs, j, true, &mut ahead, &mut buf,
            );
            if matches!(fetched, Ok((_, true))) {
                last_poll = Some(Instant::now());
            }
            if !settle(
                round,
                slot,
                &holder,
                &mut conn,
                Some(j),
                fetched.map(|f| f.0),
                &mut not_there,
                &mut last_poll,
                &mut buf,
                &mut unhooked,
            ) {
                break;
            }
            continue;
        }
        // A holder's bitmap is asked first; then a seed's hint before each
        // piece (it goes stale as others ask the seed), a partial holder's
        // only when it has nothing this download needs.
        let polled_long_ago = last_poll.is_none_or(|t| t.elapsed() >= HAVE_POLL);
        let hint_stale = last_poll.is_none_or(|t| t.elapsed() >= HINT_POLL);
        let mut piece = None;
        if last_poll.is_some() && !(round.sched.has_hint(slot) && hint_stale) {
            match round.sched.next(slot) {
                Next::Stop => {
                    clean_exit = true;
                    break;
                }
                Next::Piece(i) => piece = Some(i),
                Next::Wait if round.sched.needs_poll(slot) && polled_long_ago => {}
                Next::Wait
                    if !round.sched.is_complete_holder(slot)
                        && !round.sched.useful(slot)
                        && round.better_holder_waits(slot) =>
                {
                    // Nothing here for us, and a holder without a
                    // connection may have something: this connection goes
                    // there; this holder is asked again later.
                    round.slots.lock()[slot].retry_at = Some(Instant::now() + ROTATE_AWAY);
                    clean_exit = true;
                    break;
                }
                Next::Wait => {
                    round.sched.wait(IDLE_WAIT);
                    continue;
                }
            }
        }
        let step = match piece {
            Some(i) => Ok(i),
            None => {
                last_poll = Some(Instant::now());
                match fetch_have(round, &mut conn, &addrs) {
                    Ok((have, fresh)) => {
                        round.sched.set_have(slot, have, fresh);
                        continue;
                    }
                    Err(fail) => Err(fail),
                }
            }
        };
        // A failed bitmap request is handled as a failed piece without a piece.
        let (i, result) = match step {
            Ok(i) => {
                let fetched = fetch_piece(
                    round, slot, &mut conn, &addrs, i, false, &mut ahead, &mut buf,
                );
                if matches!(fetched, Ok((_, true))) {
                    // Its view came with the piece: no `have` needed now.
                    last_poll = Some(Instant::now());
                }
                (Some(i), fetched.map(|f| f.0))
            }
            Err(fail) => (None, Err(fail)),
        };
        if !settle(
            round,
            slot,
            &holder,
            &mut conn,
            i,
            result,
            &mut not_there,
            &mut last_poll,
            &mut buf,
            &mut unhooked,
        ) {
            break;
        }
    }
    if let Some(j) = ahead.take() {
        round.sched.release(j, slot);
    }
    match (clean_exit, conn.take(), round.opts.pool.as_ref()) {
        // Back to the batch's pool, unless the round already shut the
        // socket down (it does so to every socket still registered).
        (true, Some(c), Some(pool)) if c.conn.is_reusable() => {
            if (unhooked && c.socket.is_none()) || round.take_registration(c.socket) {
                pool.put(&addrs, c.conn);
            }
        }
        (_, mut c, _) => close(round, &mut c),
    }
    if !retired {
        round.slots.lock()[slot].workers -= 1;
    }
    round.sched.wake_all();
}

/// Handles the outcome of one request (a piece, or a bitmap when `i` is
/// `None`): writes a verified piece, gives a failed one back, counts the
/// holder's failures, drops it when it must go. False when the worker
/// must stop.
#[allow(clippy::too_many_arguments)]
fn settle(
    round: &Round<'_>,
    slot: usize,
    holder: &str,
    conn: &mut Option<Conn>,
    i: Option<usize>,
    mut result: Result<usize, Fail>,
    not_there: &mut u32,
    last_poll: &mut Option<Instant>,
    buf: &mut [u8],
    unhooked: &mut bool,
) -> bool {
    let release = |round: &Round<'_>| {
        if let Some(i) = i {
            round.sched.release(i, slot);
        }
    };
    {
        // Consecutive `503`s are counted on the holder (workers come
        // and go); past `MAX_BUSY_WAITS` one counts as a failure.
        let mut slots = round.slots.lock();
        let s = &mut slots[slot];
        if matches!(result, Err(Fail::Busy)) {
            s.busy += 1;
            if s.busy > MAX_BUSY_WAITS {
                result = Err(Fail::Io(Transfer::Busy(s.busy)));
                s.busy = 0;
            }
        } else {
            s.busy = 0;
        }
    }
    match result {
        Err(Fail::Busy) => {
            // Give the worker back so another holder can use it; this
            // one is asked again after `BUSY_RETRY` (see `supervisor::fill`).
            release(round);
            round.slots.lock()[slot].retry_at = Some(Instant::now() + client::BUSY_RETRY);
            return false;
        }
        Ok(len) => {
            let Some(i) = i else { return true };
            if round.sched.claim(i) {
                let (start, _) = round.piece_range(i);
                if let Err(source) = write_piece(round, &buf[..len], start) {
                    round.set_fatal(FetchError::write(round.part_path, source));
                    return false;
                }
                if round.opts.pool.is_some() && round.sched.remaining() == 1 {
                    // The last piece: this connection leaves the socket
                    // table now, before the round's end (which this
                    // write triggers) shuts every registered socket down,
                    // so it can go back to the batch's pool.
                    if let Some(c) = conn.as_mut() {
                        if round.take_registration(c.socket) {
                            c.socket = None;
                            *unhooked = true;
                        }
                    }
                }
                round.sched.written(i, len as u64, slot);
                log::trace!("piece {i} from {holder}");
                round.maybe_save_state();
                let mut slots = round.slots.lock();
                slots[slot].pieces += 1;
                slots[slot].failures = 0;
            } else {
                round.sched.release(i, slot);
            }
        }
        Err(Fail::Abandoned) => {
            release(round);
            close(round, conn);
        }
        Err(Fail::Ourselves) => {
            release(round);
            log::debug!("peer {holder} serves this download's own .part: not asked");
            round.slots.lock()[slot].dropped = Some(Dropped::Ourselves);
            round.sched.holder_gone(slot);
            return false;
        }
        Err(Fail::NotThere) if round.sched.is_complete_holder(slot) => {
            release(round);
            let piece = i.map_or(0, |i| i);
            drop_bad(round, slot, holder, BadData::RefusedPiece(piece));
            return false;
        }
        Err(Fail::NotThere) => {
            release(round);
            *not_there += 1;
            if let Some(i) = i {
                round.sched.not_there(slot, i);
            }
            if *not_there > MAX_NOT_THERE {
                drop_bad(round, slot, holder, BadData::ClaimedNotServed(*not_there));
                return false;
            }
            // Its bitmap is stale: ask again before the next piece.
            *last_poll = last_poll.map(|t| t.checked_sub(HAVE_POLL).unwrap_or(t));
        }
        Err(Fail::Bad(reason)) => {
            release(round);
            round.retried.fetch_add(1, Ordering::Relaxed);
            drop_bad(round, slot, holder, reason);
            return false;
        }
        Err(Fail::Io(reason)) => {
            release(round);
            round.retried.fetch_add(1, Ordering::Relaxed);
            close(round, conn);
            let failures = {
                let mut slots = round.slots.lock();
                let s = &mut slots[slot];
                s.failures += 1;
                if s.failures > round.opts.max_retries && s.dropped.is_none() {
                    log::warn!(
                        "dropping peer {holder} for this download after {} failures: {reason}",
                        s.failures
                    );
                    s.dropped = Some(Dropped::Failing {
                        failures: s.failures,
                        last: reason,
                    });
                    drop(slots);
                    round.sched.holder_gone(slot);
                    return false;
                }
                let piece = i.map_or("its piece bitmap".to_string(), |i| format!("piece {i}"));
                log::info!("peer {holder}: {piece} failed, retrying elsewhere: {reason}");
                s.failures
            };
            let backoff = BACKOFF_MIN
                .saturating_mul(1 << failures.saturating_sub(1).min(8))
                .min(BACKOFF_MAX);
            round.sleep(backoff);
        }
    }
    true
}

/// Writes a verified piece at `start` of the `.part`, [`WRITE_CHUNK`]
/// bytes per call.
fn write_piece(round: &Round<'_>, piece: &[u8], start: u64) -> std::io::Result<()> {
    let mut at = start;
    for chunk in piece.chunks(WRITE_CHUNK) {
        round.part.write_all_at(chunk, at)?;
        at += chunk.len() as u64;
    }
    Ok(())
}

/// Drops `slot`'s holder for this download as a source of bad data.
fn drop_bad(round: &Round<'_>, slot: usize, holder: &str, reason: BadData) {
    log::warn!("dropping peer {holder} for this download: {reason}");
    {
        let mut slots = round.slots.lock();
        let s = &mut slots[slot];
        if s.dropped.is_none() {
            s.dropped = Some(Dropped::Bad(reason));
            s.bad = true;
        }
    }
    round.sched.holder_gone(slot);
}

fn close(round: &Round<'_>, conn: &mut Option<Conn>) {
    if let Some(c) = conn.take() {
        round.unregister(c.socket);
    }
}

/// Fetches and verifies piece `i` into `buf` (its request already went
/// out ahead if `sent`); returns its length and whether the answer carried
/// the holder's bitmaps ([`crate::protocol::HAVE_HEADER`],
/// [`crate::protocol::FRESH_HEADER`]; ignored unless well-formed for this
/// file), which are passed to the scheduler at once. Once the answer's
/// head is good, the next piece for this holder is asked for ahead on the
/// same connection (`ahead`), so the link does not idle between pieces.
#[allow(clippy::too_many_arguments)]
fn fetch_piece(
    round: &Round<'_>,
    slot: usize,
    conn: &mut Option<Conn>,
    addrs: &[String],
    i: usize,
    sent: bool,
    ahead: &mut Option<usize>,
    buf: &mut Vec<u8>,
) -> Result<(usize, bool), Fail> {
    let (start, len) = round.piece_range(i);
    let size = round.list.size;
    let path = format!("{FILES_PATH}/{}", round.list.sha1);
    let range = (start, start + len as u64 - 1);
    let head = if sent {
        let Some(c) = conn.as_mut() else {
            return Err(Fail::Io(Transfer::NoConnection));
        };
        match c.conn.next_head() {
            Ok(head) => head,
            // The peer closed a kept-alive connection before this answer:
            // not its fault, ask again on a new one.
            Err(e) if e.is_stale_connection() => return Err(Fail::Abandoned),
            Err(e) => return Err(io_fail(round, e)),
        }
    } else {
        request(round, conn, addrs, &path, Some(range))?
    };
    match head.status {
        206 => match head.content_range {
            Some((a, b, total)) if total != size => {
                return Err(Fail::Bad(BadData::RangeOfOtherSize {
                    total,
                    size,
                    first: a,
                    last: b,
                }))
            }
            Some(r) if r == (range.0, range.1, size) => {}
            other => {
                return Err(Fail::Io(Transfer::ContentRange {
                    asked: range,
                    got: other,
                }))
            }
        },
        200 if start == 0 && len as u64 == size => {}
        503 => return Err(Fail::Busy),
        416 => {
            // A partial holder without this piece: read the short reason.
            if let Some(c) = conn.as_mut() {
                let _ = c
                    .conn
                    .read_body_to_vec(&head, 4096, Instant::now(), round.timeouts.io);
                c.conn.finish(&head);
            }
            return Err(Fail::NotThere);
        }
        status => {
            return Err(Fail::Io(Transfer::Status {
                status,
                asked: Asked::Piece(i),
            }))
        }
    }
    match head.content_length {
        Some(l) if l == len as u64 => {}
        Some(l) if head.status == 200 => {
            return Err(Fail::Bad(BadData::OtherSize { got: l, size }))
        }
        other => return Err(Fail::Io(Transfer::ContentLength { got: other, len })),
    }
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let Some(c) = conn.as_mut() else {
        return Err(Fail::Io(Transfer::NoConnection));
    };
    let n = round.list.len();
    let have = head.have.as_deref().and_then(|h| Bitfield::from_hex(h, n));
    let fresh = head.fresh.as_deref().and_then(|h| Bitfield::from_hex(h, n));
    let refreshed = match (have, fresh) {
        (Some(have), _) => {
            round.sched.set_have(slot, Some(have), None);
            true
        }
        (None, Some(fresh)) => {
            round.sched.set_have(slot, None, Some(fresh));
            true
        }
        (None, None) => false,
    };
    // Not with a batch's shared connections: they go back to the pool
    // between files, with nothing pending.
    if ahead.is_none() && round.opts.pool.is_none() && !head.close {
        if let Next::Piece(j) = round.sched.next(slot) {
            let (s, l) = round.piece_range(j);
            match c.conn.send_ahead(&path, (s, s + l as u64 - 1)) {
                Ok(()) => *ahead = Some(j),
                // The body read below fails too, and says why.
                Err(_) => round.sched.release(j, slot),
            }
        }
    }
    let Some(mut check) = round.list.check_piece(i) else {
        return Err(Fail::Io(Transfer::NoConnection));
    };
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
            check.update(chunk);
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
    if !round.list.check_done(i, &check) {
        crate::metrics::PIECES_REJECTED.inc();
        return Err(Fail::Bad(BadData::Piece {
            piece: i,
            last: i + 1 == n,
        }));
    }
    Ok((len, refreshed))
}

/// Sends `GET path` on the worker's connection, opening it (or a new one
/// when the kept-alive one turned out stale) as needed.
fn request(
    round: &Round<'_>,
    conn: &mut Option<Conn>,
    addrs: &[String],
    path: &str,
    range: Option<(u64, u64)>,
) -> Result<client::Head, Fail> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if conn.as_ref().is_none_or(|c| !c.conn.is_reusable()) {
            close(round, conn);
            // A batch's idle connection to this peer first (its first
            // request counts as a reuse: a stale one is replaced below).
            let pooled = match attempt {
                1 => round.opts.pool.as_ref().and_then(|p| p.take(addrs)),
                _ => None,
            };
            let c = match pooled {
                Some(c) => c,
                None => client::connect(addrs, round.timeouts).map_err(|e| Fail::Io(e.into()))?,
            };
            let socket = round.register(&c);
            *conn = Some(Conn { conn: c, socket });
        }
        let Some(c) = conn.as_mut() else {
            return Err(Fail::Io(Transfer::NoConnection));
        };
        let reused = c.conn.requests() > 0;
        match c.conn.get(path, range) {
            Ok(head) => return Ok(head),
            Err(e) if reused && attempt == 1 && e.is_stale_connection() => {
                close(round, conn);
            }
            Err(e) => return Err(io_fail(round, e)),
        }
    }
}

/// Asks the holder which pieces it has: `Some` bitmap (full for a complete
/// holder), `None` if it does not know the route (an older peer: assumed
/// complete, its range answers tell); and the seed's hint of the pieces it
/// would rather upload, if it sent one.
fn fetch_have(
    round: &Round<'_>,
    conn: &mut Option<Conn>,
    addrs: &[String],
) -> Result<(Option<Bitfield>, Option<Bitfield>), Fail> {
    let path = format!("{FILES_PATH}/{}/{HAVE_SEGMENT}", round.list.sha1);
    let head = request(round, conn, addrs, &path, None)?;
    if head.download_id.as_deref() == Some(round.download_id.as_str()) {
        return Err(Fail::Ourselves);
    }
    let n = round.list.len();
    let Some(c) = conn.as_mut() else {
        return Err(Fail::Io(Transfer::NoConnection));
    };
    let body = c
        .conn
        .read_body_to_vec(
            &head,
            (n.div_ceil(8) + 4096) as u64,
            Instant::now(),
            round.timeouts.io,
        )
        .map_err(|e| io_fail(round, e))?;
    c.conn.finish(&head);
    let k = n.div_ceil(8);
    let bad = || {
        Fail::Bad(BadData::Bitmap {
            len: body.len(),
            pieces: n,
        })
    };
    match head.status {
        200 if body.len() == 2 * k && k > 0 => {
            let have = Bitfield::from_bytes(&body[..k], n).ok_or_else(bad)?;
            let fresh = Bitfield::from_bytes(&body[k..], n).ok_or_else(bad)?;
            // Only a holder of every piece gives a hint.
            Ok((Some(have), Some(fresh)))
        }
        200 => Bitfield::from_bytes(&body, n)
            .map(|b| (Some(b), None))
            .ok_or_else(bad),
        404 => Ok((None, None)),
        503 => Err(Fail::Busy),
        status => Err(Fail::Io(Transfer::Status {
            status,
            asked: Asked::Bitmap,
        })),
    }
}

/// An I/O failure, or an abandon when the round is ending (its sockets are
/// shut down under the workers, which is not the peer's fault).
fn io_fail(round: &Round<'_>, e: ClientError) -> Fail {
    if round.stopping() {
        Fail::Abandoned
    } else {
        Fail::Io(e.into())
    }
}
