//! `piratebay-sync get`: download a file by its SHA1 from every peer that
//! has it, verified, resumable (Ctrl-C saves the state; rerun to resume).
//! Several SHA1s, `--search` or `--all` run a batch (`get_batch`).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use argh::FromArgs;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use piratebay_sync::text::human_size;
use piratebay_sync::{
    resolve_output, DownloadOptions, Downloader, ProbeOptions, ProbedHolders, Progress, Sha1Digest,
    Summary,
};

use super::env::{etcd_client, etcd_opts, flag_or_env, namespace, with_etcd_flags};
use super::CliResult;

with_etcd_flags! {
    /// Download files by SHA1 from every peer that holds them, verified.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "get")]
    pub struct GetArgs {
        /// SHA1 of a file (40 hex digits); several download them all
        #[argh(positional)]
        pub sha1: Vec<String>,
        /// download every file whose name contains TEXT (case-insensitive)
        #[argh(option)]
        pub search: Option<String>,
        /// download every file on the network not already in the output directory
        #[argh(switch)]
        pub all: bool,
        /// downloads at once in a batch (env PIRATEBAY_JOBS, default 16)
        #[argh(option)]
        pub jobs: Option<usize>,
        /// output path (one file only)
        #[argh(option, short = 'o')]
        pub output: Option<String>,
        /// directory to save into under the catalog name (env PIRATEBAY_DIR, default: current directory)
        #[argh(option)]
        pub dir: Option<String>,
        /// cap on the total rate in bytes per second, e.g. 200M, 5M, 800K (env PIRATEBAY_MAX_RATE)
        #[argh(option)]
        pub max_rate: Option<String>,
        /// overwrite an existing different file
        #[argh(switch)]
        pub force: bool,
        /// print one JSON summary at the end (a batch: one line per file)
        #[argh(switch)]
        pub json: bool,
        /// directory holding the catalog cache (env PIRATEBAY_STATE_DIR)
        #[argh(option)]
        pub state_dir: Option<String>,
        @etcd_flags
    }
}

/// Whether `args` ask for one file by SHA1 (`run`); anything else is a
/// batch (`get_batch::run`).
pub fn is_one(args: &GetArgs) -> bool {
    args.sha1.len() == 1 && args.search.is_none() && !args.all
}

/// One file by SHA1 (see [`is_one`]).
pub fn run(args: GetArgs) -> CliResult {
    let sha1 = args.sha1[0].trim().parse()?;
    run_one(args, sha1)
}

/// One file: the progress of its bytes, its summary.
fn run_one(args: GetArgs, sha1: Sha1Digest) -> CliResult {
    let max_rate = super::env::max_rate(args.max_rate)?;
    let client = etcd_client(etcd_opts!(args))?;
    // One file: every peer is asked about it alone (no catalog is read,
    // cached or saved); batches use the catalog (`get_batch`).
    let source = ProbedHolders::new(client, namespace(args.namespace), ProbeOptions::default());
    let found = source.lookup(&sha1)?;
    if let Some(missing) = found.not_found(&sha1) {
        return Err(missing.into());
    }
    let dir = flag_or_env(args.dir, "PIRATEBAY_DIR");
    let output = resolve_output(
        args.output.as_deref().map(std::path::Path::new),
        dir.as_deref().map(std::path::Path::new),
        found.name.as_deref(),
        &sha1,
    );
    let size = found.size.unwrap_or(0);
    drop(found);

    let downloader = Downloader::new(DownloadOptions {
        force: args.force,
        max_rate,
        cancel: Some(cancel_on_signals()?),
        ..DownloadOptions::default()
    });

    let bar = progress_bar(size);
    let on_progress = |p: &Progress| {
        bar.set_length(p.size);
        bar.set_position(p.done);
        bar.set_message(format!("{} peers", p.peers_active));
    };
    let result = downloader.download(sha1, &output, &source, Some(&on_progress));
    bar.finish_and_clear();
    let summary = result?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
    } else if summary.already_present {
        writeln!(out, "{} already holds {sha1}", summary.path.display())?;
    } else {
        writeln!(out, "{}", saved_line(&summary))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The one line a successful `get` prints: where, how much, how fast,
/// from how many peers, how much came from seeds and how much from partial
/// holders (whether the swarm was used at all), what was kept from an
/// earlier run or read back to be checked again, and who sent bad data.
fn saved_line(summary: &Summary) -> String {
    let rate = summary.bytes_received as f64 / summary.seconds.max(1e-3);
    let mut line = format!(
        "saved {} ({}) in {:.2}s at {}/s from {} peer(s)",
        summary.path.display(),
        human_size(summary.bytes),
        summary.seconds,
        human_size(rate as u64),
        summary.peers_used.len(),
    );
    if summary.bytes_from_partials > 0 {
        line += &format!(
            ": {} from seeds, {} from partial holders",
            human_size(summary.bytes_from_seeds),
            human_size(summary.bytes_from_partials)
        );
    }
    if summary.resumed_bytes > 0 {
        line += &format!(
            "; {} kept from an earlier run",
            human_size(summary.resumed_bytes)
        );
    }
    if summary.rechecked_bytes > 0 {
        line += &format!(
            "; {} read back and checked again",
            human_size(summary.rechecked_bytes)
        );
    }
    if !summary.bad_peers.is_empty() {
        line += &format!("; bad data from {}", summary.bad_peers.join(", "));
    }
    line
}

/// A flag set by SIGINT and SIGTERM (the download saves its state and stops).
pub(super) fn cancel_on_signals() -> Result<Arc<AtomicBool>, std::io::Error> {
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&cancel))?;
    }
    Ok(cancel)
}

/// A progress bar on stderr if it is a terminal, else a hidden one.
pub(super) fn progress_bar(size: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            sha1: Sha1Digest::of(b"x"),
            path: "/tmp/dataset/f".into(),
            bytes: 16 << 20,
            bytes_received: 16 << 20,
            bytes_from_seeds: 4 << 20,
            bytes_from_partials: 12 << 20,
            seconds: 2.0,
            peers_used: vec!["a".into(), "b".into()],
            pieces_retried: 0,
            resumed_bytes: 0,
            rechecked_bytes: 0,
            bad_peers: Vec::new(),
            slow_peers: Vec::new(),
            already_present: false,
        }
    }

    #[test]
    fn the_saved_line_says_where_the_bytes_came_from() {
        let line = saved_line(&summary());
        assert!(line.starts_with("saved /tmp/dataset/f (16"), "{line}");
        assert!(line.contains("from 2 peer(s): 4"), "{line}");
        assert!(line.contains("from seeds, 12"), "{line}");
        assert!(line.ends_with("from partial holders"), "{line}");
        assert!(!line.contains('\n'));

        let alone = Summary {
            bytes_from_seeds: 16 << 20,
            bytes_from_partials: 0,
            resumed_bytes: 1 << 20,
            rechecked_bytes: 1 << 20,
            bad_peers: vec!["evil (198.18.0.9:7070)".into()],
            ..summary()
        };
        let line = saved_line(&alone);
        assert!(!line.contains("partial holders"), "{line}");
        assert!(line.contains("kept from an earlier run"), "{line}");
        assert!(line.contains("read back and checked again"), "{line}");
        assert!(
            line.ends_with("; bad data from evil (198.18.0.9:7070)"),
            "{line}"
        );
    }
}
