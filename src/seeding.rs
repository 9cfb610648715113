//! Super-seeding hints: which pieces of a complete file this peer has
//! uploaded the fewest times lately, so that downloaders ask it for those
//! and fetch the others from each other.
//!
//! Counted when a range response of a complete file starts (so pieces in
//! flight count at once). Forgotten for a file after [`QUIET`] without an
//! upload (the next swarm starts afresh); at most [`MAX_FILES`] files are
//! tracked (the one quiet the longest is dropped).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::protocol::Bitfield;
use crate::Sha1Digest;

/// Counts of a file quiet this long are reset.
pub const QUIET: Duration = Duration::from_secs(60);
/// Files tracked at most.
pub const MAX_FILES: usize = 256;

struct Counts {
    piece_size: u64,
    counts: Vec<u32>,
    last: Instant,
}

/// Upload counts per piece, per file.
#[derive(Default)]
pub struct UploadCounts {
    files: Mutex<HashMap<Sha1Digest, Counts>>,
}

impl UploadCounts {
    /// Bytes `[start, start + len)` of `sha1` (`pieces` pieces of
    /// `piece_size`) are being uploaded.
    pub fn note(&self, sha1: &Sha1Digest, piece_size: u64, pieces: usize, start: u64, len: u64) {
        if piece_size == 0 || len == 0 || pieces == 0 {
            return;
        }
        let now = Instant::now();
        let mut files = self.files.lock();
        if !files.contains_key(sha1) && files.len() >= MAX_FILES {
            if let Some(oldest) = files.iter().min_by_key(|(_, c)| c.last).map(|(s, _)| *s) {
                files.remove(&oldest);
            }
        }
        let c = files.entry(*sha1).or_insert_with(|| Counts {
            piece_size,
            counts: vec![0; pieces],
            last: now,
        });
        if c.piece_size != piece_size || c.counts.len() != pieces || now - c.last > QUIET {
            *c = Counts {
                piece_size,
                counts: vec![0; pieces],
                last: now,
            };
        }
        c.last = now;
        let Some((first, last)) =
            crate::protocol::pieces_touching(piece_size, start, start.saturating_add(len))
        else {
            return;
        };
        let (first, last) = (first as usize, last as usize);
        for n in c.counts.iter_mut().take(last.saturating_add(1)).skip(first) {
            *n = n.saturating_add(1);
        }
    }

    /// The pieces of `sha1` uploaded the fewest times lately (all of them
    /// for a file not tracked), given `pieces`. Relative, not "never": a
    /// seed that uploaded everything once stays useful for the next round.
    pub fn fresh(&self, sha1: &Sha1Digest, pieces: usize) -> Bitfield {
        let files = self.files.lock();
        match files
            .get(sha1)
            .filter(|c| c.last.elapsed() <= QUIET && c.counts.len() == pieces)
        {
            Some(c) => {
                let min = c.counts.iter().copied().min().unwrap_or(0);
                Bitfield::from_flags(&c.counts.iter().map(|n| *n == min).collect::<Vec<_>>())
            }
            None => Bitfield::full(pieces),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_uploaded_pieces_are_fresh() {
        let u = UploadCounts::default();
        let sha: Sha1Digest = "da39a3ee5e6b4b0d3255bfef95601890afd80709".parse().unwrap();
        assert!(u.fresh(&sha, 4).is_full());
        u.note(&sha, 10, 4, 0, 10);
        u.note(&sha, 10, 4, 15, 10); // pieces 1 and 2
        let f = u.fresh(&sha, 4);
        assert_eq!(
            (f.get(0), f.get(1), f.get(2), f.get(3)),
            (false, false, false, true)
        );
        u.note(&sha, 10, 4, 30, 10);
        assert_eq!(u.fresh(&sha, 4).count(), 4, "every piece went out once");
    }
}
