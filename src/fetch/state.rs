//! The resume state of a download: `<final>.part.chain`, its piece list
//! (the SHA-1 chaining values, the JSON of `GET .../pieces`), written once
//! per list; and `<final>.part.state`, JSON with the sha1, size, piece
//! size, the list's form and id, and a bitmap of the pieces verified and
//! written to the `.part`, saved at most every `state_interval` (50 ms)
//! while pieces verify, and at exit: a 10 GiB file's save writes its
//! 2.5 KiB of bitmap, not its 200 KiB of chain. A peer sharing the
//! directory reads both to serve the verified pieces meanwhile
//! (`crate::partial`).
//!
//! A round's first save creates the state anew (temp file + rename), with
//! room to grow (trailing spaces, JSON whitespace), and keeps the file
//! open ([`StateFile`]); later saves overwrite it in place, padded to its
//! length, one `pwrite` that creates, renames and deletes nothing. In a
//! swarm a state is saved ~20 times a second per download: each new
//! inode cost ext4's inode allocator and its rename over the last one a
//! forced writeback, and each of the five directory events woke the
//! sharing peer's watch. Only a state that outgrew its room is created
//! anew. A reader may catch an overwrite halfway: it sees each byte of
//! the old or the new state (the bitmap only grows: either way a subset of
//! the pieces verified) or JSON that does not parse, and reads again at
//! the next event; a crash mid-write (power loss: a process cannot tear a
//! write within a page) can leave a corrupt state, which a resume ignores.
//!
//! The state is a hint, never trusted alone: on restart every piece it
//! marks verified is checked again from the `.part` ([`salvage`]) against
//! the piece list in use, and kept only if it passes. A state of the
//! previous version (one SHA1 per piece, no `form`) still says which
//! bytes were verified: those ranges are checked against the chain.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Sha1Digest;
use crate::protocol::{piece_bounds, piece_count, PieceList, PIECE_LIST_FORM};

/// Most threads checking a `.part`'s pieces at once, the caller included.
pub(crate) const VERIFY_THREADS: usize = 4;
/// Largest `.part.chain` read (a 16 MiB piece-list body, like a peer's).
pub(crate) const MAX_CHAIN_BYTES: u64 = 16 * 1024 * 1024;

/// What `.part.state` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// The file being downloaded.
    pub sha1: Sha1Digest,
    /// Its size.
    pub size: u64,
    /// Piece size of the bitmap.
    pub piece_size: u64,
    /// The form of the piece list in `.part.chain` (`"sha1-chain"`); empty
    /// in a state of the previous version, which carried piece SHA1s here
    /// (not read: only its bitmap is used, as verified byte ranges).
    #[serde(default)]
    pub form: String,
    /// Which list `.part.chain` holds: the SHA1 of its chaining values
    /// (20 bytes each, concatenated), so a reader knows when to read it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<Sha1Digest>,
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

/// The id of a piece list's chain (see [`ResumeState::chain_id`]).
pub(crate) fn chain_id(list: &PieceList) -> Sha1Digest {
    let mut bytes = Vec::with_capacity(list.chain.len() * 20);
    for v in &list.chain {
        bytes.extend_from_slice(&v.0);
    }
    Sha1Digest::of(&bytes)
}

impl ResumeState {
    /// A state for `list` with the pieces flagged in `done`.
    pub fn new(list: &PieceList, done: &[bool]) -> Self {
        Self::with_chain_id(list, chain_id(list), done)
    }

