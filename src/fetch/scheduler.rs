//! The piece scheduler: which piece each connection fetches next. No I/O.
//!
//! Rarest first: a free connection gets, among the missing pieces its
//! holder has, the one the fewest usable holders have; ties go in the order
//! of a random rotation of the file, different for every download, so
//! downloaders that start together from one seed ask it for different
//! pieces and can then trade them (and the seed's upload goes to pieces no
//! one else has yet). A complete holder has every piece; a partial holder
//! (still downloading) has what its last `have` bitmap said. A fast peer
//! simply does more pieces. When nothing is left to hand out but
//! pieces are still in flight (endgame), a free connection of another
//! holder fetches one of them too, once it has been in flight for twice the
//! average piece time (so a small file is not fetched twice for nothing),
//! at most `max_dup` copies at once, the one with the fewest fetchers first: the first verified copy is written
//! ([`Scheduler::claim`]), the others see [`Scheduler::is_done`] between
//! reads and give up. A slow holder therefore never sets the finishing time.
//!
//! Piece states: `Missing` (in the queue) -> `InFlight` (fetchers > 0) ->
//! `Writing` (one verified copy claimed, being written) -> `Done`. A failed
//! fetch releases the piece: with no fetcher left it goes back to the
//! front of the queue. One lock over the whole state, held for lookups
//! only; `done` flags are atomics so readers can check them between reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::protocol::Bitfield;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceState {
    Missing,
    InFlight,
    Writing,
    Done,
}

/// What a connection should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Fetch this piece.
    Piece(usize),
    /// Nothing to do now; wait and ask again.
    Wait,
    /// Every piece is done.
    Stop,
}

struct State {
    pieces: Vec<PieceState>,
    /// The pieces in state `Missing` (queued), as a bitmap: whether a
    /// holder has one is a few word operations, not a pass over the file.
    missing: Bitfield,
    /// Per holder slot: the pieces it has (`None`: all of them).
    have: Vec<Option<Bitfield>>,
    /// Per holder slot: dropped (its pieces no longer count).
    gone: Vec<bool>,
    /// Per holder slot: its pieces are known (a bitmap came).
    known: Vec<bool>,
    /// Per holder slot: its claims turned into no bytes (a piece it was
    /// handed missed its deadline): what it claims no longer counts in
    /// the availability nor holds a seed back, until it delivers a piece.
    /// It may still be asked.
    discredited: Vec<bool>,
    /// Per holder slot: the pieces it would rather upload (a seed's
    /// least-uploaded pieces), preferred among equally rare ones.
    fresh: Vec<Option<Bitfield>>,
    /// Per piece: usable holders that have it.
    avail: Vec<u32>,
    /// Ties are broken in the order `(i + n - offset) % n`.
    offset: usize,
    /// When a piece was last written (or the round started).
    last_progress: Instant,
    /// When a piece from a partial holder was last written (or partial
    /// holders became known): the super-seeding restriction lasts only
    /// while they deliver.
    partial_progress: Instant,
    /// Holders (by slot index) fetching each piece.
    fetchers: Vec<Vec<usize>>,
    /// When each piece was first handed out (its current fetch).
    started: Vec<Option<Instant>>,
    remaining: usize,
    dirty: bool,
    /// Moving average of the time a piece takes, once one arrived.
    piece_time: Option<Duration>,
}

/// How long a piece must be in flight before a second copy is asked for,
/// before any piece arrived.
const FIRST_STEAL_AFTER: Duration = Duration::from_millis(500);
/// Shortest wait before a second copy.
const MIN_STEAL_AFTER: Duration = Duration::from_millis(50);
/// A download that got no piece for this long asks seeds for anything
/// again (see super-seeding in [`Scheduler::next`]).
const SEED_FALLBACK: Duration = Duration::from_secs(1);
/// A download whose partial holders delivered no piece for this long asks
/// seeds for anything, whatever the partial holders claim (see
/// super-seeding in [`Scheduler::next`]): claims alone never hold a seed
/// back longer.
pub(crate) const SEED_YIELD: Duration = Duration::from_secs(2);

/// The shared piece state of one download round.
pub(crate) struct Scheduler {
    state: Mutex<State>,
    changed: Condvar,
    done: Vec<AtomicBool>,
    done_bytes: AtomicU64,
    max_dup: usize,
}

impl Scheduler {
    /// A scheduler over `done.len()` pieces, those flagged already done;
    /// `done_bytes` is their size.
    pub fn new(done: &[bool], done_bytes: u64, max_dup: usize) -> Self {
        Self::with_offset(done, done_bytes, max_dup, random_offset(done.len()))
    }

    /// [`Scheduler::new`] with a chosen tie-break rotation.
    pub fn with_offset(done: &[bool], done_bytes: u64, max_dup: usize, offset: usize) -> Self {
        Self::with_offset_at(done, done_bytes, max_dup, offset, Instant::now())
    }

