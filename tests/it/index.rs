//! Integration tests: index. Real files in temp dirs, the real `sha1sum`,
//! the real binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use piratebay_sync::{Index, IndexOptions, IndexedFile, Sha1Digest};

const KIB: usize = 1024;

/// Polls `cond` until it holds or `within` passes; true if it held.
fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `bytes` at `root/rel` and sets its mtime an hour back, so it is
/// settled at once (as a file that was not just written).
fn put_old(root: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(&p, bytes).unwrap();
    let f = fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    p
}

fn sha1sum(path: &Path) -> String {
    let out = Command::new("sha1sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..40].to_string()
}

fn opts(root: &Path) -> IndexOptions {
    let mut o = IndexOptions::new(root);
    o.settle = Duration::from_millis(200);
    o
}

fn open_ready(o: IndexOptions) -> Index {
    let index = Index::open(o).unwrap();
    assert!(
        index.wait_ready(Some(Duration::from_secs(120))),
        "index never got ready"
    );
    index
}

/// Checks that the entry for `rel` has the sha1 of `sha1sum` and the piece
/// hashes of the file cut at its piece size.
fn check_hashes(index: &Index, root: &Path, rel: &str) -> Arc<IndexedFile> {
    let path = root.join(rel);
    let sha1 = index
        .sha1_of(Path::new(rel))
        .unwrap_or_else(|| panic!("{rel} not indexed"));
    assert_eq!(sha1.to_hex(), sha1sum(&path), "{rel}");
    let e = index.get(&sha1).unwrap();
    let bytes = fs::read(&path).unwrap();
    let want = piratebay_sync::protocol::PieceList::of_content(&bytes);
    assert_eq!(e.piece_list(), want, "{rel} chain");
    assert_eq!(e.size, bytes.len() as u64);
    // Every piece verifies against the index's chain, the last one to the SHA1.
    let list = e.piece_list();
    for (i, piece) in bytes.chunks(e.piece_size() as usize).enumerate() {
        assert!(list.verify(i, piece), "{rel} piece {i}");
    }
    assert_eq!(
        e.piece_count(),
        bytes.len().div_ceil(e.piece_size() as usize)
    );
    e
}

#[test]
fn hashes_match_sha1sum_at_piece_edges() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let piece = 64 * KIB;
    let cases = [
        ("empty", 0),
        ("one-byte", 1),
        ("one-piece", piece),
        ("one-piece-plus-one", piece + 1),
        ("several/pieces", 5 * piece + piece / 2),
        ("several/exact", 4 * piece),
    ];
    for (i, (name, len)) in cases.iter().enumerate() {
        put_old(root, name, &data(*len, i as u64 + 1));
    }
    let index = open_ready(opts(root));
    for (name, len) in cases {
        let e = check_hashes(&index, root, name);
        assert_eq!(e.piece_count(), len.div_ceil(piece), "{name}");
    }
    assert_eq!(index.len(), cases.len());
}

#[test]
fn hashes_match_where_the_piece_size_doubles() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mib = 1024 * KIB;
    put_old(root, "sixteen", &data(16 * mib, 7));
    put_old(root, "sixteen-and-a-bit", &data(16 * mib + 123, 8));
    let index = open_ready(opts(root));
    let e = check_hashes(&index, root, "sixteen");
    assert_eq!((e.piece_size(), e.piece_count()), (64 * KIB as u64, 256));
    let e = check_hashes(&index, root, "sixteen-and-a-bit");
    assert_eq!((e.piece_size(), e.piece_count()), (128 * KIB as u64, 129));
}

#[test]
fn hundred_megabyte_file_matches_sha1sum() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_old(root, "big.bin", &data(100_000_000, 42));
    let index = open_ready(opts(root));
    let e = check_hashes(&index, root, "big.bin");
    assert_eq!(e.piece_size(), 512 * KIB as u64);
    assert_eq!(e.piece_count() as u64, 100_000_000u64.div_ceil(512 * 1024));
}

#[test]
fn same_content_under_two_paths_is_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_old(root, "a/copy1.txt", b"same bytes");
    put_old(root, "b/copy2.txt", b"same bytes");
    put_old(root, "other.txt", b"other bytes");
    let index = open_ready(opts(root));
    assert_eq!(index.len(), 2);
    let e = index.get(&Sha1Digest::of(b"same bytes")).unwrap();
    assert_eq!(
        e.paths().collect::<Vec<_>>(),
        [Path::new("a/copy1.txt"), Path::new("b/copy2.txt")]
    );
    assert_eq!(e.name(), "copy1.txt");
}

