//! The dataset's recursive file-system watch, on inotify directly: one
//! watch per directory (new directories are watched as they appear,
//! removed ones forgotten), read by the `pbs-watch` thread, which sends the
//! index the paths that changed, in batches, and the paths of downloads'
//! states (`*.part.state`) to the partial files.
//!
//! Why not the `notify` crate (used before): its mask has `IN_OPEN`, so
//! every piece a peer serves and every read of a download's state was an
//! event, and it allocated a path and an event for each one before the
//! index could drop it. Here the mask is what the index acts on (created,
//! deleted, moved, written, closed after writing, attributes), a write
//! into a download's `.part` (one per piece) is dropped by its name before
//! anything is allocated, and each wake reads what [`BATCH`] let pile up
//! (inotify merges repeats of the last queued event). In a 47-host swarm
//! the notify thread was the peers' largest background cost.
//!
//! Stopping: the thread polls the inotify descriptor and an eventfd that
//! [`Watch`]'s drop writes to, then joins it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use super::walk::{PART_STATE_SUFFIX, PART_SUFFIX};

/// How long a wake waits for more events before reading them: a state
/// saved by a download reaches the partial files at most this late.
pub const BATCH: Duration = Duration::from_millis(5);

/// What the watch tells the index.
#[derive(Debug)]
pub enum Change {
    /// These absolute paths (files or directories) changed.
    Paths(Vec<PathBuf>),
    /// Events were lost (the kernel's queue overflowed, a directory could
    /// not be watched, the root went): everything needs a look.
    Rescan(String),
}

/// A running watch: its thread, stopped and joined on drop, and what it
/// sends.
pub struct Watch {
    pub(super) events: Receiver<Change>,
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts watching `root` and every directory below it (symlinks are not
/// followed: the index does not descend into linked directories). The
/// directories are watched before this returns, so nothing changed after
/// it is missed. The paths of `*.part.state` files go to `partial_events`
/// (never blocking), and an event naming such a file only does not reach
/// the index, which shares none.
pub fn watch(root: &Path, partial_events: Option<Sender<PathBuf>>) -> io::Result<Watch> {
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
    let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
    let mut dirs = Dirs::default();
    dirs.add_tree(&fd, root)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stop, wake) = (stop.clone(), wake.clone());
        let root = root.to_path_buf();
        std::thread::Builder::new()
            .name("pbs-watch".into())
            .spawn(move || {
                let mut r = Reading {
                    fd,
                    root,
                    dirs,
                    index: tx,
                    partials: partial_events,
                };
                r.run(&stop, &wake);
            })?
    };
    Ok(Watch {
        events: rx,
        stop,
        wake,
        thread: Some(thread),
    })
}

/// What a directory's watch reports.
fn mask() -> WatchFlags {
    WatchFlags::ATTRIB
        | WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::MODIFY
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF
        | WatchFlags::ONLYDIR
        | WatchFlags::DONT_FOLLOW
}

/// The watched directories, by watch descriptor and by path.
#[derive(Default)]
struct Dirs {
    by_wd: HashMap<i32, PathBuf>,
    by_path: HashMap<PathBuf, i32>,
}

impl Dirs {
    /// Watches `top` and every directory below it (not through symlinks).
    /// A directory gone meanwhile is skipped; running out of watches is
    /// an error.
    fn add_tree(&mut self, fd: &OwnedFd, top: &Path) -> io::Result<()> {
        let mut todo = vec![top.to_path_buf()];
        while let Some(dir) = todo.pop() {
            match inotify::add_watch(fd, dir.as_path(), mask()) {
                Ok(wd) => {
                    if let Some(old) = self.by_path.insert(dir.clone(), wd) {
                        if old != wd {
                            self.by_wd.remove(&old);
                        }
                    }
                    self.by_wd.insert(wd, dir.clone());
                }
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => continue,
                Err(e) if dir == top => return Err(e.into()),
                Err(e) => return Err(io::Error::other(format!("{}: {e}", dir.display()))),
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
        }
        Ok(())
    }

    /// Stops watching `top` and every directory below it (moved away or
    /// deleted).
    fn remove_tree(&mut self, fd: &OwnedFd, top: &Path) {
        let gone: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(top))
            .cloned()
            .collect();
        for p in gone {
            if let Some(wd) = self.by_path.remove(&p) {
                self.by_wd.remove(&wd);
                let _ = inotify::remove_watch(fd, wd);
            }
        }
    }

    /// A watch the kernel dropped (its directory deleted).
    fn forget(&mut self, wd: i32) {
        if let Some(p) = self.by_wd.remove(&wd) {
            if self.by_path.get(&p) == Some(&wd) {
                self.by_path.remove(&p);
            }
        }
    }
}

/// True for a download's state.
fn is_state(name: &[u8]) -> bool {
    name.ends_with(PART_STATE_SUFFIX.as_bytes())
}

/// The `pbs-watch` thread's state.
struct Reading {
    fd: OwnedFd,
    root: PathBuf,
    dirs: Dirs,
    index: Sender<Change>,
    partials: Option<Sender<PathBuf>>,
}

