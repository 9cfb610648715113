//! The piece scheduler: which piece each connection fetches next. No I/O.
//!
//! Every connection pulls the lowest missing piece when it is free, so a
//! fast peer simply does more pieces. When nothing is left to hand out but
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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

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
    /// Holders (by slot index) fetching each piece.
    fetchers: Vec<Vec<usize>>,
    /// When each piece was first handed out (its current fetch).
    started: Vec<Option<Instant>>,
    queue: VecDeque<usize>,
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
        let queue: VecDeque<usize> = (0..done.len()).filter(|&i| !done[i]).collect();
        Scheduler {
            state: Mutex::new(State {
                remaining: queue.len(),
                fetchers: vec![Vec::new(); done.len()],
                started: vec![None; done.len()],
                pieces,
                queue,
                dirty: false,
                piece_time: None,
            }),
            changed: Condvar::new(),
            done: done.iter().map(|&d| AtomicBool::new(d)).collect(),
            done_bytes: AtomicU64::new(done_bytes),
            max_dup: max_dup.max(1),
        }
    }

    /// The next piece for a connection of `holder`.
    pub fn next(&self, holder: usize) -> Next {
        let mut s = self.state.lock();
        if s.remaining == 0 {
            return Next::Stop;
        }
        if let Some(i) = s.queue.pop_front() {
            s.pieces[i] = PieceState::InFlight;
            s.fetchers[i].push(holder);
            s.started[i] = Some(Instant::now());
            return Next::Piece(i);
        }
        // Endgame: help with a slow in-flight piece this holder is not fetching.
        let steal_after = s
            .piece_time
            .map_or(FIRST_STEAL_AFTER, |t| (t * 2).max(MIN_STEAL_AFTER));
        let candidate = (0..s.pieces.len())
            .filter(|&i| s.pieces[i] == PieceState::InFlight)
            .filter(|&i| s.started[i].is_some_and(|t| t.elapsed() >= steal_after))
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

    /// A verified copy of piece `i` arrived: true if it is the first (the
    /// caller writes it, then calls [`Scheduler::written`]), false if
    /// another copy won (the caller drops it).
    pub fn claim(&self, i: usize) -> bool {
        let mut s = self.state.lock();
        match s.pieces[i] {
            PieceState::Missing | PieceState::InFlight => {
                s.pieces[i] = PieceState::Writing;
                true
            }
            PieceState::Writing | PieceState::Done => false,
        }
    }

    /// Piece `i` (of `len` bytes) is on disk; `holder` stops fetching it.
    pub fn written(&self, i: usize, len: u64, holder: usize) {
        let mut s = self.state.lock();
        if s.pieces[i] != PieceState::Done {
            if let Some(t) = s.started[i] {
                let took = t.elapsed();
                s.piece_time = Some(s.piece_time.map_or(took, |avg| (avg * 7 + took) / 8));
            }
            s.pieces[i] = PieceState::Done;
            s.remaining -= 1;
            s.dirty = true;
            self.done[i].store(true, Ordering::Release);
            self.done_bytes.fetch_add(len, Ordering::Relaxed);
        }
        remove(&mut s.fetchers[i], holder);
        drop(s);
        self.changed.notify_all();
    }

    /// `holder` stopped fetching piece `i` without delivering it.
    pub fn release(&self, i: usize, holder: usize) {
        let mut s = self.state.lock();
        remove(&mut s.fetchers[i], holder);
        if s.pieces[i] == PieceState::InFlight && s.fetchers[i].is_empty() {
            s.pieces[i] = PieceState::Missing;
            s.started[i] = None;
            s.queue.push_front(i);
        }
        drop(s);
        self.changed.notify_all();
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

fn remove(v: &mut Vec<usize>, x: usize) {
    if let Some(p) = v.iter().position(|&y| y == x) {
        v.swap_remove(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_go_out_in_order_and_failures_come_back_first() {
        let s = Scheduler::new(&[false, true, false, false], 10, 2);
        assert_eq!(s.remaining(), 3);
        assert_eq!(s.next(0), Next::Piece(0));
        assert_eq!(s.next(1), Next::Piece(2));
        s.release(0, 0);
        assert_eq!(s.next(1), Next::Piece(0));
        assert_eq!(s.next(1), Next::Piece(3));
    }

    /// Pretends piece `i` has been in flight for a long time.
    fn age(s: &Scheduler, i: usize) {
        s.state.lock().started[i] = Instant::now().checked_sub(Duration::from_secs(5));
    }

    #[test]
    fn endgame_waits_before_asking_a_second_copy() {
        let s = Scheduler::new(&[false], 0, 2);
        assert_eq!(s.next(0), Next::Piece(0));
        assert_eq!(s.next(1), Next::Wait);
        age(&s, 0);
        assert_eq!(s.next(1), Next::Piece(0));
    }

    #[test]
    fn endgame_duplicates_across_holders_and_first_copy_wins() {
        let s = Scheduler::new(&[false], 0, 2);
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
        let s = Scheduler::new(&[false, false], 0, 2);
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
