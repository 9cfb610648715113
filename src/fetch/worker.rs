//! One connection to one holder ([`Worker`], one thread each): pull a
//! piece from the scheduler, fetch it with a `Range` request into a buffer
//! while verifying it against the chain ([`Worker::fetch_piece`]), write it with
//! `direct` ([`Worker::keep`]), repeat on the same kept-alive connection. The next
//! piece's request goes out as soon as the current answer's head is good
//! (pipelining, depth 1), and the holder's bitmap (`X-Have`) or a seed's
//! offer (`X-Fresh`) riding on the answer updates the scheduler.
//!
//! A partial holder with nothing this download lacks is asked for its
//! bitmap with a wait (`have?wait=..&want=..`, see
//! [`HAVE_WAIT`]): the answer comes when it gets a
//! piece this download wants.
//!
//! A worker leaves its holder (its slot goes to another) when the holder
//! is a partial one with nothing this download lacks while a holder
//! without a connection may have something, and when it is a seed's second
//! connection once partial holders are known (see ARCHITECTURE.md, the
//! swarm).
//!
//! Failures: bad data (a piece that does not match its hash, or a file of
//! another size) drops the holder for this download at once (one that
//! joined on trust of the round's piece list goes to have its own list
//! fetched, `Round::trust`); anything else
//! (refused, died, stalled, short body, error status) gives the piece
//! back, counts a failure for the holder and backs off (100 ms doubling to
//! 2 s, each wait drawn from half to one and a half of it); after
//! `max_retries` consecutive failures the holder is dropped.
//! A `503` (the holder's queue is full) is not a failure: the piece goes
//! back and the worker asks again after a second, up to 30 times in a row.
//! A `503` with `X-Slots` (every upload slot of the holder taken) is not
//! one either: the piece goes back, the connection goes to another holder
//! at once, and this one is asked again when it rotates its slots; unless
//! the holder says this download is next in line (`X-Slots-Next`): then
//! the connection waits for the rotation there (at most
//! [`MAX_PARKED`] times in a row), so the slot given to it is used. A
//! worker that leaves a holder between requests (a `503`, a rotation)
//! leaves its connection to the round for the next worker sent there;
//! in a swarm it goes to no other holder while
//! [`super::round::SLOTS_ENOUGH`] connections of the round hold an
//! upload slot (it ends; the supervisor starts one when fewer do).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::direct::PieceBuf;
use super::fault::{Asked, BadData, Dropped, Transfer};
use super::round::Round;
use super::scheduler::Next;
use super::FetchError;
use crate::client::{self, ClientError, PeerConn};
use crate::protocol::{Bitfield, FILES_PATH, HAVE_SEGMENT, MAX_HAVE_WAIT, MAX_HEADER_PIECES};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Consecutive `503` (busy) answers a worker waits out before counting
/// one as a failure of the holder.
const MAX_BUSY_WAITS: u32 = 30;
/// How often a partial holder's piece bitmap is asked again while it has
/// nothing this download needs.
const HAVE_POLL: Duration = Duration::from_millis(100);
/// How long a partial holder with nothing this download lacks may keep
/// its `have` answer waiting for a wanted piece: the worker's one
/// connection is blocked meanwhile (a holder that turns up with something
/// is seen this much later at most, as at a poll every 100 ms before).
pub(crate) const HAVE_WAIT: Duration = Duration::from_millis(300);
/// How long a partial holder that had nothing for this download waits
/// before a connection goes back to it (when it left for another holder).
const ROTATE_AWAY: Duration = Duration::from_millis(500);
/// How often a seed's hint (its least-uploaded pieces) is asked again.
const HINT_POLL: Duration = Duration::from_millis(300);
/// Bounds on the wait a holder whose upload slots are full asks for.
const SLOTS_RETRY_MIN: Duration = Duration::from_millis(100);
const SLOTS_RETRY_MAX: Duration = Duration::from_secs(2);
/// Rotations in a row a connection waits for at one holder that said it
/// was next in line (a holder that says so and never serves keeps a
/// connection this long at most).
pub(crate) const MAX_PARKED: u32 = 2;
/// Pieces a holder may claim and then not serve (`416`) before it is
/// dropped as lying.
const MAX_NOT_THERE: u32 = 8;
/// Most bytes one range request asks for: adjacent pieces the holder has
/// and this download lacks go in one request (a run), up to this much, so
/// a file cut in small pieces does not cost a request per 64 KiB.
pub(crate) const RUN_BYTES: u64 = 256 * 1024;

