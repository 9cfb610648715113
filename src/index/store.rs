//! The in-memory index: sha1 -> entry and path -> sha1, and the generation.
//!
//! This is the data behind the index's one `RwLock`. Every mutation goes
//! through a [`Delta`] that is committed once per batch: the generation goes
//! up by one and one [`IndexEvent`](super::IndexEvent) describes the batch.
//! Nothing here does I/O.

use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use super::entry::{FileStat, Hashed, IndexedFile, Location};
use super::IndexEvent;
use crate::digest::Sha1Digest;

/// One path of the index: the entry holding it and its place in the
/// entry's locations. The path and its stat are the entry's: nothing is
/// stored twice.
#[derive(Debug)]
struct PathSlot {
    entry: Arc<IndexedFile>,
    at: u32,
}

impl PathSlot {
    fn location(&self) -> &Location {
        &self.entry.locations()[self.at as usize]
    }
}

/// The maps. Invariant: every location of every entry has exactly one slot
/// in `paths` pointing at that entry, and no other slot exists; every
/// entry has at least one location.
///
/// Both tables hold `Arc`s (8 bytes a slot) and hash with a per-process
/// random seed (foldhash, HashDoS-resistant enough for paths of the local
/// dataset and content hashes); a path or a stat is kept once, in its
/// entry.
#[derive(Debug, Default)]
pub struct Store {
    /// Current generation.
    pub generation: u64,
    hasher: DefaultHashBuilder,
    /// Entries by content hash.
    entries: HashTable<Arc<IndexedFile>>,
    /// Paths, each to its entry.
    paths: HashTable<PathSlot>,
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
    /// An empty store at `generation`.
    pub fn new(generation: u64) -> Self {
        Store {
            generation,
            ..Store::default()
        }
    }

    fn hash_sha1(&self, sha1: &Sha1Digest) -> u64 {
        sha1_hash(&self.hasher, sha1)
    }

    fn hash_path(&self, path: &Path) -> u64 {
        path_hash(&self.hasher, path)
    }

    /// Number of distinct contents.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Number of paths.
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// The entry of a content.
    pub fn get(&self, sha1: &Sha1Digest) -> Option<&Arc<IndexedFile>> {
        self.entries.find(self.hash_sha1(sha1), |e| e.sha1 == *sha1)
    }

    /// The content and stat indexed at `rel`.
    pub fn lookup(&self, rel: &Path) -> Option<(Sha1Digest, FileStat)> {
        self.slot(rel).map(|s| (s.entry.sha1, s.location().stat))
    }

    fn slot(&self, rel: &Path) -> Option<&PathSlot> {
        self.paths
            .find(self.hash_path(rel), |s| &*s.location().path == rel)
    }

