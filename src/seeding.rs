//! Super-seeding offers: which pieces of a complete file this peer would
//! rather upload, so that downloaders ask it for those and fetch the
//! others from each other.
//!
//! Each downloader asking is offered [`OFFER`] pieces among those uploaded
//! the fewest times, skipping those offered to another downloader in the
//! last [`OFFER_TTL`] (as BitTorrent's super-seeding offers each peer a
//! different piece): the seed's upload goes to pieces no one has yet, each
//! once, before any goes out twice. Uploads are counted when a range
//! response of a complete file starts (so pieces in flight count at once).
//! Forgotten for a file after [`QUIET`] without an upload (the next swarm
//! starts afresh); at most [`MAX_FILES`] files are tracked (the one quiet
//! the longest is dropped).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::digest::Sha1Digest;
use crate::protocol::Bitfield;
use crate::wake::Wake;

/// Counts of a file quiet this long are reset.
pub const QUIET: Duration = Duration::from_secs(60);
/// Files tracked at most.
pub const MAX_FILES: usize = 256;
/// Pieces offered to one downloader at a time.
pub const OFFER: usize = 4;
/// An offered piece is not offered to another downloader for this long,
/// unless it is uploaded (or every other candidate is offered too).
pub const OFFER_TTL: Duration = Duration::from_millis(500);

/// The offers of one file: upload counts per piece and what was offered
/// lately. Pure (the time is passed in): the peer keeps one per file in
/// [`UploadCounts`], the simulator one per complete holder.
#[derive(Debug, Clone)]
pub(crate) struct Offers {
    counts: Vec<u32>,
    /// When each piece was last offered and not yet uploaded.
    offered: Vec<Option<Instant>>,
    /// Where the next offer starts looking (ties go round the file).
    cursor: usize,
}

impl Offers {
    /// Nothing uploaded or offered yet, for a file of `pieces` pieces.
    pub fn new(pieces: usize) -> Self {
        Offers {
            counts: vec![0; pieces],
            offered: vec![None; pieces],
            cursor: 0,
        }
    }

    /// Pieces `first..=last` are being uploaded.
    pub fn note(&mut self, first: usize, last: usize) {
        let n = self.counts.len();
        if n == 0 {
            return;
        }
        for i in first..=last.min(n - 1) {
            self.counts[i] = self.counts[i].saturating_add(1);
            self.offered[i] = None;
        }
    }

    /// The pieces offered to one downloader: [`OFFER`] of the least
    /// uploaded, not offered to another one in the last [`OFFER_TTL`] if
    /// others are as little uploaded, ties in file order from where the
    /// last offer ended; marked offered at `now`. One pass over the pieces.
    pub fn offer(&mut self, now: Instant) -> Bitfield {
        let pieces = self.counts.len();
        let mut out = Bitfield::empty(pieces);
        if pieces == 0 {
            return out;
        }
        let cutoff = now.checked_sub(OFFER_TTL);
        // The best OFFER (count, reserved, position from the cursor), sorted.
        let mut best: Vec<(u32, bool, usize)> = Vec::with_capacity(OFFER + 1);
        for k in 0..pieces {
            let i = (self.cursor + k) % pieces;
            let reserved = self.offered[i].is_some_and(|t| cutoff.is_none_or(|c| t > c));
            let key = (self.counts[i], reserved, k);
            if best.len() == OFFER && key >= best[OFFER - 1] {
                continue;
            }
            let at = best.partition_point(|b| *b < key);
            best.insert(at, key);
            best.truncate(OFFER);
        }
        let mut last = 0;
        for &(_, _, k) in &best {
            let i = (self.cursor + k) % pieces;
            out.set(i);
            self.offered[i] = Some(now);
            last = last.max(k);
        }
        self.cursor = (self.cursor + last + 1) % pieces;
        out
    }
}

struct Counts {
    piece_size: u64,
    offers: Offers,
    last: Instant,
}