    /// [`Scheduler::with_offset`] starting at `now` (the simulator's clock).
    pub fn with_offset_at(
        done: &[bool],
        done_bytes: u64,
        max_dup: usize,
        offset: usize,
        now: Instant,
    ) -> Self {
        let pieces: Vec<PieceState> = done
            .iter()
            .map(|&d| {
                if d {
                    PieceState::Done
                } else {
                    PieceState::Missing
                }
            })
            .collect();
        let missing = Bitfield::from_flags(&done.iter().map(|d| !d).collect::<Vec<bool>>());
        Scheduler {
            state: Mutex::new(State {
                missing,
                remaining: done.iter().filter(|d| !**d).count(),
                have: Vec::new(),
                gone: Vec::new(),
                known: Vec::new(),
                discredited: Vec::new(),
                fresh: Vec::new(),
                avail: vec![0; done.len()],
                offset,
                last_progress: now,
                partial_progress: now,
                fetchers: vec![Vec::new(); done.len()],
                started: vec![None; done.len()],
                pieces,
                dirty: false,
                piece_time: None,
            }),
            changed: Condvar::new(),
            done: done.iter().map(|&d| AtomicBool::new(d)).collect(),
            done_bytes: AtomicU64::new(done_bytes),
            max_dup: max_dup.max(1),
        }
    }

    /// Sets what `holder` has (`None`: every piece), updating availability,
    /// and the pieces it would rather upload (`None`: no preference). An
    /// offer counts only from a holder of every piece (a seed): one from a
    /// holder whose own bitmap lacks a piece is ignored.
    pub fn set_have(&self, holder: usize, have: Option<Bitfield>, fresh: Option<Bitfield>) {
        self.set_have_at(holder, have, fresh, Instant::now());
    }

    /// [`Scheduler::set_have`] at `now` (the simulator's clock).
    pub fn set_have_at(
        &self,
        holder: usize,
        have: Option<Bitfield>,
        fresh: Option<Bitfield>,
        now: Instant,
    ) {
        let mut s = self.state.lock();
        s.ensure(holder);
        let had_partials = s.has_partials();
        let have = have.filter(|h| !h.is_full());
        let counts = s.counts(holder);
        // Whether a waiting worker may find work it could not before: a
        // holder newly known or turned seed (or back), or a piece still
        // wanted newly held. A bitmap rides on every piece answer, and
        // waking every idle worker and the supervisor for each cost
        // thousands of context switches per download; the holder's own
        // worker, the caller, looks again anyway.
        let mut news = !s.known[holder] || s.have[holder].is_none() != have.is_none();
        match (&s.have[holder], &have) {
            // A partial holder's new bitmap (it rides on every piece):
            // only the pieces that changed are counted again.
            (Some(old), Some(new)) if counts && old.len() == new.len() => {
                // A byte at a time: most bytes are unchanged.
                let mut changed: Vec<(usize, bool)> = Vec::new();
                for (k, (a, b)) in old.as_bytes().iter().zip(new.as_bytes()).enumerate() {
                    let mut diff = a ^ b;
                    while diff != 0 {
                        let bit = diff.trailing_zeros() as usize;
                        diff &= diff - 1;
                        changed.push((k * 8 + bit, b & (1 << bit) != 0));
                    }
                }
                for (i, now_has) in changed {
                    let sign = if now_has { 1 } else { -1 };
                    s.avail[i] = s.avail[i].saturating_add_signed(sign);
                    news |= now_has && s.pieces[i] != PieceState::Done;
                }
                s.have[holder] = have;
            }
            // The same seed again: nothing changes but its offer, which
            // only its own worker reads.
            (None, None) if !news => {}
            _ => {
                news = true;
                if counts {
                    s.count(holder, -1);
                }
                s.have[holder] = have;
                if counts {
                    s.count(holder, 1);
                }
            }
        }
        s.known[holder] = true;
        s.fresh[holder] = fresh.filter(|_| s.have[holder].is_none());
        if !had_partials && s.has_partials() {
            // The restriction's clock starts when there is a swarm.
            s.partial_progress = now;
        }
        drop(s);
        if news {
            self.changed.notify_all();
        }
    }

    /// A seed's offer riding on a piece answer (`X-Fresh`): taken only if
    /// `holder`'s own bitmap says it has every piece.
    pub fn set_fresh(&self, holder: usize, fresh: Bitfield) {
        let mut s = self.state.lock();
        s.ensure(holder);
        if s.have[holder].is_none() {
            s.fresh[holder] = Some(fresh);
        }
    }

    /// A piece `holder` was handed missed its deadline: its claims stop
    /// counting (availability, the seeds' restriction) until it delivers
    /// a piece. True the first time (the caller names it).
    pub fn discredit(&self, holder: usize) -> bool {
        let mut s = self.state.lock();
        s.ensure(holder);
        if s.discredited[holder] {
            return false;
        }
        if s.counts(holder) {
            s.count(holder, -1);
        }
        s.discredited[holder] = true;
        drop(s);
        self.changed.notify_all();
        true
    }

