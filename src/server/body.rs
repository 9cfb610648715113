//! Sending a file range to a socket without copying it through user space.
//!
//! `std::io::copy` from a `Take<&File>` to a `TcpStream` is specialised by
//! std on Linux to `sendfile(2)` (it falls back to a read/write loop only
//! where the kernel refuses). Nothing may wrap either side (no `BufWriter`,
//! no `BufReader`), or the specialisation is lost; the response head is
//! written with its own `write_all` just before, so there is nothing to
//! flush.
//!
//! Verified: `strace -f -e trace=sendfile,copy_file_range,splice,read,write`
//! on the integration test binary while a 64 MiB file is downloaded shows
//! the body going out as `sendfile(<sock>, <file>, NULL, ...)` calls and no
//! `read` of the file (see the report in the server's module doc).
//!
//! `Take` bounds the copy to the indexed length, so a file that grew on
//! disk is never sent past its indexed size; one that shrank makes the copy
//! end early, which is reported as [`SendError::Truncated`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpStream;

/// Why a file body was not sent in full.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Seeking to the range start failed.
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
    mut out: &TcpStream,
) -> Result<u64, SendError> {
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
