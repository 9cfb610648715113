//! [`download`]: the whole download, round by round.
//!
//! 1. An output that already has the content is success; one with other
//!    content is refused unless `force`.
//! 2. Every holder's piece list is fetched (in parallel) and the holders are
//!    grouped by identical list, the group with the most distinct addresses
//!    first (sybil records of one listener count once).
//! 3. Each round downloads with one group's list and holders (see `round`),
//!    after salvaging the pieces of the `.part` that a previous run or
//!    round verified and that still verify against this list.
//! 4. Every piece verified against the chain as it arrived, the last one
//!    against the requested SHA1, so the file is right once every piece is
//!    in: fsync, rename into place, fsync the directory, remove the state.
//!    A false chain fails the pieces of the holders that vouched for it
//!    (at the latest its last piece, which must finish to the SHA1): they
//!    are dropped and named bad, and the next group's list is tried,
//!    keeping every piece that verifies against it.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sha1::{Digest, Sha1};

use super::error::Step;
use super::fault::HolderFault;
use super::output::{chain_path, part_path, state_path};
use super::pieces::{fetch_piece_list_with, PieceListError};
use super::rate::RateLimiter;
use super::round::{Outcome, Round};
use super::seal::Watch;
use super::state::{salvage, ResumeState};
use super::supervisor;
use super::{DownloadOptions, FetchError, HolderFailure, ProgressFn, Summary};
use crate::client::Timeouts;
use crate::digest::Sha1Digest;
use crate::holders::{Holder, HolderSource};
use crate::protocol::PieceList;

/// Threads fetching piece lists at once.
const LIST_FAN_OUT: usize = 16;

