//! `piratebay-sync files`: the files every peer holds, merged by sha1.
//!
//! The per-peer lists are cached in `<state-dir>/catalog-cache.bin` by
//! (peer id, index generation), so a second run asks no unchanged peer.

use std::io::Write;

use argh::FromArgs;
use piratebay_sync::{list_peers, Catalog, CatalogOptions, NetworkFile, CACHE_FILE};

use super::env::{etcd_client, etcd_opts, namespace, state_dir};
use super::CliResult;

/// List the files shared on the network, merged from every peer.
#[derive(FromArgs)]
#[argh(subcommand, name = "files")]
pub struct FilesArgs {
    /// etcd endpoints, comma-separated (env PIRATEBAY_ETCD, default http://127.0.0.1:2379)
    #[argh(option)]
    pub etcd: Option<String>,
    /// key namespace (env PIRATEBAY_NAMESPACE, default piratebay)
    #[argh(option)]
    pub namespace: Option<String>,
    /// etcd user name (env PIRATEBAY_ETCD_USER)
    #[argh(option)]
    pub etcd_user: Option<String>,
    /// etcd password (env PIRATEBAY_ETCD_PASSWORD)
    #[argh(option)]
    pub etcd_password: Option<String>,
    /// PEM file of CA certificates for https endpoints (env PIRATEBAY_ETCD_CA)
    #[argh(option)]
    pub etcd_ca: Option<String>,
    /// directory holding the catalog cache (env PIRATEBAY_STATE_DIR)
    #[argh(option)]
    pub state_dir: Option<String>,
    /// only files whose name contains TEXT (case-insensitive)
    #[argh(option)]
    pub search: Option<String>,
    /// print a JSON array instead of a table
    #[argh(switch)]
    pub json: bool,
}

pub fn run(args: FilesArgs) -> CliResult {
    let client = etcd_client(etcd_opts!(args))?;
    let peers = list_peers(&client, &namespace(args.namespace))?;
    let cache_path = state_dir(args.state_dir).join(CACHE_FILE);
    let mut catalog = Catalog::load(CatalogOptions::default(), &cache_path);
    let needle = args.search.map(|s| s.to_lowercase());
    let refresh = match needle.as_deref() {
        Some(n) => catalog.refresh_matching(&peers, |e| name_matches(&e.name, n)),
        None => catalog.refresh(&peers),
    };
    if let Err(e) = catalog.save(&cache_path) {
        log::warn!(
            "cannot save the catalog cache {}: {e}",
            cache_path.display()
        );
    }
    let files: Vec<&NetworkFile> = refresh
        .files
        .iter()
        .filter(|f| needle.as_deref().is_none_or(|n| matches(f, n)))
        .collect();
    // One buffer: stdout alone flushes at every line.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &files)?;
        writeln!(out)?;
    } else {
        let mut rows = vec![[
            "SHA1".to_string(),
            "SIZE".to_string(),
            "PEERS".to_string(),
            "NAME".to_string(),
        ]];
        for f in &files {
            rows.push([
                f.sha1.to_hex(),
                human_size(f.size),
                f.peers.to_string(),
                super::cell(&f.name),
            ]);
        }
        super::print_table(&mut out, &rows)?;
    }
    out.flush()?;
    let complete = refresh.failed.is_empty();
    // No teardown: freeing 100,000 entries (names, holders) one by one
    // took a quarter of a warm `files --json`; the process exits now.
    std::mem::forget(files);
    std::mem::forget(refresh);
    std::mem::forget(catalog);
    // Some peers could not be asked: the list may be short (a warning said which).
    if complete {
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        Ok(std::process::ExitCode::from(super::EXIT_PARTIAL))
    }
}

/// True if the file's name, or any of its names, contains `needle` (lowercase).
pub fn matches(f: &NetworkFile, needle: &str) -> bool {
    f.names
        .iter()
        .chain(std::iter::once(&f.name))
        .any(|n| name_matches(n, needle))
}

/// True if `name` contains `needle` (lowercase), ignoring case; without
/// an allocation when both are ASCII.
pub fn name_matches(name: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if name.is_ascii() && needle.is_ascii() {
        return name
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
    }
    name.to_lowercase().contains(needle)
}

/// `512 B`, `1.5 KiB`, `200.0 MiB`, `1.0 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_ignoring_case() {
        assert!(name_matches("Holiday-PHOTOS.zip", "photos"));
        assert!(name_matches("anything", ""));
        assert!(!name_matches("ab", "abc"));
        assert!(name_matches("ÉTÉ 2024.jpg", "été"));
        assert!(name_matches("\u{212A}elvin", "kelvin"), "as to_lowercase");
        assert!(!name_matches("photos", "photoz"));
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(200 << 20), "200.0 MiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
    }
}