    /// `holder` turned out not to have piece `i` after all (it answered 416).
    pub fn not_there(&self, holder: usize, i: usize) {
        let mut s = self.state.lock();
        s.ensure(holder);
        if s.gone[holder] {
            return;
        }
        let counts = s.counts(holder);
        if counts {
            s.count(holder, -1);
        }
        let n = s.pieces.len();
        let have = s.have[holder].get_or_insert_with(|| Bitfield::full(n));
        have.clear(i);
        // Not a seed any more: no offer from it counts.
        s.fresh[holder] = None;
        if counts {
            s.count(holder, 1);
        }
    }

    /// `holder` was dropped: its pieces no longer count as available.
    pub fn holder_gone(&self, holder: usize) {
        let mut s = self.state.lock();
        s.ensure(holder);
        if s.counts(holder) {
            s.count(holder, -1);
        }
        s.gone[holder] = true;
    }

    /// `holder`, dropped by [`Scheduler::holder_gone`], is asked again
    /// (its failures were transient): its pieces count again.
    pub fn holder_back(&self, holder: usize) {
        let mut s = self.state.lock();
        s.ensure(holder);
        if s.gone[holder] {
            s.gone[holder] = false;
            s.count(holder, 1);
        }
    }

    /// True if `holder` is known to have every piece.
    pub fn is_complete_holder(&self, holder: usize) -> bool {
        let s = self.state.lock();
        s.have.get(holder).is_none_or(Option::is_none)
    }

    /// True if `holder`'s bitmap is worth asking again: it is partial, or a
    /// seed that says which pieces it would rather upload.
    pub fn needs_poll(&self, holder: usize) -> bool {
        let s = self.state.lock();
        s.have.get(holder).is_some_and(Option::is_some)
            || s.fresh.get(holder).is_some_and(Option::is_some)
    }

    /// True if `holder` may have a piece this download still lacks: its
    /// pieces are not known yet, or one of them is missing here (false for
    /// a dropped holder).
    pub fn useful(&self, holder: usize) -> bool {
        let s = self.state.lock();
        if s.gone.get(holder).copied().unwrap_or(false) {
            return false;
        }
        match s.have.get(holder) {
            Some(Some(b)) => b.intersects(&s.missing),
            _ => true,
        }
    }

    /// The pieces this download lacks that partial holder `holder` does
    /// not have (what its `have` may wait for); `None` for a holder whose
    /// pieces are not known, a complete or a dropped one.
    pub fn wanted_from(&self, holder: usize) -> Option<Bitfield> {
        let s = self.state.lock();
        if s.gone.get(holder).copied().unwrap_or(false) {
            return None;
        }
        let have = s.have.get(holder)?.as_ref()?;
        let mut want = s.missing.clone();
        for i in 0..want.len() {
            if want.get(i) && have.get(i) {
                want.clear(i);
            }
        }
        Some(want)
    }

    /// True once a usable partial holder is known (a swarm).
    pub fn in_swarm(&self) -> bool {
        self.state.lock().has_partials()
    }

    /// True if `holder` is a seed that says which pieces it would rather upload.
    pub fn has_hint(&self, holder: usize) -> bool {
        self.state
            .lock()
            .fresh
            .get(holder)
            .is_some_and(Option::is_some)
    }

    /// The next piece for a connection of `holder`.
    pub fn next(&self, holder: usize) -> Next {
        self.next_at(holder, Instant::now())
    }

