//! The `.part` a download writes, made so that a write by any other
//! process is seen: then the bytes renamed into place are the verified
//! ones without reading the file back.
//!
//! Every piece is verified in memory before it is written, so the `.part`
//! can differ from what was verified only if another process wrote to it.
//! The `.part` is therefore created anew by each run of the download,
//! unnamed (`O_TMPFILE`), and inotify watches are put on its inode and on
//! its directory before it gets a name; and it is made read-only for
//! everyone (its owner included) until it is in place: the download
//! writes through the descriptor it opened when it created the file, and
//! any other process must change the file's mode before it can open it
//! for writing or truncate it by name. A change of its mode, attributes
//! or links, a move, a removal or a close after writing each queue an
//! event that is never lost (only merged into an identical one; an
//! overflowed queue says so), so a writer cannot go unseen, still open or
//! not, whatever it wrote and how (`write`, `mmap`, `truncate`). Writes
//! themselves (`IN_MODIFY`) cannot be told from the download's own.
//!
//! Opens and closes are counted too, for a process that may open a file
//! for writing whatever its mode (`CAP_DAC_OVERRIDE`, root): every open by
//! anyone queues one `IN_OPEN`, and every close one `IN_CLOSE_NOWRITE`
//! (opened read-only) or `IN_CLOSE_WRITE`. inotify merges an event into
//! the last one queued if they are identical; the directory's watch queues
//! its own copy of each open and close of the file just before the inode's
//! (another watch descriptor), so two opens in a row never merge. Two
//! opens at the same instant on two CPUs can still interleave their copies
//! and merge; so the counts are the second line, the mode the first.
//!
//! Before the rename the queue is read: its mode still read-only, no mode
//! or attribute change, no close after writing, no link, move or removal,
//! and every open closed read-only (readers, such as the peer sharing the
//! directory serving the download's pieces, are waited for a moment):
//! nobody else can have written the file, and what is on disk is what the
//! download wrote. Anything else, an overflowed queue, or no watch at all,
//! and the download reads every piece back and verifies it against the
//! chain before renaming (counted in `Summary::rechecked_bytes`). The
//! queue is read once more after the rename ([`Watch::still_untouched`]):
//! a change between the check and the rename has the file read back in
//! place (and put back as the `.part` if a piece changed). Then the file
//! gets the mode it was created with. The download itself never opens the
//! `.part` again nor closes it before the check.
//!
//! A resumed download copies the ranges its state claims from the old
//! `.part` into the new file (`copy_file_range`: no hashing) before it
//! names it, so a process that held the old file open writes to a file
//! that is no longer used; the copied pieces are then verified from the
//! new file (`state::salvage`). Where `O_TMPFILE` is not supported the new
//! file is created under a temporary name and watched at once, which
//! leaves the few microseconds between the two unwatched. Out of reach of
//! the watch: a process opening the file by handle (`open_by_handle_at`,
//! which needs `CAP_DAC_READ_SEARCH`), like any process that can trace
//! the download itself.

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// What the inode's watch reports.
const ON_FILE: WatchFlags = WatchFlags::OPEN
    .union(WatchFlags::CLOSE_NOWRITE)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::DELETE_SELF);
/// What the directory's watch reports (its events only keep the file's
/// from merging: they are not counted).
const ON_DIR: WatchFlags = WatchFlags::OPEN
    .union(WatchFlags::CLOSE_NOWRITE)
    .union(WatchFlags::CLOSE_WRITE);
/// How long the check before the rename waits for readers to close.
const READERS_GRACE: Duration = Duration::from_millis(500);

/// The watch on a `.part` created by this run of a download.
pub(crate) struct Watch {
    /// The inotify instance; `None` if it could not be set up (then the
    /// file is checked again before the rename).
    fd: Option<OwnedFd>,
    /// The inode's watch descriptor.
    file_wd: i32,
    /// What the events read so far say.
    seen: Mutex<Seen>,
    /// The mode the file was created with (umask and default ACL
    /// applied), given back once it is in place; `None` if it could not
    /// be read (the file then keeps the write bits it was created with).
    mode: Option<u32>,
}

