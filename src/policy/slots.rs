//! Upload slots: a holder serves pieces to at most a few downloads at once,
//! so a seed's uplink is split `regular + optimistic` ways and not forty,
//! each piece it sends arrives soon, and the others learn at once to come
//! back later (or to ask the holders that have what they need).
//!
//! BitTorrent's choking without tit-for-tat (peers on a LAN cooperate):
//! every [`SlotConfig::rechoke`] the regular slots go to the downloads this
//! holder served the most bytes in the last term (the fast ones keep them:
//! a slot held by a slow host wastes the uplink), and the optimistic slot
//! to the download that has waited longest (so nobody starves, and a new or
//! slow download gets its turn). A slot whose download asked nothing for
//! [`SlotConfig::idle`] (and has no answer in progress) is free again, and
//! goes to the next download that asks. A download turned away is told
//! when the next rechoke is, and whether it is next in line then
//! (`Admit::Busy { retry_after, next }`).
//!
//! `K` names a download as the server sees it (a client host); the caller
//! keeps one `UploadSlots` per uplink behind its own lock and passes the
//! time. Memory: at most `regular + optimistic` holders and
//! [`SlotConfig::max_waiting`] waiting downloads.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How many slots, and how they rotate.
#[derive(Debug, Clone)]
pub(crate) struct SlotConfig {
    /// Slots kept by the fastest downloads from one rechoke to the next.
    pub regular: usize,
    /// Slots that go round the waiting downloads, longest wait first.
    pub optimistic: usize,
    /// How often the slots are given out again.
    pub rechoke: Duration,
    /// A slot whose download asked nothing for this long (with no answer
    /// in progress) is free.
    pub idle: Duration,
    /// A slot given at a rechoke to a waiting download that has not asked
    /// since is free after this long (the download went elsewhere).
    pub grant: Duration,
    /// A slot is free after this long without a request even if answers
    /// seem in progress (a caller that lost count cannot block it for ever).
    pub stale: Duration,
    /// Waiting downloads remembered at most (the one that asked least
    /// lately is forgotten). 64: one slot rotates a term, so the 64th
    /// waits 16 s for it anyway, and a new waiter at a full list costs a
    /// scan of it (1,024 made a seed of 10,000 downloads the simulator's
    /// hot spot; at 1,000 hosts 64 did as well, and the seed uploaded
    /// 1.55 files with 10 % slow hosts instead of 1.83).
    pub max_waiting: usize,
}

impl Default for SlotConfig {
    /// 4 + 1 slots, given out again every 250 ms; a slot given at a
    /// rotation to a download that does not come for it is free after
    /// 120 ms (its holder tells the one next in line, which waits for
    /// it). In the simulator (1,000 hosts, 16 MiB in 64 KiB pieces,
    /// 25 Mbit/s, 8 connections per download) 4 + 1 slots put the last
    /// host at 2.05x one host alone (about 2,500 turn-aways per
    /// download); 7 + 1 at 1.43x, which the lab did not confirm (32 and
    /// 47 hosts: docs/benchmarks.md); 4 + 1 with the 120 ms lapse and the
    /// wait when next in line (and holders found within 50 ms) at 1.70x,
    /// with a 300 ms lapse 1.85x.
    fn default() -> Self {
        SlotConfig {
            regular: 4,
            optimistic: 1,
            rechoke: Duration::from_millis(250),
            idle: Duration::from_millis(300),
            grant: Duration::from_millis(120),
            stale: Duration::from_secs(30),
            max_waiting: 64,
        }
    }
}

/// The answer to a download that asks for a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// It holds a slot: serve it.
    Serve,
    /// Every slot is taken: ask again after `retry_after` (when the slots
    /// are given out again), or ask another holder meanwhile.
    Busy {
        /// Time until the next rechoke.
        retry_after: Duration,
        /// This download has waited longest (or among the
        /// [`SlotConfig::optimistic`] longest): asking again at the
        /// rechoke, it gets a slot then. Worth waiting for, where another
        /// turned away had better ask elsewhere meanwhile.
        next: bool,
    },
}

#[derive(Debug)]
struct Holder {
    /// Last request or answer end.
    last: Instant,
    /// Answers started and not yet finished.
    in_flight: u32,
    /// Bytes served since the last rechoke.
    bytes: u64,
    /// Order of arrival (ties between equal rates).
    seq: u64,
    /// Given at a rechoke and not asked for since.
    granted: bool,
}

