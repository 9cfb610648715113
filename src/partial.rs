//! Partial files: downloads in progress into this peer's dataset, served
//! piece by piece while they run (the swarm).
//!
//! How the peer learns of them: a download writes `<name>.part` and keeps
//! `<name>.part.chain` (its piece list: the SHA-1 chaining values, once per
//! list) and `<name>.part.state` beside it (sha1, size, the chain's id, and
//! a bitmap of the pieces verified and written; overwritten in place at
//! most every `state_interval`, 50 ms by default, and created anew by a
//! rename when a download starts or its state outgrows its room: see
//! `fetch::state`). The chain is read again only when the state names
//! another one. A state caught halfway through an overwrite does not parse:
//! the entry stays as it was until the next event reads it again. The
//! index's file-system watch already sees every event in the dataset; it
//! forwards the paths of `*.part.state` files here
//! ([`IndexOptions::partial_events`]), and the `pbs-partials` thread reads
//! the state again. A download started before
//! the peer is found by one walk of the dataset at start. Nothing couples
//! the two processes but those files, so `get`, the library and a killed
//! `get` (whose verified pieces stay on disk) all work alike.
//!
//! Trust: the state is written by a download on this machine, which
//! verified every piece it marks; remote downloaders verify every piece
//! again anyway. The `.part` is opened without following symlinks.
//!
//! When the state disappears because the download finished (renamed into
//! place), the finished file is served as a complete partial until the
//! index has it, so remote downloaders see no gap. If the final file is
//! the very `.part` whose pieces were all verified (same inode, size and
//! mtime as when its last state said so), its hashes go to the index
//! ([`Landed`]: at once when a state first says every piece is verified,
//! with the `.part`'s path, and again when the state goes), which takes
//! them instead of reading the file again: in a swarm every host would
//! otherwise hash the whole file once more just as the others need the
//! CPU.
//!
//! [`IndexOptions::partial_events`]: crate::index::IndexOptions::partial_events

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver};
use parking_lot::RwLock;

use crate::digest::Sha1Digest;
use crate::fetch::state::{load_chain, ResumeState};
use crate::index::{FileStat, Hashed, PART_CHAIN_SUFFIX, PART_STATE_SUFFIX, PART_SUFFIX};
use crate::metrics;
use crate::protocol::{piece_bounds, Bitfield, PieceList, PIECE_LIST_FORM};
use crate::wake::Wake;

/// A partial file opened for serving the pieces it holds (the peer serves
/// it as a `server::OpenedFile`).
#[derive(Debug)]
pub struct OpenedPart {
    /// The open `.part` (or the final file once renamed), shared: kept
    /// open for the next requests while the download runs, so read at an
    /// offset, never by its position.
    pub file: Arc<File>,
    /// The whole file's size.
    pub size: u64,
    /// The final file's name.
    pub name: String,
    /// The pieces verified and on disk.
    pub held: Bitfield,
    /// Its piece size.
    pub piece_size: u64,
}

/// Largest `.part.state` read (about 700,000 pieces).
const MAX_STATE_BYTES: u64 = 32 * 1024 * 1024;
/// Most peer ids kept per partial file (from its state).
const MAX_PEERS_SHOWN: usize = 16;
/// Most partial files tracked at once.
const MAX_PARTIALS: usize = 1024;

/// One download in progress (or just finished) in the dataset.
#[derive(Debug, Clone)]
struct Partial {
    /// The `.part.state` it was read from.
    state_path: PathBuf,
    /// Where the bytes are: the `.part`, or the final file once renamed.
    data_path: PathBuf,
    list: PieceList,
    /// The id of `list`'s chain (from the state).
    chain_id: Sha1Digest,
    have: Bitfield,
    /// Peers the download was fetching from (from its state).
    peers: Vec<String>,
    /// The id of the download writing it (from its state).
    download: Option<String>,
    /// Bytes its download took from seeds and from partial holders (from
    /// its state).
    from: (u64, u64),
    /// The `.part`'s stat when its state said every piece was verified:
    /// if the final file has the same one, it holds those bytes.
    complete: Option<FileStat>,
}

impl Partial {
    /// Still a `.part` (not yet renamed into place).
    fn downloading(&self) -> bool {
        is_part(&self.data_path)
    }
}

