//! The in-memory index: sha1 -> entry and path -> sha1, and the generation.
//!
//! This is the data behind the index's one `RwLock`. Every mutation goes
//! through a [`Delta`] that is committed once per batch: the generation goes
//! up by one and one [`IndexEvent`](super::IndexEvent) describes the batch.
//! Nothing here does I/O.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::entry::{FileStat, Hashed, IndexedFile};
use super::IndexEvent;
use crate::Sha1Digest;

/// The maps. Invariant: every path in `by_path` appears in exactly one entry
/// of `by_sha1` (the one it names), with the same stat, and every entry has
/// at least one path.
#[derive(Debug, Default)]
pub struct Store {
    /// Current generation.
    pub generation: u64,
    /// Entries by content hash.
    pub by_sha1: HashMap<Sha1Digest, Arc<IndexedFile>>,
    /// Content hash and stat by relative path.
    pub by_path: HashMap<PathBuf, (Sha1Digest, FileStat)>,
}

/// Changes made in one batch: for each touched sha1, whether it was present before.
#[derive(Debug, Default)]
pub struct Delta {
    before: HashMap<Sha1Digest, bool>,
    /// Contents added by [`Store::load`], absent before.
    fresh: Vec<Sha1Digest>,
}

impl Delta {
    /// True if nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.fresh.is_empty()
    }
}

impl Store {
    fn touch(&self, delta: &mut Delta, sha1: Sha1Digest) {
        let present = self.by_sha1.contains_key(&sha1);
        delta.before.entry(sha1).or_insert(present);
    }

    /// Adds (or moves) `rel` to the content `hashed`.
    pub fn insert(&mut self, rel: &Path, stat: FileStat, hashed: &Hashed, delta: &mut Delta) {
        if let Some((old, old_stat)) = self.by_path.get(rel) {
            if *old == hashed.sha1 && *old_stat == stat {
                return;
            }
            self.remove(rel, delta);
        }
        self.touch(delta, hashed.sha1);
        let mut locations: Vec<(PathBuf, FileStat)> = match self.by_sha1.get(&hashed.sha1) {
            Some(e) => e.locations().map(|(p, s)| (p.to_path_buf(), *s)).collect(),
            None => Vec::new(),
        };
        locations.push((rel.to_path_buf(), stat));
        // Keep the existing hashes when the content is already known.
        let entry = match self.by_sha1.get(&hashed.sha1) {
            Some(e) => IndexedFile::new(&e.hashed(), locations),
            None => IndexedFile::new(hashed, locations),
        };
        self.by_sha1.insert(hashed.sha1, Arc::new(entry));
        self.by_path.insert(rel.to_path_buf(), (hashed.sha1, stat));
    }

    /// Room for `n` more paths and contents (a cache about to be loaded).
    pub fn reserve(&mut self, n: usize) {
        self.by_path.reserve(n);
        self.by_sha1.reserve(n);
    }

    /// Adds one cache record at start (before the first scan): cheaper than
    /// [`insert`](Store::insert) for a content not yet present, whose entry
    /// is built once and noted in `delta` without a lookup table. A path
    /// already present is left alone.
    pub fn load(&mut self, rel: PathBuf, stat: FileStat, hashed: Hashed, delta: &mut Delta) {
        use std::collections::hash_map::Entry;
        let sha1 = hashed.sha1;
        let by_sha1 = match self.by_sha1.entry(sha1) {
            Entry::Occupied(_) => {
                if !self.by_path.contains_key(&rel) {
                    self.insert(&rel, stat, &hashed, delta);
                }
                return;
            }
            Entry::Vacant(v) => v,
        };
        // One hash of the path (the key goes in only if it is new).
        match self.by_path.entry(rel) {
            Entry::Occupied(_) => {}
            Entry::Vacant(v) => {
                if !delta.before.contains_key(&sha1) {
                    delta.fresh.push(sha1);
                }
                let rel = v.key().clone();
                v.insert((sha1, stat));
                by_sha1.insert(Arc::new(IndexedFile::from_hashed(
                    hashed,
                    vec![(rel, stat)],
                )));
            }
        }
    }

    /// Removes `rel`; returns what it held.
    pub fn remove(
        &mut self,
        rel: &Path,
        delta: &mut Delta,
    ) -> Option<(FileStat, Arc<IndexedFile>)> {
        let (sha1, stat) = self.by_path.remove(rel)?;
        self.touch(delta, sha1);
        let entry = self.by_sha1.remove(&sha1)?;
        let rest: Vec<(PathBuf, FileStat)> = entry
            .locations()
            .filter(|(p, _)| *p != rel)
            .map(|(p, s)| (p.to_path_buf(), *s))
            .collect();
        if !rest.is_empty() {
            self.by_sha1
                .insert(sha1, Arc::new(IndexedFile::new(&entry.hashed(), rest)));
        }
        Some((stat, entry))
    }

    /// Ends a batch: bumps the generation and describes the batch, if anything changed.
    pub fn commit(&mut self, delta: Delta) -> Option<IndexEvent> {
        if delta.is_empty() {
            return None;
        }
        self.generation += 1;
        let mut ev = IndexEvent {
            generation: self.generation,
            added: Vec::new(),
            removed: Vec::new(),
            updated: Vec::new(),
        };
        for sha1 in delta.fresh {
            if !delta.before.contains_key(&sha1) && self.by_sha1.contains_key(&sha1) {
                ev.added.push(sha1);
            }
        }
        for (sha1, was) in delta.before {
            match (was, self.by_sha1.contains_key(&sha1)) {
                (false, true) => ev.added.push(sha1),
                (true, false) => ev.removed.push(sha1),
                (true, true) => ev.updated.push(sha1),
                (false, false) => {}
            }
        }
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(ino: u64) -> FileStat {
        FileStat {
            size: 1,
            mtime_sec: 1,
            mtime_nsec: 0,
            ino,
            dev: 1,
        }
    }

    fn h(data: &[u8]) -> Hashed {
        Hashed {
            sha1: Sha1Digest::of(data),
            size: data.len() as u64,
            piece_size: 4,
            pieces: vec![Sha1Digest::of(data)],
        }
    }

    #[test]
    fn same_content_two_paths_is_one_entry() {
        let mut s = Store::default();
        let mut d = Delta::default();
        s.insert(Path::new("b"), st(1), &h(b"x"), &mut d);
        s.insert(Path::new("a"), st(2), &h(b"x"), &mut d);
        let ev = s.commit(d).unwrap();
        assert_eq!(ev.added, vec![Sha1Digest::of(b"x")]);
        assert_eq!(s.by_sha1.len(), 1);
        let e = &s.by_sha1[&Sha1Digest::of(b"x")];
        assert_eq!(e.paths, [PathBuf::from("a"), PathBuf::from("b")]);

        let mut d = Delta::default();
        s.remove(Path::new("a"), &mut d);
        let ev = s.commit(d).unwrap();
        assert_eq!(ev.updated, vec![Sha1Digest::of(b"x")]);
        assert_eq!(ev.generation, 2);
        let mut d = Delta::default();
        s.insert(Path::new("b"), st(1), &h(b"y"), &mut d);
        let ev = s.commit(d).unwrap();
        assert_eq!(ev.removed, vec![Sha1Digest::of(b"x")]);
        assert_eq!(ev.added, vec![Sha1Digest::of(b"y")]);
        assert!(s.commit(Delta::default()).is_none());
    }
}