impl Holder {
    /// True if it holds its slot for nothing at `now`: no answer in
    /// progress, and quiet for the grant time (a slot given at a rechoke)
    /// or the idle time.
    fn unused(&self, now: Instant, cfg: &SlotConfig) -> bool {
        let quiet = now.saturating_duration_since(self.last);
        let lapse = if self.granted { cfg.grant } else { cfg.idle };
        self.in_flight == 0 && quiet >= lapse
    }

    /// True if its slot is free again at `now`: unused, or silent past
    /// [`SlotConfig::stale`] (an answer whose end was never told).
    fn lapsed(&self, now: Instant, cfg: &SlotConfig) -> bool {
        self.unused(now, cfg) || now.saturating_duration_since(self.last) >= cfg.stale
    }
}

#[derive(Debug)]
struct Waiter {
    /// First turned away (since it last held a slot).
    since: Instant,
    last: Instant,
    /// Order of arrival (ties between equal waits).
    seq: u64,
}

/// The upload slots of one holder.
#[derive(Debug)]
pub(crate) struct UploadSlots<K> {
    cfg: SlotConfig,
    holders: HashMap<K, Holder>,
    waiting: HashMap<K, Waiter>,
    /// The waiters the next rechoke serves first ([`UploadSlots::is_next`]),
    /// computed again only when `front_stale` (a waiter left, or few wait):
    /// a new waiter is the youngest, so it changes nothing. Scanning every
    /// waiter on every turn-away cost a busy seed (1,024 waiting, then) most of
    /// its time in the simulator at 10,000 hosts.
    front: Vec<K>,
    front_stale: bool,
    /// When silent waiters are next forgotten (every half term, not on
    /// every request).
    next_sweep: Option<Instant>,
    next_rechoke: Option<Instant>,
    seq: u64,
}

impl<K: Hash + Eq + Clone> UploadSlots<K> {
    /// No slot given yet.
    pub fn new(cfg: SlotConfig) -> Self {
        UploadSlots {
            cfg,
            holders: HashMap::new(),
            waiting: HashMap::new(),
            front: Vec::new(),
            front_stale: false,
            next_sweep: None,
            next_rechoke: None,
            seq: 0,
        }
    }

    fn capacity(&self) -> usize {
        (self.cfg.regular + self.cfg.optimistic).max(1)
    }

    /// `who` asks for a piece: serve it (then call [`UploadSlots::finished`]
    /// when the answer ends) or turn it away.
    pub fn admit(&mut self, who: &K, now: Instant) -> Admit {
        self.tick(now);
        if let Some(h) = self.holders.get_mut(who) {
            h.last = now;
            h.in_flight = h.in_flight.saturating_add(1);
            h.granted = false;
            return Admit::Serve;
        }
        if self.holders.len() < self.capacity() {
            if self.waiting.remove(who).is_some() {
                self.front_stale = true;
            }
            let seq = self.next_seq();
            self.holders.insert(
                who.clone(),
                Holder {
                    last: now,
                    in_flight: 1,
                    bytes: 0,
                    seq,
                    granted: false,
                },
            );
            return Admit::Serve;
        }
        self.wait(who, now);
        let at = self.next_rechoke.unwrap_or(now);
        Admit::Busy {
            retry_after: at.saturating_duration_since(now),
            next: self.is_next(who),
        }
    }

    /// An answer to `who` that [`UploadSlots::admit`] let through ended
    /// (sent whole or not), after `bytes`.
    pub fn finished(&mut self, who: &K, bytes: u64, now: Instant) {
        if let Some(h) = self.holders.get_mut(who) {
            h.in_flight = h.in_flight.saturating_sub(1);
            h.bytes = h.bytes.saturating_add(bytes);
            h.last = now;
        }
    }

    /// `who` closed its last connection (it left this holder, or its
    /// download ended): a slot it holds with no answer in progress is
    /// free at once (not after [`SlotConfig::idle`]), and it no longer
    /// waits. True if a slot was freed. The simulator's `SIM_RELEASE`
    /// (a worker that rotates away closes its connection): not the
    /// code, the lab did not confirm it (docs/benchmarks.md).
    #[cfg(test)]
    pub fn left(&mut self, who: &K) -> bool {
        if self.waiting.remove(who).is_some() {
            self.front_stale = true;
        }
        self.idle(who)
    }