    /// Every entry, in no order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &Arc<IndexedFile>> {
        self.entries.iter()
    }

    /// Every path with its stat, in no order.
    pub fn paths(&self) -> impl Iterator<Item = (&Path, &FileStat)> {
        self.paths.iter().map(|s| {
            let l = s.location();
            (&*l.path, &l.stat)
        })
    }

    fn touch(&self, delta: &mut Delta, sha1: Sha1Digest) {
        let present = self.get(&sha1).is_some();
        delta.before.entry(sha1).or_insert(present);
    }

    /// Puts `entry` in the entries table (replacing the one of the same
    /// content) and points a slot at each of its locations.
    fn put(&mut self, entry: Arc<IndexedFile>) {
        let hasher = &self.hasher;
        for (at, l) in entry.locations().iter().enumerate() {
            let slot = PathSlot {
                entry: entry.clone(),
                at: u32::try_from(at).unwrap_or(u32::MAX),
            };
            let h = path_hash(hasher, &l.path);
            match self.paths.entry(
                h,
                |s| s.location().path == l.path,
                |s| path_hash(hasher, &s.location().path),
            ) {
                Entry::Occupied(mut o) => *o.get_mut() = slot,
                Entry::Vacant(v) => {
                    v.insert(slot);
                }
            }
        }
        let sha1 = entry.sha1;
        match self.entries.entry(
            sha1_hash(hasher, &sha1),
            |e| e.sha1 == sha1,
            |e| sha1_hash(hasher, &e.sha1),
        ) {
            Entry::Occupied(mut o) => *o.get_mut() = entry,
            Entry::Vacant(v) => {
                v.insert(entry);
            }
        }
    }

    /// Adds (or moves) `rel` to the content `hashed`.
    pub fn insert(&mut self, rel: &Path, stat: FileStat, hashed: &Hashed, delta: &mut Delta) {
        self.insert_with(rel, stat, hashed.sha1, || hashed.clone(), delta);
    }

    /// [`insert`](Self::insert) of the content `sha1`, whose hashes
    /// `hashed` gives only if the content is new here (no copy of them
    /// otherwise, or when they can be moved).
    pub fn insert_with(
        &mut self,
        rel: &Path,
        stat: FileStat,
        sha1: Sha1Digest,
        hashed: impl FnOnce() -> Hashed,
        delta: &mut Delta,
    ) {
        if let Some((old, old_stat)) = self.lookup(rel) {
            if old == sha1 && old_stat == stat {
                return;
            }
            self.remove(rel, delta);
        }
        self.touch(delta, sha1);
        let new = Location {
            path: rel.into(),
            stat,
        };
        // Keep the existing hashes when the content is already known.
        let entry = match self.get(&sha1) {
            Some(e) => {
                let mut locations = e.locations().to_vec();
                locations.push(new);
                IndexedFile::with_locations(e.hashed(), locations)
            }
            None => IndexedFile::with_locations(hashed(), vec![new]),
        };
        self.put(Arc::new(entry));
    }

    /// Room for `n` more paths and contents (a cache about to be loaded).
    pub fn reserve(&mut self, n: usize) {
        let hasher = &self.hasher;
        self.paths
            .reserve(n, |s| path_hash(hasher, &s.location().path));
        self.entries.reserve(n, |e| sha1_hash(hasher, &e.sha1));
    }

    /// Adds one cache record at start (before the first scan): cheaper than
    /// [`insert`](Store::insert) for a content not yet present, whose entry
    /// is built once and noted in `delta` without a lookup table. A path
    /// already present is left alone. `entry` builds the record's entry,
    /// `hashed` its hashes (for a content already present).
    pub fn load(
        &mut self,
        rel: &Path,
        sha1: Sha1Digest,
        stat: FileStat,
        entry: impl FnOnce() -> IndexedFile,
        hashed: impl FnOnce() -> Hashed,
        delta: &mut Delta,
    ) {
        let hp = self.hash_path(rel);
        if self
            .paths
            .find(hp, |s| &*s.location().path == rel)
            .is_some()
        {
            return;
        }
        let hs = self.hash_sha1(&sha1);
        if self.entries.find(hs, |e| e.sha1 == sha1).is_some() {
            self.insert(rel, stat, &hashed(), delta);
            return;
        }
        if !delta.before.contains_key(&sha1) {
            delta.fresh.push(sha1);
        }
        let entry = Arc::new(entry());
        if entry.locations().len() != 1 || entry.path() != rel {
            return self.put(entry);
        }
        // Both looked up already: in without hashing or probing again
        // (100,000 records at start).
        let hasher = &self.hasher;
        self.paths.insert_unique(
            hp,
            PathSlot {
                entry: entry.clone(),
                at: 0,
            },
            |s| path_hash(hasher, &s.location().path),
        );
        self.entries
            .insert_unique(hs, entry, |e| sha1_hash(hasher, &e.sha1));
    }

    /// Removes `rel`; returns what it held.
    pub fn remove(
        &mut self,
        rel: &Path,
        delta: &mut Delta,
    ) -> Option<(FileStat, Arc<IndexedFile>)> {
        let h = self.hash_path(rel);
        let slot = match self.paths.find_entry(h, |s| &*s.location().path == rel) {
            Ok(o) => o.remove().0,
            Err(_) => return None,
        };
        let stat = slot.location().stat;
        let entry = slot.entry;
        self.touch(delta, entry.sha1);
        let rest: Vec<Location> = entry
            .locations()
            .iter()
            .filter(|l| &*l.path != rel)
            .cloned()
            .collect();
        if rest.is_empty() {
            let hs = self.hash_sha1(&entry.sha1);
            if let Ok(o) = self.entries.find_entry(hs, |e| e.sha1 == entry.sha1) {
                o.remove();
            }
        } else {
            self.put(Arc::new(IndexedFile::with_locations(entry.hashed(), rest)));
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
            if !delta.before.contains_key(&sha1) && self.get(&sha1).is_some() {
                ev.added.push(sha1);
            }
        }
        for (sha1, was) in delta.before {
            match (was, self.get(&sha1).is_some()) {
                (false, true) => ev.added.push(sha1),
                (true, false) => ev.removed.push(sha1),
                (true, true) => ev.updated.push(sha1),
                (false, false) => {}
            }
        }
        Some(ev)
    }
}

