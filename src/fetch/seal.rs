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
//! Where the counts do not add up (an open not closed, or more closes than
//! opens), `/proc/*/fd` and `fdinfo` say who holds the file now and how: a
//! descriptor open for writing taints it, read-only ones (and none) do not
//! (a writer that closed before the look queued its close-after-writing,
//! read after the look); a process `/proc` cannot show (another user's)
//! is waited for, then taints it.
//!
//! Before the rename the queue is read: its mode still read-only, no mode
//! or attribute change, no close after writing, no link, move or removal,
//! and every open closed read-only, or still open only in descriptors
//! `/proc` shows read-only (readers, such as the peer sharing the
//! directory serving the download's pieces; where `/proc` cannot tell,
//! they are waited for a moment):
//! nobody else can have written the file, and what is on disk is what the
//! download wrote. Anything else, an overflowed queue, or no watch at all,
//! and the download reads every piece back and verifies it against the
//! chain before renaming (counted in `Summary::rechecked_bytes`). The
//! queue is read once more after the rename ([`Watch::still_untouched`]):
//! a change between the check and the rename has the file read back in
//! place (and put back as the `.part` if a piece changed). The file gets
//! the mode it was created with just before the check (its own mode
//! change expected once; then opens are what a writer needs, and they are
//! counted up to the rename). The download itself never opens the `.part`
//! again nor closes it before the check.
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
use std::os::unix::ffi::OsStrExt;
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
    /// The name of the download's state file (`<part>.state`), whose reads
    /// by a peer sharing the directory are watched (see
    /// [`Watch::await_state_read`]).
    state_name: Option<std::ffi::CString>,
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
    /// `opens` then.
    checked_opens: u64,
    /// The file has its mode back (see [`Watch::give_mode`]).
    mode_given: bool,
    /// Another process read the state file at some point (a peer sharing
    /// the directory follows the download).
    state_followed: bool,
    /// An open of the state file seen since [`Watch::before_last_state`].
    state_opened: bool,
    /// Reads of the state file opened since then, closed.
    state_reads: u64,
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
        let state_name = part_path.file_name().and_then(|n| {
            let mut n = n.as_bytes().to_vec();
            n.extend_from_slice(b".state");
            std::ffi::CString::new(n).ok()
        });
        let w = Watch {
            fd,
            file_wd,
            seen: Mutex::new(Seen::default()),
            state_name,
            mode,
        };
        // Its mode and naming it were ours: attributes (the mode, a
        // link) and a move. Its mode must still be ours once they are read.
        w.drain(ReadFlags::ATTRIB | ReadFlags::MOVE_SELF, u32::MAX);
        w.check_mode(&file);
        Ok((file, w))
    }

    /// Taints the file if anyone can write to it by its mode.
    fn check_mode(&self, file: &File) {
        if self.seen.lock().mode_given {
            return;
        }
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

    /// After the rename: `Ok` if nothing since [`Watch::untouched`]
    /// answered says another process may have written the file (between
    /// that check and the rename): no event but the rename's own move, and
    /// no open but read-only ones (not waited for).
    pub fn still_untouched(&self, file: &File) -> Result<(), String> {
        self.drain(ReadFlags::MOVE_SELF, u32::MAX);
        {
            let seen = self.seen.lock();
            if seen.foreign > seen.checked {
                return Err(seen
                    .tainted
                    .clone()
                    .unwrap_or_else(|| "it changed after its check".into()));
            }
        }
        match self.settled(file, ReadFlags::MOVE_SELF) {
            Settled::Clean => Ok(()),
            Settled::Tainted(why) | Settled::Open(why) => Err(why),
        }
    }

    /// Gives the file the mode it was created with (read-only until then),
    /// before its check: its ctime is then final before the rename (a
    /// peer sharing the directory takes a landed file's hashes by its
    /// stat). Its own mode change is expected once; another process's,
    /// before it, is a change.
    fn give_mode(&self, file: &File) {
        self.drain(ReadFlags::empty(), 0);
        if std::mem::replace(&mut self.seen.lock().mode_given, true) {
            return;
        }
        if let Some(mode) = self.mode {
            if let Err(e) = rustix::fs::fchmod(file, rustix::fs::Mode::from_raw_mode(mode)) {
                log::warn!("cannot give the downloaded file its mode {mode:o}: {e}");
                return;
            }
            self.drain(ReadFlags::ATTRIB, 1);
        }
    }

    /// Called just before the download saves its last state (every piece
    /// verified): reads of the state file are counted from here.
    pub fn before_last_state(&self) {
        self.drain(ReadFlags::empty(), 0);
        let mut seen = self.seen.lock();
        seen.state_opened = false;
        seen.state_reads = 0;
    }

    /// If a peer sharing the directory follows the download (it read the
    /// state file before), waits up to `limit` for it to read the last
    /// state, opened after [`Watch::before_last_state`]: a peer that saw
    /// every piece verified takes the landed file's hashes instead of
    /// reading the whole file again (`partial.rs`), and the state is
    /// removed just after the rename. Without the wait a fast end of the
    /// download (direct writes leave the fsync nothing to do) beat the
    /// peer's read most of the time in a swarm of 16 hosts on 2 cores, and
    /// 8-12 of its 16 peers hashed the landed 128 MiB again.
    pub fn await_state_read(&self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            self.drain(ReadFlags::empty(), 0);
            {
                let seen = self.seen.lock();
                if !seen.state_followed || seen.state_reads > 0 || self.fd.is_none() {
                    return;
                }
            }
            if Instant::now() >= until {
                log::debug!(
                    "the last state was not read by the peer sharing the directory in time"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Reads the events queued so far (called now and then while the
    /// download runs, so a busy directory does not overflow the queue).
    pub fn poll(&self) {
        self.drain(ReadFlags::empty(), 0);
    }

    /// `Ok` if no other process can have written the `.part` since it was
    /// created; else why it may have. Waits up to [`READERS_GRACE`] for
    /// readers still open to close.
    /// The file gets its mode back first (see [`Watch::give_mode`]),
    /// whatever the answer.
    pub fn untouched(&self, file: &File) -> Result<(), String> {
        let until = Instant::now() + READERS_GRACE;
        self.check_mode(file);
        self.give_mode(file);
        loop {
            self.drain(ReadFlags::empty(), 0);
            {
                let mut seen = self.seen.lock();
                seen.checked = seen.foreign;
                seen.checked_opens = seen.opens;
            }
            match self.settled(file, ReadFlags::empty()) {
                Settled::Clean => return Ok(()),
                Settled::Tainted(why) => return Err(why),
                Settled::Open(why) if Instant::now() >= until => return Err(why),
                Settled::Open(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// What the events read so far, and `/proc` where they do not add up,
    /// say (`ours` as in [`Watch::drain`], for the events after the check).
    fn settled(&self, file: &File, ours: ReadFlags) -> Settled {
        {
            let seen = self.seen.lock();
            if let Some(why) = &seen.tainted {
                return Settled::Tainted(why.clone());
            }
            if seen.opens == seen.read_closes {
                return Settled::Clean;
            }
        }
        // Readers still open, or opens merged away (two at the same
        // instant on two CPUs): who holds it now? A writer that closed
        // before the look queued its close-after-writing: read again after.
        let holders = open_elsewhere(file);
        self.drain(ours, u32::MAX);
        let seen = self.seen.lock();
        if let Some(why) = &seen.tainted {
            return Settled::Tainted(why.clone());
        }
        match holders {
            Holders::Nobody | Holders::ReadOnly => Settled::Clean,
            Holders::Writer(pid) => {
                Settled::Tainted(format!("process {pid} holds it open for writing"))
            }
            Holders::Unknown if seen.read_closes > seen.opens => Settled::Tainted(format!(
                "{} closes of it by other processes for {} opens seen",
                seen.read_closes, seen.opens
            )),
            Holders::Unknown => Settled::Open(format!(
                "{} of the {} opens of it by other processes are not closed",
                seen.opens - seen.read_closes,
                seen.opens
            )),
        }
    }

    /// Reads the queued events into the counts; `ours` are the file's
    /// events this download caused, accepted up to `max_ours` times (each
    /// queued event; identical ones in a row are merged into one).
    fn drain(&self, ours: ReadFlags, mut max_ours: u32) {
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
                        // another file of the directory: the state file's
                        // reads are followed (this process never reads it).
                        let state = self.state_name.as_deref();
                        if state.is_some() && event.file_name() == state {
                            if flags.contains(ReadFlags::OPEN) {
                                seen.state_opened = true;
                            } else if flags.contains(ReadFlags::CLOSE_NOWRITE) {
                                seen.state_followed = true;
                                if std::mem::take(&mut seen.state_opened) {
                                    seen.state_reads += 1;
                                }
                            }
                        }
                    } else if flags.contains(ReadFlags::OPEN) {
                        seen.opens += 1;
                    } else if flags.contains(ReadFlags::CLOSE_NOWRITE) {
                        // More closes than opens: two opens were merged
                        // (see `settled`).
                        seen.read_closes += 1;
                    } else if !ours.contains(flags) || flags.is_empty() || max_ours == 0 {
                        seen.taint(|| describe(flags));
                    } else {
                        max_ours -= 1;
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

/// Who else holds the file open, by `/proc`.
enum Holders {
    /// No other process holds it open (every process seen).
    Nobody,
    /// Descriptors of other processes, all read-only, every process seen.
    ReadOnly,
    /// A descriptor of this process open for writing.
    Writer(u32),
    /// Some processes could not be looked at.
    Unknown,
}

/// What [`Watch::settled`] concludes.
enum Settled {
    /// Nobody else can have written the file.
    Clean,
    /// Someone may have: why.
    Tainted(String),
    /// Opens not closed that `/proc` cannot tell about: why.
    Open(String),
}

/// Looks through `/proc/*/fd` for descriptors of `file` other than the
/// download's own (`file`), and their access mode (`/proc/*/fdinfo`'s `flags`): a
/// reader still open (the peer sharing the directory, serving a piece)
/// then costs no wait and no read-back. Without access to every process
/// (another user's), nothing is concluded.
fn open_elsewhere(file: &File) -> Holders {
    use std::os::unix::fs::MetadataExt;
    let Ok(ours) = file.metadata() else {
        return Holders::Unknown;
    };
    let me = std::process::id();
    let own = file.as_raw_fd().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Holders::Unknown;
    };
    let mut found = 0u32;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let fds = match std::fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            // Gone since: fine. Not ours to look at: unknown.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => return Holders::Unknown,
        };
        for fd in fds.flatten() {
            if pid == me && fd.file_name().to_str() == Some(own.as_str()) {
                continue;
            }
            let same = std::fs::metadata(fd.path())
                .is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
            if !same {
                continue;
            }
            let info = entry.path().join("fdinfo").join(fd.file_name());
            let flags = std::fs::read_to_string(info).ok().and_then(|t| {
                let v = t.lines().find_map(|l| l.strip_prefix("flags:"))?;
                u32::from_str_radix(v.trim(), 8).ok()
            });
            match flags {
                Some(f) if f & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32 => found += 1,
                Some(_) => return Holders::Writer(pid),
                None => return Holders::Unknown,
            }
        }
    }
    match found {
        0 => Holders::Nobody,
        _ => Holders::ReadOnly,
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
        // A reader still open: its descriptor is read-only.
        let slow = File::open(&part).unwrap();
        assert_eq!(s.untouched(&file), Ok(()));
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
        assert_eq!(
            s.untouched(&file),
            Ok(()),
            "its own mode change is expected"
        );
        let landed = dir.path().join("m");
        std::fs::rename(&part, &landed).unwrap();
        assert_eq!(s.still_untouched(&file), Ok(()), "the rename is ours");
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
        // Writable again by its mode now: an open for writing is enough.
        let w = OpenOptions::new().write(true).open(&part).unwrap();
        w.write_all_at(b"X", 0).unwrap();
        std::fs::rename(&part, dir.path().join("r")).unwrap();
        assert!(s.still_untouched(&file).is_err(), "an open after the check");
        drop(w);
        assert!(
            s.still_untouched(&file).is_err(),
            "and a close after writing"
        );
    }

    #[test]
    fn a_mode_change_by_another_process_before_the_check_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("c.part");
        let (file, s) = Watch::create(&part, None, &[]).unwrap();
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o444)).unwrap();
        assert!(s.untouched(&file).is_err(), "even to the same mode");
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
    fn a_reader_in_another_process_still_open_costs_no_wait_a_writer_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("o.part");
        let (file, s) = Watch::create(&part, None, &[]).unwrap();
        file.write_all_at(b"verified", 0).unwrap();
        let spawn = |f: File| {
            std::process::Command::new("sleep")
                .arg("30")
                .stdin(f)
                .spawn()
                .unwrap()
        };
        let mut reader = spawn(File::open(&part).unwrap());
        let started = Instant::now();
        let answer = s.untouched(&file);
        let waited = started.elapsed();
        reader.kill().unwrap();
        reader.wait().unwrap();
        assert_eq!(answer, Ok(()));
        assert!(waited < READERS_GRACE, "{waited:?}");
        // Writable by its mode now (given back at the check): a process
        // holding it open for writing is seen by its descriptor's mode.
        let mut writer = spawn(OpenOptions::new().write(true).open(&part).unwrap());
        let answer = s.untouched(&file);
        writer.kill().unwrap();
        writer.wait().unwrap();
        assert!(answer.is_err());
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
