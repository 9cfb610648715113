//! The debounce that turns a burst of file-system events (from `watch`)
//! into one reconciliation of the paths they name (or of everything, when
//! there are too many or the watch lost events).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::watch::Change;

/// Longest wait for a quiet moment after file-system events.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// More dirty paths than this and a full rescan is cheaper.
const MAX_DIRTY: usize = 1000;

/// The paths named by events since the last reconciliation, and when they
/// came: they are reconciled `debounce` after the last event, or
/// `DEBOUNCE_MAX` after the first, whichever is sooner.
pub struct Debounce {
    debounce: Duration,
    dirty: HashSet<PathBuf>,
    full: bool,
    first: Option<Instant>,
    last: Instant,
}

impl Debounce {
    /// Nothing dirty; a burst is reconciled `debounce` after its last event.
    pub fn new(debounce: Duration) -> Self {
        Debounce {
            debounce,
            dirty: HashSet::new(),
            full: false,
            first: None,
            last: Instant::now(),
        }
    }

    /// Reads what the watch sent: the paths it names (relative to `root`)
    /// become dirty.
    pub fn note(&mut self, change: Change, root: &Path) {
        match change {
            Change::Rescan(why) => {
                log::warn!("index: file-system watch: {why}; rescanning");
                self.mark_full();
            }
            Change::Paths(paths) => {
                for p in paths {
                    match p.strip_prefix(root) {
                        Ok(rel) => self.mark(rel.to_path_buf()),
                        Err(_) => self.mark_full(),
                    }
                }
            }
        }
    }

    /// `rel` (relative to the root; empty: everything) needs a look.
    pub fn mark(&mut self, rel: PathBuf) {
        if rel.as_os_str().is_empty() || self.dirty.len() >= MAX_DIRTY {
            self.full = true;
        } else {
            self.dirty.insert(rel);
        }
        self.touch();
    }

    /// Everything needs a look.
    pub fn mark_full(&mut self) {
        self.full = true;
        self.touch();
    }

    fn touch(&mut self) {
        let now = Instant::now();
        self.last = now;
        self.first.get_or_insert(now);
    }

    /// When the dirty paths are due, if any are.
    pub fn due(&self) -> Option<Instant> {
        self.first
            .map(|first| (self.last + self.debounce).min(first + DEBOUNCE_MAX))
    }

    /// The scopes to reconcile (an empty path: everything) if they are due
    /// at `now`; they are no longer dirty.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<PathBuf>> {
        if self.due().is_none_or(|due| now < due) {
            return None;
        }
        self.first = None;
        let scopes = if self.full {
            vec![PathBuf::new()]
        } else {
            self.dirty.drain().collect()
        };
        self.dirty.clear();
        self.full = false;
        Some(scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_paths_come_out_once_after_the_quiet_time_and_too_many_mean_everything() {
        let mut d = Debounce::new(Duration::from_millis(50));
        assert_eq!(d.due(), None);
        d.mark("a".into());
        d.mark("b".into());
        let due = d.due().expect("due");
        assert!(d.take_due(due - Duration::from_millis(1)).is_none());
        let mut scopes = d.take_due(due).expect("scopes");
        scopes.sort();
        assert_eq!(scopes, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(d.due(), None);
        assert!(d.take_due(due + Duration::from_secs(9)).is_none());
        for i in 0..=MAX_DIRTY {
            d.mark(PathBuf::from(i.to_string()));
        }
        let due = d.due().expect("due");
        assert_eq!(d.take_due(due), Some(vec![PathBuf::new()]));
    }
}
