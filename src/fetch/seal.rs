//! The `.part` a download writes, made so that a write by any other
//! process is seen: then the bytes renamed into place are the verified
//! ones without reading the file back.
//!
//! Every piece is verified in memory before it is written, so the `.part`
//! can differ from what was verified only if another process wrote to it.
//! To write, a process must open the file. The `.part` is therefore
//! created anew by each run of the download, unnamed (`O_TMPFILE`), and an
//! inotify watch is put on its inode before it gets a name; from then on
//! any open of it by anyone (`IN_OPEN`), a close after writing, a change of
//! its attributes or links, a move or removal is queued on the watch (the
//! download itself opens it no more). Before the rename the queue is read:
//! empty, nobody else ever opened the file, and what is on disk is what
//! the download wrote. Anything there (a reader too: the peer serving the
//! pieces of a download into its dataset opens it), or no watch at all,
//! and the download reads every piece back and verifies it against the
//! chain before renaming (counted in `Summary::rechecked_bytes`).
//!
//! A resumed download copies the ranges its state claims from the old
//! `.part` into the new file (`copy_file_range`: no hashing) before it
//! names it, so a process that held the old file open writes to a file
//! that is no longer used; the copied pieces are then verified from the
//! new file (`state::salvage`). Where `O_TMPFILE` is not supported the new
//! file is created under a temporary name and watched at once, which
//! leaves the few microseconds between the two unwatched.

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use parking_lot::Mutex;
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// What the watch reports: any of these from another process taints the file.
const WATCHED: WatchFlags = WatchFlags::OPEN
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::DELETE_SELF);

/// The watch on a `.part` created by this run of a download.
pub(crate) struct Watch {
    /// The inotify instance watching it; `None` if it could not be set up
    /// (then the file is checked again before the rename).
    fd: Option<OwnedFd>,
    /// Why the file cannot be trusted unread, if known already.
    tainted: Mutex<Option<String>>,
}

impl Watch {
    /// Creates the `.part` at `part_path` anew, replacing whatever is
    /// there, with the ranges `keep` copied from `old` (the previous
    /// `.part`, when resuming): the file, open for reading and writing,
    /// and its watch.
    pub fn create(
        part_path: &Path,
        old: Option<&File>,
        keep: &[(u64, u64)],
    ) -> io::Result<(File, Watch)> {
        let dir = match part_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = part_path.as_os_str().to_os_string();
        tmp.push(".new");
        let tmp = Path::new(&tmp);
        let (file, watch, named) = match unnamed(dir) {
            Ok(file) => {
                let watch = watch(&file);
                (file, watch, false)
            }
            Err(_) => {
                remove_if_there(tmp)?;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(tmp)?;
                let watch = watch(&file);
                (file, watch, true)
            }
        };
        if let Some(old) = old {
            for &(start, end) in keep {
                copy_range(old, &file, start, end)?;
            }
        }
        if !named {
            remove_if_there(tmp)?;
            let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
            rustix::fs::linkat(
                rustix::fs::CWD,
                proc_path.as_str(),
                rustix::fs::CWD,
                tmp,
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            )?;
        }
        std::fs::rename(tmp, part_path)?;
        let w = Watch {
            fd: watch,
            tainted: Mutex::new(None),
        };
        // Naming it was ours: a link (attributes) and a move.
        *w.tainted.lock() = w.events(ReadFlags::ATTRIB | ReadFlags::MOVE_SELF);
        Ok((file, w))
    }

    /// `Ok` if no other process can have written the `.part` since it was
    /// created; else why it may have.
    pub fn untouched(&self) -> Result<(), String> {
        let mut tainted = self.tainted.lock();
        if tainted.is_none() {
            *tainted = self.events(ReadFlags::empty());
        }
        match &*tainted {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    /// Reads the queued events: `Some(why)` for the first that is not in
    /// `ours`, or if there is no watch or it failed.
    fn events(&self, ours: ReadFlags) -> Option<String> {
        let Some(fd) = &self.fd else {
            return Some("it could not be watched".into());
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(fd, &mut buf);
        loop {
            match reader.next() {
                Ok(event) => {
                    let flags = event.events();
                    if !ours.contains(flags) || flags.is_empty() {
                        return Some(describe(flags));
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return None,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Some(format!("its watch failed: {e}")),
            }
        }
    }
}

/// What an event says about the file, for the log.
fn describe(flags: ReadFlags) -> String {
    let what = if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
        "its watch overflowed"
    } else if flags.contains(ReadFlags::CLOSE_WRITE) {
        "another process wrote to it"
    } else if flags.contains(ReadFlags::OPEN) {
        "another process opened it"
    } else if flags.contains(ReadFlags::ATTRIB) {
        "its attributes or links changed"
    } else if flags.intersects(ReadFlags::MOVE_SELF | ReadFlags::DELETE_SELF | ReadFlags::IGNORED) {
        "it was moved or removed"
    } else {
        "its watch reported a change"
    };
    what.to_string()
}

/// A new unnamed file in `dir`, open for reading and writing.
fn unnamed(dir: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )?;
    Ok(File::from(fd))
}

/// A non-blocking inotify watch on `file`'s inode (through its
/// descriptor's `/proc` link, so the watch is on this very file).
fn watch(file: &File) -> Option<OwnedFd> {
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
        .map_err(|e| log::debug!("no inotify watch on the .part: {e}"))
        .ok()?;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    match inotify::add_watch(&fd, path.as_str(), WATCHED) {
        Ok(_) => Some(fd),
        Err(e) => {
            log::debug!("no inotify watch on the .part: {e}");
            None
        }
    }
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Copies bytes `[start, end)` of `from` to the same place in `to`, in the
/// kernel where it can (a reflink on file systems that have them).
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (start, start);
    while off_in < end {
        let want = usize::try_from(end - off_in)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want) {
            Ok(0) => return Ok(()), // the old file is shorter: the rest is not there
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return copy_by_reading(from, to, off_in, end),
        }
    }
    Ok(())
}

fn copy_by_reading(from: &File, to: &File, mut off: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; (1 << 20).min(usize::try_from(end - off).unwrap_or(1 << 20))];
    while off < end {
        let want = buf
            .len()
            .min(usize::try_from(end - off).unwrap_or(usize::MAX));
        let n = from.read_at(&mut buf[..want], off)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_part_is_untouched_until_another_process_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        std::fs::write(&part, b"old bytes of a previous run").unwrap();
        let old = File::open(&part).unwrap();
        let (file, s) = Watch::create(&part, Some(&old), &[(4, 9)]).unwrap();
        drop(old);
        file.write_all_at(b"new", 0).unwrap();
        file.set_len(9).unwrap();
        assert_eq!(s.untouched(), Ok(()));
        assert_eq!(std::fs::read(&part).unwrap(), b"new\0bytes");
        assert!(!dir.path().join("f.part.new").exists());
        // Another open, even to read: the file must be read back.
        drop(File::open(&part).unwrap());
        assert!(s.untouched().is_err());
        assert!(s.untouched().is_err(), "it stays tainted");
    }

    #[test]
    fn a_write_through_a_descriptor_opened_before_is_to_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("g.part");
        std::fs::write(&part, b"0123456789").unwrap();
        let stale = OpenOptions::new().write(true).open(&part).unwrap();
        let old = File::open(&part).unwrap();
        let (file, s) = Watch::create(&part, Some(&old), &[(0, 10)]).unwrap();
        stale.write_all_at(b"X", 0).unwrap();
        drop(stale);
        assert_eq!(s.untouched(), Ok(()));
        let mut back = vec![0u8; 10];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, b"0123456789");
    }
}