    /// [`new`](Self::new), with the id of `list`'s chain known.
    pub(crate) fn with_chain_id(list: &PieceList, id: Sha1Digest, done: &[bool]) -> Self {
        ResumeState {
            sha1: list.sha1,
            size: list.size,
            piece_size: list.piece_size,
            form: PIECE_LIST_FORM.to_string(),
            chain_id: Some(id),
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

    /// Number of pieces of the bitmap.
    pub fn pieces(&self) -> usize {
        usize::try_from(piece_count(self.size, self.piece_size)).unwrap_or(usize::MAX)
    }

    /// Reads a state file; `None` (with a warning) if it is missing,
    /// unreadable, corrupt or for another file.
    pub fn load(path: &Path, sha1: &Sha1Digest) -> Option<ResumeState> {
        let bytes = match read_nofollow(path, MAX_CHAIN_BYTES) {
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
        if state.sha1 != *sha1 || state.piece_size == 0 {
            log::warn!(
                "ignoring resume state {}: it is for another file or inconsistent",
                path.display()
            );
            return None;
        }
        if state.form != PIECE_LIST_FORM {
            log::info!(
                "resume state {} is of the previous version (piece SHA1s): its verified pieces are checked against the chaining values",
                path.display()
            );
        }
        Some(state)
    }

    /// Writes the state atomically (temp file in the same directory, then
    /// rename). On a full disk, where the temp file cannot be written, an
    /// existing state at least as long (the same list: only the bitmap
    /// changed) is overwritten in place instead, without the peers in use
    /// and padded with spaces to its length, which needs no new blocks; a
    /// write torn by a crash there only makes the state corrupt, and a
    /// corrupt state is ignored on resume.
    ///
    /// No link is followed: the temp file is created anew (a link or file
    /// left in its place is removed first, and `create_new` refuses one put
    /// back meanwhile), the in-place overwrite opens with `O_NOFOLLOW`, and
    /// the rename replaces a link at `path` rather than writing through it.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        match write_atomic(path, &json) {
            Err(e) if super::error::is_no_space(&e) => {
                // Only what a resume needs, so it fits in the state saved
                // when the round began (its byte counters were 0 then).
                let lean = ResumeState {
                    peers: Vec::new(),
                    from_seeds: 0,
                    from_partials: 0,
                    ..self.clone()
                };
                let json = serde_json::to_vec(&lean).map_err(std::io::Error::other)?;
                overwrite_in_place(path, &json).map_err(|_| e)
            }
            other => other,
        }
    }

    /// The verified flags, one per piece.
    pub fn verified_flags(&self) -> Vec<bool> {
        decode_bitmap(&self.verified, self.pieces())
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

/// Room left for a state to grow in place (the peers in use, the byte
/// counters) when it is created anew.
const STATE_ROOM: usize = 256;

/// The `.part.state` of one round of a download, kept open between saves:
/// see the module's docs. Saves go through [`StateFile::save`].
#[derive(Debug)]
pub(crate) struct StateFile {
    path: std::path::PathBuf,
    /// The file created by the last save anew (it may have been renamed
    /// over since, or removed: then it is created anew), and its length.
    open: Option<(File, u64)>,
}

impl StateFile {
    /// The state at `path`, not written yet: the first save creates it.
    pub fn new(path: &Path) -> Self {
        StateFile {
            path: path.to_path_buf(),
            open: None,
        }
    }

    /// Saves `state`: in place in the file this round created if it fits
    /// (padded with spaces to its length) and is still the one at the
    /// path; else anew, by a temp file and a rename, with room to grow
    /// ([`ResumeState::save`] for the full disk).
    pub fn save(&mut self, state: &ResumeState) -> std::io::Result<()> {
        let json = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        if let Some((file, len)) = &self.open {
            if json.len() as u64 <= *len && self.still_named(file) {
                let mut padded = json;
                padded.resize(*len as usize, b' ');
                return file.write_all_at(&padded, 0);
            }
        }
        self.open = None;
        let mut padded = json;
        padded.resize(padded.len() + STATE_ROOM, b' ');
        match create_atomic(&self.path, &padded) {
            Ok(file) => {
                self.open = Some((file, padded.len() as u64));
                Ok(())
            }
            Err(e) if super::error::is_no_space(&e) => state.save(&self.path),
            Err(e) => Err(e),
        }
    }

    /// True if `file` is still the one at the path (nothing renamed over
    /// it or removed it).
    fn still_named(&self, file: &File) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(ours), Ok(named)) => ours.ino() == named.ino() && ours.dev() == named.dev(),
            _ => false,
        }
    }
}

/// Writes `bytes` to `path` by a temp file beside it and a rename, and
/// returns the file, open for writing.
fn create_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<File> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let created = create_new(Path::new(&tmp), bytes)
        .and_then(|file| std::fs::rename(&tmp, path).map(|()| file));
    if created.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    created
}

/// Writes `list` to `path` (`<final>.part.chain`) atomically, never
/// through a link: once per piece list a download uses.
pub fn save_chain(path: &Path, list: &PieceList) -> std::io::Result<()> {
    let json = serde_json::to_vec(list).map_err(std::io::Error::other)?;
    write_atomic(path, &json)
}

