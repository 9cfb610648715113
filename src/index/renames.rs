//! Hashes of recently removed files, by device and inode, kept a minute so
//! a rename is not read again: a rename's two paths arrive in one batch of
//! events, or one rescan, where removals are applied first. (No table of
//! every indexed file's inode: at 100,000 files it cost more memory than it
//! saved work.)

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::entry::{FileStat, Hashed};

/// How long hashes of a removed file are kept for a rename to reuse.
const KEEP_REMOVED: Duration = Duration::from_secs(60);

struct Removed {
    stat: FileStat,
    /// The path it was removed from (`None`: a landed download, known by
    /// its exact stat).
    path: Option<Box<Path>>,
    hashed: Arc<Hashed>,
    at: Instant,
}

/// Removed files' hashes, and the order they expire in.
#[derive(Default)]
pub struct Renames {
    by_inode: HashMap<(u64, u64), Removed>,
    /// (removed at, key), oldest first; a key removed again or reused
    /// meanwhile leaves a stale entry, skipped when it expires.
    order: VecDeque<(Instant, (u64, u64))>,
}

impl Renames {
    /// A file with `stat` and `hashed` was removed from `path` (`None`: a
    /// landed download's) at `now`.
    pub fn remember(
        &mut self,
        stat: FileStat,
        path: Option<&Path>,
        hashed: Arc<Hashed>,
        now: Instant,
    ) {
        let key = (stat.dev, stat.ino);
        self.by_inode.insert(
            key,
            Removed {
                stat,
                path: path.map(Box::from),
                hashed,
                at: now,
            },
        );
        self.order.push_back((now, key));
    }

    /// Hashes known without reading for `rel`: a recently removed file
    /// with the same stat, or with the same device, inode, size and mtime
    /// found under another path (a rename, which moved its ctime). The
    /// same path back with another ctime is an in-place edit whose mtime
    /// was put back: read again.
    pub fn reuse(&self, stat: &FileStat, rel: &Path) -> Option<Arc<Hashed>> {
        let r = self.by_inode.get(&(stat.dev, stat.ino))?;
        let same = r.stat == *stat
            || (r.stat.same_moved_key(stat)
                && r.stat.dev == stat.dev
                && r.path.as_deref().is_some_and(|p| p != rel));
        same.then(|| r.hashed.clone())
    }

    /// A file with `stat` is indexed again: its inode is no removed file's.
    pub fn forget(&mut self, stat: &FileStat) {
        if !self.by_inode.is_empty() {
            self.by_inode.remove(&(stat.dev, stat.ino));
        }
    }

    /// Drops what was removed `KEEP_REMOVED` or longer before `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if now.duration_since(at) < KEEP_REMOVED {
                break;
            }
            self.order.pop_front();
            if self.by_inode.get(&key).is_some_and(|r| r.at == at) {
                self.by_inode.remove(&key);
            }
        }
        if self.by_inode.is_empty() {
            self.order.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::digest::Sha1Digest;

    use super::*;

    fn stat(ino: u64) -> FileStat {
        FileStat {
            size: 3,
            mtime_sec: 1,
            mtime_nsec: 0,
            ino,
            dev: 1,
            ctime_ns: 0,
        }
    }

    fn hashed() -> Arc<Hashed> {
        Arc::new(Hashed {
            sha1: Sha1Digest::of(b"abc"),
            size: 3,
            chain: vec![],
        })
    }

    #[test]
    fn a_removed_file_is_reused_until_it_expires_or_is_indexed_again() {
        let t = Instant::now();
        let (a, b) = (Path::new("a"), Path::new("b"));
        let mut r = Renames::default();
        r.remember(stat(1), Some(a), hashed(), t);
        r.remember(stat(2), Some(a), hashed(), t + Duration::from_secs(30));
        assert!(r.reuse(&stat(1), b).is_some());
        assert!(r.reuse(&stat(1), a).is_some(), "back unchanged");
        let mut touched = stat(1);
        touched.mtime_sec = 2;
        assert!(r.reuse(&touched, b).is_none(), "changed since");
        // Only the ctime moved: a rename under another path; under the
        // same path, an edit whose mtime was put back.
        let mut moved = stat(1);
        moved.ctime_ns = 5;
        assert!(r.reuse(&moved, b).is_some(), "renamed");
        assert!(r.reuse(&moved, a).is_none(), "edited in place");
        r.expire(t + KEEP_REMOVED);
        assert!(r.reuse(&stat(1), b).is_none(), "expired");
        assert!(r.reuse(&stat(2), b).is_some(), "not yet");
        r.forget(&stat(2));
        assert!(r.reuse(&stat(2), b).is_none(), "indexed again");
        // Removed again later: the first, stale expiry leaves it alone.
        r.remember(stat(3), Some(a), hashed(), t);
        r.remember(stat(3), Some(a), hashed(), t + Duration::from_secs(50));
        r.expire(t + KEEP_REMOVED);
        assert!(r.reuse(&stat(3), b).is_some());
        // A landed download is known by its exact stat only.
        r.remember(stat(4), None, hashed(), t);
        assert!(r.reuse(&moved_ino(4), b).is_none());
        assert!(r.reuse(&stat(4), b).is_some());
    }

    fn moved_ino(ino: u64) -> FileStat {
        FileStat {
            ctime_ns: 9,
            ..stat(ino)
        }
    }
}
