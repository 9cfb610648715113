//! One file's download, round by round ([`Downloader::download`], and
//! each file of a batch): `Downloader::run` up to the piece lists, then
//! [`Download`]'s steps.
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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use super::downloader::Downloader;
use super::error::Step;
use super::error::{FetchError, HolderFailure};
use super::fault::HolderFault;
use super::job::{Download, Job, Mode};
use super::pieces::{fetch_piece_list_with, Fetched, PieceListError};
use super::round::{Outcome, Round, Welcome};
use super::state::{salvage, ResumeState};
use super::supervisor;
use super::{ProgressFn, Summary};
use crate::client::Timeouts;
use crate::digest::Sha1Digest;
use crate::holders::{Holder, HolderSource};
use crate::policy::host::host_group;
use crate::protocol::PieceList;

/// Longest wait, before the rename, for a peer sharing the directory to
/// read the download's last state (see `seal::Watch::await_state_read`).
const LAST_STATE_WAIT: Duration = Duration::from_millis(250);

/// Threads fetching piece lists at once.
const LIST_FAN_OUT: usize = 16;

impl Downloader {
    /// Downloads `sha1` from the holders `source` names into `output`
    /// (`<output>.part` and `<output>.part.state` beside it meanwhile).
    ///
    /// Blocks until the file is in place (verified), or fails; `progress`
    /// is called about ten times a second from this thread.
    pub fn download(
        &self,
        sha1: Sha1Digest,
        output: impl AsRef<Path>,
        source: &dyn HolderSource,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Summary, FetchError> {
        let job = Job {
            sha1,
            output: output.as_ref(),
            mode: Mode::Alone,
        };
        self.run(&job, source, progress)
    }

    /// Downloads `job` from the holders `source` names: the steps of
    /// [`Downloader::download`], also run by each file of a batch.
    pub(super) fn run(
        &self,
        job: &Job<'_>,
        source: &dyn HolderSource,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Summary, FetchError> {
        let started = Instant::now();
        let sha1 = job.sha1;
        if let Some(size) = existing_output(job, self.options().force)? {
            let mut summary = Summary::new(job);
            summary.bytes = size;
            summary.already_present = true;
            summary.seconds = started.elapsed().as_secs_f64();
            return Ok(summary);
        }
        let holders = source.holders(&sha1)?;
        if holders.is_empty() {
            return Err(FetchError::NoHolders { sha1 });
        }
        let mut known = Known::new(self, job);
        let mut errors = known.add(holders.clone());
        // Patience, not failure: holders that could not be asked for their
        // piece list (a seed whose full link drops handshakes while a flash
        // crowd starts: a moment ago they answered the lookup) are asked
        // again after a randomized backoff, with whoever the source names
        // by then, until one answers or the patience runs out. Holders
        // whose list is unusable are not asked again.
        let asked = Instant::now();
        let cancelled = || self.options().cancelled();
        let mut waits = 0;
        // A lookup ends at its first whole copy: if none of the holders
        // it found gave a usable list (a liar's, or one that cannot be
        // asked), the source looks further first.
        let mut further = true;
        while known.groups.is_empty() && !cancelled() {
            if further {
                match source.more_holders(&sha1) {
                    Ok(more) if more.iter().any(|h| known.is_new(h)) => {
                        errors.extend(known.add(more));
                        continue;
                    }
                    Ok(_) => further = false,
                    Err(e) => {
                        log::warn!("{e}");
                        further = false;
                    }
                }
            }
            if !known.waiting() || asked.elapsed() >= self.options().patience {
                break;
            }
            waits += 1;
            let wait = super::supervisor::backoff(waits);
            log::info!(
                "no piece list yet ({} holder(s) could not be asked); asking again in {:.1}s",
                errors.len(),
                wait.as_secs_f64()
            );
            let until = Instant::now() + wait;
            while !cancelled() && Instant::now() < until {
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
            }
            if cancelled() {
                break;
            }
            let again = match source.holders(&sha1) {
                Ok(more) => more.into_iter().chain(holders.iter().cloned()).collect(),
                Err(e) => {
                    log::warn!("{e}");
                    holders.clone()
                }
            };
            errors = known.add(again);
        }
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
        let dl = Download::open(self, job)?;
        let mut summary = dl.rounds(&mut known, source, progress, started)?;
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }
}

impl Summary {
    /// A summary of nothing done yet for `job`.
    fn new(job: &Job<'_>) -> Self {
        Summary {
            sha1: job.sha1,
            path: job.output.to_path_buf(),
            bytes: 0,
            bytes_received: 0,
            bytes_from_seeds: 0,
            bytes_from_partials: 0,
            seconds: 0.0,
            peers_used: Vec::new(),
            pieces_retried: 0,
            resumed_bytes: 0,
            rechecked_bytes: 0,
            bad_peers: Vec::new(),
            slow_peers: Vec::new(),
            already_present: false,
        }
    }
}

/// What the rounds of a download found out about its holders.
#[derive(Default)]
struct Tally {
    /// Ids of the holders that delivered a verified piece.
    used: BTreeSet<String>,
    /// Holders that sent bad data or a false piece list, and what.
    bad: Vec<HolderFailure>,
    /// The other holders dropped, and why.
    failed: Vec<HolderFailure>,
    /// Holders that held a piece past its deadline (`id (addr)`).
    slow: BTreeSet<String>,
}

impl Download<'_> {
    /// Runs a round per group of identical piece lists, biggest group
    /// first, until one gives the file.
    fn rounds(
        &self,
        known: &mut Known<'_>,
        source: &dyn HolderSource,
        progress: Option<ProgressFn<'_>>,
        started: Instant,
    ) -> Result<Summary, FetchError> {
        let sha1 = self.job.sha1;
        let mut claimed = self.claimed.clone();
        let mut tally = Tally::default();
        let mut resumed = None;
        // Per group: the turns it yielded (no piece for a while while
        // another list waited), or `None` once it is over (failed, or its
        // list lied).
        let mut turns: Vec<Option<u32>> = Vec::new();
        while let Some(g) = next_group(&mut turns, known.groups.len()) {
            let list = known.groups[g].list.clone();
            let holders = known.groups[g].holders.clone();
            let done = self.salvage(&list, &claimed)?;
            let done_bytes: u64 = (0..done.len())
                .filter(|&i| done[i])
                .map(|i| list.piece_range(i).1 as u64)
                .sum();
            resumed.get_or_insert(done_bytes);
            if done_bytes > 0 {
                log::info!("resuming {sha1}: {done_bytes} bytes already verified");
            }
            let mut round = Round::new(self, &list, &done);
            // With another list waiting, one that delivers nothing yields
            // within seconds (twice as long at each of its turns).
            let others = (0..turns.len()).any(|k| k != g && turns[k].is_some());
            round.yield_turn = turns[g].filter(|_| others);
            known.welcome(&round, &holders);
            round.add_holders(holders.clone());
            let outcome = supervisor::run(
                &round,
                &mut |stuck| {
                    let lists = known.groups.len();
                    let liars = known.recheck(g, round.take_rechecks());
                    round.confirm_bad(&liars);
                    let fresh = known.requery(source, g, stuck);
                    known.welcome(&round, &fresh);
                    if known.groups.len() > lists {
                        round
                            .others_waiting
                            .store(true, std::sync::atomic::Ordering::Release);
                    }
                    fresh
                },
                progress,
            );
            tally.add(&round);
            log::debug!(
                "round {g} over after {:.3}s",
                started.elapsed().as_secs_f64()
            );
            match outcome {
                Outcome::Complete => {
                    self.finish(&list)?;
                    log::debug!("in place after {:.3}s", started.elapsed().as_secs_f64());
                    let mut summary = Summary::new(self.job);
                    summary.bytes = list.size;
                    summary.bytes_received = self.received.load(Ordering::Relaxed);
                    summary.bytes_from_seeds = self.from_seeds.load(Ordering::Relaxed);
                    summary.bytes_from_partials = self.from_partials.load(Ordering::Relaxed);
                    summary.peers_used = tally.used.into_iter().collect();
                    summary.pieces_retried = self.retried.load(Ordering::Relaxed);
                    summary.resumed_bytes = resumed.unwrap_or(0);
                    summary.rechecked_bytes = self.rechecked.load(Ordering::Relaxed);
                    summary.bad_peers = tally.bad.iter().map(|f| f.holder.to_string()).collect();
                    summary.slow_peers = tally.slow.into_iter().collect();
                    return Ok(summary);
                }
                Outcome::Failed => {
                    claimed = verified_ranges(&list, &round.sched.done_flags());
                }
                Outcome::Yielded => {
                    log::warn!(
                        "no piece from the holders of one piece list ({}) for {:.1}s: trying another list",
                        holders
                            .iter()
                            .map(Holder::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        round.sched.since_progress().as_secs_f64()
                    );
                    claimed = verified_ranges(&list, &round.sched.done_flags());
                    turns[g] = turns[g].map(|t| t + 1);
                    continue;
                }
                Outcome::Interrupted => {
                    return Err(FetchError::Interrupted {
                        part: self.part_path.clone(),
                        done: round.sched.done_bytes(),
                        size: list.size,
                    })
                }
                Outcome::Fatal(e) => return Err(e),
            }
            turns[g] = None;
        }
        Err(tally.into_error(sha1))
    }

    /// Cuts the `.part` to `list`'s size (never grown up front: a peer's
    /// size is not trusted with disk space, writes extend the file) and
    /// flags its pieces that `claimed` covers and that still verify
    /// against `list` (the bytes so read count as rechecked).
    fn salvage(&self, list: &PieceList, claimed: &[(u64, u64)]) -> Result<Vec<bool>, FetchError> {
        self.direct
            .stop(&self.part)
            .map_err(|source| FetchError::write(&self.part_path, source))?;
        let part_len = self
            .part
            .metadata()
            .map_err(|source| FetchError::read(&self.part_path, source))?
            .len();
        if part_len > list.size {
            self.part
                .set_len(list.size)
                .map_err(|source| FetchError::write(&self.part_path, source))?;
        }
        let (done, checked) = salvage(&self.part, list, claimed, self.memory_budget());
        self.rechecked.fetch_add(checked, Ordering::Relaxed);
        if matches!(self.job.mode, Mode::Alone) && list.size >= super::direct::MIN_DIRECT_SIZE {
            self.direct.start(&self.part);
        }
        Ok(done)
    }

    /// Reads every piece of the `.part` back and verifies it (counted as
    /// rechecked); `path` names it in the error if a piece changed.
    fn read_back(&self, list: &PieceList, path: &Path) -> Result<(), FetchError> {
        let checked = Instant::now();
        let changed = super::state::changed_piece(&self.part, list, self.memory_budget());
        self.rechecked.fetch_add(list.size, Ordering::Relaxed);
        log::debug!(
            "{} pieces checked again on disk in {:.3}s",
            list.len(),
            checked.elapsed().as_secs_f64()
        );
        match changed {
            Some(piece) => Err(FetchError::Changed {
                path: path.to_path_buf(),
                piece,
            }),
            None => Ok(()),
        }
    }

    /// fsync the `.part`; if another process may have written to it (its
    /// watch saw an open, see `seal`), read every piece back and verify it
    /// again (counted as rechecked), so the bytes renamed are the verified
    /// ones; rename it into place, fsync the directory (a batch does it
    /// once at its end instead), drop the state and the chain.
    fn finish(&self, list: &PieceList) -> Result<(), FetchError> {
        let (part, part_path, state_path) =
            (&self.part, self.part_path.as_path(), &self.state_path);
        let output = self.job.output;
        let read_err = |source| FetchError::read(part_path, source);
        // A short last piece went to the disk padded to a block.
        self.direct
            .stop(part)
            .map_err(|source| FetchError::write(part_path, source))?;
        if part.metadata().map_err(read_err)?.len() > list.size {
            part.set_len(list.size)
                .map_err(|source| FetchError::write(part_path, source))?;
        }
        part.sync_all()
            .map_err(|source| FetchError::io(Step::Sync, part_path, source))?;
        // A peer sharing the directory takes the file's hashes if it saw
        // the last state (see `seal`): waited for before the check, so the
        // check stays microseconds before the rename.
        self.watch.await_state_read(LAST_STATE_WAIT);
        if let Err(why) = self.watch.untouched(part) {
            log::debug!(
                "{}: {why}; every piece is read back and verified before the rename",
                part_path.display()
            );
            self.read_back(list, part_path)?;
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
        // Between the check and the rename another process may have
        // changed the file's mode and written it: then it is read back in
        // place, and put back as the `.part` if a piece changed.
        if let Err(why) = self.watch.still_untouched(part) {
            log::debug!(
                "{}: {why} before its rename; every piece is read back and verified",
                output.display()
            );
            if let Err(e) = self.read_back(list, part_path) {
                let _ = std::fs::rename(output, part_path);
                return Err(e);
            }
        }
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if matches!(self.job.mode, Mode::Alone) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // Looked up first: a file of one piece has no state, and an unlink,
        // even of nothing, locks the directory against a batch's other files.
        if std::fs::symlink_metadata(state_path).is_err() {
            return Ok(());
        }
        // The state first: a peer sharing the directory that reads it sees
        // the download landed; then the chain it named.
        for path in [state_path, &self.chain_path] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove {}: {e}", path.display()),
            }
        }
        Ok(())
    }
}

impl Tally {
    /// Records what `round` found about its holders.
    fn add(&mut self, round: &Round<'_>) {
        for slot in round.slots.lock().iter_mut() {
            if slot.pieces > 0 {
                self.used.insert(slot.holder.id.clone());
            }
            if slot.late > 0 {
                self.slow.insert(slot.holder.to_string());
            }
            if let Some(reason) = slot.dropped.take() {
                let failure = HolderFailure::new(slot.holder.clone(), HolderFault::dropped(reason));
                if slot.bad {
                    self.bad.push(failure);
                } else {
                    self.failed.push(failure);
                }
            }
        }
    }

