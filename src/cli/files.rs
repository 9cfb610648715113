//! `piratebay-sync files`: the files every peer holds, merged by sha1.
//!
//! The per-peer lists are cached in `<state-dir>/catalog-cache.bin` by
//! (peer id, index generation), so a second run asks no unchanged peer.

use std::io::Write;

use argh::FromArgs;
use piratebay_sync::text::human_size;
use piratebay_sync::{list_peers, Catalog, CatalogOptions, NetworkFile, CACHE_FILE};

use super::env::{etcd_client, etcd_opts, namespace, state_dir, with_etcd_flags};
use super::CliResult;

with_etcd_flags! {
    /// List the files shared on the network, merged from every peer.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "files")]
    pub struct FilesArgs {
        @etcd_flags
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
}