/// Downloads `opts.sha1` from the holders `source` names into `opts.output`.
///
/// Blocks until the file is in place (verified), or fails; `progress` is
/// called about ten times a second from this thread.
pub fn download(
    opts: &DownloadOptions,
    source: &dyn HolderSource,
    progress: Option<ProgressFn<'_>>,
) -> Result<Summary, FetchError> {
    let started = Instant::now();
    let sha1 = opts.sha1;
    let mut summary = Summary {
        sha1,
        path: opts.output.clone(),
        bytes: 0,
        bytes_received: 0,
        seconds: 0.0,
        peers_used: Vec::new(),
        pieces_retried: 0,
        resumed_bytes: 0,
        rechecked_bytes: 0,
        bad_peers: Vec::new(),
        already_present: false,
    };
    if let Some(size) = existing_output(opts)? {
        summary.bytes = size;
        summary.already_present = true;
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    let holders = source.holders(&sha1)?;
    if holders.is_empty() {
        return Err(FetchError::NoHolders { sha1 });
    }
    let mut known = Known::new(opts);
    let errors = known.add(holders);
    if known.groups.is_empty() {
        return Err(FetchError::NoPieceList {
            sha1,
            failures: errors,
        });
    }

    log::debug!(
        "{} piece list(s) after {:.3}s",
        known.groups.len(),
        started.elapsed().as_secs_f64()
    );
    let part_path = part_path(&opts.output);
    // Never through a link: a `.part` planted as a symlink is refused.
    let open_err = |source| FetchError::io(Step::Open, &part_path, source);
    if std::fs::symlink_metadata(&part_path).is_ok_and(|m| m.is_symlink()) {
        return Err(open_err(std::io::Error::from_raw_os_error(libc::ELOOP)));
    }
    let state_path = state_path(&opts.output);
    // The state is only a hint: every piece it claims is verified again,
    // from a fresh `.part` the claimed ranges are copied into (see `seal`).
    let mut claimed = ResumeState::load(&state_path, &sha1)
        .map(|state| state.verified_ranges())
        .unwrap_or_default();
    let old = match claimed.is_empty() {
        true => None,
        false => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&part_path)
            .ok(),
    };
    let (part, mut watch) = Watch::create(&part_path, old.as_ref(), &claimed).map_err(open_err)?;
    drop(old);
    let mut rechecked = 0u64;

    let own_rate = match opts.shared_rate {
        Some(_) => None,
        None => opts.max_rate.map(RateLimiter::new),
    };
    let dl = Download {
        opts,
        part,
        part_path,
        state_path,
        chain_path: chain_path(&opts.output),
        rate: opts.shared_rate.as_deref().or(own_rate.as_ref()),
        received: AtomicU64::new(0),
        retried: AtomicU64::new(0),
    };
    let (part, part_path) = (&dl.part, &dl.part_path);
    let mut used = BTreeSet::new();
    let mut bad: Vec<String> = Vec::new();
    let mut failed: Vec<HolderFailure> = Vec::new();
    let mut resumed = None;
    let mut g = 0;
    while g < known.groups.len() {
        let list = known.groups[g].list.clone();
        let holders = known.groups[g].holders.clone();
        // Never grown up front (a peer's size is not trusted with disk
        // space): writes extend the file. Cut anything past this size.
        let part_len = part
            .metadata()
            .map_err(|source| FetchError::read(part_path, source))?
            .len();
        if part_len > list.size {
            part.set_len(list.size)
                .map_err(|source| FetchError::write(part_path, source))?;
        }
        let (done, checked) = salvage(part, &list, &claimed, opts.memory_budget);
        rechecked += checked;
        let done_bytes: u64 = (0..done.len())
            .filter(|&i| done[i])
            .map(|i| list.piece_range(i).1 as u64)
            .sum();
        resumed.get_or_insert(done_bytes);
        if done_bytes > 0 {
            log::info!("resuming {sha1}: {done_bytes} bytes already verified");
        }
        let round = Round::new(&dl, &list, &done);
        round.add_holders(holders.clone());
        let outcome = supervisor::run(&round, &mut || known.requery(source, g), progress);
        for slot in round.slots.lock().iter_mut() {
            if slot.pieces > 0 {
                used.insert(slot.holder.id.clone());
            }
            if slot.bad {
                bad.push(slot.holder.to_string());
            } else if let Some(reason) = slot.dropped.take() {
                failed.push(HolderFailure::new(
                    slot.holder.clone(),
                    HolderFault::dropped(reason),
                ));
            }
        }
        log::debug!(
            "round {g} over after {:.3}s",
            started.elapsed().as_secs_f64()
        );
        match outcome {
            Outcome::Complete => {
                rechecked += finish(&dl, &mut watch, &list)?;
                log::debug!("in place after {:.3}s", started.elapsed().as_secs_f64());
                summary.bytes = list.size;
                summary.bytes_received = dl.received.load(Ordering::Relaxed);
                summary.seconds = started.elapsed().as_secs_f64();
                summary.peers_used = used.into_iter().collect();
                summary.pieces_retried = dl.retried.load(Ordering::Relaxed);
                summary.resumed_bytes = resumed.unwrap_or(0);
                summary.rechecked_bytes = rechecked;
                summary.bad_peers = bad;
                return Ok(summary);
            }
            Outcome::Failed => {
                claimed = verified_ranges(&list, &round.sched.done_flags());
            }
            Outcome::Interrupted => {
                return Err(FetchError::Interrupted {
                    part: part_path.clone(),
                    done: round.sched.done_bytes(),
                    size: list.size,
                })
            }
            Outcome::Fatal(e) => return Err(e),
        }
        g += 1;
    }
    bad.sort();
    bad.dedup();
    if bad.is_empty() {
        Err(FetchError::HoldersFailed {
            sha1,
            failures: failed,
        })
    } else {
        Err(FetchError::NoCorrectCopy {
            sha1,
            bad,
            others: failed,
        })
    }
}

fn verified_ranges(list: &PieceList, done: &[bool]) -> Vec<(u64, u64)> {
    ResumeState::new(list, done).verified_ranges()
}