    /// The error of a download whose every round failed.
    fn into_error(mut self, sha1: Sha1Digest) -> FetchError {
        self.bad.sort_by_key(|f| f.holder.to_string());
        self.bad
            .dedup_by(|a, b| a.holder.to_string() == b.holder.to_string());
        if self.bad.is_empty() {
            FetchError::HoldersFailed {
                sha1,
                failures: self.failed,
            }
        } else {
            FetchError::NoCorrectCopy {
                sha1,
                bad: self.bad,
                others: self.failed,
            }
        }
    }
}

/// The next group's turn (`turns` grows to `groups`): the first never
/// tried, else the one that yielded fewest times (the first of those);
/// `None` once every group is over.
fn next_group(turns: &mut Vec<Option<u32>>, groups: usize) -> Option<usize> {
    turns.resize(groups.max(turns.len()), Some(0));
    (0..turns.len())
        .filter_map(|g| turns[g].map(|t| (t, g)))
        .min()
        .map(|(_, g)| g)
}

fn verified_ranges(list: &PieceList, done: &[bool]) -> Vec<(u64, u64)> {
    ResumeState::new(list, done).verified_ranges()
}

/// `Some(size)` if the output already holds the file; an error if it holds
/// something else and `force` is off.
fn existing_output(job: &Job<'_>, force: bool) -> Result<Option<u64>, FetchError> {
    let output = job.output;
    let err = |source| FetchError::read(output, source);
    let mut file = match File::open(output) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FetchError::io(Step::Open, output, e)),
    };
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(FetchError::NotAFile {
            path: output.to_path_buf(),
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
    if Sha1Digest::from_hasher(hasher) == job.sha1 {
        log::debug!("{} already holds {}", output.display(), job.sha1);
        return Ok(Some(meta.len()));
    }
    if force {
        return Ok(None);
    }
    Err(FetchError::Exists {
        path: output.to_path_buf(),
    })
}

/// A group of holders that gave the same piece list.
struct Group {
    list: PieceList,
    holders: Vec<Holder>,
}

/// Every holder seen, by id, and the groups of identical piece lists.
struct Known<'a> {
    by: &'a Downloader,
    job: &'a Job<'a>,
    seen: HashMap<String, usize>,
    /// Holders whose piece list this download will not use (another form,
    /// or one that contradicts itself): never asked again, warned once.
    refused: HashSet<String>,
    /// Holders whose piece list could not be fetched (asked again at the
    /// next re-query, but warned about once).
    unreachable: HashSet<String>,
    groups: Vec<Group>,
    /// What fetching each holder's piece list left (its connection, its
    /// bitmap), for the round it joins (`Round::expect`).
    welcomes: HashMap<String, Welcome>,
    /// Holders filed in a group on trust, their lists never fetched
    /// (found by a re-query: see [`Known::requery`]).
    trusted: HashSet<String>,
}