/// Whether `path` is a download's `.part`.
fn is_part(path: &Path) -> bool {
    path.as_os_str()
        .as_bytes()
        .ends_with(PART_SUFFIX.as_bytes())
}

/// A download that landed: its final file's stat and its verified hashes,
/// for the index to take instead of reading the file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Landed {
    /// The final file's stat; or, with `part`, the `.part`'s stat when its
    /// state said every piece was verified (it keeps inode, size and mtime
    /// when renamed into place).
    pub stat: FileStat,
    /// The `.part` it is still at, for a download about to land: told at
    /// once, so the index takes its hashes at the rename however late the
    /// state's removal is seen (the pbs-partials thread may run after the
    /// index has settled the final file).
    pub part: Option<PathBuf>,
    /// Its hashes (the chain every piece was verified against; its last
    /// piece finished to the SHA1).
    pub hashed: Hashed,
}

/// One partial file as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialView {
    /// The file.
    pub sha1: Sha1Digest,
    /// Its final name in the dataset (untrusted when shown: escape it).
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its piece size.
    pub piece_size: u64,
    /// Pieces verified and written.
    pub held: usize,
    /// Pieces in all.
    pub total: usize,
    /// False once renamed into place (served whole until indexed).
    pub downloading: bool,
    /// Ids of the peers the download was fetching from at its last save
    /// (untrusted when shown: escape them).
    pub peers: Vec<String>,
    /// Bytes the download took from complete holders (seeds), at its last
    /// save.
    pub from_seeds: u64,
    /// Bytes the download took from partial holders (the swarm).
    pub from_partials: u64,
}

/// Downloads that landed and were indexed, kept for the status page and
/// `/metrics` (where their bytes came from), most recent last.
const MAX_LANDED: usize = 16;

/// How the status page shows `p`.
fn view(sha1: &Sha1Digest, p: &Partial) -> PartialView {
    PartialView {
        sha1: *sha1,
        name: final_path(&p.state_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| sha1.to_hex()),
        size: p.list.size,
        piece_size: p.list.piece_size,
        held: (0..p.have.len()).filter(|&i| p.have.get(i)).count(),
        total: p.have.len(),
        downloading: p.downloading(),
        peers: p.peers.clone(),
        from_seeds: p.from.0,
        from_partials: p.from.1,
    }
}

/// The partial files of a dataset, by sha1.
#[derive(Debug, Default)]
pub struct Partials {
    map: RwLock<HashMap<Sha1Digest, Partial>>,
    /// The last [`MAX_LANDED`] downloads that landed and left the map
    /// once the index had their file.
    landed: parking_lot::Mutex<std::collections::VecDeque<PartialView>>,
    /// Whether changes count in [`crate::metrics`] (not for the downloads
    /// found by the walk at start: their pieces came before the peer).
    counting: AtomicBool,
    /// Raised when what the peer announces of its partial files changes
    /// (one gets its first piece, lands, or goes): the announcer's.
    wake: Option<Arc<Wake>>,
    /// Descriptors of `.part`s kept open for the next pieces (never one
    /// whose state says every piece is verified: see [`Partials::open`]).
    kept: crate::kept::KeptFiles,
    /// Told when a partial file gets pieces (the server: its `have`
    /// requests waiting for a piece).
    on_pieces: Hook,
}

/// A callback set once ([`Partials::on_pieces`]).
#[derive(Default)]
struct Hook(std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Hook(set)"
        } else {
            "Hook"
        })
    }
}

impl Partials {
    /// An empty registry.
    #[cfg(test)]
    pub fn new() -> Arc<Self> {
        Arc::new(Partials::default())
    }

    /// An empty registry that raises `wake` whenever what would be
    /// announced of it changes (see [`Partials::announced`]).
    pub(crate) fn waking(wake: Arc<Wake>) -> Arc<Self> {
        Arc::new(Partials {
            wake: Some(wake),
            ..Partials::default()
        })
    }