/// Why one piece was not delivered.
enum Fail {
    /// Another copy won, or the round ends.
    Abandoned,
    /// `503`: the holder's queue is full; ask again after `BUSY_RETRY`.
    Busy,
    /// `503` with `X-Slots`: every upload slot of the holder is taken, it
    /// rotates them after `after`. Not a failure, and no wait: the
    /// connection goes to another holder meanwhile, unless this download
    /// is `next` in line there (`X-Slots-Next`): then it waits here.
    SlotsFull { after: Duration, next: bool },
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

/// What a worker does next when no answer is pending on its connection.
enum Step {
    /// Fetch this piece.
    Piece(usize),
    /// Ask the holder for its bitmap (and a seed for its hint).
    Poll,
    /// Ask a partial holder that has nothing this download lacks for its
    /// bitmap, answered when it gets a piece this download wants (or
    /// after [`HAVE_WAIT`]).
    PollWaiting,
    /// Nothing to fetch now: wait for the scheduler.
    Idle,
    /// Nothing here for this download while a holder without a connection
    /// may have something: this connection goes there.
    Rotate,
    /// No piece is left for this worker.
    Stop,
}

/// One connection to one holder, and what it remembers between requests.
/// Its methods are its steps: [`Worker::work`] loops over choosing the next
/// request, fetching (and verifying) a piece or the bitmap, and
/// [`Worker::settle`]-ing the outcome; [`Worker::leave`] hands the
/// connection back.
struct Worker<'r, 'a> {
    round: &'r Round<'a>,
    /// The holder's slot in the round.
    slot: usize,
    /// The holder, for messages.
    holder: String,
    /// Its addresses, in dialling order.
    addrs: Vec<String>,
    conn: Option<Conn>,
    /// One piece's buffer.
    buf: PieceBuf,
    /// Pieces the holder claimed and then refused (`416`).
    not_there: u32,
    /// When the holder's bitmap last came (asked, or riding on an answer).
    /// Every holder is asked its bitmap first; only partial ones again.
    last_poll: Option<Instant>,
    /// When this connection's last verified piece came: a bitmap that
    /// rode on the answer's head is older than the answer's body.
    last_piece: Option<Instant>,
    /// The run of pieces (first, count) whose request went out ahead on
    /// `conn` (pipelining).
    ahead: Option<(usize, usize)>,
    /// Left between requests (the last answer read in full, or none).
    clean_exit: bool,
    /// The connection left the socket table after the last piece.
    unhooked: bool,
    /// This worker already gave its place back (a seed's second
    /// connection, see [`Worker::retire_from_seed`]).
    retired: bool,
    /// Rotations waited for in a row at this holder (next in line).
    parked: u32,
    /// Its last piece request was served and it goes on asking: it holds
    /// an upload slot (counted in the round, see
    /// [`super::round::SLOTS_ENOUGH`]).
    receiving: bool,
}

/// The worker loop for the holder in slot `slot`; when it leaves that
/// holder (turned away, rotated, dropped), the thread goes on to the next
/// holder free for a connection, if any ([`Round::next_slot`], as the
/// supervisor's `fill` would): in a swarm workers leave holders several
/// times a second, and a thread each time cost a clone and a stack mapped
/// and unmapped.
pub(crate) fn run(round: &Round<'_>, slot: usize) {
    let mut slot = slot;
    loop {
        let mut worker = Worker::new(round, slot);
        worker.work();
        worker.leave();
        if round.stopping() || round.abort.load(Ordering::Acquire) || round.sched.remaining() == 0 {
            return;
        }
        match round.next_slot() {
            Some(next) => slot = next,
            None => return,
        }
    }
}

impl<'r, 'a> Worker<'r, 'a> {
    fn new(round: &'r Round<'a>, slot: usize) -> Self {
        let (holder, addrs, welcomed) = {
            let mut slots = round.slots.lock();
            (
                slots[slot].holder.to_string(),
                slots[slot].holder.dial_addrs().to_vec(),
                std::mem::take(&mut slots[slot].welcomed),
            )
        };
        Worker {
            round,
            slot,
            holder,
            addrs,
            conn: None,
            buf: PieceBuf::default(),
            not_there: 0,
            // Its bitmap came with its piece list just now.
            last_poll: welcomed.then(Instant::now),
            last_piece: None,
            ahead: None,
            clean_exit: false,
            unhooked: false,
            retired: false,
            parked: 0,
            receiving: false,
        }
    }