impl<'a> Known<'a> {
    fn new(by: &'a Downloader, job: &'a Job<'a>) -> Self {
        Known {
            by,
            job,
            seen: HashMap::new(),
            refused: HashSet::new(),
            unreachable: HashSet::new(),
            groups: Vec::new(),
            welcomes: HashMap::new(),
            trusted: HashSet::new(),
        }
    }

    /// True while some holder could not be asked for its piece list (and
    /// may answer when asked again).
    fn waiting(&self) -> bool {
        self.unreachable
            .iter()
            .any(|id| !self.seen.contains_key(id) && !self.refused.contains(id))
    }

    /// Fetches the piece lists of the holders not seen yet (in parallel)
    /// and files them into groups, biggest first (only before the first
    /// round: later, new groups go to the end). Returns the errors.
    fn add(&mut self, holders: Vec<Holder>) -> Vec<HolderFailure> {
        let mut asking = HashSet::new();
        let fresh: Vec<Holder> = holders
            .into_iter()
            .filter(|h| !self.seen.contains_key(&h.id) && !self.refused.contains(&h.id))
            .filter(|h| asking.insert(h.id.clone()))
            .collect();
        let initial = self.groups.is_empty();
        let lists = fetch_lists(self.by, self.job, &fresh, initial);
        let mut errors = Vec::new();
        for (holder, result) in fresh.into_iter().zip(lists) {
            match result {
                Ok(Fetched { list, conn, have }) => {
                    if conn.is_some() || have.is_some() {
                        self.welcomes
                            .insert(holder.id.clone(), Welcome { conn, have });
                    }
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
                    let first =
                        if matches!(e, PieceListError::Request(_) | PieceListError::Status(_)) {
                            self.unreachable.insert(holder.id.clone())
                        } else {
                            self.refused.insert(holder.id.clone())
                        };
                    if first {
                        log::warn!("peer {holder}: no usable piece list: {e}");
                    } else {
                        log::debug!("peer {holder}: still no usable piece list: {e}");
                    }
                    errors.push(HolderFailure::new(holder, HolderFault::piece_list(e)));
                }
            }
        }
        if initial {
            // The group that the most distinct hosts vouch for first:
            // hosts by IP (an IPv6 /64), so ports, records and ids of one
            // host count once; ties in a random order, not in an order the
            // holders choose (etcd key order follows their ids). A group
            // that then delivers nothing yields its turn (see `fetch`).
            let tie = std::collections::hash_map::RandomState::new();
            let mut ranked: Vec<_> = std::mem::take(&mut self.groups)
                .into_iter()
                .enumerate()
                .map(|(i, g)| {
                    let hosts: BTreeSet<String> =
                        g.holders.iter().map(|h| host_group(&h.addr)).collect();
                    let key = std::hash::BuildHasher::hash_one(&tie, i);
                    ((std::cmp::Reverse(hosts.len()), key), g)
                })
                .collect();
            ranked.sort_by_key(|(key, _)| *key);
            self.groups = ranked.into_iter().map(|(_, g)| g).collect();
            for (i, g) in self.groups.iter().enumerate() {
                for h in &g.holders {
                    self.seen.insert(h.id.clone(), i);
                }
            }
        }
        errors
    }