#[test]
fn ten_thousand_small_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..10_000 {
        let p = root.join(format!("d{:02}/f{i:05}.txt", i % 100));
        if i < 100 {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
        }
        fs::write(&p, format!("small file number {i}\n")).unwrap();
    }
    let index = open_ready(opts(root));
    assert_eq!(index.len(), 10_000);
    assert_eq!(index.stats().files_hashed, 10_000);
    for i in (0..10_000).step_by(997) {
        let rel = format!("d{:02}/f{i:05}.txt", i % 100);
        let want = Sha1Digest::of(format!("small file number {i}\n").as_bytes());
        assert_eq!(index.sha1_of(Path::new(&rel)), Some(want), "{rel}");
    }
    check_hashes(&index, root, "d07/f00007.txt");
}

#[test]
fn skips_hidden_part_special_files_and_links_outside() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_old(root, "keep.txt", b"keep");
    put_old(root, ".hidden", b"hidden");
    put_old(root, ".git/config", b"hidden dir");
    put_old(root, "dl.iso.part", b"partial");
    put_old(root, "dl.iso.part.state", b"state");
    put_old(outside.path(), "secret", b"secret");
    std::os::unix::fs::symlink(outside.path().join("secret"), root.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("escape-dir")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let index = open_ready(opts(root));
    let paths: Vec<PathBuf> = index
        .files()
        .iter()
        .flat_map(|e| e.paths().map(Path::to_path_buf).collect::<Vec<_>>())
        .collect();
    assert_eq!(paths, [PathBuf::from("keep.txt")]);
    assert_eq!(index.stats().unreadable, 0);

    let mut o = opts(root);
    o.include_hidden = true;
    let index = open_ready(o);
    assert!(index.sha1_of(Path::new(".git/config")).is_some());
    assert!(index.sha1_of(Path::new("dl.iso.part")).is_none());
}

#[test]
fn warm_restart_rehashes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..20 {
        put_old(root, &format!("f{i}"), &data(10 * KIB + i, i as u64));
    }
    let mut o = opts(root);
    o.state_dir = Some(state.path().to_path_buf());
    let (gen1, files1) = {
        let index = open_ready(o.clone());
        assert_eq!(index.stats().files_hashed, 20);
        (index.generation(), index.files())
    };
    let index = open_ready(o.clone());
    let s = index.stats();
    assert_eq!((s.files_hashed, s.files_reused), (0, 20));
    assert_eq!(index.files(), files1);
    assert!(
        index.generation() > gen1,
        "generation must not go back after a restart"
    );
    drop(index);

    // One changed file is the only one rehashed.
    put_old(root, "f3", b"changed");
    let index = open_ready(o);
    let s = index.stats();
    assert_eq!((s.files_hashed, s.files_reused), (1, 19));
    assert_eq!(
        index.sha1_of(Path::new("f3")),
        Some(Sha1Digest::of(b"changed"))
    );
}

#[test]
fn corrupt_truncated_or_old_cache_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..5 {
        put_old(root, &format!("f{i}"), &data(1000 + i, i as u64));
    }
    let mut o = opts(root);
    o.state_dir = Some(state.path().to_path_buf());
    let want = open_ready(o.clone()).files();
    let cache = fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cache"))
        .expect("a cache file in the state dir");
    let good = fs::read(&cache).unwrap();
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xffnot a cache at all".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("old version", {
            let mut v = b"piratebay-sync index cache v0\n".to_vec();
            v.extend_from_slice(&good[good.iter().position(|b| *b == b'\n').unwrap() + 1..]);
            v
        }),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damages {
        fs::write(&cache, &bytes).unwrap();
        let index = open_ready(o.clone());
        assert_eq!(index.stats().files_hashed, 5, "{what}: everything rehashed");
        assert_eq!(index.files(), want, "{what}");
        drop(index);
        // ... and the cache was written again, usable by the next start.
        let index = open_ready(o.clone());
        assert_eq!(index.stats().files_hashed, 0, "{what}: cache rewritten");
    }
}