    /// [`Scheduler::next`] at `now`.
    pub fn next_at(&self, holder: usize, now: Instant) -> Next {
        let mut s = self.state.lock();
        if s.remaining == 0 {
            return Next::Stop;
        }
        s.ensure(holder);
        let n = s.pieces.len();
        let offset = s.offset;
        // Super-seeding: while partial holders are known, a seed that says
        // which pieces it uploaded least is asked only for those (and only
        // if no one else is known to have them): the rest come from the
        // partial holders, and the seed's upload goes to new pieces. Only
        // while they deliver: not once the partial holders delivered no
        // piece for SEED_YIELD (whatever they claim), nor once they have
        // nothing this download lacks and it got nothing for
        // SEED_FALLBACK. Claims that turned into no bytes do not count.
        // Not once two or more seeds are known (by their bitmaps): then
        // the seed's upload is no longer the scarce one, and every holder
        // of this download's last pieces may be a seed with an offer,
        // each deferring to the others (in the simulator, 1,000 hosts:
        // the last hosts got one burst of pieces per SEED_FALLBACK and
        // ended at 2.6x one host alone).
        let restricted = s.restricted(holder, now);
        // A seed's offer is preferred only in a swarm: among seeds alone
        // the rotation keeps each download's pieces in one order, and the
        // offers, different for every asker, would only scatter them.
        let swarm = s.has_partials();
        let pick = (0..n)
            .filter(|&i| s.pieces[i] == PieceState::Missing && s.has(holder, i))
            .filter(|&i| !restricted || (s.is_fresh(holder, i) && s.avail[i] <= 1))
            .min_by_key(|&i| {
                (
                    s.avail[i],
                    swarm && !s.is_fresh(holder, i),
                    (i + n - offset) % n,
                )
            });
        if let Some(i) = pick {
            s.pieces[i] = PieceState::InFlight;
            s.missing.clear(i);
            s.fetchers[i].push(holder);
            s.started[i] = Some(now);
            return Next::Piece(i);
        }
        // A restricted seed does not duplicate pieces in flight elsewhere
        // either: its upload goes to new pieces (the restriction yields
        // after SEED_FALLBACK without progress).
        if restricted {
            return Next::Wait;
        }
        // Endgame: help with a slow in-flight piece this holder is not fetching.
        let steal_after = s
            .piece_time
            .map_or(FIRST_STEAL_AFTER, |t| (t * 2).max(MIN_STEAL_AFTER));
        let candidate = (0..s.pieces.len())
            .filter(|&i| s.pieces[i] == PieceState::InFlight && s.has(holder, i))
            .filter(|&i| {
                s.started[i].is_some_and(|t| now.saturating_duration_since(t) >= steal_after)
            })
            .filter(|&i| s.fetchers[i].len() < self.max_dup && !s.fetchers[i].contains(&holder))
            .min_by_key(|&i| (s.fetchers[i].len(), i));
        match candidate {
            Some(i) => {
                s.fetchers[i].push(holder);
                Next::Piece(i)
            }
            None => Next::Wait,
        }
    }

    /// Pieces after `first` (which `holder` was just handed by
    /// [`Scheduler::next`], as its only fetcher) that the same request can
    /// take too: the next ones in the file, while each is missing, `holder`
    /// has it and (for a seed asked only for its offer) it is offered and
    /// held by no one else known; at most `max` of them. They are handed to
    /// `holder` like `first`; the count is returned. One range request then
    /// carries them all (fewer requests per byte, see ARCHITECTURE.md "The
    /// download"); each piece is still verified, written and shared alone.
    pub fn extend_at(&self, holder: usize, first: usize, max: usize, now: Instant) -> usize {
        let mut s = self.state.lock();
        if max == 0
            || s.remaining == 0
            || s.pieces.get(first) != Some(&PieceState::InFlight)
            || s.fetchers[first] != [holder]
        {
            return 0;
        }
        let restricted = s.restricted(holder, now);
        let mut taken = 0;
        for j in first + 1..s.pieces.len() {
            if taken == max
                || s.pieces[j] != PieceState::Missing
                || !s.has(holder, j)
                || (restricted && !(s.is_fresh(holder, j) && s.avail[j] <= 1))
            {
                break;
            }
            s.pieces[j] = PieceState::InFlight;
            s.missing.clear(j);
            s.fetchers[j].push(holder);
            s.started[j] = Some(now);
            taken += 1;
        }
        taken
    }

    /// A verified copy of piece `i` arrived: true if it is the first (the
    /// caller writes it, then calls [`Scheduler::written`]), false if
    /// another copy won (the caller drops it).
    pub fn claim(&self, i: usize) -> bool {
        let mut s = self.state.lock();
        match s.pieces[i] {
            PieceState::Missing | PieceState::InFlight => {
                s.pieces[i] = PieceState::Writing;
                s.missing.clear(i);
                true
            }
            PieceState::Writing | PieceState::Done => false,
        }
    }

    /// Piece `i` (of `len` bytes) is on disk; `holder` stops fetching it.
    pub fn written(&self, i: usize, len: u64, holder: usize) {
        self.written_at(i, len, holder, Instant::now());
    }

    /// [`Scheduler::written`] at `now`.
    pub fn written_at(&self, i: usize, len: u64, holder: usize, now: Instant) {
        let mut s = self.state.lock();
        if s.pieces[i] != PieceState::Done {
            if let Some(t) = s.started[i] {
                let took = now.saturating_duration_since(t);
                s.piece_time = Some(s.piece_time.map_or(took, |avg| (avg * 7 + took) / 8));
            }
            s.pieces[i] = PieceState::Done;
            s.missing.clear(i);
            s.last_progress = now;
            if s.have.get(holder).is_some_and(Option::is_some) {
                s.partial_progress = s.last_progress;
            }
            if s.discredited.get(holder).copied().unwrap_or(false) {
                // Its claims turned into bytes after all.
                s.discredited[holder] = false;
                if s.counts(holder) {
                    s.count(holder, 1);
                }
            }
            s.remaining -= 1;
            s.dirty = true;
            self.done[i].store(true, Ordering::Release);
            self.done_bytes.fetch_add(len, Ordering::Relaxed);
        }
        remove(&mut s.fetchers[i], holder);
        // A piece written gives no waiting worker new work (a copy of it
        // still in flight sees `is_done`); only the last one ends the
        // waits (the supervisor's among them). Waking every idle worker
        // and the supervisor for each piece cost thousands of context
        // switches per download.
        let last = s.remaining == 0;
        drop(s);
        if last {
            self.changed.notify_all();
        }
    }

