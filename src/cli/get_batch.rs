//! `piratebay-sync get` of many files: `get SHA1 SHA1 ...`, `get --search
//! TEXT`, `get --all`, into `--dir`.
//!
//! One catalog refresh for the whole batch gives every file's name, size
//! and holders; [`Downloader::download_many`] then runs `--jobs` downloads at
//! once. One progress bar for the batch; a line per failed file on stderr
//! (one JSON line per file with `--json`); exit 0 when every file is in
//! place, 1 when some failed and the others completed (or, for `--search`
//! and `--all`, when some peers could not be asked for their files), 2 when
//! none could be downloaded or the batch could not start.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use piratebay_sync::text::human_size;
use piratebay_sync::{
    resolve_output, BatchItem, BatchOptions, BatchProgress, Catalog, CatalogOptions,
    DownloadOptions, Downloader, FetchError, Holder, HolderSource, HoldersError, NetworkFile,
    NetworkHolders, Sha1Digest, Summary, CACHE_FILE, DEFAULT_CONCURRENCY,
};
use serde_json::Value;

use super::env::{etcd_client, etcd_opts, flag_or_env, namespace, parsed_flag_or_env, state_dir};
use super::files::matches;
use super::get::{cancel_on_signals, progress_bar, GetArgs};
use super::{CliResult, EXIT_ERROR, EXIT_PARTIAL};

/// Most files one batch takes (each is a thread's turn and a line of output).
const MAX_FILES: usize = 1_000_000;

/// What the user asked for.
enum Selection {
    Sha1s(Vec<Sha1Digest>),
    Search(String),
    All,
}