#[test]
fn open_file_of_changed_file_returns_none_and_rehashes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_old(root, "doc.txt", b"version one");
    let index = open_ready(opts(root));
    let v1 = Sha1Digest::of(b"version one");
    let (mut f, e) = index.open_file(&v1).unwrap().expect("unchanged file opens");
    let mut got = String::new();
    std::io::Read::read_to_string(&mut f, &mut got).unwrap();
    assert_eq!((got.as_str(), e.sha1), ("version one", v1));

    put_old(root, "doc.txt", b"version two!");
    assert!(index.open_file(&v1).unwrap().is_none());
    assert!(index.get(&v1).is_none(), "changed file dropped at once");
    let v2 = Sha1Digest::of(b"version two!");
    assert!(
        wait_until(Duration::from_secs(5), || index.get(&v2).is_some()),
        "rehashed under its new sha1"
    );
    assert!(index.open_file(&v2).unwrap().is_some());
    assert!(index
        .open_file(&Sha1Digest::of(b"never"))
        .unwrap()
        .is_none());
}

/// Reads all of a served descriptor by offset (it is shared: never by
/// its position).
fn pread_all(f: &fs::File) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut out = vec![0u8; f.metadata().unwrap().len() as usize];
    f.read_exact_at(&mut out, 0).unwrap();
    out
}

/// The descriptors of this process open on files under `root`.
fn fds_under(root: &Path) -> usize {
    let root = fs::canonicalize(root).unwrap();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&root)))
        .count()
}

/// `open_file` keeps descriptors open between requests: a file replaced
/// under its name (a rename over it, same size and mtime) or rewritten in
/// place (same size, inode and mtime: only its ctime moves) is never
/// served from the descriptor kept for the old bytes.
#[test]
fn a_kept_descriptor_never_serves_a_file_replaced_or_rewritten_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (one, two) = (data(100 * KIB, 1), data(100 * KIB, 2));
    let (three, four) = (data(100 * KIB, 3), data(100 * KIB, 4));
    let path = put_old(root, "a.bin", &one);
    let path_b = put_old(root, "b.bin", &three);
    let index = open_ready(opts(root));
    let v1 = Sha1Digest::of(&one);
    let (f, _) = index.open_file(&v1).unwrap().expect("indexed");
    assert_eq!(pread_all(&f), one);
    let (again, _) = index.open_file(&v1).unwrap().expect("unchanged");
    assert!(Arc::ptr_eq(&f, &again), "the descriptor is kept and shared");
    drop((f, again));

    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let tmp = root.join(".a.bin.new");
    fs::write(&tmp, &two).unwrap();
    fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&tmp, &path).unwrap();
    assert!(
        index.open_file(&v1).unwrap().is_none(),
        "replaced under its name: not served as the old file"
    );

    let path = path_b;
    let v3 = Sha1Digest::of(&three);
    let (f, _) = index.open_file(&v3).unwrap().expect("indexed");
    drop(f);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let w = fs::File::options().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&w, &four, 0).unwrap();
    w.set_modified(mtime).unwrap();
    drop(w);
    assert_eq!(
        fs::metadata(&path).unwrap().modified().unwrap(),
        mtime,
        "same size, inode and mtime"
    );
    assert!(
        index.open_file(&v3).unwrap().is_none(),
        "rewritten in place: not served as the old file"
    );
}

/// At most 32 descriptors are kept, and a file removed from the dataset
/// has its kept descriptor closed once the index drops it (its space is
/// not held by the peer).
#[test]
fn kept_descriptors_are_bounded_and_closed_when_their_file_goes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sums: Vec<Sha1Digest> = (0..40)
        .map(|i| {
            let bytes = data(KIB, 100 + i);
            put_old(root, &format!("f{i:02}"), &bytes);
            Sha1Digest::of(&bytes)
        })
        .collect();
    let index = open_ready(live_opts(root));
    for sha1 in &sums {
        let (f, _) = index.open_file(sha1).unwrap().expect("indexed");
        assert!(fds_under(root) <= 32, "the bound holds");
        drop(f);
    }
    assert_eq!(fds_under(root), 32, "the 32 most recently served are kept");
    let last = *sums.last().unwrap();
    fs::remove_file(root.join("f39")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || index.get(&last).is_none()),
        "removal seen"
    );
    assert_eq!(fds_under(root), 31, "its descriptor closed with it");
}