/// `Some(size)` if the output already holds the file; an error if it holds
/// something else and `force` is off.
fn existing_output(opts: &DownloadOptions) -> Result<Option<u64>, FetchError> {
    let err = |source| FetchError::read(&opts.output, source);
    let mut file = match File::open(&opts.output) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FetchError::io(Step::Open, &opts.output, e)),
    };
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(FetchError::NotAFile {
            path: opts.output.clone(),
        });
    }
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    if Sha1Digest::from_hasher(hasher) == opts.sha1 {
        log::debug!("{} already holds {}", opts.output.display(), opts.sha1);
        return Ok(Some(meta.len()));
    }
    if opts.force {
        return Ok(None);
    }
    Err(FetchError::Exists {
        path: opts.output.clone(),
    })
}

/// fsync the `.part`; if another process may have written to it (its
/// watch saw an open, see `seal`), read every piece back and verify it
/// again (returns the bytes so read), so the bytes renamed are the
/// verified ones; rename it into place, fsync the directory (unless
/// `sync_dir` is off: a batch does it once), drop the state and chain.
fn finish(dl: &Download<'_>, watch: &mut Watch, list: &PieceList) -> Result<u64, FetchError> {
    let (part, part_path, state_path) = (&dl.part, dl.part_path.as_path(), &dl.state_path);
    let opts = dl.opts;
    let output = opts.output.as_path();
    let read_err = |source| FetchError::read(part_path, source);
    part.sync_all()
        .map_err(|source| FetchError::io(Step::Sync, part_path, source))?;
    let mut rechecked = 0;
    if let Err(why) = watch.untouched() {
        let checked = Instant::now();
        log::debug!(
            "{}: {why}; every piece is read back and verified before the rename",
            part_path.display()
        );
        let changed = super::state::changed_piece(part, list, opts.memory_budget);
        rechecked = list.size;
        log::debug!(
            "{} pieces checked again on disk in {:.3}s",
            list.len(),
            checked.elapsed().as_secs_f64()
        );
        if let Some(piece) = changed {
            return Err(FetchError::Changed {
                path: part_path.to_path_buf(),
                piece,
            });
        }
    }
    // The name must still be this file (not one swapped in under it).
    let same_file = |m: &std::fs::Metadata, n: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        m.dev() == n.dev() && m.ino() == n.ino()
    };
    let ours = part.metadata().map_err(read_err)?;
    let named = std::fs::symlink_metadata(part_path).map_err(read_err)?;
    if !same_file(&ours, &named) {
        return Err(FetchError::Changed {
            path: part_path.to_path_buf(),
            piece: 0,
        });
    }
    std::fs::rename(part_path, output).map_err(|source| {
        if super::error::is_no_space(&source) {
            FetchError::NoSpace {
                path: output.to_path_buf(),
            }
        } else {
            FetchError::Rename {
                from: part_path.to_path_buf(),
                to: output.to_path_buf(),
                source,
            }
        }
    })?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if opts.sync_dir {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    // Looked up first: a file of one piece has no state, and an unlink,
    // even of nothing, locks the directory against a batch's other files.
    if std::fs::symlink_metadata(state_path).is_err() {
        return Ok(rechecked);
    }
    // The state first: a peer sharing the directory that reads it sees the
    // download landed; then the chain it named.
    for path in [state_path, &dl.chain_path] {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
        }
    }
    Ok(rechecked)
}

/// One file's download, the same through its rounds: its options, its
/// `.part` and state file, its rate limit and counters. Each round reads it
/// through [`Round::dl`].
pub(crate) struct Download<'a> {
    pub opts: &'a DownloadOptions,
    /// The `.part`, open for reading and writing.
    pub part: File,
    pub part_path: PathBuf,
    /// The `.part.state` saved as pieces verify.
    pub state_path: PathBuf,
    /// The `.part.chain` written once a round, before its first state.
    pub chain_path: PathBuf,
    /// The cap on the bytes per second received, if any.
    pub rate: Option<&'a RateLimiter>,
    /// Bytes received from the network in this run.
    pub received: AtomicU64,
    /// Pieces fetched again after a failure or bad data.
    pub retried: AtomicU64,
}