    /// `who` asks this (partial) holder's bitmap instead of a piece: a
    /// slot it holds with no answer in progress is free at once, not
    /// after [`SlotConfig::idle`] (it has nothing to ask here now; it
    /// asks again for a slot when the bitmap shows something). True if a
    /// slot was freed. In the simulator (1,000 hosts) a holder's 5 slots
    /// were all held 90 % of the time while 3.9 answers were in progress
    /// on average: about one slot in five held by a download that had
    /// nothing to ask there (it had left, or was waiting for a piece),
    /// while others were turned away.
    pub fn idle(&mut self, who: &K) -> bool {
        if self.holders.get(who).is_some_and(|h| h.in_flight == 0) {
            self.holders.remove(who);
            return true;
        }
        false
    }

    /// Downloads holding a slot.
    #[cfg(test)]
    pub fn busy(&self) -> usize {
        self.holders.len()
    }

    /// Downloads holding a slot at `now` (those whose slot lapsed by
    /// then not counted).
    #[cfg(test)]
    pub fn busy_at(&self, now: Instant) -> usize {
        self.holders
            .values()
            .filter(|h| !h.lapsed(now, &self.cfg))
            .count()
    }

    /// The downloads holding a slot at `now` and receiving nothing
    /// (no answer in progress), with whether it was granted at a rechoke.
    #[cfg(test)]
    pub fn quiet_at(&self, now: Instant) -> Vec<(K, bool)> {
        self.holders
            .iter()
            .filter(|(_, h)| h.in_flight == 0 && !h.unused(now, &self.cfg))
            .map(|(k, h)| (k.clone(), h.granted))
            .collect()
    }

    /// Downloads turned away and still remembered.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// True if `who` holds a slot now.
    #[cfg(test)]
    pub fn holds(&self, who: &K) -> bool {
        self.holders.contains_key(who)
    }