    /// Requests and settles until the worker must stop: the round ends,
    /// the holder is dropped, has nothing left or must wait.
    fn work(&mut self) {
        loop {
            if self.conn.is_none() {
                if let Some((j, n)) = self.ahead.take() {
                    self.release_run(j, n);
                }
            }
            if self.round.stopping() || self.round.slots.lock()[self.slot].dropped.is_some() {
                self.clean_exit = true;
                return;
            }
            if self.ahead.is_none() && self.retire_from_seed() {
                return;
            }
            let go_on = match self.ahead.take() {
                // Asked already: read its answer.
                Some((j, n)) => self.run(j, n, true),
                None => match self.next_step() {
                    Step::Piece(i) => {
                        let n = 1 + self.extend(i);
                        self.run(i, n, false)
                    }
                    Step::Poll => self.poll(false),
                    Step::PollWaiting => self.poll(true),
                    Step::Idle => {
                        self.set_receiving(false);
                        self.round.sched.wait(IDLE_WAIT);
                        true
                    }
                    Step::Rotate => {
                        // This holder is asked again later.
                        self.round.slots.lock()[self.slot].retry_at =
                            Some(Instant::now() + ROTATE_AWAY);
                        self.clean_exit = true;
                        return;
                    }
                    Step::Stop => {
                        self.clean_exit = true;
                        return;
                    }
                },
            };
            if !go_on {
                return;
            }
        }
    }

    /// A seed's second connection (opened while it was the only holder)
    /// goes once partial holders are known: the seed's uplink is shared
    /// evenly among the downloaders, each taking one offer at a time. True
    /// if this worker gave its place back.
    fn retire_from_seed(&mut self) -> bool {
        let (round, slot) = (self.round, self.slot);
        if !(round.sched.has_hint(slot) && round.sched.in_swarm()) {
            return false;
        }
        let mut slots = round.slots.lock();
        if slots[slot].workers > 1 {
            slots[slot].workers -= 1;
            self.retired = true;
            self.clean_exit = true;
            return true;
        }
        false
    }

    /// The next request: a holder's bitmap is asked first; then a seed's
    /// hint before each piece (it goes stale as others ask the seed), a
    /// partial holder's only when it has nothing this download needs and
    /// its bitmap is old: asked [`HAVE_POLL`] ago, or before the body of
    /// the last answer (it rode on the head; a partial holder gets about
    /// a piece while it sends one). Deciding on the view of the head, a
    /// worker found nothing, idled or left a holder that had new pieces
    /// by then: in the simulator (1,000 hosts) the last host at 1.51x one
    /// host alone, 1,500 turn-aways per download; asking first, 1.39x and
    /// 1,200.
    fn next_step(&self) -> Step {
        let (round, slot) = (self.round, self.slot);
        // A piece came since the bitmap did: it rode on the head.
        let stale = self
            .last_piece
            .is_some_and(|p| self.last_poll.is_some_and(|t| t < p));
        let polled_long_ago = self.last_poll.is_none_or(|t| t.elapsed() >= HAVE_POLL) || stale;
        let hint_stale = self.last_poll.is_none_or(|t| t.elapsed() >= HINT_POLL);
        if self.last_poll.is_none() || (round.sched.has_hint(slot) && hint_stale) {
            return Step::Poll;
        }
        match round.sched.next(slot) {
            Next::Stop => Step::Stop,
            Next::Piece(i) => Step::Piece(i),
            Next::Wait if round.sched.needs_poll(slot) && polled_long_ago => {
                // A stale view is refreshed before it sends the connection
                // elsewhere or parks it (in the simulator, 1,000 hosts:
                // last host 1.50x -> 1.40x one host alone).
                if stale || round.sched.is_complete_holder(slot) || round.sched.useful(slot) {
                    Step::Poll
                } else if round.better_holder_waits(slot) {
                    Step::Rotate
                } else {
                    Step::PollWaiting
                }
            }
            Next::Wait
                if !round.sched.is_complete_holder(slot)
                    && !round.sched.useful(slot)
                    && round.better_holder_waits(slot) =>
            {
                Step::Rotate
            }
            Next::Wait => Step::Idle,
        }
    }

