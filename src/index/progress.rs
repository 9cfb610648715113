//! The hashing progress log lines: one every `PROGRESS_EVERY` while files
//! are being hashed, and one when the initial scan is done.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Counters, Shared};

/// Interval of progress log lines while hashing.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Where the current burst of hashing started, and the last line logged.
pub struct Progress {
    /// When the index opened.
    pub opened: Instant,
    started: Instant,
    last_log: Instant,
    files_at_start: u64,
    bytes_at_start: u64,
}

impl Progress {
    /// An index opened now.
    pub fn new() -> Self {
        let now = Instant::now();
        Progress {
            opened: now,
            started: now,
            last_log: now,
            files_at_start: 0,
            bytes_at_start: 0,
        }
    }

    /// Hashing starts after a pause: rates count from now.
    pub fn restart(&mut self, c: &Counters) {
        self.started = Instant::now();
        self.last_log = self.started;
        self.files_at_start = c.files_hashed.load(Ordering::Relaxed);
        self.bytes_at_start = c.bytes_read.load(Ordering::Relaxed);
    }

    /// When the next line is due while hashing.
    pub fn due(&self) -> Instant {
        self.last_log + PROGRESS_EVERY
    }

    /// Logs a line: `done`, the initial scan's summary; else the progress
    /// of the current burst with `queued` files still to go.
    pub fn log(&mut self, shared: &Shared, done: bool, queued: usize) {
        let c = &shared.counters;
        let files = c.files_hashed.load(Ordering::Relaxed) - self.files_at_start;
        let bytes = c.bytes_read.load(Ordering::Relaxed) - self.bytes_at_start;
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        let mbs = bytes as f64 / 1e6 / secs;
        self.last_log = Instant::now();
        if done {
            let files = c.files_hashed.load(Ordering::Relaxed);
            let bytes = c.bytes_hashed.load(Ordering::Relaxed);
            let secs = self.opened.elapsed().as_secs_f64().max(1e-6);
            let mbs = bytes as f64 / 1e6 / secs;
            let (paths, contents) = {
                let s = shared.store.read();
                (s.path_count(), s.len())
            };
            log::info!(
                "index: ready: {paths} files ({contents} distinct); hashed {files} files, {:.1} MiB in {secs:.2} s ({mbs:.0} MB/s); {} reused",
                bytes as f64 / 1048576.0,
                c.files_reused.load(Ordering::Relaxed),
            );
        } else {
            log::info!(
                "index: hashing: {files} files, {:.1} MiB done, {queued} files queued ({:.1} MiB), {mbs:.0} MB/s",
                bytes as f64 / 1048576.0,
                c.bytes_queued.load(Ordering::Relaxed) as f64 / 1048576.0,
            );
        }
    }
}