impl Reading {
    fn run(&mut self, stop: &AtomicBool, wake: &OwnedFd) {
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 64 * 1024];
        loop {
            let mut fds = [
                PollFd::new(&self.fd, PollFlags::IN),
                PollFd::new(wake, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    log::warn!(
                        "index: the file-system watch stopped ({e}); the periodic rescan goes on"
                    );
                    return;
                }
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
            // Let a burst pile up (and repeats merge) before reading it.
            std::thread::sleep(BATCH);
            let mut paths = Vec::new();
            let mut rescan: Option<String> = None;
            let mut reader = inotify::Reader::new(self.fd.as_fd(), &mut buf);
            let mut add: Vec<PathBuf> = Vec::new();
            loop {
                let ev = match reader.next() {
                    Ok(ev) => ev,
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => break,
                    Err(e) => {
                        rescan = Some(format!("reading events: {e}"));
                        break;
                    }
                };
                let flags = ev.events();
                if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                    rescan = Some("the kernel's event queue overflowed".into());
                    continue;
                }
                if flags.contains(ReadFlags::IGNORED) {
                    self.dirs.forget(ev.wd());
                    continue;
                }
                let name = ev.file_name().map(|n| n.to_bytes()).unwrap_or_default();
                let is_dir = flags.contains(ReadFlags::ISDIR);
                // A write into a download's `.part` (one per piece): the
                // index never shares it, and its rename comes separately.
                if !is_dir && flags == ReadFlags::MODIFY && name.ends_with(PART_SUFFIX.as_bytes()) {
                    continue;
                }
                let Some(dir) = self.dirs.by_wd.get(&ev.wd()) else {
                    continue;
                };
                if name.is_empty() {
                    // The directory itself: deleted or moved away.
                    if flags.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF)
                        && *dir == self.root
                    {
                        rescan = Some("the dataset directory was moved or deleted".into());
                    }
                    continue;
                }
                let path = dir.join(OsStr::from_bytes(name));
                if !is_dir && is_state(name) {
                    if let Some(tx) = &self.partials {
                        let _ = tx.try_send(path);
                    }
                    continue;
                }
                if is_dir {
                    if flags.intersects(ReadFlags::MOVED_FROM | ReadFlags::DELETE) {
                        self.dirs.remove_tree(&self.fd, &path);
                    }
                    if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                        add.push(path.clone());
                    }
                }
                if paths.last() != Some(&path) {
                    paths.push(path);
                }
            }
            // Directories new since the last read: watched now, and
            // listed by the index (it looks at their paths), so files
            // made in them before the watch are not missed.
            for dir in add {
                if let Err(e) = self.dirs.add_tree(&self.fd, &dir) {
                    rescan = Some(format!("cannot watch {}: {e}", dir.display()));
                }
            }
            if let Some(why) = rescan {
                if self.index.send(Change::Rescan(why)).is_err() {
                    return;
                }
            }
            if !paths.is_empty() && self.index.send(Change::Paths(paths)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths the watch sends until `want` is among them (20 s at most).
    fn until(w: &Watch, want: &Path) -> Vec<PathBuf> {
        let mut seen = Vec::new();
        while !seen.iter().any(|p: &PathBuf| p == want) {
            match w.events.recv_timeout(Duration::from_secs(20)) {
                Ok(Change::Paths(p)) => seen.extend(p),
                Ok(Change::Rescan(why)) => panic!("rescan: {why}"),
                Err(_) => panic!("{} never came; saw {seen:?}", want.display()),
            }
        }
        seen
    }

    /// A download's state save (one `pwrite` into the kept-open file)
    /// goes to the partial files and never to the index; writes into its
    /// `.part` and opens of shared files reach neither; a file the index
    /// shares reaches it.
    #[test]
    fn a_state_save_goes_to_the_partials_and_part_writes_and_opens_nowhere() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let st = root.join("f.part.state");
        let state = std::fs::File::create(&st).unwrap();
        let part = std::fs::File::create(root.join("f.part")).unwrap();
        std::fs::write(root.join("served"), b"x").unwrap();
        let (tx, partials) = crossbeam_channel::unbounded();
        let w = watch(&root, Some(tx)).unwrap();
        let long = Duration::from_secs(20);
        part.write_all_at(b"piece", 0).unwrap();
        drop(std::fs::File::open(root.join("served")).unwrap());
        state.write_all_at(b"{}", 0).unwrap();
        assert_eq!(partials.recv_timeout(long), Ok(st.clone()));
        let shared = root.join("shared");
        std::fs::write(&shared, b"x").unwrap();
        let seen = until(&w, &shared);
        assert!(
            seen.iter().all(|p| *p == shared),
            "only the shared file: {seen:?}"
        );
    }

    /// A directory made after the watch started is watched (a file made
    /// in it is seen), one moved in from elsewhere too, under its new
    /// name; one moved out or deleted is reported by its path.
    #[test]
    fn new_and_moved_directories_are_watched_and_removed_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("root");
        let outside = root.with_file_name("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        let w = watch(&root, None).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        until(&w, &root.join("a"));
        wait_watched(&w, &root.join("a/b/late"));
        std::fs::rename(&outside, root.join("moved")).unwrap();
        until(&w, &root.join("moved"));
        wait_watched(&w, &root.join("moved/deep/g"));
        std::fs::rename(root.join("a"), root.with_file_name("gone")).unwrap();
        until(&w, &root.join("a"));
        std::fs::remove_dir_all(root.join("moved")).unwrap();
        until(&w, &root.join("moved"));
        // Stopping interrupts the thread's wait at once.
        drop(w);
    }

    /// Writes `path` until the watch reports it (its directory may be
    /// watched a moment after it appeared).
    fn wait_watched(w: &Watch, path: &Path) {
        let until = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            std::fs::write(path, b"x").unwrap();
            while let Ok(c) = w.events.recv_timeout(Duration::from_millis(100)) {
                if let Change::Paths(p) = c {
                    if p.iter().any(|x| x == path) {
                        return;
                    }
                }
            }
            assert!(
                std::time::Instant::now() < until,
                "{} never seen",
                path.display()
            );
        }
    }
}