fn live_opts(root: &Path) -> IndexOptions {
    let mut o = opts(root);
    o.live = true;
    // Long enough that the watcher, not the rescan, is what is tested.
    o.rescan_interval = Duration::from_secs(600);
    o
}

#[test]
fn live_index_sees_add_modify_rename_delete_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_old(root, "existing", b"existing");
    let index = open_ready(live_opts(root));
    let events = index.subscribe();
    let gen0 = index.generation();
    let two = Duration::from_secs(2);

    let added = Sha1Digest::of(b"added file");
    fs::create_dir(root.join("new-dir")).unwrap();
    fs::write(root.join("new-dir/added"), b"added file").unwrap();
    assert!(wait_until(two, || index.get(&added).is_some()), "add");
    assert!(index.generation() > gen0);
    let ev = events.recv_timeout(two).unwrap();
    assert!(ev.added.contains(&added) && ev.generation > gen0);

    let modified = Sha1Digest::of(b"added file, modified");
    fs::write(root.join("new-dir/added"), b"added file, modified").unwrap();
    assert!(
        wait_until(two, || index.get(&modified).is_some()
            && index.get(&added).is_none()),
        "modify"
    );

    let hashed_before = index.stats().files_hashed;
    fs::rename(root.join("new-dir/added"), root.join("renamed")).unwrap();
    assert!(
        wait_until(two, || index
            .get(&modified)
            .is_some_and(|e| e.paths().eq([Path::new("renamed")]))),
        "rename"
    );
    assert_eq!(
        index.stats().files_hashed,
        hashed_before,
        "a rename is not rehashed"
    );

    fs::remove_file(root.join("renamed")).unwrap();
    assert!(wait_until(two, || index.get(&modified).is_none()), "delete");
    assert!(index.get(&Sha1Digest::of(b"existing")).is_some());
}

/// A first scan with no cache lists files by name and stats them once
/// opened: a file modified just before is still waited for (ready comes
/// only after it settled and was hashed), an old one is hashed at once,
/// and both are read once.
#[test]
fn a_first_scan_without_cache_waits_for_a_fresh_file_to_settle() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_old(root, "sub/old.bin", b"old bytes");
    fs::write(root.join("fresh.bin"), b"fresh bytes").unwrap();
    let written = std::time::Instant::now();
    let mut o = opts(root);
    o.settle = Duration::from_millis(400);
    let index = open_ready(o);
    assert!(
        written.elapsed() >= Duration::from_millis(400),
        "ready before the fresh file could settle"
    );
    assert_eq!(
        index.sha1_of(Path::new("fresh.bin")),
        Some(Sha1Digest::of(b"fresh bytes"))
    );
    assert_eq!(
        index.sha1_of(Path::new("sub/old.bin")),
        Some(Sha1Digest::of(b"old bytes"))
    );
    assert_eq!(index.stats().files_hashed, 2);
}

#[test]
fn half_written_file_is_not_announced_until_stable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut o = live_opts(root);
    o.settle = Duration::from_millis(500);
    let index = open_ready(o);
    let events = index.subscribe();
    let full = data(64 * KIB, 9);
    let path = root.join("slow-copy.bin");
    let mut f = fs::File::create(&path).unwrap();
    // A slow writer: a chunk every 100 ms for 1.2 s, longer than `settle`.
    for chunk in full.chunks(full.len() / 12) {
        std::io::Write::write_all(&mut f, chunk).unwrap();
        assert!(
            index.sha1_of(Path::new("slow-copy.bin")).is_none(),
            "announced while being written"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(f);
    let want = Sha1Digest::of(&full);
    assert!(wait_until(Duration::from_secs(2), || index
        .get(&want)
        .is_some()));
    // Only the complete content was ever announced.
    let announced: Vec<Sha1Digest> = events.try_iter().flat_map(|e| e.added).collect();
    assert_eq!(announced, [want]);
}

#[test]
fn periodic_rescan_finds_changes_without_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let index = open_ready(opts(root)); // not live: only an explicit rescan
    put_old(root, "late", b"late");
    index.rescan();
    assert!(wait_until(Duration::from_secs(2), || index
        .get(&Sha1Digest::of(b"late"))
        .is_some()));
    assert!(index.stats().scans >= 1);
}

