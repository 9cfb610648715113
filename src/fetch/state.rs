//! The resume state: `<final>.part.state`, JSON with the sha1, size, piece
//! size, piece hashes and a bitmap of the pieces verified and written to
//! the `.part`. Written atomically (temp file + rename) at most every
//! `state_interval` (100 ms) while pieces verify, and at exit. A peer
//! sharing the directory reads it to serve the verified pieces meanwhile
//! (`crate::partial`).
//!
//! The state is a hint, never trusted alone: on restart every piece it
//! marks verified is hashed again from the `.part` ([`salvage`]) and kept
//! only if it matches the piece list in use.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Sha1Digest;
use crate::protocol::{piece_bounds, PieceList};

/// Most threads checking a `.part`'s pieces at once, the caller included.
pub(crate) const VERIFY_THREADS: usize = 4;

/// What `.part.state` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// The file being downloaded.
    pub sha1: Sha1Digest,
    /// Its size.
    pub size: u64,
    /// Piece size of `pieces`.
    pub piece_size: u64,
    /// The piece hashes the `.part` was verified against.
    pub pieces: Vec<Sha1Digest>,
    /// Verified pieces: hex of a bitset, bit `i` of byte `i / 8` (LSB first).
    pub verified: String,
    /// Ids of the peers the download was fetching from when the state was
    /// saved (shown by the status page of the peer sharing the directory;
    /// empty in states written by older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// A random id of the download writing it: a peer serving the `.part`
    /// meanwhile reports it, so the download knows that peer is itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<String>,
    /// Bytes this run of the download took from complete holders (seeds).
    #[serde(default)]
    pub from_seeds: u64,
    /// Bytes this run of the download took from partial holders.
    #[serde(default)]
    pub from_partials: u64,
}

impl ResumeState {
    /// A state for `list` with the pieces flagged in `done`.
    pub fn new(list: &PieceList, done: &[bool]) -> Self {
        ResumeState {
            sha1: list.sha1,
            size: list.size,
            piece_size: list.piece_size,
            pieces: list.pieces.clone(),
            verified: encode_bitmap(done),
            peers: Vec::new(),
            download: None,
            from_seeds: 0,
            from_partials: 0,
        }
    }

    /// The same state, naming the download that writes it.
    pub fn with_download(mut self, id: &str) -> Self {
        self.download = Some(id.to_string());
        self
    }

    /// Reads a state file; `None` (with a warning) if it is missing,
    /// unreadable, corrupt or for another file.
    pub fn load(path: &Path, sha1: &Sha1Digest) -> Option<ResumeState> {
        let bytes = match read_nofollow(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!("ignoring resume state {}: {e}", path.display());
                return None;
            }
        };
        let state: ResumeState = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("ignoring corrupt resume state {}: {e}", path.display());
                return None;
            }
        };
        let consistent = state.sha1 == *sha1
            && state.piece_size > 0
            && crate::protocol::piece_count(state.size, state.piece_size)
                == state.pieces.len() as u64;
        if !consistent {
            log::warn!(
                "ignoring resume state {}: it is for another file or inconsistent",
                path.display()
            );
            return None;
        }
        Some(state)
    }

    /// Writes the state atomically (temp file in the same directory, then
    /// rename). On a full disk, where the temp file cannot be written, an
    /// existing state at least as long (the same piece list: only the
    /// bitmap changed) is overwritten in place instead, without the peers
    /// in use and padded with spaces to its length, which needs no new
    /// blocks; a write torn by a crash there only makes the state corrupt,
    /// and a corrupt state is ignored on resume.
    ///
    /// No link is followed: the temp file is created anew (a link or file
    /// left in its place is removed first, and `create_new` refuses one put
    /// back meanwhile), the in-place overwrite opens with `O_NOFOLLOW`, and
    /// the rename replaces a link at `path` rather than writing through it.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(".tmp");
        match write_new(Path::new(&tmp), &json) {
            Ok(()) => std::fs::rename(&tmp, path),
            Err(e) if super::error::is_no_space(&e) => {
                let _ = std::fs::remove_file(&tmp);
                let lean = ResumeState {
                    peers: Vec::new(),
                    ..self.clone()
                };
                let json = serde_json::to_vec(&lean).map_err(std::io::Error::other)?;
                overwrite_in_place(path, &json).map_err(|_| e)
            }
            Err(e) => Err(e),
        }
    }

    /// The verified flags, one per piece.
    pub fn verified_flags(&self) -> Vec<bool> {
        decode_bitmap(&self.verified, self.pieces.len())
    }

    /// Byte ranges `[start, end)` the state claims verified, merged.
    pub fn verified_ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, ok) in self.verified_flags().into_iter().enumerate() {
            if !ok {
                continue;
            }
            let (start, end) = piece_bounds(self.size, self.piece_size, i);
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => out.push((start, end)),
            }
        }
        out
    }
}