pub fn run(args: GetArgs) -> CliResult {
    let selection = selection(&args)?;
    if args.output.is_some() {
        return Err("-o names one file: use --dir to save several".into());
    }
    let jobs_name = super::env::named(&args.jobs, "--jobs", "PIRATEBAY_JOBS");
    let jobs = parsed_flag_or_env(args.jobs, "PIRATEBAY_JOBS")?.unwrap_or(DEFAULT_CONCURRENCY);
    if jobs == 0 {
        return Err(format!("{jobs_name} must be at least 1").into());
    }
    let max_rate = super::env::max_rate(args.max_rate)?;
    let dir = PathBuf::from(flag_or_env(args.dir, "PIRATEBAY_DIR").unwrap_or_else(|| ".".into()));
    let client = etcd_client(etcd_opts!(args))?;
    let cache_path = state_dir(args.state_dir).join(CACHE_FILE);
    let catalog = Catalog::load(CatalogOptions::default(), &cache_path);
    let network = NetworkHolders::new(client, namespace(args.namespace), catalog);
    let refresh = network.refresh()?;
    // Some peers could not be asked (the catalog warned which): a search or
    // `--all` may be short of their files, a partial result as for `files`.
    let short_list = !refresh.failed.is_empty() && !matches!(selection, Selection::Sha1s(_));
    let items = plan(&selection, &refresh.files, &dir)?;
    drop(refresh);
    if items.is_empty() {
        let mut out = std::io::stdout().lock();
        if !args.json {
            writeln!(
                out,
                "nothing to download: {} holds every file",
                dir.display()
            )?;
        }
        return Ok(if short_list {
            ExitCode::from(EXIT_PARTIAL)
        } else {
            ExitCode::SUCCESS
        });
    }

    let cancel = cancel_on_signals()?;
    let downloader = Downloader::new(DownloadOptions {
        force: args.force,
        max_rate,
        cancel: Some(Arc::clone(&cancel)),
        ..DownloadOptions::default()
    });
    let requery = SharedRequery::new(network, downloader.options().requery_interval);
    let opts = BatchOptions {
        concurrency: jobs,
        requery: &requery,
    };

    let started = Instant::now();
    let bar = progress_bar(items.iter().map(|i| i.size).sum());
    let on_progress = |p: &BatchProgress| {
        bar.set_length(p.size);
        bar.set_position(p.done);
        bar.set_message(format!("{}/{} files", p.finished, p.files));
    };
    let json = args.json;
    let on_done = |item: &BatchItem, result: &Result<Summary, FetchError>| {
        let line = match (json, result) {
            (true, r) => json_line(item, r),
            (false, Ok(_)) => return,
            (false, Err(e)) => format!(
                "piratebay-sync: failed {} ({}): {}",
                item.sha1,
                item.output.display(),
                super::advice::line(e)
            ),
        };
        bar.suspend(|| {
            let written = if json {
                writeln!(std::io::stdout().lock(), "{line}")
            } else {
                writeln!(std::io::stderr().lock(), "{line}")
            };
            if let Err(e) = written {
                log::debug!("cannot print a result: {e}");
            }
        });
    };
    let results = downloader.download_many(&items, &opts, Some(&on_progress), &on_done);
    bar.finish_and_clear();
    let interrupted = cancel.load(Ordering::Relaxed);
    if let Err(e) = requery.into_catalog().save(&cache_path) {
        log::warn!(
            "cannot save the catalog cache {}: {e}",
            cache_path.display()
        );
    }

    let mut tally = Tally::default();
    for r in &results {
        match r {
            Some(Ok(s)) if s.already_present => tally.present += 1,
            Some(Ok(s)) => {
                tally.saved += 1;
                tally.bytes += s.bytes;
                tally.received += s.bytes_received;
            }
            Some(Err(_)) => tally.failed += 1,
            None => tally.not_started += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if !json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", tally.line(&dir, seconds))?;
        out.flush()?;
    }
    if interrupted {
        return Err(format!(
            "interrupted: {} file(s) not finished; rerun the same command to resume",
            tally.failed + tally.not_started
        )
        .into());
    }
    Ok(match (tally.failed, tally.saved + tally.present) {
        (0, _) if !short_list => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(EXIT_PARTIAL),
        (_, 0) => ExitCode::from(EXIT_ERROR),
        _ => ExitCode::from(EXIT_PARTIAL),
    })
}

/// Which files: exactly one of SHA1s, `--search`, `--all`.
fn selection(args: &GetArgs) -> Result<Selection, super::CliError> {
    let given = usize::from(!args.sha1.is_empty())
        + usize::from(args.search.is_some())
        + usize::from(args.all);
    if given != 1 {
        return Err("give SHA1s, --search TEXT or --all (one of them)".into());
    }
    if args.all {
        return Ok(Selection::All);
    }
    if let Some(text) = &args.search {
        if text.is_empty() {
            return Err("--search needs some text: use --all for every file".into());
        }
        return Ok(Selection::Search(text.to_lowercase()));
    }
    if args.sha1.len() > MAX_FILES {
        return Err(format!("at most {MAX_FILES} SHA1s in one command").into());
    }
    let mut seen = HashSet::new();
    let mut sha1s = Vec::new();
    for s in &args.sha1 {
        let sha1: Sha1Digest = s
            .trim()
            .parse()
            .map_err(|e| format!("invalid SHA1 {s:?}: {e}"))?;
        if seen.insert(sha1) {
            sha1s.push(sha1);
        }
    }
    Ok(Selection::Sha1s(sha1s))
}

/// The batch: every selected file with its path in `dir` (the catalog name;
/// the SHA1 when the name is unusable or already taken by another file of
/// the batch) and its holders. `--all` leaves out the files whose path
/// already exists (those of the same content are already there; the others
/// would be refused without `--force`).
fn plan(
    selection: &Selection,
    files: &[NetworkFile],
    dir: &Path,
) -> Result<Vec<BatchItem>, super::CliError> {
    let chosen: Vec<(Sha1Digest, Option<&NetworkFile>)> = match selection {
        Selection::Sha1s(sha1s) => sha1s
            .iter()
            .map(|s| (*s, files.iter().find(|f| f.sha1 == *s)))
            .collect(),
        Selection::Search(needle) => {
            let found: Vec<_> = files
                .iter()
                .filter(|f| matches(f, needle))
                .map(|f| (f.sha1, Some(f)))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "no file on the network has {needle:?} in its name: see `piratebay-sync files`"
                )
                .into());
            }
            found
        }
        Selection::All => files.iter().map(|f| (f.sha1, Some(f))).collect(),
    };
    let mut taken: BTreeSet<PathBuf> = BTreeSet::new();
    let mut items = Vec::new();
    for (sha1, entry) in chosen {
        let mut output = resolve_output(None, Some(dir), entry.map(|e| e.name.as_str()), &sha1);
        if taken.contains(&output) {
            output = dir.join(sha1.to_hex());
        }
        taken.insert(output.clone());
        if matches!(selection, Selection::All) && std::fs::symlink_metadata(&output).is_ok() {
            continue;
        }
        items.push(BatchItem {
            sha1,
            output,
            size: entry.map_or(0, |e| e.size),
            holders: entry.map(|e| e.holders.clone()).unwrap_or_default(),
        });
    }
    Ok(items)
}