    /// True if `who` (waiting) is among the waiters the next rechoke
    /// serves first: the [`SlotConfig::optimistic`] longest waiting (at
    /// least one).
    fn is_next(&mut self, who: &K) -> bool {
        if !self.waiting.contains_key(who) {
            return false;
        }
        if self.front_stale {
            let mut all: Vec<(Instant, u64, &K)> = self
                .waiting
                .iter()
                .map(|(k, w)| (w.since, w.seq, k))
                .collect();
            let k = self.cfg.optimistic.max(1);
            if all.len() > k {
                all.select_nth_unstable_by_key(k - 1, |&(since, seq, _)| (since, seq));
                all.truncate(k);
            }
            self.front = all.into_iter().map(|(_, _, k)| k.clone()).collect();
            self.front_stale = false;
        }
        self.front.contains(who)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn wait(&mut self, who: &K, now: Instant) {
        if let Some(w) = self.waiting.get_mut(who) {
            w.last = now;
            return;
        }
        if self.waiting.len() >= self.cfg.max_waiting.max(1) {
            let quietest = self
                .waiting
                .iter()
                .min_by_key(|(_, w)| (w.last, w.seq))
                .map(|(k, _)| k.clone());
            if let Some(k) = quietest {
                self.waiting.remove(&k);
                self.front_stale = true;
            }
        }
        if self.waiting.len() < self.cfg.optimistic.max(1) {
            self.front_stale = true;
        }
        let seq = self.next_seq();
        self.waiting.insert(
            who.clone(),
            Waiter {
                since: now,
                last: now,
                seq,
            },
        );
    }

    /// Frees idle slots, forgets downloads that stopped asking, and gives
    /// the slots out again when a term is over.
    fn tick(&mut self, now: Instant) {
        let cfg = &self.cfg;
        self.holders.retain(|_, h| !h.lapsed(now, cfg));
        // A download told to come back at the next rechoke does so within
        // a term; one silent for two terms went elsewhere or finished.
        // Looked for every half term, and before every rechoke.
        let rechoke_due = self.next_rechoke.is_some_and(|t| now >= t);
        if rechoke_due || self.next_sweep.is_none_or(|t| now >= t) {
            self.next_sweep = Some(now + self.cfg.rechoke / 2);
            let forget = self.cfg.rechoke.saturating_mul(2).max(self.cfg.idle);
            let before = self.waiting.len();
            self.waiting
                .retain(|_, w| now.saturating_duration_since(w.last) < forget);
            if self.waiting.len() != before {
                self.front_stale = true;
            }
        }
        match self.next_rechoke {
            None => self.next_rechoke = Some(now + self.cfg.rechoke),
            Some(t) if now >= t => self.rechoke(now),
            Some(_) => {}
        }
    }

    fn rechoke(&mut self, now: Instant) {
        self.next_rechoke = Some(now + self.cfg.rechoke);
        self.front_stale = true;
        if self.waiting.is_empty() {
            for h in self.holders.values_mut() {
                h.bytes = 0;
            }
            return;
        }
        // Regular slots: the holders served the most bytes this term.
        let mut ranked: Vec<(K, u64, u64)> = self
            .holders
            .iter()
            .map(|(k, h)| (k.clone(), h.bytes, h.seq))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        let keep = self.cfg.regular.min(self.capacity().saturating_sub(1));
        for (k, _, _) in ranked.into_iter().skip(keep) {
            if self.holders.remove(&k).is_some() {
                let seq = self.next_seq();
                self.waiting.insert(
                    k,
                    Waiter {
                        since: now,
                        last: now,
                        seq,
                    },
                );
            }
        }
        for h in self.holders.values_mut() {
            h.bytes = 0;
        }
        // The rest, longest wait first: the optimistic slot(s), and any
        // regular slot no fast download kept. Granted now; the download
        // has `grant` to come and use it.
        while self.holders.len() < self.capacity() {
            let Some(k) = self
                .waiting
                .iter()
                .min_by_key(|(_, w)| (w.since, w.seq))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.waiting.remove(&k);
            let seq = self.next_seq();
            self.holders.insert(
                k,
                Holder {
                    last: now,
                    in_flight: 0,
                    bytes: 0,
                    seq,
                    granted: true,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(regular: usize, optimistic: usize) -> SlotConfig {
        SlotConfig {
            regular,
            optimistic,
            rechoke: Duration::from_secs(1),
            idle: Duration::from_millis(300),
            grant: Duration::from_millis(300),
            stale: Duration::from_secs(30),
            max_waiting: 8,
        }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_slot_after_the_last_is_turned_away_at_once_until_the_next_rechoke() {
        let t0 = Instant::now();
        let mut s = UploadSlots::new(cfg(2, 1));
        for who in 0..3 {
            assert_eq!(s.admit(&who, t0), Admit::Serve);
        }
        assert_eq!(
            s.admit(&3, ms(t0, 200)),
            Admit::Busy {
                retry_after: Duration::from_millis(800),
                next: true,
            }
        );
        // A later one is not next in line.
        assert_eq!(
            s.admit(&4, ms(t0, 300)),
            Admit::Busy {
                retry_after: Duration::from_millis(700),
                next: false,
            }
        );
        assert_eq!(s.busy(), 3);
        assert_eq!(s.waiting(), 2);
        // A holder asks again while its answer is in progress: still served.
        assert_eq!(s.admit(&0, ms(t0, 250)), Admit::Serve);
    }

    #[test]
    fn the_fastest_keep_their_slots_and_the_longest_waiter_gets_the_optimistic_one() {
        let t0 = Instant::now();
        let mut s = UploadSlots::new(cfg(2, 1));
        for who in 0..3 {
            assert_eq!(s.admit(&who, t0), Admit::Serve);
        }
        s.finished(&0, 300, ms(t0, 100));
        s.finished(&1, 100, ms(t0, 100));
        s.finished(&2, 200, ms(t0, 100));
        for who in [0, 1, 2] {
            assert_eq!(s.admit(&who, ms(t0, 150)), Admit::Serve);
        }
        assert!(matches!(s.admit(&7, ms(t0, 200)), Admit::Busy { .. }));
        assert!(matches!(s.admit(&8, ms(t0, 300)), Admit::Busy { .. }));
        // Rechoke: 0 and 2 served most; 7 waited longest.
        assert_eq!(s.admit(&7, ms(t0, 1000)), Admit::Serve);
        assert!(s.holds(&0) && s.holds(&2) && !s.holds(&1));
        assert!(matches!(s.admit(&1, ms(t0, 1000)), Admit::Busy { .. }));
        assert!(matches!(s.admit(&8, ms(t0, 1000)), Admit::Busy { .. }));
    }

    #[test]
    fn nobody_starves_behind_downloads_that_keep_asking() {
        let t0 = Instant::now();
        let mut s = UploadSlots::new(cfg(1, 1));
        let mut served = [0u32; 6];
        for tick in 0..60u64 {
            let now = ms(t0, tick * 100);
            for (who, count) in served.iter_mut().enumerate() {
                if s.admit(&who, now) == Admit::Serve {
                    *count += 1;
                    s.finished(&who, if who == 0 { 1000 } else { 10 }, now);
                }
            }
        }
        assert!(served.iter().all(|&n| n > 0), "{served:?}");
        // The fast one keeps its regular slot.
        assert!(served[0] >= 55, "{served:?}");
    }

    #[test]
    fn an_idle_slot_is_free_but_not_while_an_answer_is_in_progress() {
        let t0 = Instant::now();
        let mut s = UploadSlots::new(cfg(1, 0));
        assert_eq!(s.admit(&1, t0), Admit::Serve);
        // A long answer: the slot stays taken.
        assert!(matches!(s.admit(&2, ms(t0, 500)), Admit::Busy { .. }));
        s.finished(&1, 10, ms(t0, 600));
        assert!(matches!(s.admit(&2, ms(t0, 700)), Admit::Busy { .. }));
        // 300 ms after its answer ended without a new request: free.
        assert_eq!(s.admit(&2, ms(t0, 900)), Admit::Serve);
        // A lost count does not hold it for ever.
        assert!(matches!(s.admit(&3, ms(t0, 950)), Admit::Busy { .. }));
        assert_eq!(s.admit(&3, ms(t0, 31_000)), Admit::Serve);
    }

    #[test]
    fn a_download_with_nothing_to_ask_gives_its_slot_back_but_not_during_an_answer() {
        let t0 = Instant::now();
        let mut s = UploadSlots::new(cfg(1, 0));
        assert_eq!(s.admit(&1, t0), Admit::Serve);
        assert!(matches!(s.admit(&2, ms(t0, 10)), Admit::Busy { .. }));
        // 1 asks the bitmap while its answer is still going: it keeps the
        // slot.
        assert!(!s.idle(&1));
        s.finished(&1, 10, ms(t0, 20));
        // With nothing in progress the slot is free at once (2's), not
        // after `idle`; 1 asks again later like any other.
        assert!(s.idle(&1));
        assert_eq!(s.admit(&2, ms(t0, 30)), Admit::Serve);
        assert!(matches!(s.admit(&1, ms(t0, 40)), Admit::Busy { .. }));
        // Waiting is not holding: nothing to free.
        assert!(!s.idle(&1));
        assert_eq!(s.waiting(), 1);
    }

    #[test]
    fn a_download_that_left_frees_its_slot_at_once_but_not_during_an_answer() {
        let t0 = Instant::now();
        let mut s = UploadSlots::new(cfg(1, 0));
        assert_eq!(s.admit(&1, t0), Admit::Serve);
        assert!(matches!(s.admit(&2, ms(t0, 10)), Admit::Busy { .. }));
        // 1 closes its connection while its answer is still going: the
        // slot stays until the answer ends.
        assert!(!s.left(&1));
        assert!(s.holds(&1));
        s.finished(&1, 10, ms(t0, 20));
        // Then it leaves: the slot is 2's at once, long before `idle`.
        assert!(s.left(&1));
        assert_eq!(s.admit(&2, ms(t0, 30)), Admit::Serve);
        // A waiter that leaves waits no more.
        assert!(matches!(s.admit(&3, ms(t0, 40)), Admit::Busy { .. }));
        assert_eq!(s.waiting(), 1);
        assert!(!s.left(&3));
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn a_slot_given_at_a_rechoke_and_not_taken_is_free_after_the_grant_time() {
        let t0 = Instant::now();
        let mut s = UploadSlots::new(SlotConfig {
            grant: Duration::from_millis(100),
            ..cfg(0, 1)
        });
        assert_eq!(s.admit(&1, t0), Admit::Serve);
        s.finished(&1, 10, ms(t0, 10));
        // 2 waits, next in line; 3 after it is not.
        assert!(matches!(
            s.admit(&2, ms(t0, 20)),
            Admit::Busy { next: true, .. }
        ));
        assert!(matches!(s.admit(&1, ms(t0, 30)), Admit::Serve));
        s.finished(&1, 10, ms(t0, 40));
        assert!(matches!(
            s.admit(&3, ms(t0, 50)),
            Admit::Busy { next: false, .. }
        ));
        // The rechoke gives the slot to 2, which went elsewhere: 3 keeps
        // asking and gets it once the grant lapsed, not after `idle`.
        assert!(matches!(s.admit(&3, ms(t0, 1000)), Admit::Busy { .. }));
        assert!(s.holds(&2));
        assert_eq!(s.admit(&3, ms(t0, 1100)), Admit::Serve);
    }

    #[test]
    fn waiting_downloads_are_bounded() {
        let t0 = Instant::now();
        let mut s = UploadSlots::new(cfg(1, 0));
        assert_eq!(s.admit(&0, t0), Admit::Serve);
        for who in 1..100 {
            assert!(matches!(s.admit(&who, ms(t0, who)), Admit::Busy { .. }));
        }
        assert_eq!(s.waiting(), 8);
        assert_eq!(s.busy(), 1);
    }
}