/// Writes `bytes` to a file created at `path`, never through a link: an
/// entry already there (a stale temp file, or a link planted in its place)
/// is removed first, and `create_new` (`O_EXCL`) fails if one reappears.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// Reads a whole file, refusing a symbolic link (`O_NOFOLLOW`).
fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes)
}

/// Overwrites `path` with `bytes` in place if it already has that length.
/// Overwrites `path` with `bytes` padded with spaces (JSON whitespace) to
/// the file's length; refuses if they do not fit.
fn overwrite_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    if bytes.len() > len {
        return Err(std::io::Error::other("state grew"));
    }
    let mut padded = bytes.to_vec();
    padded.resize(len, b' ');
    file.write_all_at(&padded, 0)
}

fn encode_bitmap(flags: &[bool]) -> String {
    let mut bytes = vec![0u8; flags.len().div_ceil(8)];
    for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
        bytes[i / 8] |= 1 << (i % 8);
    }
    crate::hex::encode(&bytes)
}

fn decode_bitmap(hex: &str, n: usize) -> Vec<bool> {
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .map(|p| crate::hex::byte(p).unwrap_or(0))
        .collect();
    (0..n)
        .map(|i| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect()
}

/// Which pieces of `list` are already correct in `part`: each piece fully
/// inside a range in `claimed` is read back and hashed and kept only if it
/// matches. Read errors count as not verified. The pieces are checked by
/// the download's own threads (`pbs-get-verify<n>`, at most
/// `VERIFY_THREADS` with the caller, each with one piece-sized buffer, and
/// no more buffers than fit in `memory_budget`), joined before this returns.
pub fn salvage(
    part: &File,
    list: &PieceList,
    claimed: &[(u64, u64)],
    memory_budget: u64,
) -> Vec<bool> {
    let covered = |start: u64, end: u64| claimed.iter().any(|&(a, b)| a <= start && end <= b);
    let pieces: Vec<usize> = (0..list.pieces.len()).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(VERIFY_THREADS)
        .min((memory_budget / list.piece_size.max(1)).max(1) as usize);
    crate::fanout::map_with(
        &pieces,
        threads - 1,
        "pbs-get-verify",
        Vec::new,
        |buf: &mut Vec<u8>, &i| {
            let (start, len) = list.piece_range(i);
            if !covered(start, start + len as u64) {
                return false;
            }
            buf.resize(len, 0);
            part.read_exact_at(buf, start).is_ok() && Sha1Digest::of(buf) == list.pieces[i]
        },
    )
}

/// The first of the first `pieces` pieces of `list` whose bytes in `part`
/// no longer match (read back and hashed by [`salvage`]'s threads), or
/// `None` if they all still do. Run just before the rename, after the
/// whole-file hash, on the pieces that hash read before the download's
/// last write (the others it read after every write, so the whole-file
/// hash itself checked them): then the bytes renamed into place are the
/// verified ones, whatever another process wrote to the `.part` meanwhile.
pub fn changed_piece(
    part: &File,
    list: &PieceList,
    pieces: usize,
    memory_budget: u64,
) -> Option<usize> {
    let pieces = pieces.min(list.pieces.len());
    if pieces == 0 {
        return None;
    }
    let end = (pieces as u64 * list.piece_size).min(list.size);
    salvage(part, list, &[(0, end)], memory_budget)
        .iter()
        .take(pieces)
        .position(|ok| !ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_round_trips() {
        let flags: Vec<bool> = (0..21).map(|i| i % 3 == 0 || i == 20).collect();
        let hex = encode_bitmap(&flags);
        assert_eq!(decode_bitmap(&hex, flags.len()), flags);
        assert_eq!(decode_bitmap("zz", 4), vec![false; 4]);
    }

    #[test]
    fn the_in_place_overwrite_pads_a_shorter_state_and_refuses_a_longer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, br#"{"a":"longer than the new one"}"#).unwrap();
        overwrite_in_place(&path, br#"{"a":1}"#).unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back["a"], 1);
        assert!(overwrite_in_place(&path, &[b' '; 100]).is_err());
    }

    #[test]
    fn the_peers_in_use_are_optional_in_the_state_file() {
        let sha = Sha1Digest::of(b"x");
        let old = format!(
            r#"{{"sha1":"{sha}","size":1,"piece_size":4,"pieces":["{sha}"],"verified":"01"}}"#
        );
        let state: ResumeState = serde_json::from_str(&old).unwrap();
        assert!(state.peers.is_empty());
        assert!(!serde_json::to_string(&state).unwrap().contains("peers"));
        let mut with = state.clone();
        with.peers = vec!["a".into(), "b".into()];
        let back: ResumeState =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back.peers, ["a", "b"]);
    }

    #[test]
    fn salvage_keeps_only_matching_claimed_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let data: Vec<u8> = (0..10u8).collect();
        std::fs::write(&path, &data).unwrap();
        let list = PieceList {
            sha1: Sha1Digest::of(&data),
            size: 10,
            piece_size: 4,
            pieces: vec![
                Sha1Digest::of(&data[0..4]),
                Sha1Digest::of(b"not it"),
                Sha1Digest::of(&data[8..10]),
            ],
        };
        let file = File::open(&path).unwrap();
        assert_eq!(
            salvage(&file, &list, &[(0, 10)], 1),
            vec![true, false, true]
        );
        assert_eq!(
            salvage(&file, &list, &[(0, 6)], 1 << 20),
            vec![true, false, false]
        );
        let state = ResumeState::new(&list, &[true, false, true]);
        assert_eq!(state.verified_ranges(), vec![(0, 4), (8, 10)]);
        let saved = dir.path().join("f.part.state");
        state.save(&saved).unwrap();
        assert_eq!(ResumeState::load(&saved, &list.sha1), Some(state));
        assert_eq!(ResumeState::load(&saved, &Sha1Digest::of(b"other")), None);
        std::fs::write(&saved, b"{corrupt").unwrap();
        assert_eq!(ResumeState::load(&saved, &list.sha1), None);
        assert_eq!(changed_piece(&file, &list, 3, 1 << 20), Some(1));
        assert_eq!(
            changed_piece(&file, &list, 1, 1 << 20),
            None,
            "only the first piece is checked"
        );
    }

    #[test]
    fn state_files_are_never_written_or_read_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let data = b"0123456789".to_vec();
        let list = PieceList {
            sha1: Sha1Digest::of(&data),
            size: 10,
            piece_size: 4,
            pieces: vec![Sha1Digest::of(b"x"); 3],
        };
        let state = ResumeState::new(&list, &[true, false, false]);
        let saved = dir.path().join("f.part.state");
        let tmp = dir.path().join("f.part.state.tmp");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        state.save(&saved).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(ResumeState::load(&saved, &list.sha1), Some(state.clone()));
        std::fs::remove_file(&saved).unwrap();
        std::os::unix::fs::symlink(&victim, &saved).unwrap();
        assert_eq!(
            ResumeState::load(&saved, &list.sha1),
            None,
            "a link is not read"
        );
        state.save(&saved).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&saved).unwrap().is_symlink());
    }
}