#[test]
fn missing_dataset_is_an_error_naming_it() {
    let err = Index::open(IndexOptions::new("/nonexistent/piratebay-dataset"))
        .err()
        .expect("open must fail");
    assert!(
        err.to_string().contains("/nonexistent/piratebay-dataset"),
        "{err}"
    );
}

// ---- the real binary ----

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_piratebay-sync")
}

fn index_json(out: &[u8]) -> Vec<serde_json::Value> {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

#[test]
fn cli_index_json_matches_sha1sum_and_reuses_cache() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_old(root, "a.bin", &data(300 * KIB, 1));
    put_old(root, "sub/b.bin", &data(5 * 1024 * KIB, 2));
    put_old(root, "sub/a-copy.bin", &data(300 * KIB, 1));
    put_old(root, "empty", b"");
    let run = || {
        let out = Command::new(bin())
            .args(["index", "--json", "--dataset"])
            .arg(root)
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        index_json(&out.stdout)
    };
    let rows = run();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let path = row["path"].as_str().unwrap();
        let sha1 = row["sha1"].as_str().unwrap();
        assert_eq!(sha1, sha1sum(&root.join(path)), "{path}");
        assert_eq!(
            row["size"].as_u64().unwrap(),
            fs::metadata(root.join(path)).unwrap().len()
        );
    }
    let copy = rows.iter().find(|r| r["path"] == "a.bin").unwrap();
    assert_eq!(
        copy["paths"],
        serde_json::json!(["a.bin", "sub/a-copy.bin"])
    );
    let big = rows.iter().find(|r| r["path"] == "sub/b.bin").unwrap();
    assert_eq!(
        big["pieces"],
        (5 * 1024 * KIB as u64).div_ceil(piratebay_sync::protocol::BASE_BLOCK)
    );
    assert_eq!(run(), rows, "second run from the cache prints the same");
}

