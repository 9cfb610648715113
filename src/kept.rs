//! Descriptors of served files kept open between requests ([`KeptFiles`]).
//!
//! A swarm asks a peer for one 64 KiB piece after another of the same
//! file: opened and closed for each, every piece cost an `open` (a path
//! walk, an `IN_OPEN` event for every inotify watch on the file or its
//! directory: the peer's own index watch, woken for nothing, and the
//! downloader's seal watch on a `.part`), a `statx` and a `close` (an
//! `IN_CLOSE_NOWRITE` for the same watches). A kept descriptor costs one
//! `statx` of the path per request instead, and no event.
//!
//! Never stale: a kept descriptor is handed out only while its path still
//! names the very inode it was opened on (same device and inode number,
//! which cannot be reused while the descriptor holds the inode), by a
//! `statx` of the path at each request (through a symlink only where the
//! owner's own `open` follows one: the index's, not the partial
//! registry's); the caller then checks that stat as it checked the stat of
//! a file it had just opened (the index: size, mtime, ctime and inode as
//! hashed). A file replaced under its name, moved or removed (or turned
//! into a symlink, where none is followed) is opened anew, and then
//! judged as before. The descriptors are read-only
//! (`O_RDONLY`: `/proc/<pid>/fdinfo` shows them so to a download checking
//! who holds its `.part`).
//!
//! Bounded: at most `max` descriptors (the least recently used is closed
//! for a new one) and each closed once unused for `idle` (looked at on
//! every call); the owner drops those of paths it no longer serves
//! ([`KeptFiles::forget`], [`KeptFiles::retain`]) so a removed file's
//! space is not held. One lock around a short list, never held across a
//! system call: descriptors are closed after it is released.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Descriptors kept by the index and by the partial registry, each.
pub(crate) const MAX_KEPT: usize = 32;
/// How long a kept descriptor may go unused before it is closed.
pub(crate) const KEPT_IDLE: Duration = Duration::from_secs(5);

/// Open files kept by path; see the module docs.
#[derive(Debug)]
pub(crate) struct KeptFiles {
    entries: Mutex<Vec<Kept>>,
    max: usize,
    idle: Duration,
    /// Whether a symlink at the path is followed (as the owner's `open`
    /// does), or makes the path not name the kept file.
    follow: bool,
}

#[derive(Debug)]
struct Kept {
    path: PathBuf,
    file: Arc<File>,
    dev: u64,
    ino: u64,
    used: Instant,
}

impl Default for KeptFiles {
    /// [`KeptFiles::bounded`], no symlink followed.
    fn default() -> Self {
        KeptFiles::bounded(false)
    }
}

impl KeptFiles {
    /// At most `max` descriptors, each closed after `idle` unused; a path
    /// is looked at through a symlink if `follow` (for an owner whose
    /// `open` follows them), else a symlink there is another file.
    pub(crate) fn new(max: usize, idle: Duration, follow: bool) -> Self {
        KeptFiles {
            entries: Mutex::new(Vec::new()),
            max,
            idle,
            follow,
        }
    }

    /// [`MAX_KEPT`] descriptors, closed after [`KEPT_IDLE`] unused.
    pub(crate) fn bounded(follow: bool) -> Self {
        KeptFiles::new(MAX_KEPT, KEPT_IDLE, follow)
    }

    /// The descriptor kept for `path`, if `path` still names the regular
    /// file it was opened on, with that file's metadata now (for the
    /// caller's own checks). `None`: open it anew (a kept descriptor of
    /// another file is closed).
    pub(crate) fn get(&self, path: &Path) -> Option<(Arc<File>, Metadata)> {
        let now = Instant::now();
        let (file, dev, ino) = {
            let mut entries = self.entries.lock();
            let e = entries.iter_mut().find(|e| e.path == path)?;
            e.used = now;
            (Arc::clone(&e.file), e.dev, e.ino)
        };
        let closed = self.expire(now);
        drop(closed);
        let now = if self.follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        match now {
            Ok(meta) if meta.is_file() && meta.dev() == dev && meta.ino() == ino => {
                Some((file, meta))
            }
            _ => {
                self.forget(path);
                None
            }
        }
    }

    /// Keeps `file`, just opened read-only from `path` with metadata
    /// `meta`, for the next requests (replacing what was kept for `path`;
    /// the least recently used one closed if `max` are kept).
    pub(crate) fn keep(&self, path: &Path, file: &Arc<File>, meta: &Metadata) {
        let now = Instant::now();
        let mut closed = self.expire(now);
        let mut entries = self.entries.lock();
        if let Some(i) = entries.iter().position(|e| e.path == path) {
            closed.push(entries.swap_remove(i));
        }
        if entries.len() >= self.max {
            if let Some(i) = (0..entries.len()).min_by_key(|&i| entries[i].used) {
                closed.push(entries.swap_remove(i));
            }
        }
        if self.max > 0 {
            entries.push(Kept {
                path: path.to_path_buf(),
                file: Arc::clone(file),
                dev: meta.dev(),
                ino: meta.ino(),
                used: now,
            });
        }
        drop(entries);
        drop(closed);
    }

