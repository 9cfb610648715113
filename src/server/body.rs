//! Sending a file range to a socket without copying it through user space.
//!
//! On Linux the body goes out with `sendfile(2)` (through `rustix`, so the
//! crate stays free of `unsafe`), at an explicit offset, in chunks, until
//! the indexed length is sent. `std::io::copy` is not enough: std refuses
//! `sendfile` from a regular file to a socket (pages still in the socket
//! buffer could show later writes to the file) and falls back to 8 KiB
//! `read`/`write` pairs. That hazard does not change what a client can
//! trust here: every piece and the whole file are verified by SHA1 on the
//! receiving side, and a file changed on disk is wrong however it is read.
//!
//! Verified with `strace -f -e trace=sendfile,read,sendto` on the test
//! binary (`cargo test --test it server::interop::ureq_downloads_a_file`):
//! after the `sendto` of the head, the body leaves as
//! `sendfile(<sock>, <file>, [offset], n)` calls and the file is never
//! `read`. With `std::io::copy` the same trace shows `read(<file>, .., 8192)`
//! and `sendto` pairs instead.
//!
//! The length is bounded by the indexed size, so a file that grew on disk is
//! never sent past it; one that shrank makes `sendfile` return 0 early,
//! reported as [`SendError::Truncated`]. Where the kernel refuses
//! `sendfile` (`EINVAL`, `ENOSYS`) before the first byte, and on other
//! systems, a plain bounded `std::io::copy` is used.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpStream;

/// Largest count passed to one `sendfile` call (Linux sends at most
/// 0x7ffff000 bytes per call anyway).
#[cfg(target_os = "linux")]
const SENDFILE_CHUNK: u64 = 1 << 30;

/// Why a file body was not sent in full.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Seeking to the range start failed (fallback copy only).
    #[error("cannot seek the file to byte {start}: {source}")]
    Seek { start: u64, source: std::io::Error },
    /// The socket write (or file read) failed: the client went away or
    /// stalled past the write timeout.
    #[error("cannot send the body after {sent} bytes: {source}")]
    Copy { sent: u64, source: std::io::Error },
    /// The file ended before the indexed length: it was truncated under us.
    #[error("file ended after {sent} of {expected} bytes: it shrank since it was indexed")]
    Truncated { sent: u64, expected: u64 },
}

/// Sends `len` bytes of `file` from `start` to `out`; returns `len`.
pub(crate) fn send_file(
    file: &File,
    start: u64,
    len: u64,
    out: &TcpStream,
) -> Result<u64, SendError> {
    #[cfg(target_os = "linux")]
    {
        match sendfile_all(file, start, len, out) {
            Err(Fallback) => {}
            Ok(result) => return result,
        }
    }
    copy_all(file, start, len, out)
}

/// The kernel refused `sendfile` before any byte went out.
#[cfg(target_os = "linux")]
struct Fallback;

#[cfg(target_os = "linux")]
fn sendfile_all(
    file: &File,
    start: u64,
    len: u64,
    out: &TcpStream,
) -> Result<Result<u64, SendError>, Fallback> {
    use rustix::io::Errno;

    let mut offset = start;
    let mut sent = 0u64;
    while sent < len {
        let count = (len - sent).min(SENDFILE_CHUNK) as usize;
        match rustix::fs::sendfile(out, file, Some(&mut offset), count) {
            Ok(0) => {
                return Ok(Err(SendError::Truncated {
                    sent,
                    expected: len,
                }))
            }
            Ok(n) => sent += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::INVAL | Errno::NOSYS) if sent == 0 => return Err(Fallback),
            Err(e) => {
                return Ok(Err(SendError::Copy {
                    sent,
                    source: e.into(),
                }))
            }
        }
    }
    Ok(Ok(sent))
}

/// A bounded read/write copy, for where `sendfile` is unavailable.
fn copy_all(file: &File, start: u64, len: u64, mut out: &TcpStream) -> Result<u64, SendError> {
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(start))
        .map_err(|source| SendError::Seek { start, source })?;
    let mut limited = reader.take(len);
    let sent = std::io::copy(&mut limited, &mut out).map_err(|source| SendError::Copy {
        sent: len - limited.limit(),
        source,
    })?;
    if sent < len {
        return Err(SendError::Truncated {
            sent,
            expected: len,
        });
    }
    Ok(sent)
}