    /// Asks the holder's bitmap and hands it to the scheduler; a failed
    /// request is settled as a failed piece without a piece. False when
    /// the worker must stop.
    fn poll(&mut self, waiting: bool) -> bool {
        self.last_poll = Some(Instant::now());
        let want = waiting
            .then(|| self.round.sched.wanted_from(self.slot))
            .flatten()
            .filter(|w| w.len() <= MAX_HEADER_PIECES);
        match self.fetch_have(want.as_ref()) {
            Ok((have, fresh)) => {
                self.round.sched.set_have(self.slot, have, fresh);
                true
            }
            Err(fail) => self.settle(None, Err(fail)),
        }
    }

    /// The pieces after `first` that its request takes too (a run, see
    /// [`RUN_BYTES`]), handed to this holder by the scheduler.
    fn extend(&self, first: usize) -> usize {
        let round = self.round;
        let max = (RUN_BYTES / round.list.piece_size.max(1)).saturating_sub(1) as usize;
        round.sched.extend_at(self.slot, first, max, Instant::now())
    }

    /// Gives the `count` pieces from `first` back to the scheduler.
    fn release_run(&self, first: usize, count: usize) {
        for j in first..first + count {
            self.round.sched.release(j, self.slot);
        }
    }

    /// Fetches, verifies and settles the `count` pieces from `first`, one
    /// range request (already sent ahead if `sent`): each piece is kept
    /// (written, shared) as soon as it verified; a failure gives back the
    /// piece it hit and the ones after it. False when the worker must stop.
    fn run(&mut self, first: usize, count: usize, sent: bool) -> bool {
        let head = match self.run_head(first, count, sent) {
            Ok((head, refreshed)) => {
                if refreshed {
                    // Its view came with the pieces: no `have` needed now.
                    self.last_poll = Some(Instant::now());
                }
                head
            }
            Err(fail) => {
                self.release_run(first + 1, count - 1);
                return self.settle(Some(first), Err(fail));
            }
        };
        let end = first + count;
        for i in first..end {
            let fetched = self.read_piece(i, end, &head);
            let failed = fetched.is_err();
            let go_on = self.settle(Some(i), fetched);
            if failed || !go_on {
                self.release_run(i + 1, end - i - 1);
                return go_on;
            }
        }
        true
    }

    /// Handles the outcome of one request (a piece, or a bitmap when `i`
    /// is `None`): keeps a verified piece, gives a failed one back, counts
    /// the holder's failures, drops it when it must go. False when the
    /// worker must stop.
    fn settle(&mut self, i: Option<usize>, result: Result<usize, Fail>) -> bool {
        let round = self.round;
        let result = self.count_busy(result);
        if result.is_err() {
            self.set_receiving(false);
            if let Some(i) = i {
                round.sched.release(i, self.slot);
            }
        }
        match result {
            Err(Fail::SlotsFull { after, next }) => {
                crate::metrics::SLOTS_TURNED_AWAY.inc();
                let after = after.clamp(SLOTS_RETRY_MIN, SLOTS_RETRY_MAX);
                if next && self.parked < MAX_PARKED {
                    // Next in line: the slot is ours at the rotation, and
                    // given to us it waits only `SlotConfig::grant`.
                    self.parked += 1;
                    round.sleep(after);
                    return true;
                }
                // Turned away at once: this connection serves another
                // holder meanwhile; this one is asked again after its
                // rotation (bounded, so a peer cannot park us for long).
                self.parked = 0;
                round.slots.lock()[self.slot].retry_at = Some(Instant::now() + after);
                self.clean_exit = true;
                false
            }
            Err(Fail::Busy) => {
                // Give the worker back so another holder can use it; this
                // one is asked again after `BUSY_RETRY` (see
                // `supervisor::fill`).
                round.slots.lock()[self.slot].retry_at = Some(Instant::now() + client::BUSY_RETRY);
                self.clean_exit = true;
                false
            }
            Ok(len) => match i {
                Some(i) => {
                    self.parked = 0;
                    self.last_piece = Some(Instant::now());
                    self.set_receiving(true);
                    self.keep(i, len)
                }
                None => true,
            },
            Err(Fail::Abandoned) => {
                self.close();
                true
            }
            Err(Fail::Ourselves) => {
                log::debug!(
                    "peer {} serves this download's own .part: not asked",
                    self.holder
                );
                round.slots.lock()[self.slot].dropped = Some(Dropped::Ourselves);
                round.sched.holder_gone(self.slot);
                false
            }
            Err(Fail::NotThere) => self.not_there(i),
            Err(Fail::Bad(reason)) => {
                round.dl.retried.fetch_add(1, Ordering::Relaxed);
                self.drop_bad(reason);
                false
            }
            Err(Fail::Io(reason)) => self.failed(i, reason),
        }
    }