    /// Closes the descriptor kept for `path`, if any.
    pub(crate) fn forget(&self, path: &Path) {
        let closed = {
            let mut entries = self.entries.lock();
            entries
                .iter()
                .position(|e| e.path == path)
                .map(|i| entries.swap_remove(i))
        };
        drop(closed);
    }

    /// Closes the descriptors whose path `keep` says no.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&Path) -> bool) {
        let closed: Vec<Kept> = {
            let mut entries = self.entries.lock();
            let (stay, gone) = std::mem::take(&mut *entries)
                .into_iter()
                .partition(|e| keep(&e.path));
            *entries = stay;
            gone
        };
        drop(closed);
    }

    /// Descriptors kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Takes out the entries unused for `idle` (closed by the caller,
    /// outside the lock).
    fn expire(&self, now: Instant) -> Vec<Kept> {
        let mut entries = self.entries.lock();
        if entries
            .iter()
            .all(|e| now.saturating_duration_since(e.used) < self.idle)
        {
            return Vec::new();
        }
        let (stay, gone) = std::mem::take(&mut *entries)
            .into_iter()
            .partition(|e| now.saturating_duration_since(e.used) < self.idle);
        *entries = stay;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn open(path: &Path) -> (Arc<File>, Metadata) {
        let f = File::open(path).unwrap();
        let meta = f.metadata().unwrap();
        (Arc::new(f), meta)
    }

    fn read_all(f: &File) -> Vec<u8> {
        let mut out = Vec::new();
        let mut r = f;
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_file_replaced_under_its_name_is_never_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"first").unwrap();
        let kept = KeptFiles::bounded(false);
        let (f, meta) = open(&path);
        kept.keep(&path, &f, &meta);
        drop(f);
        let (again, now) = kept.get(&path).expect("same file: kept");
        assert_eq!(now.ino(), meta.ino());
        assert_eq!(read_all(&again), b"first");
        drop(again);

        // Replaced by a rename: the path names another inode.
        let tmp = dir.path().join("a.new");
        std::fs::write(&tmp, b"other").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(kept.get(&path).is_none(), "replaced: opened anew");
        assert_eq!(kept.len(), 0, "and the old descriptor closed");

        // Removed, or a symlink to the kept file put in its place.
        let (f, meta) = open(&path);
        kept.keep(&path, &f, &meta);
        let target = dir.path().join("target");
        std::fs::rename(&path, &target).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(kept.get(&path).is_none(), "a symlink is not followed");
        std::fs::remove_file(&path).unwrap();
        assert!(kept.get(&path).is_none(), "removed");
        assert_eq!(kept.len(), 0);
    }

    #[test]
    fn at_most_max_are_kept_the_least_recently_used_closed_first() {
        let dir = tempfile::tempdir().unwrap();
        let kept = KeptFiles::new(3, Duration::from_secs(60), false);
        let paths: Vec<PathBuf> = (0..5).map(|i| dir.path().join(format!("f{i}"))).collect();
        for p in &paths {
            std::fs::write(p, p.to_string_lossy().as_bytes()).unwrap();
        }
        for p in &paths[..3] {
            let (f, meta) = open(p);
            kept.keep(p, &f, &meta);
        }
        assert!(
            kept.get(&paths[0]).is_some(),
            "f0 used again: f1 is the oldest"
        );
        for p in &paths[3..] {
            let (f, meta) = open(p);
            kept.keep(p, &f, &meta);
            assert!(kept.len() <= 3);
        }
        assert_eq!(kept.len(), 3);
        assert!(kept.get(&paths[1]).is_none() && kept.get(&paths[2]).is_none());
        for p in [&paths[0], &paths[3], &paths[4]] {
            assert!(kept.get(p).is_some(), "{}", p.display());
        }
        kept.retain(|p| p != paths[3]);
        assert!(kept.get(&paths[3]).is_none());
        kept.forget(&paths[4]);
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn descriptors_unused_for_the_idle_time_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let kept = KeptFiles::new(8, Duration::ZERO, false);
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let (f, meta) = open(&a);
        kept.keep(&a, &f, &meta);
        let (f, meta) = open(&b);
        kept.keep(&b, &f, &meta);
        assert_eq!(kept.len(), 1, "a, idle, closed when b was kept");
    }
}
