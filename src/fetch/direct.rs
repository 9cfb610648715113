//! Writing verified pieces into the `.part`: straight to the disk
//! (`O_DIRECT`) where the file system takes it, else through the page
//! cache in small steps.
//!
//! Why: with many downloads at once on few cores, copying every byte
//! into the page cache was the largest single cost of a `get`, more than
//! its SHA-1 pass (20 concurrent `get`s of 256 MiB, `perf record -a`:
//! `copy_folio_from_iter_atomic` 24 % of all samples, SHA-1 14 %), and
//! every dirty page is written back again before the rename (the fsync
//! that makes a landed file survive a crash). A direct write hands the
//! piece's buffer to the disk: no copy on this machine's CPU, nothing left
//! to write back, and the fsync before the rename only flushes the disk's
//! cache. `curl` pays neither (it leaves its dirty pages to the kernel).
//!
//! A direct write needs its buffer, offset and length aligned to the
//! device's blocks: pieces start at multiples of the 64 KiB base block,
//! buffers come from [`PieceBuf`] (aligned to [`ALIGN`]), and the last,
//! short piece is written padded with zeros to the next [`ALIGN`] and the
//! file cut back to its size at once (and again before the rename, and on a
//! resume, see `Download::salvage`, if a crash came in between). Direct
//! writes are turned on only while a round writes pieces (`O_DIRECT` is a
//! flag of the open file, set and cleared with `fcntl`), so the salvage and
//! read-back paths read as before; a file system that refuses them
//! (`EINVAL`, `EOPNOTSUPP`) turns them off for the rest of the download,
//! and the piece is written through the page cache.
//! Small files and batches keep the page cache: a direct write waits for
//! the disk, and a batch's many small files would each wait; so does
//! tmpfs, whose page cache is the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::OFlags;

/// Alignment of direct writes: buffer address, file offset and length.
pub(crate) const ALIGN: usize = 4096;

/// Files smaller than this are written through the page cache.
pub(crate) const MIN_DIRECT_SIZE: u64 = 8 << 20;

/// `statfs`'s type of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Largest write through the page cache: with many downloads at once, one
/// piece-sized buffered write cost more system CPU than these (see
/// docs/benchmarks.md).
const WRITE_CHUNK: usize = 64 * 1024;

/// Whether the `.part`'s writes go straight to the disk.
#[derive(Debug, Default)]
pub(crate) struct Direct {
    /// `O_DIRECT` is set on the file now.
    on: AtomicBool,
    /// The file system refused a direct write: never again.
    refused: AtomicBool,
}

impl Direct {
    /// Turns direct writes on for `file` (best effort: if the flag cannot
    /// be set, writes go through the page cache).
    pub fn start(&self, file: &File) {
        if self.refused.load(Ordering::Relaxed) || self.on.load(Ordering::Relaxed) {
            return;
        }
        // On tmpfs the page cache is the file: nothing to gain.
        let in_memory = rustix::fs::fstatfs(file).map_or(true, |st| st.f_type == TMPFS_MAGIC);
        if !in_memory && set_flag(file, true).is_ok() {
            self.on.store(true, Ordering::Relaxed);
        } else {
            self.refused.store(true, Ordering::Relaxed);
        }
    }

    /// Turns direct writes off (before the file is read, cut or synced).
    pub fn stop(&self, file: &File) -> io::Result<()> {
        if self.on.swap(false, Ordering::Relaxed) {
            set_flag(file, false)?;
        }
        Ok(())
    }

    /// Writes `len` verified bytes of `buf` at `start` of `file`, a file
    /// of `size` bytes: a short last piece written padded is cut back at
    /// once (so the file's mtime is final when its last piece is).
    pub fn write_piece(
        &self,
        file: &File,
        buf: &mut PieceBuf,
        len: usize,
        start: u64,
        size: u64,
    ) -> io::Result<()> {
        if self.on.load(Ordering::Relaxed) && start % ALIGN as u64 == 0 {
            let padded = buf.padded(len);
            let end = start + padded.len() as u64;
            match file.write_all_at(padded, start) {
                Ok(()) if end > size => return file.set_len(size),
                Ok(()) => return Ok(()),
                Err(e) if refused(&e) => {
                    log::debug!("direct writes refused ({e}): through the page cache from now on");
                    self.refused.store(true, Ordering::Relaxed);
                    self.stop(file)?;
                }
                Err(e) => return Err(e),
            }
        }
        let mut at = start;
        for chunk in buf.get_mut(len).chunks(WRITE_CHUNK) {
            file.write_all_at(chunk, at)?;
            at += chunk.len() as u64;
        }
        Ok(())
    }
}

/// A file system's "no direct writes here" (alignment or support).
fn refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

fn set_flag(file: &File, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(file, flags)?;
    Ok(())
}

/// One piece's buffer, its start aligned to [`ALIGN`] (a `Vec` a little
/// larger than asked, used from its first aligned byte).
#[derive(Debug, Default)]
pub(crate) struct PieceBuf {
    raw: Vec<u8>,
}

impl PieceBuf {
    /// The first `len` bytes, aligned (grown as needed; the contents of a
    /// grown buffer are not kept).
    pub fn get_mut(&mut self, len: usize) -> &mut [u8] {
        let need = padded_len(len) + ALIGN;
        if self.raw.len() < need {
            self.raw = vec![0; need];
        }
        let at = self.start();
        &mut self.raw[at..at + len]
    }

    /// The first `len` bytes followed by zeros up to a multiple of
    /// [`ALIGN`] (the buffer must hold `len` bytes: see [`Self::get_mut`]).
    fn padded(&mut self, len: usize) -> &[u8] {
        let full = padded_len(len);
        let at = self.start();
        self.raw[at + len..at + full].fill(0);
        &self.raw[at..at + full]
    }

    /// Where the aligned part of `raw` starts.
    fn start(&self) -> usize {
        match self.raw.as_ptr().align_offset(ALIGN) {
            n if n < ALIGN => n,
            _ => 0,
        }
    }
}

/// `len` rounded up to a multiple of [`ALIGN`].
fn padded_len(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_padded_with_zeros() {
        let mut b = PieceBuf::default();
        for len in [1, 4095, 4096, 4097, 65536, 100_000] {
            let s = b.get_mut(len);
            assert_eq!(s.len(), len);
            assert_eq!(s.as_ptr().align_offset(ALIGN), 0);
            s.fill(7);
            let p = b.padded(len);
            assert_eq!(p.len() % ALIGN, 0);
            assert!(p[..len].iter().all(|&x| x == 7));
            assert!(p[len..].iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn pieces_written_directly_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.part");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let d = Direct::default();
        d.start(&file);
        let mut b = PieceBuf::default();
        let piece = 65536;
        let size = 3 * piece + 1000;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        for (k, chunk) in data.chunks(piece).enumerate().rev() {
            b.get_mut(chunk.len()).copy_from_slice(chunk);
            d.write_piece(&file, &mut b, chunk.len(), (k * piece) as u64, size as u64)
                .unwrap();
        }
        d.stop(&file).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let flags = rustix::fs::fcntl_getfl(&file).unwrap();
        assert!(!flags.contains(OFlags::DIRECT));
    }
}
