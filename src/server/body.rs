//! Sending a slice of a file to a non-blocking socket without copying it
//! through user space.
//!
//! The body goes out with `sendfile(2)` (through `rustix`, so the crate
//! stays free of `unsafe`), at an explicit offset: one call sends what the
//! socket buffer takes, and the connection comes back for more when the
//! socket is writable again. `std::io::copy` is not enough: std refuses
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
//! `read`.
//!
//! The caller bounds the count by the indexed size, so a file that grew on
//! disk is never sent past it; one that shrank makes `sendfile` return 0
//! early ([`Progress::Ended`]). Where the kernel refuses `sendfile`
//! (`EINVAL`, `ENOSYS`), a bounded `pread`/`write` is used instead.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;

/// Largest count passed to one `sendfile` call.
const SENDFILE_CHUNK: u64 = 1 << 30;
/// Buffer of the `pread`/`write` fallback.
const COPY_CHUNK: u64 = 64 * 1024;

/// What one attempt to send achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// This many bytes (at least one) left.
    Sent(u64),
    /// The socket buffer is full: wait until it is writable.
    Blocked,
    /// The file ended before the offset: it shrank since it was indexed.
    Ended,
}

/// Sends at most `count` bytes of `file` from `offset` to the non-blocking
/// `out`. An error means the client is gone.
pub(crate) fn send_some(
    file: &File,
    offset: u64,
    count: u64,
    out: &TcpStream,
) -> std::io::Result<Progress> {
    use rustix::io::Errno;

    let count = count.min(SENDFILE_CHUNK) as usize;
    loop {
        let mut at = offset;
        return match rustix::fs::sendfile(out, file, Some(&mut at), count) {
            Ok(0) => Ok(Progress::Ended),
            Ok(n) => Ok(Progress::Sent(n as u64)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => Ok(Progress::Blocked),
            Err(Errno::INVAL | Errno::NOSYS) => copy_some(file, offset, count as u64, out),
            Err(e) => Err(e.into()),
        };
    }
}

/// The fallback: one `pread` and one `write`. What the socket did not take
/// is read again next time (the offset only moves by what was written).
fn copy_some(
    file: &File,
    offset: u64,
    count: u64,
    mut out: &TcpStream,
) -> std::io::Result<Progress> {
    let mut buf = vec![0u8; count.min(COPY_CHUNK) as usize];
    let n = loop {
        match file.read_at(&mut buf, offset) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if n == 0 {
        return Ok(Progress::Ended);
    }
    loop {
        return match out.write(&buf[..n]) {
            Ok(0) => Err(ErrorKind::WriteZero.into()),
            Ok(w) => Ok(Progress::Sent(w as u64)),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Progress::Blocked),
            Err(e) => Err(e),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    #[test]
    fn sends_a_slice_blocks_when_full_and_sees_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let (server, mut client) = pair();

        assert_eq!(
            send_some(&file, 1000, 10, &server).unwrap(),
            Progress::Sent(10)
        );
        let mut got = [0u8; 10];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, data[1000..1010]);
        assert_eq!(
            send_some(&file, data.len() as u64, 10, &server).unwrap(),
            Progress::Ended
        );
        // Nobody reads: the socket fills up and says so instead of blocking.
        let mut blocked = false;
        for _ in 0..10_000 {
            if send_some(&file, 0, data.len() as u64, &server).unwrap() == Progress::Blocked {
                blocked = true;
                break;
            }
        }
        assert!(blocked, "a full socket must report Blocked");
        assert_eq!(copy_some(&file, 0, 10, &server).unwrap(), Progress::Blocked);
    }
}
