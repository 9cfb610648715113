//! Hashing tasks: files to hash go to the rayon pool largest first, small
//! ones in chunks (one task and one message per chunk); each file in flight
//! has a token, so a result for a file that changed meanwhile (and was
//! queued again) is dropped.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use hashbrown::HashMap;

use super::entry::FileStat;
use super::hasher::{self, Outcome};
use super::Shared;

/// Most files in one hashing task.
const CHUNK_FILES: usize = 64;
/// Most bytes in one hashing task (a larger file is a task of its own).
const CHUNK_BYTES: u64 = 4 << 20;

/// One file's hashing result.
pub struct HashResult {
    /// The file, relative to the root.
    pub rel: PathBuf,
    /// The token it was queued with.
    pub token: u64,
    /// Its hashes and stat (or, for a file queued without its stat, that
    /// it waits to settle), or why it could not be read.
    pub outcome: io::Result<Outcome>,
}

/// The files being hashed: their stat when listed and their token. Keyed
/// by the path's bytes (a `PathBuf` key hashes and compares component by
/// component), with foldhash.
#[derive(Default)]
pub struct Inflight {
    files: HashMap<OsString, (Option<FileStat>, u64)>,
    bytes: u64,
    next_token: u64,
}

impl Inflight {
    /// Files being hashed.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// No file being hashed.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Their bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The stat `rel` is being hashed for.
    pub fn stat(&self, rel: &Path) -> Option<FileStat> {
        self.files.get(rel.as_os_str()).and_then(|(s, _)| *s)
    }

    /// `rel` is no longer being hashed (its result will be dropped).
    pub fn remove(&mut self, rel: &Path) {
        if let Some((s, _)) = self.files.remove(rel.as_os_str()) {
            self.bytes -= s.map_or(0, |s| s.size);
        }
    }

    /// Keeps only the files for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Path) -> bool) {
        let mut dropped = 0;
        self.files.retain(|p, (s, _)| {
            let k = keep(Path::new(p));
            if !k {
                dropped += s.map_or(0, |s| s.size);
            }
            k
        });
        self.bytes -= dropped;
    }

    /// The stat `r` was queued with (`Some(None)`: queued without), if `r`
    /// is the current look at its file (the file is then no longer in
    /// flight); `None`: superseded.
    pub fn take_current(&mut self, r: &HashResult) -> Option<Option<FileStat>> {
        let (stat, token) = *self.files.get(r.rel.as_os_str())?;
        if token != r.token {
            return None;
        }
        self.remove(&r.rel);
        Some(stat)
    }

    fn add(&mut self, rel: PathBuf, stat: Option<FileStat>) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.remove(&rel);
        self.bytes += stat.map_or(0, |s| s.size);
        self.files.insert(rel.into_os_string(), (stat, token));
        token
    }

    /// Queues `files` on `pool`, largest first, so one big file does not
    /// finish last alone; small files go in chunks (100,000 tasks cost more
    /// than their hashing). A file without its stat (a first scan's,
    /// `walk::Stat::Later`) is read only if it was not modified `settle`
    /// ago or less. Results arrive on `res`.
    pub fn start(
        &mut self,
        shared: &Arc<Shared>,
        settle: Duration,
        pool: &rayon::ThreadPool,
        res: &Sender<Vec<HashResult>>,
        mut files: Vec<(PathBuf, Option<FileStat>)>,
    ) {
        // Large files first, largest first; small ones (the rest) in the
        // order given, which is the listing's: a chunk's files then share
        // directories, each opened once. (Sizes not known yet count as small.)
        let size = |s: &Option<FileStat>| s.map_or(0, |s| s.size);
        files.sort_by_key(|f| {
            std::cmp::Reverse(if size(&f.1) >= CHUNK_BYTES {
                size(&f.1)
            } else {
                0
            })
        });
        let mut chunk: Vec<(PathBuf, Option<u64>, u64)> = Vec::new();
        let mut chunk_bytes = 0u64;
        let last = files.len().saturating_sub(1);
        for (i, (rel, stat)) in files.into_iter().enumerate() {
            let token = self.add(rel.clone(), stat);
            chunk.push((rel, stat.map(|s| s.size), token));
            chunk_bytes += size(&stat);
            if i == last || chunk.len() >= CHUNK_FILES || chunk_bytes >= CHUNK_BYTES {
                let task = Task {
                    settle,
                    files: std::mem::take(&mut chunk),
                };
                spawn_chunk(shared, pool, res, task);
                chunk_bytes = 0;
            }
        }
    }
}

/// One hashing task.
struct Task {
    settle: Duration,
    /// Path, size when listed (`None`: listed without its stat), token.
    files: Vec<(PathBuf, Option<u64>, u64)>,
}

/// Runs `task` on `pool`: hashes its files in order, sends the results
/// together; stops early (sending nothing) when the index stops.
fn spawn_chunk(
    shared: &Arc<Shared>,
    pool: &rayon::ThreadPool,
    res: &Sender<Vec<HashResult>>,
    task: Task,
) {
    let shared = shared.clone();
    let res = res.clone();
    pool.spawn(move || {
        let stop: &AtomicBool = &shared.stop;
        let progress: &AtomicU64 = &shared.counters.bytes_read;
        let Task {
            settle,
            files: chunk,
        } = task;
        let mut out = Vec::with_capacity(chunk.len());
        let mut abs = shared.root.clone();
        // The directory of the last file, open, if it could be.
        let mut dir: Option<(PathBuf, rustix::fd::OwnedFd)> = None;
        for (rel, size, token) in chunk {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let (parent, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name());
            if dir
                .as_ref()
                .is_none_or(|(p, _)| p.as_os_str() != parent.as_os_str())
            {
                dir = hasher::open_dir(&shared.root.join(parent))
                    .ok()
                    .map(|fd| (parent.to_path_buf(), fd));
            }
            let opened = match (&dir, name) {
                (Some((_, fd)), Some(name)) => hasher::open_at(fd, name),
                _ => {
                    abs.push(&rel);
                    let opened = hasher::open_path(&abs);
                    abs.clone_from(&shared.root);
                    opened
                }
            };
            let outcome = opened.and_then(|file| match size {
                Some(size) => hasher::hash_listed(file, size, stop, progress).map(Outcome::Hashed),
                None => hasher::hash_unlisted(file, settle, stop, progress),
            });
            out.push(HashResult {
                rel,
                token,
                outcome,
            });
        }
        let _ = res.send(out);
    });
}