    /// Counts this connection in (or out of) the round's connections that
    /// hold an upload slot, once.
    fn set_receiving(&mut self, on: bool) {
        if self.receiving != on {
            self.receiving = on;
            self.round.set_receiving(on);
        }
    }

    /// Consecutive `503`s are counted on the holder (workers come and go);
    /// past `MAX_BUSY_WAITS` one counts as a failure.
    fn count_busy(&self, result: Result<usize, Fail>) -> Result<usize, Fail> {
        let mut slots = self.round.slots.lock();
        let s = &mut slots[self.slot];
        if matches!(result, Err(Fail::Busy)) {
            s.busy += 1;
            if s.busy > MAX_BUSY_WAITS {
                let busy = s.busy;
                s.busy = 0;
                return Err(Fail::Io(Transfer::Busy(busy)));
            }
        } else {
            s.busy = 0;
        }
        result
    }

    /// Writes verified piece `i` (its `len` bytes in the buffer) unless
    /// another copy was written first. False when the write failed (the
    /// round's fatal error).
    fn keep(&mut self, i: usize, len: usize) -> bool {
        let round = self.round;
        if !round.sched.claim(i) {
            round.sched.release(i, self.slot);
            return true;
        }
        let (start, _) = round.piece_range(i);
        let dl = round.dl;
        let written = dl
            .direct
            .write_piece(&dl.part, &mut self.buf, len, start, round.list.size);
        if let Err(source) = written {
            round.set_fatal(FetchError::write(&round.dl.part_path, source));
            return false;
        }
        if round.dl.pool().is_some() && round.sched.remaining() == 1 {
            // The last piece: this connection leaves the socket table now,
            // before the round's end (which this write triggers) shuts
            // every registered socket down, so it can go back to the
            // batch's pool.
            if let Some(c) = self.conn.as_mut() {
                if round.take_registration(c.socket) {
                    c.socket = None;
                    self.unhooked = true;
                }
            }
        }
        let from = if round.sched.is_complete_holder(self.slot) {
            &round.dl.from_seeds
        } else {
            &round.dl.from_partials
        };
        from.fetch_add(len as u64, Ordering::Relaxed);
        round.sched.written(i, len as u64, self.slot);
        log::trace!("piece {i} from {}", self.holder);
        round.maybe_save_state();
        let mut slots = round.slots.lock();
        slots[self.slot].pieces += 1;
        slots[self.slot].failures = 0;
        true
    }

    /// A `416`: a complete holder that refuses a piece is dropped as bad; a
    /// partial one is asked its bitmap again, and dropped once it refused
    /// more than `MAX_NOT_THERE` pieces it claimed. False when dropped.
    fn not_there(&mut self, i: Option<usize>) -> bool {
        let (round, slot) = (self.round, self.slot);
        if round.sched.is_complete_holder(slot) {
            self.drop_bad(BadData::RefusedPiece(i.unwrap_or(0)));
            return false;
        }
        self.not_there += 1;
        if let Some(i) = i {
            round.sched.not_there(slot, i);
        }
        if self.not_there > MAX_NOT_THERE {
            self.drop_bad(BadData::ClaimedNotServed(self.not_there));
            return false;
        }
        // Its bitmap is stale: ask again before the next piece.
        self.last_poll = self
            .last_poll
            .map(|t| t.checked_sub(HAVE_POLL).unwrap_or(t));
        true
    }