impl Counts {
    fn new(piece_size: u64, pieces: usize, now: Instant) -> Self {
        Counts {
            piece_size,
            offers: Offers::new(pieces),
            last: now,
        }
    }
}

/// Upload counts per piece, per file.
#[derive(Default)]
pub struct UploadCounts {
    files: Mutex<HashMap<Sha1Digest, Counts>>,
    /// Raised when a file becomes active (see [`UploadCounts::active`]):
    /// the announcer's.
    wake: Option<Arc<Wake>>,
}

impl UploadCounts {
    /// No counts; `wake` is raised whenever a file becomes active.
    pub(crate) fn waking(wake: Arc<Wake>) -> Self {
        UploadCounts {
            wake: Some(wake),
            ..UploadCounts::default()
        }
    }

    /// Bytes `[start, start + len)` of `sha1` (`pieces` pieces of
    /// `piece_size`) are being uploaded.
    pub fn note(&self, sha1: &Sha1Digest, piece_size: u64, pieces: usize, start: u64, len: u64) {
        if piece_size == 0 || len == 0 || pieces == 0 {
            return;
        }
        let now = Instant::now();
        let mut files = self.files.lock();
        let was_active = files
            .get(sha1)
            .is_some_and(|c| now.saturating_duration_since(c.last) < QUIET);
        let c = entry(&mut files, sha1, piece_size, pieces, now);
        c.last = now;
        if let Some((first, last)) =
            crate::protocol::pieces_touching(piece_size, start, start.saturating_add(len))
        {
            c.offers.note(first as usize, last as usize);
        }
        drop(files);
        if !was_active {
            if let Some(w) = &self.wake {
                w.raise();
            }
        }
    }

    /// A lookup found this peer holding `sha1` whole (`HEAD` answered
    /// `200`; `pieces` pieces of `piece_size`): the file is active (see
    /// [`UploadCounts::active`], announced in the tracker) as if a range
    /// went out, no piece counted. A lookup then finds a single seed in
    /// the tracker, where it had to ask every registered peer.
    pub fn asked(&self, sha1: &Sha1Digest, piece_size: u64, pieces: usize) {
        if piece_size == 0 || pieces == 0 {
            return;
        }
        let now = Instant::now();
        let mut files = self.files.lock();
        let was_active = files
            .get(sha1)
            .is_some_and(|c| now.saturating_duration_since(c.last) < QUIET);
        entry(&mut files, sha1, piece_size, pieces, now).last = now;
        drop(files);
        if !was_active {
            if let Some(w) = &self.wake {
                w.raise();
            }
        }
    }

    /// The files with a range uploaded (or found by a lookup, see
    /// [`UploadCounts::asked`]) within the last [`QUIET`]: a swarm
    /// is fetching them (announced in the tracker), the most recent first.
    pub fn active(&self) -> Vec<Sha1Digest> {
        let now = Instant::now();
        let files = self.files.lock();
        let mut active: Vec<(Instant, Sha1Digest)> = files
            .iter()
            .filter(|(_, c)| now.duration_since(c.last) < QUIET)
            .map(|(s, c)| (c.last, *s))
            .collect();
        active.sort_unstable_by(|a, b| b.cmp(a));
        active.into_iter().map(|(_, s)| s).collect()
    }

    /// The pieces of `sha1` (`pieces` pieces of `piece_size`) offered to
    /// one downloader: [`OFFER`] of the least uploaded, not offered to
    /// another one lately if others are as little uploaded; marked offered.
    pub fn offer(&self, sha1: &Sha1Digest, piece_size: u64, pieces: usize) -> Bitfield {
        if piece_size == 0 || pieces == 0 {
            return Bitfield::full(pieces);
        }
        let now = Instant::now();
        let mut files = self.files.lock();
        entry(&mut files, sha1, piece_size, pieces, now)
            .offers
            .offer(now)
    }
}