/// The file's events read so far.
#[derive(Default)]
struct Seen {
    /// Opens by anyone since the watch began.
    opens: u64,
    /// Closes of files opened read-only.
    read_closes: u64,
    /// Why the file cannot be trusted unread, once known.
    tainted: Option<String>,
    /// Events that make the file untrusted, counted (they go on after
    /// the first).
    foreign: u64,
    /// `foreign` when [`Watch::untouched`] last answered.
    checked: u64,
}

impl Seen {
    fn taint(&mut self, why: impl FnOnce() -> String) {
        self.foreign += 1;
        self.tainted.get_or_insert_with(why);
    }
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
        let (file, named) = match unnamed(dir) {
            Ok(file) => (file, false),
            Err(_) => {
                remove_if_there(tmp)?;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(tmp)?;
                (file, true)
            }
        };
        let (fd, file_wd) = match watch(&file, dir) {
            Some((fd, wd)) => (Some(fd), wd),
            None => (None, -1),
        };
        // Read-only for everyone until it is in place: another process
        // must change its mode (an event) before it can open it for
        // writing or truncate it by name.
        let mode = rustix::fs::fstat(&file).ok().map(|st| st.st_mode & 0o7777);
        if let Some(mode) = mode {
            rustix::fs::fchmod(&file, rustix::fs::Mode::from_raw_mode(mode & 0o444))?;
        }
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
            fd,
            file_wd,
            seen: Mutex::new(Seen::default()),
            mode,
        };
        // Its mode and naming it were ours: attributes (the mode, a
        // link) and a move. Its mode must still be ours once they are read.
        w.drain(ReadFlags::ATTRIB | ReadFlags::MOVE_SELF);
        w.check_mode(&file);
        Ok((file, w))
    }

    /// Taints the file if anyone can write to it by its mode.
    fn check_mode(&self, file: &File) {
        let writable = match rustix::fs::fstat(file) {
            Ok(st) => st.st_mode & 0o222 != 0,
            Err(_) => true,
        };
        if writable {
            self.seen
                .lock()
                .taint(|| "its mode lets other processes write it".into());
        }
    }

    /// After the rename: `Ok` if no event since [`Watch::untouched`]
    /// answered says another process may have written the file (between
    /// that check and the rename); the rename's own move is expected.
    pub fn still_untouched(&self) -> Result<(), String> {
        self.drain(ReadFlags::MOVE_SELF);
        let seen = self.seen.lock();
        match seen.foreign > seen.checked {
            true => Err(seen
                .tainted
                .clone()
                .unwrap_or_else(|| "it changed after its check".into())),
            false => Ok(()),
        }
    }

    /// Gives the file in place the mode it was created with.
    pub fn give_mode(&self, file: &File) {
        if let Some(mode) = self.mode {
            if let Err(e) = rustix::fs::fchmod(file, rustix::fs::Mode::from_raw_mode(mode)) {
                log::warn!("cannot give the downloaded file its mode {mode:o}: {e}");
            }
        }
    }

    /// Reads the events queued so far (called now and then while the
    /// download runs, so a busy directory does not overflow the queue).
    pub fn poll(&self) {
        self.drain(ReadFlags::empty());
    }

    /// `Ok` if no other process can have written the `.part` since it was
    /// created; else why it may have. Waits up to [`READERS_GRACE`] for
    /// readers still open to close.
    pub fn untouched(&self, file: &File) -> Result<(), String> {
        let until = Instant::now() + READERS_GRACE;
        self.check_mode(file);
        loop {
            self.drain(ReadFlags::empty());
            let mut seen = self.seen.lock();
            seen.checked = seen.foreign;
            if let Some(why) = &seen.tainted {
                return Err(why.clone());
            }
            if seen.opens == seen.read_closes {
                return Ok(());
            }
            if seen.read_closes > seen.opens {
                // Not what the counting expects (an open not seen): read
                // the file back rather than trust it.
                return Err(format!(
                    "{} closes of it by other processes for {} opens seen",
                    seen.read_closes, seen.opens
                ));
            }
            if Instant::now() >= until {
                return Err(format!(
                    "{} of the {} opens of it by other processes are not closed",
                    seen.opens.saturating_sub(seen.read_closes),
                    seen.opens
                ));
            }
            drop(seen);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reads the queued events into the counts; `ours` are the file's
    /// events this download caused (accepted once each, before any other).
    fn drain(&self, ours: ReadFlags) {
        let mut seen = self.seen.lock();
        let Some(fd) = &self.fd else {
            seen.taint(|| "it could not be watched".into());
            return;
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(fd, &mut buf);
        loop {
            match reader.next() {
                Ok(event) => {
                    let flags = event.events();
                    if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                        seen.taint(|| describe(flags));
                    } else if event.wd() != self.file_wd {
                        // The directory's copy of an open or close, or
                        // another file of the directory.
                    } else if flags.contains(ReadFlags::OPEN) {
                        seen.opens += 1;
                    } else if flags.contains(ReadFlags::CLOSE_NOWRITE) {
                        seen.read_closes += 1;
                        if seen.read_closes > seen.opens {
                            // A close whose open was not counted: inotify
                            // merged or lost events, so the counts prove
                            // nothing any more.
                            seen.taint(|| "its opens and closes do not add up".into());
                        }
                    } else if !ours.contains(flags) || flags.is_empty() {
                        seen.taint(|| describe(flags));
                    }
                }
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    seen.taint(|| format!("its watch failed: {e}"));
                    return;
                }
            }
        }
    }
}

