//! Where a download lands: the final path (from `-o`, or the catalog name in
//! a directory), its `.part` and `.part.state` companions, and the untrusted
//! catalog name made safe to use as a file name.

use std::path::{Path, PathBuf};

use crate::digest::Sha1Digest;

/// Longest file name kept from a peer, in bytes.
const MAX_NAME_BYTES: usize = 200;

/// A peer-supplied name made safe as one file name: the last path
/// component only (after `/` and `\`), without control, bidi-override or
/// zero-width characters ([`crate::text::is_unsafe_char`]), without
/// leading dots (never a hidden file such as `.bashrc`, never `.`/`..`),
/// at most 200 bytes. `None` if nothing usable is left.
pub fn sanitize_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = last
        .chars()
        .filter(|c| !crate::text::is_unsafe_char(*c))
        .collect();
    clean = clean
        .trim()
        .trim_start_matches('.')
        .trim_start()
        .to_string();
    while clean.len() > MAX_NAME_BYTES {
        clean.pop();
    }
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        return None;
    }
    Some(clean)
}

/// The final path: `output` if given, else `dir` (default `.`) joined with
/// the sanitized catalog name, or the sha1 when there is no usable name.
pub fn resolve_output(
    output: Option<&Path>,
    dir: Option<&Path>,
    name: Option<&str>,
    sha1: &Sha1Digest,
) -> PathBuf {
    if let Some(o) = output {
        return o.to_path_buf();
    }
    let file = name
        .and_then(sanitize_name)
        .unwrap_or_else(|| sha1.to_hex());
    dir.unwrap_or(Path::new(".")).join(file)
}

/// `<final>.part`: the data being downloaded.
pub fn part_path(final_path: &Path) -> PathBuf {
    with_suffix(final_path, ".part")
}

/// `<final>.part.state`: the resume state next to the `.part`.
pub fn state_path(final_path: &Path) -> PathBuf {
    with_suffix(final_path, ".part.state")
}

/// `<final>.part.chain`: the piece list the `.part` is verified against,
/// written once per list beside the state.
pub fn chain_path(final_path: &Path) -> PathBuf {
    with_suffix(final_path, ".part.chain")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_directories_dots_and_control_chars() {
        assert_eq!(sanitize_name("a.txt").as_deref(), Some("a.txt"));
        assert_eq!(sanitize_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(sanitize_name("dir\\evil.exe").as_deref(), Some("evil.exe"));
        assert_eq!(
            sanitize_name("a\u{0}b\nc\x1b[31m").as_deref(),
            Some("abc[31m")
        );
        assert_eq!(sanitize_name(".."), None);
        assert_eq!(sanitize_name(".bashrc").as_deref(), Some("bashrc"));
        assert_eq!(sanitize_name("x/ ..profile").as_deref(), Some("profile"));
        assert_eq!(
            sanitize_name("invoice\u{202e}fdp.exe").as_deref(),
            Some("invoicefdp.exe")
        );
        assert_eq!(sanitize_name("a\u{200b}\u{2067}b").as_deref(), Some("ab"));
        assert_eq!(sanitize_name("x/.."), None);
        assert_eq!(sanitize_name("dir/"), None);
        assert_eq!(sanitize_name(""), None);
        assert_eq!(sanitize_name(&"é".repeat(300)).map(|s| s.len()), Some(200));
    }

    #[test]
    fn output_path_falls_back_to_the_sha1() {
        let sha1 = Sha1Digest::of(b"x");
        let d = Path::new("/tmp/d");
        assert_eq!(
            resolve_output(None, Some(d), Some("../x.bin"), &sha1),
            d.join("x.bin")
        );
        assert_eq!(
            resolve_output(None, Some(d), Some(".."), &sha1),
            d.join(sha1.to_hex())
        );
        assert_eq!(
            resolve_output(Some(Path::new("o")), Some(d), Some("n"), &sha1),
            PathBuf::from("o")
        );
        assert_eq!(
            part_path(Path::new("a/b.iso")),
            PathBuf::from("a/b.iso.part")
        );
        assert_eq!(
            state_path(Path::new("a/b.iso")),
            PathBuf::from("a/b.iso.part.state")
        );
    }
}