    /// A failed transfer: the connection is closed and the holder's
    /// failure counted; past `max_retries` in a row it is dropped (false),
    /// else the worker backs off and goes on.
    fn failed(&mut self, i: Option<usize>, reason: Transfer) -> bool {
        let round = self.round;
        round.dl.retried.fetch_add(1, Ordering::Relaxed);
        self.close();
        let holder = &self.holder;
        if matches!(reason, Transfer::Late { .. }) {
            // Its claims turned into no bytes in time: they stop holding
            // seeds back and stop counting as availability.
            round.slots.lock()[self.slot].late += 1;
            if round.sched.discredit(self.slot) {
                log::warn!("peer {holder}: {reason}; its claims no longer count");
            }
        }
        let failures = {
            let mut slots = round.slots.lock();
            let s = &mut slots[self.slot];
            s.failures += 1;
            if s.failures > round.dl.opts().max_retries && s.dropped.is_none() {
                log::warn!(
                    "dropping peer {holder} for this download after {} failures: {reason}",
                    s.failures
                );
                s.dropped = Some(Dropped::Failing {
                    failures: s.failures,
                    last: reason,
                });
                drop(slots);
                round.sched.holder_gone(self.slot);
                return false;
            }
            let piece = i.map_or("its piece bitmap".to_string(), |i| format!("piece {i}"));
            log::info!("peer {holder}: {piece} failed, retrying elsewhere: {reason}");
            s.failures
        };
        let base = BACKOFF_MIN
            .saturating_mul(1 << failures.saturating_sub(1).min(8))
            .min(BACKOFF_MAX);
        // Drawn from half to one and a half of it, so the downloads that
        // lost the same holder at once (a seed whose full link drops
        // handshakes) do not all come back in step.
        round.sleep(crate::discovery::jittered(base));
        true
    }

    /// Drops the holder for this download as a source of bad data; one
    /// that joined on trust of the round's piece list goes to have its own
    /// list fetched instead (see [`Round::trust`]).
    fn drop_bad(&self, reason: BadData) {
        let recheck = {
            let mut slots = self.round.slots.lock();
            let s = &mut slots[self.slot];
            if s.dropped.is_some() {
                None
            } else if s.on_trust && reason.may_be_other_list() {
                log::info!(
                    "peer {}: {reason}; it joined on trust of this piece list: asking its own",
                    self.holder
                );
                s.dropped = Some(Dropped::OtherList(reason));
                Some(s.holder.clone())
            } else {
                log::warn!("dropping peer {} for this download: {reason}", self.holder);
                s.dropped = Some(Dropped::Bad(reason));
                s.bad = true;
                None
            }
        };
        if let Some(holder) = recheck {
            self.round.recheck(holder);
        }
        self.round.sched.holder_gone(self.slot);
    }