    /// The partial files to announce in the swarm's tracker: those holding
    /// a piece or more, each with whether it landed (held whole), by SHA1
    /// (the same first ones whatever the map's order, when there are more
    /// than the tracker takes).
    pub fn announced(&self) -> Vec<(Sha1Digest, bool)> {
        let mut out: Vec<(Sha1Digest, bool)> = self
            .map
            .read()
            .iter()
            .filter_map(|(sha1, p)| announced(p).map(|whole| (*sha1, whole)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Calls `f` whenever a partial file gets pieces (set once: later
    /// calls are ignored).
    pub(crate) fn on_pieces(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_pieces.0.set(f);
    }

    fn changed(&self) {
        if let Some(w) = &self.wake {
            w.raise();
        }
    }

    /// The piece list of a partial file.
    pub fn pieces(&self, sha1: &Sha1Digest) -> Option<PieceList> {
        self.map.read().get(sha1).map(|p| p.list.clone())
    }

    /// The pieces held of a partial file.
    pub fn have(&self, sha1: &Sha1Digest) -> Option<Bitfield> {
        self.map.read().get(sha1).map(|p| p.have.clone())
    }

    /// The id of the download writing a partial file, if its state names one.
    pub fn download_id(&self, sha1: &Sha1Digest) -> Option<String> {
        self.map.read().get(sha1).and_then(|p| p.download.clone())
    }

    /// True if none is tracked.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// Every partial file tracked, by name (for the status page).
    pub fn snapshot(&self) -> Vec<PartialView> {
        let mut out: Vec<PartialView> = self
            .map
            .read()
            .iter()
            .map(|(sha1, p)| view(sha1, p))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.sha1.cmp(&b.sha1)));
        out
    }

    /// The last downloads that landed and are now indexed (at most 16,
    /// most recent first), as their last state showed them: the status
    /// page and `/metrics` keep showing where their bytes came from.
    pub fn landed(&self) -> Vec<PartialView> {
        self.landed.lock().iter().rev().cloned().collect()
    }

    /// Opens a partial file for serving the pieces it holds.
    ///
    /// A `.part` still downloading is kept open for the next requests
    /// (`crate::kept`: handed out again only while its name still names
    /// it), read-only, until its state says every piece is verified: the
    /// download then checks who holds the file before its rename, and a
    /// reader still open costs it a look through `/proc` (see
    /// `fetch::seal`). The descriptor is closed before that state's read
    /// ends ([`Partials::refresh`]), so the download sees its close.
    pub fn open(&self, sha1: &Sha1Digest) -> std::io::Result<Option<OpenedPart>> {
        let Some((data_path, state_path, size, piece_size, have)) =
            self.map.read().get(sha1).map(|p| {
                (
                    p.data_path.clone(),
                    p.state_path.clone(),
                    p.list.size,
                    p.list.piece_size,
                    p.have.clone(),
                )
            })
        else {
            return Ok(None);
        };
        // Not once every piece is verified: the download's check is next.
        let keep = !have.is_full() && is_part(&data_path);
        let kept = if keep {
            self.kept.get(&data_path)
        } else {
            None
        };
        let (file, on_disk) = match kept {
            Some((file, meta)) => (file, meta.len()),
            None => {
                let (file, meta) = match open_regular(&data_path) {
                    Ok(opened) => opened,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        // Renamed into place a moment ago, its state not removed
                        // or not read yet: the same bytes under the final name.
                        // (Served as a 404 until the index had the file, every
                        // landing in a swarm turned its downloaders away for a
                        // few hundred milliseconds, and 4 such failures drop a
                        // holder from a download.)
                        self.kept.forget(&data_path);
                        let done = final_path(&state_path);
                        match open_regular(&done) {
                            Ok((f, m)) if m.len() == size => (f, m),
                            _ => {
                                self.forget(&state_path);
                                return Ok(None);
                            }
                        }
                    }
                    Err(e) => return Err(e),
                };
                let file = Arc::new(file);
                if keep {
                    // Its pieces are read where asked, not ahead: the
                    // download writes them around the page cache
                    // (`O_DIRECT`), so a read ahead fetched the next pieces
                    // from the disk (or zeros, still unwritten) only for
                    // the download's next write to throw them out.
                    let _ = rustix::fs::fadvise(&*file, 0, None, rustix::fs::Advice::Random);
                    self.kept.keep(&data_path, &file, &meta);
                }
                (file, meta.len())
            }
        };
        // Held pieces must be on disk: a `.part` shorter than they claim
        // (truncated behind the download's back) is not served.
        let needed = (0..have.len())
            .filter(|&i| have.get(i))
            .map(|i| piece_bounds(size, piece_size, i).1)
            .max()
            .unwrap_or(0);
        if on_disk < needed {
            return Ok(None);
        }
        let name = final_path(&state_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| sha1.to_hex());
        Ok(Some(OpenedPart {
            file,
            size,
            name,
            held: have,
            piece_size,
        }))
    }

    /// Reads `state_path` again: adds, updates or removes its entry. A
    /// download that landed since is returned.
    pub fn refresh(&self, state_path: &Path) -> Option<Landed> {
        match read_state(state_path) {
            Ok((state, file)) => {
                let landed = self.insert(state_path, state);
                // Closed after a kept `.part` (see `insert`): a download
                // that waits for this read of its last state sees both.
                drop(file);
                landed
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.finished(state_path),
            // Read while it was overwritten (or corrupt): what was read
            // before stands; the write's own event has it read again.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                log::debug!("partial {}: {e}", state_path.display());
                None
            }
            Err(e) => {
                log::debug!("partial {}: {e}", state_path.display());
                self.forget(state_path);
                None
            }
        }
    }

    /// True if some entry is a download that landed (renamed into place).
    fn any_landed(&self) -> bool {
        self.map.read().values().any(|p| !p.downloading())
    }

    /// Drops entries for files the index now serves as complete.
    pub fn retain_unindexed(&self, indexed: impl Fn(&Sha1Digest) -> bool) {
        let mut gone = Vec::new();
        self.map.write().retain(|sha1, p| {
            // Still downloading: keep even if another copy got indexed.
            let keep = p.downloading() || !indexed(sha1);
            if !keep {
                gone.push(view(sha1, p));
            }
            keep
        });
        if !gone.is_empty() {
            self.changed();
            let mut landed = self.landed.lock();
            for v in gone {
                landed.retain(|l| l.sha1 != v.sha1);
                if landed.len() == MAX_LANDED {
                    landed.pop_front();
                }
                landed.push_back(v);
            }
        }
    }

    /// Adds or updates the entry of `state_path`; returns the download as
    /// about to land ([`Landed::part`]) when this state is the first to
    /// say every piece is verified.
    fn insert(&self, state_path: &Path, state: ResumeState) -> Option<Landed> {
        // A state of the previous version (piece SHA1s) has no chain to
        // serve by: not served.
        let Some(chain_id) = state.chain_id.filter(|_| state.form == PIECE_LIST_FORM) else {
            self.forget(state_path);
            return None;
        };
        let known = self
            .map
            .read()
            .get(&state.sha1)
            .filter(|p| p.state_path == state_path && p.chain_id == chain_id)
            .map(|p| p.list.clone());
        let list =
            known.or_else(|| load_chain(&chain_of(state_path), &state.sha1, state.size, &chain_id));
        let Some(list) = list.filter(|l| l.piece_size == state.piece_size) else {
            self.forget(state_path);
            return None;
        };
        let have = Bitfield::from_flags(&state.verified_flags());
        let peers = state
            .peers
            .iter()
            .take(MAX_PEERS_SHOWN)
            .map(|p| p.chars().take(64).collect())
            .collect();
        let download = state.download.clone();
        let from = (state.from_seeds, state.from_partials);
        // Every piece verified: the `.part`'s stat now says which bytes
        // those are (the download renames it next, keeping inode and mtime).
        let data_path = part_of(state_path);
        if have.is_full() {
            // The download checks who holds its `.part` before the rename:
            // the descriptor kept for its pieces closes now, before this
            // read of its state ends (see `refresh`).
            self.kept.forget(&data_path);
        }
        let complete = have
            .is_full()
            .then(|| std::fs::symlink_metadata(&data_path).ok())
            .flatten()
            .filter(|m| m.is_file())
            .map(|m| FileStat::of(&m));
        let mut map = self.map.write();
        if map.len() >= MAX_PARTIALS && !map.contains_key(&list.sha1) {
            return None;
        }
        if self.counting.load(Ordering::Relaxed) {
            let before = map
                .get(&list.sha1)
                .filter(|p| p.state_path == state_path)
                .map(|p| &p.have);
            count_new_pieces(&list, before, &have);
        }
        let newly_complete = complete.filter(|c| {
            map.get(&list.sha1)
                .filter(|p| p.state_path == state_path)
                .is_none_or(|p| p.complete != Some(*c))
        });
        let about_to_land = newly_complete.map(|stat| Landed {
            stat,
            part: Some(data_path.clone()),
            hashed: Hashed {
                sha1: list.sha1,
                size: list.size,
                chain: list.chain.clone(),
            },
        });
        let before = map.len();
        map.retain(|sha1, p| p.state_path != state_path || *sha1 == list.sha1);
        let mut changed = map.len() != before;
        let sha1 = list.sha1;
        let entry = Partial {
            state_path: state_path.to_path_buf(),
            data_path,
            list,
            chain_id,
            have,
            peers,
            download,
            from,
            complete,
        };
        let now = announced(&entry);
        let held = entry.have.count();
        let previous = map.insert(sha1, entry);
        let more = previous.as_ref().is_none_or(|p| p.have.count() < held);
        changed |= previous.and_then(|p| announced(&p)) != now;
        drop(map);
        if changed {
            self.changed();
        }
        if more {
            if let Some(f) = self.on_pieces.0.get() {
                f();
            }
        }
        about_to_land
    }

    /// The state is gone: if the final file is in place with the right
    /// size, serve it whole until the index has it; else forget it. If it
    /// is the very file whose pieces were all verified (same inode, size
    /// and mtime), it is returned as landed.
    fn finished(&self, state_path: &Path) -> Option<Landed> {
        self.kept.forget(&part_of(state_path));
        let done = final_path(state_path);
        let mut map = self.map.write();
        let sha1 = map
            .iter()
            .find(|(_, p)| p.state_path == state_path)
            .map(|(s, _)| *s)?;
        let final_meta = std::fs::symlink_metadata(&done)
            .ok()
            .filter(|m| m.is_file());
        // In place at its size: the held pieces are served from there
        // until the index has the file (all of them if the last state
        // read said so).
        let in_place = final_meta
            .as_ref()
            .zip(map.get(&sha1))
            .is_some_and(|(m, p)| m.len() == p.list.size);
        let complete = in_place && map.get(&sha1).is_some_and(|p| p.have.is_full());
        let landed = final_meta
            .map(|m| FileStat::of(&m))
            .zip(map.get(&sha1))
            .filter(|(now, p)| complete && p.complete.is_some_and(|c| c.same_moved_key(now)))
            .map(|(stat, p)| Landed {
                stat,
                part: None,
                hashed: Hashed {
                    sha1,
                    size: p.list.size,
                    chain: p.list.chain.clone(),
                },
            });
        if self.counting.load(Ordering::Relaxed) {
            if let Some(p) = map.get(&sha1).filter(|p| p.downloading()) {
                // Landed: the final file is in place at its size (the last
                // states may have gone unread: their pieces count now).
                let landed = std::fs::symlink_metadata(&done)
                    .is_ok_and(|m| m.is_file() && m.len() == p.list.size);
                if landed {
                    metrics::DOWNLOADS_COMPLETED.inc();
                    count_new_pieces(&p.list, Some(&p.have), &Bitfield::full(p.have.len()));
                } else {
                    metrics::DOWNLOADS_FAILED.inc();
                }
            }
        }
        if in_place {
            if let Some(p) = map.get_mut(&sha1) {
                p.data_path = done;
            }
        } else {
            map.remove(&sha1);
        }
        drop(map);
        self.changed();
        landed
    }

    fn forget(&self, state_path: &Path) {
        let mut map = self.map.write();
        let before = map.len();
        map.retain(|_, p| p.state_path != state_path);
        let changed = map.len() != before;
        drop(map);
        self.kept.forget(&part_of(state_path));
        if changed {
            self.changed();
        }
    }
}

/// What the tracker is told of `p`: nothing before its first piece, then
/// whether it landed (renamed into place: held whole).
fn announced(p: &Partial) -> Option<bool> {
    (p.have.count() > 0).then(|| !p.downloading())
}

/// Opens `path` for reading if it is a regular file (no symlink followed,
/// no FIFO waited on).
fn open_regular(path: &Path) -> std::io::Result<(File, std::fs::Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() {
        Ok((file, meta))
    } else {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

/// Adds the pieces held in `after` but not in `before` (all of them for a
/// new partial) to the pieces verified and bytes received.
fn count_new_pieces(list: &PieceList, before: Option<&Bitfield>, after: &Bitfield) {
    let (mut pieces, mut bytes) = (0u64, 0u64);
    for i in 0..after.len() {
        if after.get(i) && !before.is_some_and(|b| i < b.len() && b.get(i)) {
            let (start, end) = piece_bounds(list.size, list.piece_size, i);
            pieces += 1;
            bytes += end - start;
        }
    }
    metrics::PIECES_VERIFIED.add(pieces);
    metrics::RECEIVED_BYTES.add(bytes);
}

/// `x.part.state` -> `x.part`.
fn part_of(state_path: &Path) -> PathBuf {
    let s = state_path.as_os_str().as_bytes();
    let cut = s
        .len()
        .saturating_sub(PART_STATE_SUFFIX.len() - PART_SUFFIX.len());
    PathBuf::from(OsStr::from_bytes(&s[..cut]))
}

/// `x.part.state` -> `x.part.chain`.
fn chain_of(state_path: &Path) -> PathBuf {
    let mut p = final_path(state_path).into_os_string();
    p.push(PART_CHAIN_SUFFIX);
    PathBuf::from(p)
}

/// `x.part.state` -> `x`.
fn final_path(state_path: &Path) -> PathBuf {
    let s = state_path.as_os_str().as_bytes();
    let cut = s.len().saturating_sub(PART_STATE_SUFFIX.len());
    PathBuf::from(OsStr::from_bytes(&s[..cut]))
}

/// Reads a state file (no symlinks, at most [`MAX_STATE_BYTES`]); and
/// the file, still open (its close is what the download watches for).
fn read_state(path: &Path) -> std::io::Result<(ResumeState, File)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    (&file).take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(std::io::Error::other("state file too large"));
    }
    let state = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok((state, file))
}

/// Every `*.part.state` under `root` (no symlinks followed), at most
/// [`MAX_PARTIALS`].
pub fn find_states(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            let path = e.path();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file()
                && path
                    .as_os_str()
                    .as_bytes()
                    .ends_with(PART_STATE_SUFFIX.as_bytes())
            {
                out.push(path);
                if out.len() >= MAX_PARTIALS {
                    return out;
                }
            }
        }
    }
    out
}

