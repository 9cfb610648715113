//! The catalog body (`GET /v1/files`) written by hand from the index's
//! entries into one buffer: the same JSON as `serde_json::to_vec` of the
//! [`FileList`](crate::protocol::FileList) the entries make, without
//! building that list (a `String` per name, a `Vec` of entries) first:
//! for a large catalog, that building was most of the body's time.

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::entry::IndexedFile;

/// Appends the catalog of `files` at `generation` to `out`.
pub(crate) fn write(generation: u64, files: &[Arc<IndexedFile>], out: &mut Vec<u8>) {
    out.reserve(files.len() * 110 + 32);
    out.extend_from_slice(b"{\"generation\":");
    decimal(generation, out);
    out.extend_from_slice(b",\"files\":[");
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"sha1\":\"");
        hex(&f.sha1.0, out);
        out.extend_from_slice(b"\",\"size\":");
        decimal(f.size, out);
        out.extend_from_slice(b",\"name\":");
        name(f, out);
        out.extend_from_slice(b",\"piece_size\":");
        decimal(f.piece_size(), out);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// `n` in decimal, as serde_json writes it.
fn decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// The entry's name as a JSON string: the bytes as they are when they
/// need no escape, else what serde_json writes for [`IndexedFile::name`].
fn name(f: &IndexedFile, out: &mut Vec<u8>) {
    let raw = f.path().file_name().map(|n| n.as_bytes());
    if let Some(raw) = raw {
        let plain = raw.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\');
        if plain && std::str::from_utf8(raw).is_ok() {
            out.push(b'"');
            out.extend_from_slice(raw);
            out.push(b'"');
            return;
        }
    }
    // A string always serializes.
    let _ = serde_json::to_writer(&mut *out, &f.name());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha1Digest;
    use crate::index::entry::{FileStat, Hashed};
    use crate::protocol::{CatalogEntry, FileList};
    use std::ffi::OsStr;
    use std::path::PathBuf;

    #[test]
    fn decimals_as_serde_json() {
        for n in [0, 1, 9, 10, 99, 1000, 1 << 20, u64::MAX] {
            let mut got = Vec::new();
            decimal(n, &mut got);
            assert_eq!(got, serde_json::to_vec(&n).unwrap());
        }
    }

    #[test]
    fn equals_serde_json_of_the_file_list() {
        let st = FileStat {
            size: 3,
            mtime_sec: 1,
            mtime_nsec: 0,
            ino: 1,
            dev: 1,
            ctime_ns: 0,
        };
        let names: Vec<PathBuf> = vec![
            "d/plain.bin".into(),
            "quote\"back\\slash".into(),
            "ctl\u{1}\n\t\u{7f}".into(),
            "ünï €.txt".into(),
            PathBuf::from(OsStr::from_bytes(b"bad\xffutf8")),
            "a/b/c/deep".into(),
        ];
        let files: Vec<Arc<IndexedFile>> = names
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let h = Hashed {
                    sha1: Sha1Digest::of(p.as_os_str().as_bytes()),
                    size: 3 + i as u64,
                    chain: vec![],
                };
                Arc::new(IndexedFile::new(&h, vec![(p.clone(), st)]))
            })
            .collect();
        for n in [0, 1, files.len()] {
            let list = FileList {
                generation: 7 + n as u64,
                files: files[..n]
                    .iter()
                    .map(|f| CatalogEntry::from(f.as_ref()))
                    .collect(),
            };
            let mut got = Vec::new();
            write(list.generation, &files[..n], &mut got);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&serde_json::to_vec(&list).unwrap())
            );
            let back: FileList = serde_json::from_slice(&got).unwrap();
            assert_eq!(back, list);
        }
    }
}