    /// Hands `round` what fetching the piece lists of `holders` left,
    /// before they join it (the rest is closed with the round that next
    /// takes them, or with this download).
    fn welcome(&mut self, round: &Round<'_>, holders: &[Holder]) {
        for h in holders {
            if let Some(w) = self.welcomes.remove(&h.id) {
                round.expect(h.id.clone(), w);
            }
            if self.trusted.contains(&h.id) {
                round.trust(h.id.clone());
            }
        }
    }

    /// Holders of group `g` that joined on trust and sent data that does
    /// not fit its list: their lists are fetched now and they are filed
    /// again (another group's, or group `g`'s again: then their data was
    /// false: their ids are returned).
    fn recheck(&mut self, g: usize, holders: Vec<Holder>) -> Vec<String> {
        let holders: Vec<Holder> = holders
            .into_iter()
            .filter(|h| self.trusted.remove(&h.id))
            .collect();
        if holders.is_empty() {
            return Vec::new();
        }
        for h in &holders {
            self.seen.remove(&h.id);
            if let Some(grp) = self.groups.get_mut(g) {
                grp.holders.retain(|x| x.id != h.id);
            }
        }
        self.add(holders.clone());
        let mut liars = Vec::new();
        for h in holders {
            match self.seen.get(&h.id) {
                Some(&k) if k == g => {
                    log::warn!("dropping peer {h} for this download: its data does not fit its own piece list");
                    liars.push(h.id);
                }
                Some(_) => log::info!("peer {h} holds another piece list"),
                None => {}
            }
        }
        liars
    }