/// The `pbs-partials` thread body: reads the states found at start, then
/// each one the index's watch names, until `stop` says so or closes.
pub(crate) fn run(
    partials: &Partials,
    root: &Path,
    events: &Receiver<PathBuf>,
    stop: &Receiver<()>,
    indexed: &dyn Fn(&Sha1Digest) -> bool,
    landed: &dyn Fn(Landed),
) {
    let refresh = |path: &Path| {
        if let Some(l) = partials.refresh(path) {
            landed(l);
        }
    };
    for path in find_states(root) {
        refresh(&path);
    }
    partials.counting.store(true, Ordering::Relaxed);
    loop {
        // `select!` parks at once: `recv_timeout` spins and calls
        // `sched_yield` a few times before it parks, and this thread waits
        // once per state save (up to every 50 ms per download): in a
        // 47-host swarm's profile those yields were 2 % of the machine.
        select! {
            recv(events) -> ev => match ev {
                Ok(path) => {
                    refresh(&path);
                    // Coalesce a burst: each path once.
                    let mut more: Vec<PathBuf> = events.try_iter().take(4096).collect();
                    more.sort();
                    more.dedup();
                    more.retain(|p| *p != path);
                    for p in more {
                        refresh(&p);
                    }
                }
                Err(_) => return,
            },
            recv(stop) -> _ => return,
            default(Duration::from_millis(200)) => {}
        }
        // Only a landed file can have gone to the index (a download in
        // progress is kept whatever the index holds): no write lock and
        // no index lookups at every state save.
        if partials.any_landed() {
            partials.retain_unindexed(indexed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state of a download of `data` with `verified` pieces, its
    /// chain written beside `st` once.
    fn state(st: &Path, data: &[u8], verified: &[bool]) -> (Sha1Digest, ResumeState) {
        let list = PieceList::of_content(data);
        crate::fetch::state::save_chain(&chain_of(st), &list).unwrap();
        (list.sha1, ResumeState::new(&list, verified))
    }

    #[test]
    fn a_state_file_makes_a_partial_whose_pieces_grow_then_it_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 150_000];
        let st = dir.path().join("f.part.state");
        std::fs::write(dir.path().join("f.part"), &data).unwrap();
        let p = Partials::new();
        let (sha, s) = state(&st, &data, &[true, false, false]);
        s.save(&st).unwrap();
        p.refresh(&st);
        assert_eq!(p.have(&sha).unwrap().count(), 1);
        assert_eq!(p.pieces(&sha).unwrap(), PieceList::of_content(&data));
        let opened = p.open(&sha).unwrap().unwrap();
        assert_eq!(opened.name, "f");
        assert_eq!(opened.held.count(), 1);
        // Later states rewrite the bitmap only: the chain is not read again.
        std::fs::remove_file(chain_of(&st)).unwrap();
        let (_, s) = state(&st, &data, &[true, true, true]);
        std::fs::remove_file(chain_of(&st)).unwrap();
        s.save(&st).unwrap();
        p.refresh(&st);
        assert!(p.have(&sha).unwrap().is_full());
        // Finished: renamed into place, state removed.
        std::fs::rename(dir.path().join("f.part"), dir.path().join("f")).unwrap();
        std::fs::remove_file(&st).unwrap();
        let landed = p.refresh(&st).expect("landed");
        assert_eq!(landed.hashed.chain, PieceList::of_content(&data).chain);
        assert!(
            p.open(&sha).unwrap().is_some(),
            "served whole until indexed"
        );
        p.retain_unindexed(|s| *s == sha);
        assert!(p.is_empty());
    }

    /// A `.part` is kept open between pieces, never served once another
    /// file (a new run's `.part`) has its name, and closed once its state
    /// says every piece is verified (the download then checks who holds it).
    #[test]
    fn a_kept_part_is_not_served_once_replaced_and_closes_when_complete() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let data = vec![5u8; 150_000];
        let (st, part) = (dir.path().join("k.part.state"), dir.path().join("k.part"));
        std::fs::write(&part, &data).unwrap();
        let p = Partials::new();
        let (sha, s) = state(&st, &data, &[true, false, false]);
        s.save(&st).unwrap();
        p.refresh(&st);
        let (a, b) = (
            p.open(&sha).unwrap().unwrap(),
            p.open(&sha).unwrap().unwrap(),
        );
        assert!(Arc::ptr_eq(&a.file, &b.file), "kept between pieces");
        assert_eq!(p.kept.len(), 1);
        drop((a, b));

        let tmp = dir.path().join("k.part.new");
        std::fs::write(&tmp, &data).unwrap();
        std::fs::rename(&tmp, &part).unwrap();
        let c = p.open(&sha).unwrap().unwrap();
        assert_eq!(
            c.file.metadata().unwrap().ino(),
            std::fs::metadata(&part).unwrap().ino(),
            "the new .part, not the descriptor kept of the old one"
        );
        drop(c);
        assert_eq!(p.kept.len(), 1);

        let (_, s) = state(&st, &data, &[true, true, true]);
        s.save(&st).unwrap();
        p.refresh(&st);
        assert_eq!(p.kept.len(), 0, "every piece verified: closed");
        assert!(p.open(&sha).unwrap().is_some());
        assert_eq!(p.kept.len(), 0, "and not kept again");
    }

    /// Between the rename into place and the index listing the file, the
    /// held pieces are still served (a `404` there turned a swarm's
    /// downloaders away at every landing).
    #[test]
    fn a_download_renamed_into_place_is_served_without_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![9u8; 150_000];
        let st = dir.path().join("g.part.state");
        std::fs::write(dir.path().join("g.part"), &data).unwrap();
        let p = Partials::new();
        // The last state read holds 2 of 3 pieces (the last ones unread).
        let (sha, s) = state(&st, &data, &[true, true, false]);
        s.save(&st).unwrap();
        p.refresh(&st);
        std::fs::rename(dir.path().join("g.part"), dir.path().join("g")).unwrap();
        let opened = p.open(&sha).unwrap().expect("served from the final name");
        assert_eq!(opened.held.count(), 2);
        assert_eq!(opened.file.metadata().unwrap().len(), data.len() as u64);
        // The state removed: still served (its held pieces) until indexed.
        std::fs::remove_file(&st).unwrap();
        assert!(
            p.refresh(&st).is_none(),
            "not all verified: hashed by the index"
        );
        assert_eq!(p.open(&sha).unwrap().expect("still served").held.count(), 2);
        assert!(p.landed().is_empty());
        p.retain_unindexed(|s| *s == sha);
        assert!(p.open(&sha).unwrap().is_none(), "the index serves it now");
        // Still shown (where its bytes came from), as landed.
        let landed = p.landed();
        assert_eq!(landed.len(), 1);
        assert_eq!((landed[0].sha1, landed[0].downloading), (sha, false));
        assert!(p.snapshot().is_empty());
    }

    #[test]
    fn a_state_without_its_chain_or_of_the_previous_form_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![1u8; 100];
        let st = dir.path().join("h.part.state");
        std::fs::write(dir.path().join("h.part"), &data).unwrap();
        let p = Partials::new();
        let (sha, s) = state(&st, &data, &[true]);
        std::fs::remove_file(chain_of(&st)).unwrap();
        s.save(&st).unwrap();
        p.refresh(&st);
        assert!(p.is_empty(), "no chain");
        let old = format!(
            r#"{{"sha1":"{sha}","size":100,"piece_size":65536,"pieces":["{sha}"],"verified":"01"}}"#
        );
        std::fs::write(&st, old).unwrap();
        p.refresh(&st);
        assert!(p.is_empty(), "previous form");
    }

    /// A state read while its download overwrote it does not parse: the
    /// pieces read before are still served, and the next read counts.
    #[test]
    fn a_state_caught_halfway_through_an_overwrite_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![3u8; 150_000];
        let st = dir.path().join("t.part.state");
        std::fs::write(dir.path().join("t.part"), &data).unwrap();
        let p = Partials::new();
        let (sha, s) = state(&st, &data, &[true, false, false]);
        s.save(&st).unwrap();
        p.refresh(&st);
        let json = std::fs::read(&st).unwrap();
        std::fs::write(&st, &json[..json.len() / 2]).unwrap();
        assert!(p.refresh(&st).is_none());
        assert_eq!(p.have(&sha).unwrap().count(), 1, "kept");
        let (_, s) = state(&st, &data, &[true, true, false]);
        s.save(&st).unwrap();
        p.refresh(&st);
        assert_eq!(p.have(&sha).unwrap().count(), 2);
    }

    #[test]
    fn garbage_states_and_symlinks_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("g.part.state");
        std::fs::write(&st, b"{not json").unwrap();
        let p = Partials::new();
        p.refresh(&st);
        assert!(p.is_empty());
        let outside = dir.path().join("outside.json");
        let (_, s) = state(&dir.path().join("l.part.state"), b"x", &[true]);
        s.save(&outside).unwrap();
        let link = dir.path().join("l.part.state");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        p.refresh(&link);
        assert!(p.is_empty());
        assert_eq!(find_states(dir.path()), vec![st]);
    }

    /// The announcer is woken when what it would announce changes (the
    /// first piece, the landing, the end), not at every state save.
    #[test]
    fn the_announcer_is_woken_by_a_first_piece_and_a_landing_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![5u8; 150_000];
        let st = dir.path().join("w.part.state");
        std::fs::write(dir.path().join("w.part"), &data).unwrap();
        let wake = Arc::new(Wake::new());
        let p = Partials::waking(wake.clone());
        let raised = || wake.wait(Duration::ZERO);
        let save = |verified: &[bool]| {
            let (sha, s) = state(&st, &data, verified);
            s.save(&st).unwrap();
            p.refresh(&st);
            sha
        };
        let sha = save(&[false, false, false]);
        assert!(!raised(), "nothing held: nothing to announce");
        assert!(p.announced().is_empty());
        save(&[true, false, false]);
        assert!(raised(), "first piece");
        assert_eq!(p.announced(), [(sha, false)]);
        save(&[true, true, false]);
        save(&[true, true, true]);
        assert!(!raised(), "more pieces: announced already");
        std::fs::rename(dir.path().join("w.part"), dir.path().join("w")).unwrap();
        std::fs::remove_file(&st).unwrap();
        p.refresh(&st);
        assert!(raised(), "landed: held whole");
        assert_eq!(p.announced(), [(sha, true)]);
        p.retain_unindexed(|s| *s == sha);
        assert!(raised(), "indexed: the registry no longer announces it");
        assert!(p.announced().is_empty());
    }
}