/// The counts of `sha1`, new (or reset: another piece size, or quiet for
/// [`QUIET`]) as needed; the file quiet the longest makes room.
fn entry<'a>(
    files: &'a mut HashMap<Sha1Digest, Counts>,
    sha1: &Sha1Digest,
    piece_size: u64,
    pieces: usize,
    now: Instant,
) -> &'a mut Counts {
    if !files.contains_key(sha1) && files.len() >= MAX_FILES {
        if let Some(oldest) = files.iter().min_by_key(|(_, c)| c.last).map(|(s, _)| *s) {
            files.remove(&oldest);
        }
    }
    let c = files
        .entry(*sha1)
        .or_insert_with(|| Counts::new(piece_size, pieces, now));
    if c.piece_size != piece_size
        || c.offers.counts.len() != pieces
        || now.saturating_duration_since(c.last) > QUIET
    {
        *c = Counts::new(piece_size, pieces, now);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha() -> Sha1Digest {
        "da39a3ee5e6b4b0d3255bfef95601890afd80709".parse().unwrap()
    }

    #[test]
    fn downloaders_are_offered_different_pieces_until_each_went_out_once() {
        let u = UploadCounts::default();
        let a = u.offer(&sha(), 10, 8);
        let b = u.offer(&sha(), 10, 8);
        assert_eq!((a.count(), b.count()), (OFFER, OFFER));
        assert!(
            (0..8).all(|i| !(a.get(i) && b.get(i))),
            "two offers overlap"
        );
        // Everything is offered now: a third asker still gets pieces.
        assert_eq!(u.offer(&sha(), 10, 8).count(), OFFER);
        // Pieces 0..4 uploaded: the rest (uploaded 0 times) come first.
        for i in 0..4 {
            u.note(&sha(), 10, 8, i * 10, 10);
        }
        let c = u.offer(&sha(), 10, 8);
        assert!((4..8).all(|i| c.get(i)), "{c:?}");
    }

    #[test]
    fn ranges_count_every_piece_they_touch() {
        let u = UploadCounts::default();
        u.note(&sha(), 10, 4, 5, 20); // pieces 0, 1 and 2
        let offer = u.offer(&sha(), 10, 4);
        assert!(offer.get(3), "{offer:?}");
        assert_eq!(u.offer(&sha(), 10, 0).len(), 0);
    }

    /// The announcer is woken when a file's first range goes out (the
    /// peer then seeds a swarm), not at every range.
    #[test]
    fn the_first_upload_of_a_file_wakes_the_announcer() {
        let wake = Arc::new(Wake::new());
        let u = UploadCounts::waking(wake.clone());
        let (a, b) = (Sha1Digest::of(b"a"), Sha1Digest::of(b"b"));
        u.note(&a, 65536, 4, 0, 65536);
        assert!(wake.wait(Duration::ZERO));
        u.note(&a, 65536, 4, 65536, 65536);
        assert!(!wake.wait(Duration::ZERO), "active already");
        u.note(&b, 65536, 4, 0, 65536);
        assert!(wake.wait(Duration::ZERO));
        assert_eq!(u.active().len(), 2);
    }

    /// A lookup's `HEAD` makes the file active (announced) without
    /// counting an upload: offers are unchanged.
    #[test]
    fn a_lookup_finding_the_file_wakes_the_announcer_once() {
        let wake = Arc::new(Wake::new());
        let u = UploadCounts::waking(wake.clone());
        let a = Sha1Digest::of(b"a");
        u.asked(&a, 65536, 4);
        assert!(wake.wait(Duration::ZERO));
        u.asked(&a, 65536, 4);
        assert!(!wake.wait(Duration::ZERO), "active already");
        assert_eq!(u.active(), vec![a]);
        assert_eq!(u.offer(&a, 65536, 4).count(), OFFER, "nothing counted");
    }
}
