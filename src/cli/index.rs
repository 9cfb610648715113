//! `piratebay-sync index`: build or refresh the dataset index and print it.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;
use piratebay_sync::{Index, IndexOptions, IndexStats, Sha1Digest};

use super::{env, CliResult, EXIT_PARTIAL};

/// Build or refresh the index of a dataset (no etcd needed) and print it.
#[derive(FromArgs)]
#[argh(subcommand, name = "index")]
pub struct IndexArgs {
    /// directory to index (env PIRATEBAY_DATASET, default /tmp/dataset)
    #[argh(option)]
    pub dataset: Option<String>,
    /// directory holding the index cache (env PIRATEBAY_STATE_DIR)
    #[argh(option)]
    pub state_dir: Option<String>,
    /// print a JSON array instead of a table
    #[argh(switch)]
    pub json: bool,
}

/// One line of `--json`.
#[derive(serde::Serialize)]
struct JsonEntry {
    sha1: String,
    size: u64,
    path: String,
    paths: Vec<String>,
    name: String,
    piece_size: u64,
    pieces: usize,
}

pub fn run(args: IndexArgs) -> CliResult {
    let mut opts = IndexOptions::new(env::dataset(args.dataset));
    opts.state_dir = Some(env::state_dir(args.state_dir));
    let index = Index::open(opts)?;
    wait_with_progress(&index);
    let files = index.files();
    let out = std::io::stdout().lock();
    let mut out = std::io::BufWriter::new(out);
    if args.json {
        let rows: Vec<JsonEntry> = files
            .iter()
            .map(|e| {
                let paths: Vec<String> = e
                    .paths()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                JsonEntry {
                    sha1: e.sha1.to_hex(),
                    size: e.size,
                    path: paths.first().cloned().unwrap_or_default(),
                    paths,
                    name: e.name(),
                    piece_size: e.piece_size(),
                    pieces: e.piece_count(),
                }
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        let mut line = Vec::with_capacity(256);
        for e in &files {
            for p in e.paths() {
                table_line(&mut out, &mut line, &e.sha1, e.size, p)?;
            }
        }
    }
    out.flush()?;
    let unreadable = index.stats().unreadable;
    // Waits for the cache to be written (it was, while the table was
    // printed) and stops the index thread; the entries themselves are not
    // freed one by one (`files` holds them: forgotten), which took longer
    // than printing them. The process exits.
    std::mem::forget(files);
    drop(index);
    if unreadable > 0 {
        eprintln!("piratebay-sync: {unreadable} files or directories could not be read (see warnings above)");
        return Ok(ExitCode::from(EXIT_PARTIAL));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of the table: `<sha1>  <size, 12 wide>  <path>`, built in
/// `line` without `format!` machinery or allocation (100,000 lines are
/// printed in a few ms).
fn table_line(
    out: &mut impl Write,
    line: &mut Vec<u8>,
    sha1: &Sha1Digest,
    size: u64,
    path: &std::path::Path,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    line.clear();
    line.extend_from_slice(&sha1.hex_bytes());
    let mut digits = [b' '; 20];
    let mut at = digits.len();
    let mut n = size;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Two spaces, then the size right-aligned in 12 (wider if it must be).
    line.extend_from_slice(b"  ");
    line.extend_from_slice(&digits[at.min(digits.len() - 12)..]);
    line.extend_from_slice(b"  ");
    let bytes = path.as_os_str().as_bytes();
    if std::str::from_utf8(bytes).is_ok() {
        line.extend_from_slice(bytes);
    } else {
        line.extend_from_slice(path.to_string_lossy().as_bytes());
    }
    line.push(b'\n');
    out.write_all(line)
}

/// Waits for the initial scan, showing progress on stderr: a bar on a
/// terminal, else a plain line at most every second.
fn wait_with_progress(index: &Index) {
    let started = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "hashing {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        while !index.wait_ready(Some(Duration::from_millis(100))) {
            let s = index.stats();
            bar.set_length(total(&s));
            bar.set_position(s.bytes_read);
            bar.set_message(format!(
                "{} files done, {} queued",
                s.files_hashed, s.files_queued
            ));
        }
        bar.finish_and_clear();
        return;
    }
    let mut last = started;
    while !index.wait_ready(Some(Duration::from_millis(200))) {
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            let s = index.stats();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "hashing: {} files, {:.1}/{:.1} MiB, {:.0} MB/s, {} queued",
                s.files_hashed,
                s.bytes_read as f64 / 1048576.0,
                total(&s) as f64 / 1048576.0,
                s.bytes_read as f64 / 1e6 / secs,
                s.files_queued,
            );
        }
    }
}

/// Bytes done plus bytes still queued: the size of the whole job (approximately).
fn total(s: &IndexStats) -> u64 {
    (s.bytes_hashed + s.bytes_queued).max(s.bytes_read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    #[test]
    fn table_lines_are_what_format_writes() {
        let sha1 = Sha1Digest::of(b"x");
        let odd = Path::new(OsStr::from_bytes(b"d/\xffname"));
        for size in [
            0,
            7,
            123_456_789_012,
            999_999_999_999,
            1_000_000_000_000,
            u64::MAX,
        ] {
            for path in [Path::new("a/b c.txt"), odd] {
                let mut got = Vec::new();
                table_line(&mut got, &mut Vec::new(), &sha1, size, path).unwrap();
                let want = format!("{sha1}  {size:>12}  {}\n", path.display());
                assert_eq!(String::from_utf8_lossy(&got), want);
            }
        }
    }
}