    /// `holder` stopped fetching piece `i` without delivering it.
    pub fn release(&self, i: usize, holder: usize) {
        let mut s = self.state.lock();
        remove(&mut s.fetchers[i], holder);
        if s.pieces[i] == PieceState::InFlight && s.fetchers[i].is_empty() {
            s.pieces[i] = PieceState::Missing;
            s.missing.set(i);
            s.started[i] = None;
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Piece `i`'s state, fetchers and availability, for the simulator's
    /// report of a download that did not end.
    #[cfg(test)]
    pub(crate) fn describe_piece(&self, i: usize) -> String {
        let s = self.state.lock();
        format!(
            "{:?}, fetchers {:?}, {} holders",
            s.pieces[i], s.fetchers[i], s.avail[i]
        )
    }

    /// The moving average of the time a piece takes, once one arrived.
    pub fn piece_time(&self) -> Option<Duration> {
        self.state.lock().piece_time
    }

    /// How long ago the last piece was written (or the round started).
    pub fn since_progress(&self) -> Duration {
        self.state.lock().last_progress.elapsed()
    }

    /// True once piece `i` is on disk (lock-free).
    pub fn is_done(&self, i: usize) -> bool {
        self.done[i].load(Ordering::Acquire)
    }

    /// Pieces not yet on disk.
    pub fn remaining(&self) -> usize {
        self.state.lock().remaining
    }

    /// Bytes on disk and verified.
    pub fn done_bytes(&self) -> u64 {
        self.done_bytes.load(Ordering::Relaxed)
    }

    /// The done flags if they changed since the last call.
    pub fn take_changes(&self) -> Option<Vec<bool>> {
        let mut s = self.state.lock();
        if !s.dirty {
            return None;
        }
        s.dirty = false;
        Some(s.pieces.iter().map(|p| *p == PieceState::Done).collect())
    }

    /// The done flags now.
    pub fn done_flags(&self) -> Vec<bool> {
        self.done
            .iter()
            .map(|d| d.load(Ordering::Acquire))
            .collect()
    }

    /// Waits until something changes or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let mut s = self.state.lock();
        let _ = self.changed.wait_for(&mut s, timeout);
    }

    /// Wakes every waiter (abort, new holders).
    pub fn wake_all(&self) {
        self.changed.notify_all();
    }
}

impl State {
    /// Grows the per-holder tables to include `holder` (a complete holder
    /// by default, counted as available).
    fn ensure(&mut self, holder: usize) {
        while self.have.len() <= holder {
            self.have.push(None);
            self.gone.push(false);
            self.known.push(false);
            self.discredited.push(false);
            self.fresh.push(None);
            for a in &mut self.avail {
                *a += 1;
            }
        }
    }

    /// True if `holder`'s claims count: not dropped, not discredited.
    fn counts(&self, holder: usize) -> bool {
        !self.gone[holder] && !self.discredited[holder]
    }

    /// True if a credited partial holder has a piece still missing here.
    fn partials_can_help(&self) -> bool {
        (0..self.have.len())
            .filter(|&h| self.counts(h))
            .filter_map(|h| self.have[h].as_ref())
            .any(|b| b.intersects(&self.missing))
    }

    /// Credited holders known (by their bitmap) to have every piece.
    fn known_seeds(&self) -> usize {
        (0..self.have.len())
            .filter(|&h| self.known[h] && self.have[h].is_none() && self.counts(h))
            .count()
    }

    /// True if a credited partial holder is known.
    fn has_partials(&self) -> bool {
        (0..self.have.len()).any(|h| self.have[h].is_some() && self.counts(h))
    }

    /// Super-seeding: while partial holders are known, a seed that says
    /// which pieces it uploaded least is asked only for those (see
    /// [`Scheduler::next_at`]).
    fn restricted(&self, holder: usize, now: Instant) -> bool {
        self.fresh.get(holder).is_some_and(Option::is_some)
            && self.has_partials()
            && self.known_seeds() < 2
            && if self.partials_can_help() {
                now.saturating_duration_since(self.partial_progress) < SEED_YIELD
            } else {
                now.saturating_duration_since(self.last_progress) < SEED_FALLBACK
            }
    }

    fn is_fresh(&self, holder: usize, i: usize) -> bool {
        match self.fresh.get(holder) {
            Some(Some(b)) => b.get(i),
            _ => false,
        }
    }

    fn has(&self, holder: usize, i: usize) -> bool {
        match self.have.get(holder) {
            Some(Some(b)) => b.get(i),
            _ => true,
        }
    }