    /// Closes the connection (a new one is opened for the next request).
    fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            self.round.unregister(c.socket);
        }
    }

    /// Gives back the piece asked ahead, the connection (to a batch's pool
    /// when it is clean, unless the round already shut it down: it does so
    /// to every socket still registered) and the worker's place.
    fn leave(mut self) {
        let round = self.round;
        self.set_receiving(false);
        if let Some((j, n)) = self.ahead.take() {
            self.release_run(j, n);
        }
        match (self.clean_exit, self.conn.take(), round.dl.pool()) {
            (true, Some(c), Some(pool)) if c.conn.is_reusable() => {
                if (self.unhooked && c.socket.is_none()) || round.take_registration(c.socket) {
                    pool.put(&self.addrs, c.conn);
                }
            }
            (true, Some(c), None) if c.conn.is_reusable() && !round.stopping() => {
                round.keep_conn(self.slot, c.conn, c.socket)
            }
            (_, Some(c), _) => round.unregister(c.socket),
            (_, None, _) => {}
        }
        if !self.retired {
            round.slots.lock()[self.slot].workers -= 1;
        }
        round.sched.wake_all();
    }

    /// The byte range of the `count` pieces from `first`: first byte, last
    /// byte (inclusive), length.
    fn run_range(&self, first: usize, count: usize) -> (u64, u64, u64) {
        let (start, _) = self.round.piece_range(first);
        let (last_start, last_len) = self.round.piece_range(first + count - 1);
        let end = last_start + last_len as u64;
        (start, end - 1, end - start)
    }

    /// Asks for the `count` pieces from `first` (unless the request already
    /// went out ahead: `sent`) and checks the answer's head; returns it and
    /// whether it carried the holder's bitmaps
    /// ([`crate::protocol::HAVE_HEADER`], [`crate::protocol::FRESH_HEADER`];
    /// ignored unless well-formed for this file), which are passed to the
    /// scheduler at once. Once the head is good, the next run for this
    /// holder is asked for ahead on the same connection, so the link does
    /// not idle between requests.
    fn run_head(
        &mut self,
        first: usize,
        count: usize,
        sent: bool,
    ) -> Result<(client::Head, bool), Fail> {
        let (round, slot) = (self.round, self.slot);
        let (start, last, len) = self.run_range(first, count);
        let size = round.list.size;
        let path = format!("{FILES_PATH}/{}", round.list.sha1);
        let range = (start, last);
        let head = if sent {
            let Some(c) = self.conn.as_mut() else {
                return Err(Fail::Io(Transfer::NoConnection));
            };
            match c.conn.next_head() {
                Ok(head) => head,
                // The peer closed a kept-alive connection before this
                // answer: not its fault, ask again on a new one.
                Err(e) if e.is_stale_connection() => return Err(Fail::Abandoned),
                Err(e) => return Err(io_fail(round, e)),
            }
        } else {
            self.request(&path, Some(range))?
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
            200 if start == 0 && len == size => {}
            503 => {
                if head.content_length == Some(0) {
                    // No body: the connection can carry the next request
                    // (next in line, it asks again there).
                    if let Some(c) = self.conn.as_mut() {
                        c.conn.finish(&head);
                    }
                }
                return Err(match head.slots_full {
                    Some(after) => Fail::SlotsFull {
                        after,
                        next: head.slots_next,
                    },
                    None => Fail::Busy,
                });
            }
            416 => {
                // A partial holder without this piece: read the short reason.
                if let Some(c) = self.conn.as_mut() {
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
                    asked: Asked::Piece(first),
                }))
            }
        }
        match head.content_length {
            Some(l) if l == len => {}
            Some(l) if head.status == 200 => {
                return Err(Fail::Bad(BadData::OtherSize { got: l, size }))
            }
            other => {
                return Err(Fail::Io(Transfer::ContentLength {
                    got: other,
                    len: len as usize,
                }))
            }
        }
        let n = round.list.len();
        let have = head.have.as_deref().and_then(|h| Bitfield::from_hex(h, n));
        let fresh = head.fresh.as_deref().and_then(|h| Bitfield::from_hex(h, n));
        let refreshed = match (have, fresh) {
            (Some(have), _) => {
                round.sched.set_have(slot, Some(have), None);
                true
            }
            (None, Some(fresh)) => {
                // Taken only from a holder whose own bitmap is full.
                round.sched.set_fresh(slot, fresh);
                true
            }
            (None, None) => false,
        };
        // Not with a batch's shared connections: they go back to the pool
        // between files, with nothing pending.
        if self.ahead.is_none() && round.dl.pool().is_none() && !head.close {
            if let Next::Piece(j) = round.sched.next(slot) {
                let n = 1 + self.extend(j);
                let (s, e, _) = self.run_range(j, n);
                match self.conn.as_mut().map(|c| c.conn.send_ahead(&path, (s, e))) {
                    Some(Ok(())) => self.ahead = Some((j, n)),
                    // No connection to send it on, or a failed send (the
                    // body read below fails too, and says why).
                    _ => self.release_run(j, n),
                }
            }
        }
        Ok((head, refreshed))
    }

    /// Reads piece `i` of the run ending before `end` from the answer
    /// `head` into the buffer, verifying it as it arrives; returns its
    /// length. The read is abandoned when the round stops or when another
    /// copy of every piece left in the run was written first; after the
    /// run's last piece the connection can carry the next answer.
    fn read_piece(&mut self, i: usize, end: usize, head: &client::Head) -> Result<usize, Fail> {
        let round = self.round;
        let (_, len) = round.piece_range(i);
        let Some(c) = self.conn.as_mut() else {
            return Err(Fail::Io(Transfer::NoConnection));
        };
        let Some(mut check) = round.list.check_piece(i) else {
            return Err(Fail::Io(Transfer::NoConnection));
        };
        let rate = round.dl.rate();
        // The body's deadline, set by the round's progress; waits for the
        // rate cap do not count against it.
        let limit = round.piece_deadline();
        let started = Instant::now();
        let paced = std::cell::Cell::new(Duration::ZERO);
        let late = std::cell::Cell::new(None);
        let read = c.conn.read_body(
            self.buf.get_mut(len),
            |want| {
                if round.stopping() || (i..end).all(|j| round.sched.is_done(j)) {
                    return None;
                }
                if started.elapsed() > limit + paced.get() {
                    late.set(Some(len - want));
                    return None;
                }
                Some(rate.map_or(want, |r| want.min(r.chunk())))
            },
            |chunk| {
                check.update(chunk);
                round
                    .dl
                    .received
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if let Some(r) = rate {
                    let wait = r.reserve(chunk.len());
                    paced.set(paced.get() + wait);
                    round.sleep(wait);
                }
            },
        );
        match read {
            Ok(()) if i + 1 == end => c.conn.finish(head),
            Ok(()) => {}
            Err(ClientError::Abandoned) => {
                return Err(match late.get() {
                    Some(got) => Fail::Io(Transfer::Late {
                        piece: i,
                        limit,
                        got,
                        len,
                    }),
                    None => Fail::Abandoned,
                })
            }
            Err(e) => return Err(io_fail(round, e)),
        }
        if !round.list.check_done(i, &check) {
            crate::metrics::PIECES_REJECTED.inc();
            return Err(Fail::Bad(BadData::Piece {
                piece: i,
                last: i + 1 == round.list.len(),
            }));
        }
        Ok(len)
    }

    /// Sends `GET path` on the worker's connection, opening it (or a new
    /// one when the kept-alive one turned out stale) as needed.
    fn request(&mut self, path: &str, range: Option<(u64, u64)>) -> Result<client::Head, Fail> {
        let round = self.round;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.conn.as_ref().is_none_or(|c| !c.conn.is_reusable()) {
                self.close();
                // The connection a worker left to this holder, or a
                // batch's idle one to this peer, first (its first request
                // counts as a reuse: a stale one is replaced below).
                let kept = match attempt {
                    1 => round.take_conn(self.slot),
                    _ => None,
                };
                let pooled = match (attempt, &kept) {
                    (1, None) => round.dl.pool().and_then(|p| p.take(&self.addrs)),
                    _ => None,
                };
                self.conn = Some(match (kept, pooled) {
                    (Some((conn, socket)), _) => Conn { conn, socket },
                    (None, pooled) => {
                        let c = match pooled {
                            Some(c) => c,
                            None => client::connect(&self.addrs, round.timeouts)
                                .map_err(|e| Fail::Io(e.into()))?,
                        };
                        let socket = round.register(&c);
                        Conn { conn: c, socket }
                    }
                });
            }
            let Some(c) = self.conn.as_mut() else {
                return Err(Fail::Io(Transfer::NoConnection));
            };
            let reused = c.conn.requests() > 0;
            match c.conn.get(path, range) {
                Ok(head) => return Ok(head),
                Err(e) if reused && attempt == 1 && e.is_stale_connection() => self.close(),
                Err(e) => return Err(io_fail(round, e)),
            }
        }
    }

    /// Asks the holder which pieces it has: `Some` bitmap (full for a
    /// complete holder), `None` if it does not know the route (an older
    /// peer: assumed complete, its range answers tell); and the seed's hint
    /// of the pieces it would rather upload, if it sent one.
    fn fetch_have(
        &mut self,
        want: Option<&Bitfield>,
    ) -> Result<(Option<Bitfield>, Option<Bitfield>), Fail> {
        let round = self.round;
        let mut path = format!("{FILES_PATH}/{}/{HAVE_SEGMENT}", round.list.sha1);
        if let Some(want) = want {
            // Well within the read timeout: a wait is not a stall.
            let wait = HAVE_WAIT.min(MAX_HAVE_WAIT).min(round.timeouts.io / 2);
            path.push_str(&format!(
                "?wait={}&want={}",
                wait.as_millis(),
                want.to_hex()
            ));
        }
        let head = self.request(&path, None)?;
        if head.download_id.as_deref() == Some(round.download_id.as_str()) {
            return Err(Fail::Ourselves);
        }
        let n = round.list.len();
        let Some(c) = self.conn.as_mut() else {
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