#[test]
fn cli_missing_dataset_exits_2_naming_it() {
    let out = Command::new(bin())
        .args([
            "index",
            "--dataset",
            "/nonexistent/pbs-ds",
            "--state-dir",
            "/tmp",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/pbs-ds"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// An unreadable file and an unreadable directory are skipped with one
/// warning each and exit code 1. Root reads anything, so as root the binary
/// is run as `nobody` with setpriv.
#[test]
fn cli_unreadable_file_is_skipped_with_exit_1() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    put_old(&root, "ok.txt", b"readable");
    let locked = put_old(&root, "locked.txt", b"no access");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    put_old(&root, "private/inside.txt", b"hidden by the directory");
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o000)).unwrap();
    let privileged = fs::read(&locked).is_ok();
    for p in [dir.path(), &root, &root.join("ok.txt")] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = if privileged {
        // A copy of the binary that `nobody` can execute.
        let exe = dir.path().join("pbs");
        fs::copy(bin(), &exe).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(exe);
        c
    } else {
        Command::new(bin())
    };
    let out = cmd
        .args(["index", "--json", "--dataset"])
        .arg(&root)
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let rows = index_json(&out.stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["path"], "ok.txt");
    assert_eq!(err.matches("locked.txt").count(), 1, "one warning: {err}");
    assert_eq!(
        err.matches("private").count(),
        1,
        "one warning for the directory: {err}"
    );
    assert!(
        !err.contains("inside.txt") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn state_dir_inside_the_dataset_is_not_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put_old(root, "shared.txt", b"shared");
    let mut o = opts(root);
    o.state_dir = Some(root.join("state"));
    drop(open_ready(o.clone()));
    assert!(
        fs::read_dir(root.join("state")).unwrap().count() > 0,
        "cache written"
    );
    let index = open_ready(o);
    let paths: Vec<PathBuf> = index
        .files()
        .iter()
        .flat_map(|e| e.paths().map(Path::to_path_buf).collect::<Vec<_>>())
        .collect();
    assert_eq!(paths, [PathBuf::from("shared.txt")]);
}

/// The cache file of `state`, with its inode and mtime.
fn cache_identity(state: &Path) -> (PathBuf, u64, std::time::SystemTime, Vec<u8>) {
    use std::os::unix::fs::MetadataExt;
    let path = fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cache"))
        .expect("a cache file in the state dir");
    let meta = fs::metadata(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    (path, meta.ino(), meta.modified().unwrap(), bytes)
}

#[test]
fn cache_is_not_rewritten_when_nothing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = dir.path();
    for i in 0..30 {
        put_old(root, &format!("d{}/f{i}", i % 3), &data(3000 + i, i as u64));
    }
    let mut o = opts(root);
    o.state_dir = Some(state.path().to_path_buf());
    let want = open_ready(o.clone()).files();
    let first = cache_identity(state.path());

    // Two restarts with nothing changed: the same file (inode, mtime, bytes).
    for _ in 0..2 {
        let index = open_ready(o.clone());
        assert_eq!(index.stats().files_hashed, 0);
        assert_eq!(index.files(), want);
        drop(index); // a save would happen here at the latest
        assert_eq!(cache_identity(state.path()), first, "cache rewritten");
    }

    // One file changed: the cache is written again, with the new hashes.
    put_old(root, "d1/f1", b"changed");
    drop(open_ready(o.clone()));
    let (path, ino, _, bytes) = cache_identity(state.path());
    assert_eq!(path, first.0);
    assert!(
        ino != first.1 || bytes != first.3,
        "cache not rewritten after a change"
    );
    let index = open_ready(o);
    assert_eq!(
        index.stats().files_hashed,
        0,
        "the rewritten cache holds the change"
    );
    assert_eq!(
        index.sha1_of(Path::new("d1/f1")),
        Some(Sha1Digest::of(b"changed"))
    );
}

/// Overwrites bytes of `root/rel` in place (same inode, same size) and
/// puts its mtime back to the exact nanosecond, as `touch -r` after an
/// edit would: only the ctime, which nobody but the kernel sets, moved.
fn edit_keeping_mtime(root: &Path, rel: &str, bytes: &[u8]) {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let p = root.join(rel);
    let before = fs::metadata(&p).unwrap();
    // The kernel stamps ctimes from a coarse clock (a few ms a tick): wait
    // until a change made now gets another ctime than the file's last one,
    // as any edit made later than the same tick would.
    let probe = root.join(".ctime-probe");
    assert!(
        wait_until(Duration::from_secs(2), || {
            fs::write(&probe, b"x").unwrap();
            let c = fs::metadata(&probe).unwrap();
            (c.ctime(), c.ctime_nsec()) != (before.ctime(), before.ctime_nsec())
        }),
        "the clock never moved"
    );
    fs::remove_file(&probe).unwrap();
    let f = fs::File::options().write(true).open(&p).unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    drop(f);
    let after = fs::metadata(&p).unwrap();
    assert_eq!(
        (after.len(), after.ino(), after.mtime(), after.mtime_nsec()),
        (
            before.len(),
            before.ino(),
            before.mtime(),
            before.mtime_nsec()
        ),
        "the edit must keep size, inode and mtime"
    );
}

#[test]
fn an_in_place_edit_with_its_mtime_put_back_is_rehashed_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (one, two) = (b"version one", b"version 2!!");
    put_old(root, "doc.txt", one);
    put_old(root, "other.txt", b"untouched");
    let mut o = live_opts(root);
    o.state_dir = Some(state.path().to_path_buf());
    let (v1, v2) = (Sha1Digest::of(one), Sha1Digest::of(two));
    {
        let index = open_ready(o.clone());
        assert!(index.open_file(&v1).unwrap().is_some());
        // Live: the old hash is not served, and the new one is indexed.
        edit_keeping_mtime(root, "doc.txt", two);
        assert!(
            index.open_file(&v1).unwrap().is_none(),
            "the edited bytes were served under their old sha1"
        );
        assert!(
            wait_until(Duration::from_secs(5), || index.get(&v2).is_some()),
            "the edit was never rehashed"
        );
    }
    // At a restart, an edit made while the peer was down: the cache's
    // record is not trusted for it.
    edit_keeping_mtime(root, "doc.txt", one);
    let index = open_ready(o);
    let s = index.stats();
    assert_eq!((s.files_hashed, s.files_reused), (1, 1));
    assert_eq!(index.sha1_of(Path::new("doc.txt")), Some(v1));
    assert!(index.get(&v2).is_none());
}