/// A group of holders that gave the same piece list.
struct Group {
    list: PieceList,
    holders: Vec<Holder>,
}

/// Every holder seen, by id, and the groups of identical piece lists.
struct Known<'a> {
    opts: &'a DownloadOptions,
    seen: HashMap<String, usize>,
    groups: Vec<Group>,
}

impl<'a> Known<'a> {
    fn new(opts: &'a DownloadOptions) -> Self {
        Known {
            opts,
            seen: HashMap::new(),
            groups: Vec::new(),
        }
    }

    /// Fetches the piece lists of the holders not seen yet (in parallel)
    /// and files them into groups, biggest first (only before the first
    /// round: later, new groups go to the end). Returns the errors.
    fn add(&mut self, holders: Vec<Holder>) -> Vec<HolderFailure> {
        let fresh: Vec<Holder> = holders
            .into_iter()
            .filter(|h| !self.seen.contains_key(&h.id))
            .collect();
        let lists = fetch_lists(self.opts, &fresh);
        let mut errors = Vec::new();
        let initial = self.groups.is_empty();
        for (holder, result) in fresh.into_iter().zip(lists) {
            match result {
                Ok(list) => {
                    let g = match self.groups.iter().position(|g| g.list == list) {
                        Some(g) => g,
                        None => {
                            self.groups.push(Group {
                                list,
                                holders: Vec::new(),
                            });
                            self.groups.len() - 1
                        }
                    };
                    self.seen.insert(holder.id.clone(), g);
                    self.groups[g].holders.push(holder);
                }
                Err(e) => {
                    log::warn!("peer {holder}: no usable piece list: {e}");
                    errors.push(HolderFailure::new(holder, HolderFault::piece_list(e)));
                }
            }
        }
        if initial {
            // The group that the most distinct addresses vouch for first
            // (records pointing at one listener count once). Stable: ties
            // keep the holders' order.
            self.groups.sort_by_key(|g| {
                let addrs: BTreeSet<&str> = g.holders.iter().map(|h| h.addr.as_str()).collect();
                std::cmp::Reverse(addrs.len())
            });
            for (i, g) in self.groups.iter().enumerate() {
                for h in &g.holders {
                    self.seen.insert(h.id.clone(), i);
                }
            }
        }
        errors
    }

    /// Asks `source` again; returns the new holders whose list is group `g`'s.
    fn requery(&mut self, source: &dyn HolderSource, g: usize) -> Vec<Holder> {
        let holders = match source.holders(&self.opts.sha1) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("{e}");
                return Vec::new();
            }
        };
        let before = self.groups.get(g).map_or(0, |grp| grp.holders.len());
        self.add(holders);
        let fresh: Vec<Holder> = self
            .groups
            .get(g)
            .and_then(|grp| grp.holders.get(before..))
            .map(<[Holder]>::to_vec)
            .unwrap_or_default();
        for h in &fresh {
            log::info!("new holder {h} joins the download");
        }
        fresh
    }
}

/// The piece lists of `holders`, in order, fetched by up to 16 threads.
fn fetch_lists(
    opts: &DownloadOptions,
    holders: &[Holder],
) -> Vec<Result<PieceList, PieceListError>> {
    let timeouts = Timeouts {
        connect: opts.connect_timeout,
        io: opts.io_timeout,
    };
    crate::fanout::map(holders, LIST_FAN_OUT, "pbs-get-list", |h| {
        fetch_piece_list_with(
            opts.pool.as_deref(),
            h,
            &opts.sha1,
            timeouts,
            opts.request_timeout,
        )
    })
}