/// What an event says about the file, for the log.
fn describe(flags: ReadFlags) -> String {
    let what = if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
        "its watch overflowed"
    } else if flags.contains(ReadFlags::CLOSE_WRITE) {
        "another process opened it for writing"
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

/// A non-blocking inotify instance watching `file`'s inode (through its
/// descriptor's `/proc` link, so the watch is on this very file) and its
/// directory `dir`; and the inode's watch descriptor.
fn watch(file: &File, dir: &Path) -> Option<(OwnedFd, i32)> {
    let no = |e: rustix::io::Errno| log::debug!("no inotify watch on the .part: {e}");
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
        .map_err(no)
        .ok()?;
    inotify::add_watch(&fd, dir, ON_DIR).map_err(no).ok()?;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let wd = inotify::add_watch(&fd, path.as_str(), ON_FILE)
        .map_err(no)
        .ok()?;
    Some((fd, wd))
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
    use std::os::unix::fs::PermissionsExt;

    /// Opens `path` for writing, as another process would: first giving it
    /// write permission if the open is refused (a process without
    /// `CAP_DAC_OVERRIDE` must), which its watch sees.
    fn open_to_write(path: &Path) -> File {
        match OpenOptions::new().write(true).open(path) {
            Ok(f) => f,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
                OpenOptions::new().write(true).open(path).unwrap()
            }
        }
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn readers_that_closed_leave_it_untouched_a_writer_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("f.part");
        std::fs::write(&part, b"old bytes of a previous run").unwrap();
        let old = File::open(&part).unwrap();
        let (file, s) = Watch::create(&part, Some(&old), &[(4, 9)]).unwrap();
        drop(old);
        file.write_all_at(b"new", 0).unwrap();
        file.set_len(9).unwrap();
        assert_eq!(s.untouched(&file), Ok(()));
        assert_eq!(std::fs::read(&part).unwrap(), b"new\0bytes");
        assert!(!dir.path().join("f.part.new").exists());
        // Readers, many at once, all closed: still untouched.
        let readers: Vec<File> = (0..5).map(|_| File::open(&part).unwrap()).collect();
        s.poll();
        drop(readers);
        drop(File::open(&part).unwrap());
        assert_eq!(s.untouched(&file), Ok(()));
        // A reader still open: not trusted once the grace is over.
        let slow = File::open(&part).unwrap();
        assert!(s.untouched(&file).is_err());
        drop(slow);
        assert_eq!(s.untouched(&file), Ok(()), "it closed");
        // Opened for writing, even without a write: read back.
        drop(open_to_write(&part));
        assert!(s.untouched(&file).is_err());
        assert!(s.untouched(&file).is_err(), "it stays tainted");
    }

    #[test]
    fn nobody_can_write_it_until_it_is_in_place_then_it_gets_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("m.part");
        let (file, s) = Watch::create(&part, None, &[]).unwrap();
        assert_eq!(mode_of(&part) & 0o222, 0, "read-only while downloading");
        file.write_all_at(b"ours", 0).unwrap();
        assert_eq!(s.untouched(&file), Ok(()));
        let landed = dir.path().join("m");
        std::fs::rename(&part, &landed).unwrap();
        assert_eq!(s.still_untouched(), Ok(()), "the rename is ours");
        s.give_mode(&file);
        // The mode a file created here gets (umask, default ACL).
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        assert_eq!(mode_of(&landed), mode_of(&probe));
        assert_eq!(std::fs::read(&landed).unwrap(), b"ours");
    }

    #[test]
    fn a_mode_change_and_a_write_between_the_check_and_the_rename_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("r.part");
        let (file, s) = Watch::create(&part, None, &[]).unwrap();
        file.write_all_at(b"verified", 0).unwrap();
        assert_eq!(s.untouched(&file), Ok(()));
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = OpenOptions::new().write(true).open(&part).unwrap();
        w.write_all_at(b"X", 0).unwrap();
        std::fs::rename(&part, dir.path().join("r")).unwrap();
        assert!(s.still_untouched().is_err());
        drop(w);
    }

    #[test]
    fn a_write_through_a_second_descriptor_still_open_is_seen() {
        // The writer is still open at the check and may have written: its
        // open was counted, or (without CAP_DAC_OVERRIDE) it had to change
        // the mode first.
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("w.part");
        let (file, s) = Watch::create(&part, None, &[]).unwrap();
        file.write_all_at(&[1u8; 8192], 0).unwrap();
        let w = open_to_write(&part);
        w.write_all_at(b"corrupt", 100).unwrap();
        for k in 0..50u64 {
            file.write_all_at(&[2u8; 4096], 8192 + k * 4096).unwrap();
        }
        assert!(s.untouched(&file).is_err());
        drop(w);
        assert!(s.untouched(&file).is_err());
    }

    #[test]
    fn a_path_only_open_does_not_break_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("p.part");
        let (file, s) = Watch::create(&part, None, &[]).unwrap();
        // O_PATH opens are not reported as opens; whatever their close
        // reports, the counts must neither underflow nor prove a writer
        // absent that could have been there.
        for _ in 0..3 {
            drop(
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH)
                    .open(&part)
                    .unwrap(),
            );
        }
        let first = s.untouched(&file);
        assert_eq!(
            s.untouched(&file),
            first,
            "the answer does not change by itself"
        );
        drop(open_to_write(&part));
        assert!(
            s.untouched(&file).is_err(),
            "a writer is still seen after them"
        );
    }

    #[test]
    fn a_writer_opened_among_readers_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("h.part");
        let (file, s) = Watch::create(&part, None, &[]).unwrap();
        // Opens in a row, nothing read in between: none is merged away.
        let a = File::open(&part).unwrap();
        let w = open_to_write(&part);
        let b = File::open(&part).unwrap();
        drop(a);
        drop(b);
        assert!(s.untouched(&file).is_err(), "the writer is still open");
        drop(w);
        assert!(s.untouched(&file).is_err(), "and it closed after writing");
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
        assert_eq!(s.untouched(&file), Ok(()));
        let mut back = vec![0u8; 10];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, b"0123456789");
    }
}
