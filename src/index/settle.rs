//! Files waiting to settle: seen recently changed, hashed only once their
//! stat has stayed the same for `settle`. Each has a due time (when it was
//! last seen changed, plus `settle`); they are kept ordered by it, so a
//! wake looks only at the files that are due, and the count of files and
//! bytes waiting (and of those the initial scan waits for) is kept as they
//! come and go instead of summed on each wake.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::entry::FileStat;

/// One file waiting to settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// Its stat when last seen changed.
    pub stat: FileStat,
    /// When it is looked at again: hashed if its stat is still `stat`.
    pub due: Instant,
    /// Part of the initial scan: `wait_ready` waits for it.
    pub initial: bool,
}

/// The files waiting to settle, by path and by due time.
#[derive(Debug, Default)]
pub struct Settling {
    files: HashMap<PathBuf, Waiting>,
    by_due: BTreeSet<(Instant, PathBuf)>,
    bytes: u64,
    initial: usize,
}

impl Settling {
    /// Files waiting.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// No file waiting.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes of the files waiting (their sizes when last seen).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a file of the initial scan is still waiting.
    pub fn has_initial(&self) -> bool {
        self.initial > 0
    }

    /// The file waiting at `rel`.
    pub fn get(&self, rel: &Path) -> Option<&Waiting> {
        self.files.get(rel)
    }

    /// The earliest due time.
    pub fn next_due(&self) -> Option<Instant> {
        self.by_due.first().map(|(t, _)| *t)
    }

    /// `rel` waits with `w` (replacing what it waited with).
    pub fn insert(&mut self, rel: PathBuf, w: Waiting) {
        self.remove(&rel);
        self.bytes += w.stat.size;
        self.initial += usize::from(w.initial);
        self.by_due.insert((w.due, rel.clone()));
        self.files.insert(rel, w);
    }

    /// `rel` no longer waits.
    pub fn remove(&mut self, rel: &Path) -> Option<Waiting> {
        let w = self.files.remove(rel)?;
        self.forget(rel, &w);
        Some(w)
    }

    fn forget(&mut self, rel: &Path, w: &Waiting) {
        self.bytes -= w.stat.size;
        self.initial -= usize::from(w.initial);
        self.by_due.remove(&(w.due, rel.to_path_buf()));
    }

    /// Keeps only the files for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        let drop: Vec<PathBuf> = self.files.keys().filter(|p| !keep(p)).cloned().collect();
        for p in drop {
            self.remove(&p);
        }
    }

    /// Takes the files due at `now`, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<(PathBuf, Waiting)> {
        let mut out = Vec::new();
        while let Some((due, _)) = self.by_due.first() {
            if *due > now {
                break;
            }
            let Some((_, rel)) = self.by_due.pop_first() else {
                break;
            };
            if let Some(w) = self.files.remove(&rel) {
                self.bytes -= w.stat.size;
                self.initial -= usize::from(w.initial);
                out.push((rel, w));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stat(size: u64) -> FileStat {
        FileStat {
            size,
            mtime_sec: 1,
            mtime_nsec: 0,
            ino: size,
            dev: 1,
            ctime_ns: 0,
        }
    }

    fn wait(size: u64, due: Instant, initial: bool) -> Waiting {
        Waiting {
            stat: stat(size),
            due,
            initial,
        }
    }

    #[test]
    fn files_come_out_by_due_time_and_only_when_due() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Settling::default();
        s.insert("c".into(), wait(3, t + ms(30), false));
        s.insert("a".into(), wait(1, t + ms(10), true));
        s.insert("b".into(), wait(2, t + ms(20), false));
        assert_eq!(s.next_due(), Some(t + ms(10)));
        assert_eq!((s.len(), s.bytes()), (3, 6));
        assert!(s.has_initial());
        assert!(s.take_due(t).is_empty());
        let due: Vec<PathBuf> = s.take_due(t + ms(20)).into_iter().map(|(p, _)| p).collect();
        assert_eq!(due, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!((s.len(), s.bytes()), (1, 3));
        assert!(!s.has_initial());
        assert_eq!(s.next_due(), Some(t + ms(30)));
    }

    #[test]
    fn a_file_seen_changed_again_moves_to_its_new_due_time() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Settling::default();
        s.insert("a".into(), wait(1, t + ms(10), true));
        s.insert("b".into(), wait(2, t + ms(20), false));
        // "a" grew: it waits again, from later, and is no longer initial.
        s.insert("a".into(), wait(5, t + ms(40), false));
        assert_eq!((s.len(), s.bytes()), (2, 7));
        assert!(!s.has_initial());
        assert_eq!(s.next_due(), Some(t + ms(20)));
        let due: Vec<PathBuf> = s.take_due(t + ms(30)).into_iter().map(|(p, _)| p).collect();
        assert_eq!(due, [PathBuf::from("b")]);
        s.retain(|p| p != Path::new("a"));
        assert!(s.is_empty());
        assert_eq!((s.bytes(), s.next_due()), (0, None));
        assert!(s.take_due(t + ms(100)).is_empty());
    }
}