    /// Adds `sign` (1 or -1) for every piece `holder` has.
    fn count(&mut self, holder: usize, sign: i32) {
        match &self.have[holder] {
            Some(b) => {
                for i in 0..self.avail.len() {
                    if b.get(i) {
                        self.avail[i] = self.avail[i].saturating_add_signed(sign);
                    }
                }
            }
            None => {
                for a in &mut self.avail {
                    *a = a.saturating_add_signed(sign);
                }
            }
        }
    }
}

/// A random rotation for tie-breaks (no RNG crate: the hasher's random keys).
fn random_offset(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    if n == 0 {
        return 0;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() % n as u64) as usize
}

fn remove(v: &mut Vec<usize>, x: usize) {
    if let Some(p) = v.iter().position(|&y| y == x) {
        v.swap_remove(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_go_out_in_rotated_order_and_failures_come_back() {
        let s = Scheduler::with_offset(&[false, true, false, false], 10, 2, 0);
        assert_eq!(s.remaining(), 3);
        assert_eq!(s.next(0), Next::Piece(0));
        assert_eq!(s.next(1), Next::Piece(2));
        s.release(0, 0);
        assert_eq!(s.next(1), Next::Piece(0));
        assert_eq!(s.next(1), Next::Piece(3));
        let s = Scheduler::with_offset(&[false; 4], 0, 2, 3);
        assert_eq!(s.next(0), Next::Piece(3));
        assert_eq!(s.next(0), Next::Piece(0));
    }

    #[test]
    fn a_run_takes_the_next_missing_pieces_the_holder_has_and_stops_at_a_gap() {
        let now = Instant::now();
        let s = Scheduler::with_offset(&[false, false, false, true, false, false, false], 0, 2, 0);
        // Holder 1 lacks piece 2: its run from 0 stops there.
        s.set_have(
            1,
            Some(Bitfield::from_flags(&[
                true, true, false, true, true, true, true,
            ])),
            None,
        );
        assert_eq!(s.next(1), Next::Piece(0));
        assert_eq!(s.extend_at(1, 0, 3, now), 1);
        // A seed's run stops at a done piece (3) and at `max`.
        assert_eq!(s.next(0), Next::Piece(2));
        assert_eq!(s.extend_at(0, 2, 3, now), 0);
        assert_eq!(s.next(0), Next::Piece(4));
        assert_eq!(s.extend_at(0, 4, 1, now), 1);
        // Pieces taken by a run are in flight: not handed out again, and
        // a released one comes back.
        assert_eq!(s.next(0), Next::Piece(6));
        assert_eq!(s.next(0), Next::Wait);
        s.release(5, 0);
        assert_eq!(s.next(1), Next::Piece(5));
        // Only the piece's sole fetcher extends it (not an endgame copy).
        assert_eq!(s.extend_at(0, 5, 3, now), 0);
    }

    #[test]
    fn a_restricted_seed_runs_only_over_its_offer() {
        let now = Instant::now();
        let s = Scheduler::with_offset(&[false; 6], 0, 2, 0);
        // Seed 0 offers 1, 2 and 4; partial holder 1 has piece 0.
        s.set_have(
            0,
            None,
            Some(Bitfield::from_flags(&[
                false, true, true, false, true, false,
            ])),
        );
        s.set_have(
            1,
            Some(Bitfield::from_flags(&[
                true, false, false, false, false, false,
            ])),
            None,
        );
        assert_eq!(s.next(0), Next::Piece(1));
        assert_eq!(s.extend_at(0, 1, 4, now), 1, "2 offered, 3 not");
        assert_eq!(s.next(0), Next::Piece(4));
        assert_eq!(s.extend_at(0, 4, 4, now), 0);
    }

    #[test]
    fn rarest_first_and_only_what_the_holder_has() {
        let s = Scheduler::with_offset(&[false; 4], 0, 2, 0);
        // Holder 0 is a seed; holder 1 has pieces 0 and 1.
        s.set_have(0, None, None);
        s.set_have(
            1,
            Some(Bitfield::from_flags(&[true, true, false, false])),
            None,
        );
        // The seed is asked for what only it has.
        assert_eq!(s.next(0), Next::Piece(2));
        assert_eq!(s.next(0), Next::Piece(3));
        // The partial holder gives only its pieces.
        assert_eq!(s.next(1), Next::Piece(0));
        assert_eq!(s.next(1), Next::Piece(1));
        assert_eq!(s.next(1), Next::Wait);
        // A 416 takes the piece off its map; a dropped holder counts no more.
        s.release(1, 1);
        s.not_there(1, 1);
        assert_eq!(s.next(1), Next::Wait);
        s.holder_gone(0);
        assert_eq!(s.state.lock().avail, vec![1, 0, 0, 0]);
        assert!(s.is_complete_holder(0));
        assert!(!s.is_complete_holder(1));
    }

    #[test]
    fn a_partial_holder_is_waited_on_for_the_missing_pieces_it_lacks() {
        let s = Scheduler::with_offset(&[false, false, true, false], 0, 2, 0);
        assert_eq!(s.wanted_from(0), None, "its pieces not known yet");
        s.set_have(
            0,
            Some(Bitfield::from_flags(&[true, false, false, false])),
            None,
        );
        let want = s.wanted_from(0).unwrap();
        let wanted: Vec<usize> = (0..4).filter(|&i| want.get(i)).collect();
        assert_eq!(wanted, vec![1, 3], "missing here, not held there");
        s.set_have(1, Some(Bitfield::full(4)), None);
        assert_eq!(s.wanted_from(1), None, "a complete holder");
        s.holder_gone(0);
        assert_eq!(s.wanted_from(0), None, "a dropped holder");
    }

    #[test]
    fn a_holder_is_useful_while_it_has_a_missing_piece_or_is_not_known_yet() {
        let s = Scheduler::with_offset(&[false, false, true], 0, 2, 0);
        assert!(s.useful(5), "never asked: may have anything");
        assert!(!s.in_swarm());
        s.set_have(1, Some(Bitfield::from_flags(&[false, false, true])), None);
        assert!(s.in_swarm());
        assert!(!s.useful(1), "only a piece already done here");
        s.set_have(1, Some(Bitfield::from_flags(&[true, false, true])), None);
        assert!(s.useful(1));
        assert_eq!(s.next(1), Next::Piece(0));
        assert!(!s.useful(1), "its one useful piece is in flight");
        s.holder_gone(1);
        assert!(!s.useful(1));
        assert!(!s.in_swarm(), "a dropped partial holder is no swarm");
    }

    #[test]
    fn a_seed_offer_comes_first_in_a_swarm_and_the_rotation_among_seeds_alone() {
        let offer = || Some(Bitfield::from_flags(&[false, false, true, false]));
        // Seeds alone: in the rotation's order.
        let s = Scheduler::with_offset(&[false; 4], 0, 2, 0);
        s.set_have(0, None, offer());
        assert!(s.needs_poll(0));
        assert_eq!(s.next(0), Next::Piece(0));
        // With a partial holder known: the offered piece first.
        let s = Scheduler::with_offset(&[false; 4], 0, 2, 0);
        s.set_have(0, None, offer());
        s.set_have(1, Some(Bitfield::empty(4)), None);
        assert_eq!(s.next(0), Next::Piece(2));
    }

    #[test]
    fn with_partial_holders_a_seed_is_asked_only_for_what_it_never_sent() {
        let s = Scheduler::with_offset(&[false; 4], 0, 2, 0);
        // Seed 0 sent piece 3 least; partial holder 1 has piece 0.
        s.set_have(
            0,
            None,
            Some(Bitfield::from_flags(&[false, false, false, true])),
        );
        s.set_have(
            1,
            Some(Bitfield::from_flags(&[true, false, false, false])),
            None,
        );
        assert_eq!(s.next(0), Next::Piece(3));
        // Pieces 1 and 2 went out to others: wait for them to spread.
        assert_eq!(s.next(0), Next::Wait);
        assert_eq!(s.next(1), Next::Piece(0));
        // Nothing arrived for a while: the seed is asked anyway.
        s.state.lock().last_progress = Instant::now() - SEED_FALLBACK;
        assert_eq!(s.next(0), Next::Piece(1));
    }

    #[test]
    fn an_offer_counts_only_from_a_holder_of_every_piece() {
        let s = Scheduler::with_offset(&[false; 4], 0, 2, 0);
        let offer = Bitfield::from_flags(&[true; 4]);
        // A partial holder's `/have` with a second bitmap: no offer.
        s.set_have(
            1,
            Some(Bitfield::from_flags(&[true, true, true, false])),
            Some(offer.clone()),
        );
        assert!(!s.has_hint(1));
        // Nor riding on a piece answer.
        s.set_fresh(1, offer.clone());
        assert!(!s.has_hint(1));
        // A seed's does; a 416 from it ends that.
        s.set_have(0, Some(Bitfield::full(4)), Some(offer.clone()));
        assert!(s.has_hint(0));
        s.not_there(0, 2);
        assert!(!s.has_hint(0));
    }

    #[test]
    fn the_seed_is_restricted_only_while_partial_holders_deliver() {
        let s = Scheduler::with_offset(&[false; 4], 0, 2, 0);
        // Seed 0 offers piece 3; partial holder 1 claims pieces 0-2.
        let offer = Some(Bitfield::from_flags(&[false, false, false, true]));
        s.set_have(0, None, offer);
        s.set_have(
            1,
            Some(Bitfield::from_flags(&[true, true, true, false])),
            None,
        );
        assert_eq!(s.next(0), Next::Piece(3));
        assert_eq!(s.next(0), Next::Wait, "the rest is the partial's");
        // Its claims gave nothing for SEED_YIELD: the seed serves anything.
        s.state.lock().partial_progress = Instant::now() - SEED_YIELD;
        assert_eq!(s.next(0), Next::Piece(0));
        // A piece from the partial holder: restricted again.
        assert_eq!(s.next(1), Next::Piece(1));
        assert!(s.claim(1));
        s.written(1, 1, 1);
        assert_eq!(s.next(0), Next::Wait);
    }

    #[test]
    fn two_known_seeds_are_not_held_back() {
        let s = Scheduler::with_offset(&[false; 4], 0, 2, 0);
        // Seed 0 offers piece 3 only; partial holder 1 has piece 0.
        let offer = || Some(Bitfield::from_flags(&[false, false, false, true]));
        s.set_have(0, None, offer());
        s.set_have(
            1,
            Some(Bitfield::from_flags(&[true, false, false, false])),
            None,
        );
        assert_eq!(s.next(0), Next::Piece(3));
        assert_eq!(s.next(0), Next::Wait, "one seed: restricted");
        // A second seed (its bitmap came): neither is held back.
        s.set_have(2, None, offer());
        assert_eq!(s.next(2), Next::Piece(1));
        assert_eq!(s.next(0), Next::Piece(2));
        assert_eq!(s.next(0), Next::Piece(0));
    }

    #[test]
    fn a_discredited_holder_holds_no_seed_back_until_it_delivers() {
        let s = Scheduler::with_offset(&[false; 4], 0, 2, 0);
        let offer = Some(Bitfield::from_flags(&[false, false, false, true]));
        s.set_have(0, None, offer);
        s.set_have(
            1,
            Some(Bitfield::from_flags(&[true, true, true, false])),
            None,
        );
        assert_eq!(s.next(0), Next::Piece(3));
        assert_eq!(s.state.lock().avail, vec![2, 2, 2, 1]);
        assert!(s.discredit(1));
        assert!(!s.discredit(1), "named once");
        assert_eq!(s.state.lock().avail, vec![1, 1, 1, 1]);
        assert!(!s.in_swarm());
        assert_eq!(s.next(0), Next::Piece(0), "no longer restricted");
        // It may still be asked; a delivered piece gives its claims back.
        assert_eq!(s.next(1), Next::Piece(1));
        assert!(s.claim(1));
        s.written(1, 1, 1);
        assert!(s.in_swarm());
        assert_eq!(s.state.lock().avail, vec![2, 2, 2, 1]);
    }

    #[test]
    fn random_rotations_differ_between_downloads() {
        let offsets: std::collections::HashSet<usize> =
            (0..16).map(|_| random_offset(1000)).collect();
        assert!(offsets.len() > 1);
    }

    /// Pretends piece `i` has been in flight for a long time.
    fn age(s: &Scheduler, i: usize) {
        s.state.lock().started[i] = Instant::now().checked_sub(Duration::from_secs(5));
    }

    #[test]
    fn endgame_waits_before_asking_a_second_copy() {
        let s = Scheduler::with_offset(&[false], 0, 2, 0);
        assert_eq!(s.next(0), Next::Piece(0));
        assert_eq!(s.next(1), Next::Wait);
        age(&s, 0);
        assert_eq!(s.next(1), Next::Piece(0));
    }

    #[test]
    fn endgame_duplicates_across_holders_and_first_copy_wins() {
        let s = Scheduler::with_offset(&[false], 0, 2, 0);
        assert_eq!(s.next(0), Next::Piece(0));
        age(&s, 0);
        // Same holder gets no duplicate; another holder does.
        assert_eq!(s.next(0), Next::Wait);
        assert_eq!(s.next(1), Next::Piece(0));
        // max_dup reached.
        assert_eq!(s.next(2), Next::Wait);
        assert!(s.claim(0));
        assert!(!s.claim(0));
        assert!(!s.is_done(0));
        s.written(0, 7, 1);
        assert!(s.is_done(0));
        assert_eq!(s.done_bytes(), 7);
        s.release(0, 0);
        assert_eq!(s.next(2), Next::Stop);
        assert_eq!(s.take_changes(), Some(vec![true]));
        assert_eq!(s.take_changes(), None);
    }

    #[test]
    fn a_released_duplicate_does_not_requeue_while_another_fetches() {
        let s = Scheduler::with_offset(&[false, false], 0, 2, 0);
        assert_eq!(s.next(0), Next::Piece(0));
        assert_eq!(s.next(0), Next::Piece(1));
        age(&s, 0);
        assert_eq!(s.next(1), Next::Piece(0));
        s.release(0, 1);
        // Piece 0 is still fetched by holder 0: not queued again.
        assert_eq!(s.next(0), Next::Wait);
        s.release(0, 0);
        assert_eq!(s.next(1), Next::Piece(0));
    }
}
