//! A file's SHA1 and its SHA-1 chaining values in one read and one SHA-1
//! pass: the chaining values are the whole-file hasher's state at each
//! piece boundary ([`crate::chain::Chainer`]), so the pieces cost nothing
//! beyond the file's SHA1.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::entry::{FileStat, Hashed};
use crate::chain::Chainer;
use crate::protocol::piece_size;

/// Read buffer size: large enough to amortise syscalls, small enough for L2.
const BUF_SIZE: usize = 1 << 20;

thread_local! {
    /// One read buffer per hashing thread, allocated once: allocating (and
    /// zeroing) 1 MiB per file dominated the cost of hashing small files.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Opens `path` for reading without blocking on a FIFO that replaced a file
/// since it was listed, and checks that what was opened is a regular file.
pub fn open_regular(path: &Path) -> io::Result<(File, FileStat)> {
    let file = open_path(path)?;
    let stat = regular_stat(&file)?;
    Ok((file, stat))
}

/// The stat of the open `file`; an `InvalidInput` error if it is not a
/// regular file.
fn regular_stat(file: &File) -> io::Result<FileStat> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(FileStat::of(&meta))
}

/// Hashes everything `r` yields, cut by the piece size of `expected`
/// bytes (the size listed). `progress` counts bytes
/// as they are read; `stop` aborts the read with `ErrorKind::Interrupted`.
pub fn hash_reader(
    r: impl Read,
    expected: u64,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> io::Result<Hashed> {
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < BUF_SIZE {
                buf.resize(BUF_SIZE, 0);
            }
            hash_with(r, &mut buf, expected, stop, progress)
        }
        // Re-entered on this thread (cannot happen today): use a fresh buffer.
        Err(_) => hash_with(r, &mut vec![0u8; BUF_SIZE], expected, stop, progress),
    })
}

fn hash_with(
    mut r: impl Read,
    buf: &mut [u8],
    expected: u64,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> io::Result<Hashed> {
    let mut chainer = Chainer::new(piece_size(expected));
    let mut total: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "index stopped"));
        }
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        progress.fetch_add(n as u64, Ordering::Relaxed);
        chainer.update(&buf[..n]);
    }
    // A read of another size than listed is cut at the listed size's
    // pieces, but never used: the callers compare the size read with the
    // stat and send the file to settle.
    let (sha1, chain) = chainer.finish();
    Ok(Hashed {
        sha1,
        size: total,
        chain,
    })
}

/// A hashed file: its hashes and the stat of what was read.
#[derive(Debug)]
pub struct HashedFile {
    /// The hashes.
    pub hashed: Hashed,
    /// `fstat` of the descriptor after the read: compared with the listed
    /// stat, it says whether the bytes read are the listed file's, unchanged
    /// (a write during the read changes its mtime or size; a replaced file
    /// has another inode).
    pub stat: FileStat,
}

/// Opens the file at `path` for hashing: non-blocking, so a FIFO that
/// replaced the file since it was listed does not hang the read.
pub fn open_path(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// [`open_path`] for the file `name` of the open directory `dir`: the
/// name is resolved in that directory alone, not from the root down (a
/// third of the kernel's time per small file went to walking the path).
pub fn open_at(dir: &rustix::fd::OwnedFd, name: &OsStr) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// Opens the directory at `path` to open files in it ([`open_at`]).
pub fn open_dir(path: &Path) -> io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// What hashing one file gave.
#[derive(Debug)]
pub enum Outcome {
    /// Its hashes, and the stat they hold for.
    Hashed(HashedFile),
    /// (Listed without its stat only.) Modified less than `settle` ago, or
    /// during the read: it waits to settle, with this stat.
    Unsettled(FileStat),
}

/// Hashes `file`, listed without its stat: `fstat` first (a file modified
/// less than `settle` ago is not read), then its size read, then `fstat`
/// again: a change in between sends it to settle too. The two `fstat`s
/// of the open file cost less than one `statx` by name.
pub fn hash_unlisted(
    file: File,
    settle: Duration,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> io::Result<Outcome> {
    let before = regular_stat(&file)?;
    if !before.settled(settle) {
        return Ok(Outcome::Unsettled(before));
    }
    let read = hash_listed(file, before.size, stop, progress)?;
    if read.stat.same_content_key(&before) && read.hashed.size == read.stat.size {
        Ok(Outcome::Hashed(read))
    } else {
        Ok(Outcome::Unsettled(read.stat))
    }
}

/// Hashes `file`, listed with `size` bytes: reads that many and no more
/// (no last `read` to see the end, and no `fstat` before: two syscalls in
/// six for a small file), then checks with one `fstat` that what was read
/// is a regular file. The caller compares that stat with the listed one.
pub fn hash_listed(
    mut file: File,
    size: u64,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> io::Result<HashedFile> {
    let hashed = hash_reader((&mut file).take(size), size, stop, progress)?;
    Ok(HashedFile {
        hashed,
        stat: regular_stat(&file)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(data: &[u8]) -> Hashed {
        let list = crate::protocol::PieceList::of_content(data);
        Hashed {
            sha1: list.sha1,
            size: list.size,
            chain: list.chain,
        }
    }

    /// A reader that hands out at most 7 bytes at a time, to cross boundaries oddly.
    struct Dribble<'a>(&'a [u8]);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(7 + buf.len() % 5000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn chains_match_reference_at_every_edge() {
        let stop = AtomicBool::new(false);
        let prog = AtomicU64::new(0);
        let p = crate::protocol::BASE_BLOCK as usize;
        let data: Vec<u8> = (0..5 * p as u32 + 100)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for len in [
            0usize,
            1,
            63,
            64,
            65,
            p - 1,
            p,
            p + 1,
            3 * p,
            3 * p + 64,
            5 * p + 99,
        ] {
            let d = &data[..len];
            let want = reference(d);
            assert_eq!(want.sha1, crate::digest::Sha1Digest::of(d));
            let got = hash_reader(d, len as u64, &stop, &prog).unwrap();
            assert_eq!(got, want, "len {len}");
            let got = hash_reader(Dribble(d), len as u64, &stop, &prog).unwrap();
            assert_eq!(got, want, "dribble len {len}");
        }
    }

    #[test]
    fn a_file_listed_without_its_stat_is_read_only_once_settled() {
        let stop = AtomicBool::new(false);
        let prog = AtomicU64::new(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let settle = Duration::from_secs(60);
        match hash_unlisted(open_path(&path).unwrap(), settle, &stop, &prog).unwrap() {
            Outcome::Unsettled(st) => assert_eq!(st.size, 10),
            Outcome::Hashed(_) => panic!("a file written just now was read"),
        }
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        match hash_unlisted(open_path(&path).unwrap(), settle, &stop, &prog).unwrap() {
            Outcome::Hashed(h) => {
                assert_eq!(h.hashed, reference(b"0123456789"));
                assert_eq!(h.stat.size, 10);
            }
            Outcome::Unsettled(_) => panic!("an old file waits"),
        }
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let err = hash_unlisted(open_path(&fifo).unwrap(), settle, &stop, &prog).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn stop_flag_aborts() {
        let stop = AtomicBool::new(true);
        let prog = AtomicU64::new(0);
        let err = hash_reader(&b"abc"[..], 3, &stop, &prog).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    }
}