/// One `--json` line: the download's summary with `"ok": true`, or the
/// file with `"ok": false`, the error and what to do about it (`advice`,
/// when one applies; the same words as the line on stderr).
fn json_line(item: &BatchItem, result: &Result<Summary, FetchError>) -> String {
    let value = match result {
        Ok(summary) => match serde_json::to_value(summary) {
            Ok(Value::Object(mut map)) => {
                map.insert("ok".into(), Value::Bool(true));
                Value::Object(map)
            }
            _ => serde_json::json!({ "sha1": item.sha1.to_hex(), "ok": true }),
        },
        Err(e) => serde_json::json!({
            "sha1": item.sha1.to_hex(),
            "path": item.output,
            "ok": false,
            "error": super::error_chain(e),
            "advice": super::advice::advice(e),
        }),
    };
    value.to_string()
}

/// Counts for the last line.
#[derive(Default)]
struct Tally {
    saved: usize,
    present: usize,
    failed: usize,
    not_started: usize,
    bytes: u64,
    received: u64,
}

impl Tally {
    /// `saved 998 file(s) (31.2 MiB) into DIR in 1.20s at 26.0 MiB/s; 1 already present; 1 failed`.
    fn line(&self, dir: &Path, seconds: f64) -> String {
        let rate = self.received as f64 / seconds.max(1e-3);
        let mut line = format!(
            "saved {} file(s) ({}) into {} in {seconds:.2}s at {}/s",
            self.saved,
            human_size(self.bytes),
            dir.display(),
            human_size(rate as u64)
        );
        if self.present > 0 {
            line.push_str(&format!("; {} already present", self.present));
        }
        if self.failed > 0 {
            line.push_str(&format!("; {} failed", self.failed));
        }
        if self.not_started > 0 {
            line.push_str(&format!("; {} not started", self.not_started));
        }
        line
    }
}

/// The holders of a file whose download re-queries (it ran longer than
/// the re-query interval): one network refresh for the whole batch at most
/// once per interval, shared by every download. A download that finds it
/// running in another thread uses the last one (no lock is held across the
/// network). No availability probes here: partial holders are a
/// single-file `get`'s business.
struct SharedRequery {
    network: NetworkHolders,
    interval: Duration,
    /// When the holders were last read, and the holders of every file then.
    last: RwLock<(Option<Instant>, Vec<NetworkFile>)>,
    /// Held while one thread refreshes.
    refreshing: Mutex<()>,
}

impl SharedRequery {
    fn new(network: NetworkHolders, interval: Duration) -> Self {
        SharedRequery {
            network,
            interval,
            last: RwLock::new((None, Vec::new())),
            refreshing: Mutex::new(()),
        }
    }

    fn into_catalog(self) -> Catalog {
        self.network.into_catalog()
    }
}

impl HolderSource for SharedRequery {
    fn holders(&self, sha1: &Sha1Digest) -> Result<Vec<Holder>, HoldersError> {
        let stale = self
            .last
            .read()
            .0
            .is_none_or(|at| at.elapsed() >= self.interval);
        if stale {
            if let Some(_guard) = self.refreshing.try_lock() {
                let files = self.network.refresh().map_err(HoldersError::new)?.files;
                *self.last.write() = (Some(Instant::now()), files);
            }
        }
        let last = self.last.read();
        Ok(last
            .1
            .iter()
            .find(|f| f.sha1 == *sha1)
            .map(|f| f.holders.clone())
            .unwrap_or_default())
    }
}