    /// True if `h` was never asked for its piece list.
    fn is_new(&self, h: &Holder) -> bool {
        !self.seen.contains_key(&h.id)
            && !self.refused.contains(&h.id)
            && !self.unreachable.contains(&h.id)
    }

    /// Asks `source` again (`stuck`: every holder failed, so it looks
    /// further, `HolderSource::more_holders`, and their lists are fetched);
    /// returns the new holders whose list is group `g`'s, or is taken to be
    /// (a plain re-query: they join on trust, see `Round::trust`).
    fn requery(&mut self, source: &dyn HolderSource, g: usize, stuck: bool) -> Vec<Holder> {
        let asked = if stuck {
            source.more_holders(&self.job.sha1)
        } else {
            source.holders(&self.job.sha1)
        };
        let holders = match asked {
            Ok(h) => h,
            Err(e) => {
                log::warn!("{e}");
                return Vec::new();
            }
        };
        let before = self.groups.get(g).map_or(0, |grp| grp.holders.len());
        if stuck || g >= self.groups.len() {
            self.add(holders);
        } else {
            // On trust of group `g`'s list (see `Round::trust`): a
            // partial holder found mid-download serves at once, its
            // list not fetched first on this thread (in a swarm of 47,
            // a batch of lists took 0.2-1.5 s under load while new
            // holders waited). Data that does not fit sends it to
            // `recheck`; one whose list then cannot be had may come back
            // here, but the round keeps its place dropped (a round adds
            // no holder twice): one run of its bytes per round.
            let mut asking = HashSet::new();
            for h in holders {
                if !self.seen.contains_key(&h.id)
                    && !self.refused.contains(&h.id)
                    && asking.insert(h.id.clone())
                {
                    self.seen.insert(h.id.clone(), g);
                    self.trusted.insert(h.id.clone());
                    self.groups[g].holders.push(h);
                }
            }
        }
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

/// The piece lists of `holders`, in order, fetched by up to 16 threads,
/// each within the request timeout. Before the first round (`initial`) a
/// busy holder (`503`) is asked again every second meanwhile; once a round
/// runs (its supervisor waits for the batch) it is not: it is asked at
/// the next re-query (a holder answering `503` to every list request held
/// the supervisor 10 s at each re-query).
fn fetch_lists(
    by: &Downloader,
    job: &Job<'_>,
    holders: &[Holder],
    initial: bool,
) -> Vec<Result<Fetched, PieceListError>> {
    let opts = by.options();
    let timeouts = Timeouts {
        connect: opts.connect_timeout,
        io: opts.io_timeout,
    };
    crate::fanout::map(holders, LIST_FAN_OUT, "pbs-get-list", |h| {
        fetch_piece_list_with(
            job.pool(by),
            h,
            &job.sha1,
            timeouts,
            opts.request_timeout,
            initial,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_that_yielded_waits_for_the_ones_never_tried() {
        let mut turns = Vec::new();
        assert_eq!(next_group(&mut turns, 2), Some(0));
        turns[0] = Some(1);
        assert_eq!(next_group(&mut turns, 2), Some(1));
        turns[1] = Some(1);
        // A group found later goes before both.
        assert_eq!(next_group(&mut turns, 3), Some(2));
        turns[2] = None;
        assert_eq!(next_group(&mut turns, 3), Some(0));
        turns[0] = None;
        turns[1] = None;
        assert_eq!(next_group(&mut turns, 3), None);
    }
}