/// Reads the piece list at `path` (no link, at most [`MAX_CHAIN_BYTES`]):
/// `None` unless it is this version's form, for `sha1` of `size` bytes,
/// consistent, and its chain's id is `id`.
pub fn load_chain(path: &Path, sha1: &Sha1Digest, size: u64, id: &Sha1Digest) -> Option<PieceList> {
    let bytes = read_nofollow(path, MAX_CHAIN_BYTES).ok()?;
    let list: PieceList = serde_json::from_slice(&bytes).ok()?;
    let ok = list.size == size
        && super::pieces::check_piece_list(&list, sha1).is_ok()
        && chain_id(&list) == *id;
    ok.then_some(list)
}

/// Writes `bytes` to `path` by a temp file beside it and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let written = write_new(Path::new(&tmp), bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `bytes` to a file created at `path`, never through a link: an
/// entry already there (a stale temp file, or a link planted in its place)
/// is removed first, and `create_new` (`O_EXCL`) fails if one reappears.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create_new(path, bytes).map(drop)
}

/// [`write_new`], returning the file, open for writing.
fn create_new(path: &Path, bytes: &[u8]) -> std::io::Result<File> {
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
    file.write_all(bytes)?;
    Ok(file)
}

/// Reads a whole file of at most `max` bytes, refusing a symbolic link
/// (`O_NOFOLLOW`).
pub(crate) fn read_nofollow(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, max + 1), &mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other("too large"));
    }
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
/// inside a range in `claimed` is read back and verified against the
/// chain, and kept only if it passes; also the bytes read so. Read errors
/// count as not verified. The pieces are checked by the download's own
/// threads (`pbs-get-verify<n>`, at most `VERIFY_THREADS` with the caller,
/// each with one piece-sized buffer, and no more buffers than fit in
/// `memory_budget`), joined before this returns.
pub fn salvage(
    part: &File,
    list: &PieceList,
    claimed: &[(u64, u64)],
    memory_budget: u64,
) -> (Vec<bool>, u64) {
    let covered = |start: u64, end: u64| claimed.iter().any(|&(a, b)| a <= start && end <= b);
    let pieces: Vec<usize> = (0..list.len())
        .filter(|&i| {
            let (start, len) = list.piece_range(i);
            covered(start, start + len as u64)
        })
        .collect();
    let checked: u64 = pieces.iter().map(|&i| list.piece_range(i).1 as u64).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(VERIFY_THREADS)
        .min((memory_budget / list.piece_size.max(1)).max(1) as usize);
    let ok = crate::fanout::map_with(
        &pieces,
        threads - 1,
        "pbs-get-verify",
        Vec::new,
        |buf: &mut Vec<u8>, &i| {
            let (start, len) = list.piece_range(i);
            buf.resize(len, 0);
            part.read_exact_at(buf, start).is_ok() && list.verify(i, buf)
        },
    );
    let mut flags = vec![false; list.len()];
    for (i, ok) in pieces.into_iter().zip(ok) {
        flags[i] = ok;
    }
    (flags, checked)
}

