//! File-system events: the recursive `notify` watch, and the debounce that
//! turns a burst of events into one reconciliation of the paths they name
//! (or of everything, when there are too many or the watch lost events).

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use notify::{RecommendedWatcher, Watcher};

use super::walk::PART_STATE_SUFFIX;

/// Longest wait for a quiet moment after file-system events.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// More dirty paths than this and a full rescan is cheaper.
const MAX_DIRTY: usize = 1000;

/// A running watcher and its event channel.
pub struct Watch {
    _watcher: RecommendedWatcher,
    pub(super) events: Receiver<notify::Result<notify::Event>>,
}

/// Starts a recursive watch of `root`. Events that can change nothing
/// are dropped on notify's thread, before they wake the index's: opens and
/// reads (notify watches `IN_OPEN`: every piece this peer serves opens
/// its file), and writes into a download's `.part` (one per piece it
/// writes; its rename into place still comes through). The paths of
/// `*.part.state` files go from notify's thread straight to
/// `partial_events` (a download saves its state up to every 50 ms); an
/// event that names nothing else never reaches the index, which shares
/// no such file: before, each save woke the index thread twice (to
/// forward it, and to look at the path after the debounce, on the
/// hashing pool).
pub fn watch(root: &Path, partial_events: Option<Sender<PathBuf>>) -> notify::Result<Watch> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(e) = &ev {
            if idle_event(e) {
                return;
            }
            if let Some(partials) = &partial_events {
                for p in e.paths.iter().filter(|p| is_state(p)) {
                    let _ = partials.try_send(p.clone());
                }
            }
            if states_only(e) {
                return;
            }
        }
        let _ = tx.send(ev);
    })?;
    w.watch(root, notify::RecursiveMode::Recursive)?;
    Ok(Watch {
        _watcher: w,
        events: rx,
    })
}

/// True for the path of a download's state (`*.part.state`).
fn is_state(p: &Path) -> bool {
    p.as_os_str()
        .as_bytes()
        .ends_with(PART_STATE_SUFFIX.as_bytes())
}

/// True for an event that names downloads' states only (and asks for no
/// rescan): the partial files act on it, the index never does.
fn states_only(ev: &notify::Event) -> bool {
    !ev.need_rescan() && !ev.paths.is_empty() && ev.paths.iter().all(|p| is_state(p))
}

/// True for an event the index and the partial files never act on: an
/// access other than a close after writing, or data written into files
/// that are all downloads in progress (`*.part`).
fn idle_event(ev: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    match ev.kind {
        EventKind::Access(a) => a != AccessKind::Close(AccessMode::Write),
        EventKind::Modify(ModifyKind::Data(_)) => {
            !ev.paths.is_empty()
                && ev.paths.iter().all(|p| {
                    p.as_os_str()
                        .as_bytes()
                        .ends_with(super::walk::PART_SUFFIX.as_bytes())
                })
        }
        _ => false,
    }
}

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

    /// Reads one event: the paths it names (relative to `root`) become
    /// dirty.
    pub fn note_event(&mut self, ev: notify::Result<notify::Event>, root: &Path) {
        use notify::event::{AccessKind, AccessMode, EventKind};
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                log::warn!("index: file-system watch error ({e}); rescanning");
                self.mark_full();
                return;
            }
        };
        if ev.need_rescan() {
            self.mark_full();
            return;
        }
        if let EventKind::Access(a) = ev.kind {
            if a != AccessKind::Close(AccessMode::Write) {
                return;
            }
        }
        for p in ev.paths {
            match p.strip_prefix(root) {
                Ok(rel) => self.mark(rel.to_path_buf()),
                Err(_) => self.mark_full(),
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

    #[test]
    fn opens_and_writes_into_a_part_never_wake_the_index() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RenameMode,
        };
        let ev = |kind, paths: &[&str]| {
            let mut e = notify::Event::new(kind);
            e.paths = paths.iter().map(PathBuf::from).collect();
            e
        };
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let idle = [
            ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/d/f"],
            ),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                &["/d/f"],
            ),
            ev(data, &["/d/f.part"]),
        ];
        let kept = [
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/d/f"],
            ),
            ev(data, &["/d/f"]),
            ev(data, &["/d/f.part.state"]),
            ev(data, &[]),
            ev(EventKind::Create(CreateKind::File), &["/d/f.part"]),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/d/f.part", "/d/f"],
            ),
        ];
        assert!(idle.iter().all(idle_event));
        assert!(!kept.iter().any(idle_event));
    }

    /// A download's state save (one `pwrite` into the kept-open file) goes
    /// from notify's thread to the partial files and never wakes the
    /// index; a file the index shares still reaches it.
    #[test]
    fn a_state_save_goes_to_the_partials_only() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let st = root.join("f.part.state");
        let file = std::fs::File::create(&st).unwrap();
        let (tx, partials) = crossbeam_channel::unbounded();
        let w = watch(&root, Some(tx)).unwrap();
        let long = Duration::from_secs(20);
        file.write_all_at(b"{}", 0).unwrap();
        assert_eq!(partials.recv_timeout(long), Ok(st.clone()));
        std::fs::write(root.join("shared"), b"x").unwrap();
        let mut seen = Vec::new();
        while !seen.iter().any(|p: &PathBuf| p.ends_with("shared")) {
            let ev = w.events.recv_timeout(long).expect("an event").unwrap();
            seen.extend(ev.paths);
        }
        assert!(
            !seen.iter().any(|p| is_state(p)),
            "the state's event reached the index: {seen:?}"
        );
        let ev = |kind, paths: &[&str]| {
            let mut e = notify::Event::new(kind);
            e.paths = paths.iter().map(PathBuf::from).collect();
            e
        };
        use notify::event::{EventKind, ModifyKind, RenameMode};
        let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(!states_only(&ev(
            both,
            &["/d/f.part.state.tmp", "/d/f.part.state"]
        )));
        assert!(states_only(&ev(
            both,
            &["/d/f.part.state", "/d/g.part.state"]
        )));
        assert!(!states_only(&ev(both, &[])));
    }
}