/// The hash a path has in the paths table (its bytes, not its components).
fn path_hash(hasher: &DefaultHashBuilder, path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    hasher.hash_one(path.as_os_str().as_bytes())
}

/// The hash a content has in the entries table.
fn sha1_hash(hasher: &DefaultHashBuilder, sha1: &Sha1Digest) -> u64 {
    hasher.hash_one(sha1.0)
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
            ctime_ns: 0,
        }
    }

    fn h(data: &[u8]) -> Hashed {
        Hashed {
            sha1: Sha1Digest::of(data),
            size: data.len() as u64,
            chain: vec![],
        }
    }

    /// Random inserts, moves and removals of 12 paths over 4 contents,
    /// checked after each step against a plain map: every path's content
    /// and stat, every entry's paths, the counts, and the events.
    #[test]
    fn random_changes_keep_both_tables_in_step_with_a_model() {
        use std::collections::{BTreeMap, BTreeSet};
        let contents: Vec<Hashed> = [&b"a"[..], b"bb", b"ccc", b"dddd"]
            .iter()
            .map(|d| h(d))
            .collect();
        let paths: Vec<String> = (0..12).map(|i| format!("d{}/f{i}", i % 3)).collect();
        let mut s = Store::default();
        let mut model: BTreeMap<String, (usize, FileStat)> = BTreeMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for step in 0..3000u64 {
            let (p, c) = (next(paths.len()), next(contents.len()));
            let path = Path::new(&paths[p]);
            let before: BTreeSet<Sha1Digest> = s.entries().map(|e| e.sha1).collect();
            let mut d = Delta::default();
            if next(3) == 0 {
                let removed = s.remove(path, &mut d);
                assert_eq!(
                    removed.map(|(st, _)| st),
                    model.remove(&paths[p]).map(|m| m.1)
                );
            } else {
                let stat = st(step);
                s.insert(path, stat, &contents[c], &mut d);
                model.insert(paths[p].clone(), (c, stat));
            }
            let ev = s.commit(d);
            let after: BTreeSet<Sha1Digest> = s.entries().map(|e| e.sha1).collect();
            if let Some(ev) = ev {
                let added: BTreeSet<_> = ev.added.iter().copied().collect();
                let removed: BTreeSet<_> = ev.removed.iter().copied().collect();
                assert_eq!(added, &after - &before, "step {step}");
                assert_eq!(removed, &before - &after, "step {step}");
            }
            assert_eq!(s.path_count(), model.len(), "step {step}");
            for (path, (c, stat)) in &model {
                let want = (contents[*c].sha1, *stat);
                assert_eq!(s.lookup(Path::new(path)), Some(want), "step {step} {path}");
            }
            let mut held: BTreeMap<Sha1Digest, Vec<String>> = BTreeMap::new();
            for (path, (c, _)) in &model {
                held.entry(contents[*c].sha1)
                    .or_default()
                    .push(path.clone());
            }
            assert_eq!(s.len(), held.len(), "step {step}");
            for (sha1, want) in &held {
                let e = s.get(sha1).expect("entry of a held content");
                let got: Vec<String> = e.paths().map(|p| p.display().to_string()).collect();
                assert_eq!(&got, want, "step {step}: paths sorted, once each");
                assert!(e.chain().is_empty(), "one piece, no chain");
            }
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
        assert_eq!(s.len(), 1);
        assert_eq!(s.path_count(), 2);
        let e = s.get(&Sha1Digest::of(b"x")).unwrap();
        assert_eq!(
            e.paths().collect::<Vec<_>>(),
            [Path::new("a"), Path::new("b")]
        );
        assert_eq!(
            s.lookup(Path::new("b")),
            Some((Sha1Digest::of(b"x"), st(1)))
        );

        let mut d = Delta::default();
        s.remove(Path::new("a"), &mut d);
        let ev = s.commit(d).unwrap();
        assert_eq!(ev.updated, vec![Sha1Digest::of(b"x")]);
        assert_eq!(s.lookup(Path::new("a")), None);
        assert_eq!(
            s.lookup(Path::new("b")),
            Some((Sha1Digest::of(b"x"), st(1)))
        );
        assert_eq!(ev.generation, 2);
        let mut d = Delta::default();
        s.insert(Path::new("b"), st(1), &h(b"y"), &mut d);
        let ev = s.commit(d).unwrap();
        assert_eq!(ev.removed, vec![Sha1Digest::of(b"x")]);
        assert_eq!(ev.added, vec![Sha1Digest::of(b"y")]);
        assert!(s.commit(Delta::default()).is_none());
    }
}