/// The first piece of `list` whose bytes in `part` do not verify (read
/// back by [`salvage`]'s threads), or `None` if every one does: the check
/// before the rename when the `.part` may have been written by another
/// process (see `seal`).
pub fn changed_piece(part: &File, list: &PieceList, memory_budget: u64) -> Option<usize> {
    salvage(part, list, &[(0, list.size)], memory_budget)
        .0
        .iter()
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
    fn the_peers_in_use_are_optional_and_a_state_of_the_previous_form_is_a_hint() {
        let sha = Sha1Digest::of(b"x");
        let old = format!(
            r#"{{"sha1":"{sha}","size":9,"piece_size":4,"pieces":["{sha}","{sha}","{sha}"],"verified":"05"}}"#
        );
        let state: ResumeState = serde_json::from_str(&old).unwrap();
        assert!(state.peers.is_empty());
        assert!(state.form.is_empty());
        assert_eq!(state.verified_ranges(), vec![(0, 4), (8, 9)]);
        assert!(!serde_json::to_string(&state).unwrap().contains("peers"));
        let mut with = state.clone();
        with.peers = vec!["a".into(), "b".into()];
        let back: ResumeState =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back.peers, ["a", "b"]);
    }

    fn content(n: usize) -> Vec<u8> {
        (0..n as u32).map(|i| (i * 13 % 251) as u8).collect()
    }

    #[test]
    fn salvage_keeps_only_claimed_pieces_that_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let p = crate::protocol::BASE_BLOCK as usize;
        let data = content(3 * p - 10);
        let list = PieceList::of_content(&data);
        let mut on_disk = data.clone();
        on_disk[p + 5] ^= 1;
        std::fs::write(&path, &on_disk).unwrap();
        let file = File::open(&path).unwrap();
        let all = (0, data.len() as u64);
        assert_eq!(
            salvage(&file, &list, &[all], 1),
            (vec![true, false, true], data.len() as u64)
        );
        assert_eq!(
            salvage(&file, &list, &[(0, p as u64 + 6)], 1 << 20),
            (vec![true, false, false], p as u64),
            "only whole claimed pieces are read"
        );
        let state = ResumeState::new(&list, &[true, false, true]);
        assert_eq!(
            state.verified_ranges(),
            vec![(0, p as u64), (2 * p as u64, data.len() as u64)]
        );
        let saved = dir.path().join("f.part.state");
        state.save(&saved).unwrap();
        assert_eq!(ResumeState::load(&saved, &list.sha1), Some(state.clone()));
        assert_eq!(ResumeState::load(&saved, &Sha1Digest::of(b"other")), None);
        std::fs::write(&saved, b"{corrupt").unwrap();
        assert_eq!(ResumeState::load(&saved, &list.sha1), None);
        assert_eq!(changed_piece(&file, &list, 1 << 20), Some(1));
        // The chain goes once to its own file, and is read back by its id.
        let chain = dir.path().join("f.part.chain");
        save_chain(&chain, &list).unwrap();
        let id = state.chain_id.unwrap();
        assert_eq!(
            load_chain(&chain, &list.sha1, list.size, &id),
            Some(list.clone())
        );
        assert_eq!(
            load_chain(&chain, &list.sha1, list.size, &Sha1Digest::of(b"")),
            None
        );
        assert_eq!(load_chain(&chain, &list.sha1, 5, &id), None);
        assert!(!serde_json::to_string(&state)
            .unwrap()
            .contains(&list.chain[0].to_string()));
    }

    #[test]
    fn a_round_overwrites_its_state_in_place_and_creates_it_anew_only_when_it_must() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part.state");
        let list = PieceList::of_content(&content(300_000));
        let ino = || std::fs::metadata(&path).unwrap().ino();
        let mut file = StateFile::new(&path);
        let mut state = ResumeState::new(&list, &[false; 5]);
        file.save(&state).unwrap();
        let (first, len) = (ino(), std::fs::metadata(&path).unwrap().len());
        assert_eq!(ResumeState::load(&path, &list.sha1), Some(state.clone()));
        // More pieces, peers and bytes: the same file, the same length.
        state = ResumeState::new(&list, &[true, false, true, false, true]);
        state.peers = vec!["peer-a".into(), "peer-b".into()];
        state.from_partials = 123_456_789;
        file.save(&state).unwrap();
        assert_eq!(ino(), first, "overwritten in place");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        assert_eq!(ResumeState::load(&path, &list.sha1), Some(state.clone()));
        assert!(!dir.path().join("f.part.state.tmp").exists());
        // Outgrown: created anew.
        state.peers = (0..20)
            .map(|i| format!("a-peer-with-a-long-id-{i}"))
            .collect();
        file.save(&state).unwrap();
        assert_ne!(ino(), first);
        assert_eq!(ResumeState::load(&path, &list.sha1), Some(state.clone()));
        // Replaced or removed by someone else: created anew, not written
        // into the file no longer named.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"{}").unwrap();
        file.save(&state).unwrap();
        assert_eq!(ResumeState::load(&path, &list.sha1), Some(state.clone()));
        std::fs::remove_file(&path).unwrap();
        file.save(&state).unwrap();
        assert_eq!(ResumeState::load(&path, &list.sha1), Some(state));
    }

    #[test]
    fn state_files_are_never_written_or_read_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let list = PieceList::of_content(&content(200_000));
        let state = ResumeState::new(&list, &[true, false, false, false]);
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
