//! `get` of many files in one command (`get SHA1 SHA1 ...`, `--search`,
//! `--all`) against real `serve` processes registered in a real etcd.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use piratebay_sync::Sha1Digest;
use serde_json::Value;

use crate::fetch_support::*;
use crate::support::*;

/// An etcd and two `serve` peers: "alpha" holds `alpha-0..2.bin` and
/// `shared.bin`, "beta" holds `beta-0..1.bin` and `shared.bin`.
struct Batch {
    etcd: EtcdServer,
    _peers: Vec<ServePeer>,
    dir: tempfile::TempDir,
    /// (name, sha1) of every file on the network.
    files: Vec<(String, Sha1Digest)>,
}

const NS: &str = "batch";

impl Batch {
    fn start() -> Batch {
        init_test_log();
        let etcd = EtcdServer::new();
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        let mut peers = Vec::new();
        for (p, (peer, count)) in [("alpha", 3u64), ("beta", 2)].into_iter().enumerate() {
            let dataset = dir.path().join(format!("{peer}-data"));
            std::fs::create_dir_all(&dataset).unwrap();
            for i in 0..count {
                let name = format!("{peer}-{i}.bin");
                // 1 KiB to ~300 KiB: one piece and several.
                let size = 1024 + (p as u64 * 3 + i) * 70_000;
                let sha1 = random_file(&dataset.join(&name), size, 100 + p as u64 * 10 + i);
                files.push((name, sha1));
            }
            let shared = random_file(&dataset.join("shared.bin"), 5000, 7);
            if p == 0 {
                files.push(("shared.bin".into(), shared));
            }
            peers.push(
                Serve::new(&etcd.endpoint())
                    .arg("--namespace", NS)
                    .dataset(&dataset)
                    .state_dir(dir.path().join(format!("{peer}-state")))
                    .start(),
            );
        }
        let batch = Batch {
            etcd,
            _peers: peers,
            dir,
            files,
        };
        wait_until(
            Duration::from_secs(30),
            "both peers list their files",
            || {
                let out = batch.cli("files", &["--json"]);
                serde_json::from_str::<Value>(&stdout_text(&out))
                    .ok()
                    .and_then(|v| v.as_array().map(|a| a.len()))
                    == Some(batch.files.len())
            },
        );
        batch
    }

    /// `piratebay-sync <cmd> --etcd .. --namespace .. --state-dir .. <args>`.
    fn cli(&self, cmd: &str, args: &[&str]) -> Output {
        let state = self.dir.path().join("client-state").display().to_string();
        let ep = self.etcd.endpoint();
        let mut v = vec![cmd, "--etcd", &ep, "--namespace", NS, "--state-dir", &state];
        v.extend(args);
        cli_with(&v, &[], Duration::from_secs(60))
    }

    fn out_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sha1_of(&self, name: &str) -> Sha1Digest {
        self.files.iter().find(|(n, _)| n == name).unwrap().1
    }
}

/// Every `name` is in `dir` with its content; nothing else is (no `.part`).
fn assert_exactly(dir: &Path, batch: &Batch, names: &[&str]) {
    let mut present: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(present, want, "files in {}", dir.display());
    for name in names {
        assert_eq!(
            sha1sum(&dir.join(name)),
            batch.sha1_of(name).to_hex(),
            "{name}"
        );
    }
}

fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn get_several_sha1s_and_search_save_every_file_verified() {
    let b = Batch::start();
    let out_dir = b.out_dir("sha1s");
    let d = out_dir.display().to_string();
    let names = ["alpha-1.bin", "beta-1.bin", "shared.bin"];
    let hexes: Vec<String> = names.iter().map(|n| b.sha1_of(n).to_hex()).collect();
    let mut args: Vec<&str> = hexes.iter().map(String::as_str).collect();
    args.push(&hexes[0]); // the same SHA1 twice is downloaded once
    args.extend(["--dir", &d]);
    let out = b.cli("get", &args);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr_text(&out));
    assert_exactly(&out_dir, &b, &names);
    assert!(
        stdout_text(&out).contains("saved 3 file(s)"),
        "{}",
        stdout_text(&out)
    );

    let search_dir = b.out_dir("search");
    let s = search_dir.display().to_string();
    let out = b.cli("get", &["--search", "BETA", "--dir", &s]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr_text(&out));
    assert_exactly(&search_dir, &b, &["beta-0.bin", "beta-1.bin"]);

    let out = b.cli("get", &["--search", "gamma", "--dir", &s]);
    assert_eq!(exit_code(&out), Some(2));
    assert!(stderr_text(&out).contains("no file on the network"));

    // -o names one file; no selection at all is refused too.
    let out = b.cli("get", &[&hexes[0], &hexes[1], "-o", "x"]);
    assert_eq!(exit_code(&out), Some(2));
    assert!(
        stderr_text(&out).contains("use --dir"),
        "{}",
        stderr_text(&out)
    );
    let out = b.cli("get", &["--dir", &s]);
    assert_eq!(exit_code(&out), Some(2));
    assert!(stderr_text(&out).contains("--all"), "{}", stderr_text(&out));
}

#[test]
fn get_all_skips_what_the_directory_holds_and_prints_a_json_line_per_file() {
    let b = Batch::start();
    let out_dir = b.out_dir("all");
    // Already there: one file with the network's content, one name with
    // other content (kept as it is: nothing lost).
    let src = b.dir.path().join("alpha-data");
    std::fs::copy(src.join("alpha-0.bin"), out_dir.join("alpha-0.bin")).unwrap();
    std::fs::write(out_dir.join("beta-0.bin"), b"mine").unwrap();
    let d = out_dir.display().to_string();
    let out = b.cli("get", &["--all", "--dir", &d, "--json"]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr_text(&out));
    let lines: Vec<Value> = stdout_text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let mut got: Vec<String> = lines
        .iter()
        .map(|v| {
            assert_eq!(v["ok"], true, "{v}");
            Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["alpha-1.bin", "alpha-2.bin", "beta-1.bin", "shared.bin"]
    );
    assert_eq!(std::fs::read(out_dir.join("beta-0.bin")).unwrap(), b"mine");
    for name in [
        "alpha-0.bin",
        "alpha-1.bin",
        "alpha-2.bin",
        "beta-1.bin",
        "shared.bin",
    ] {
        assert_eq!(sha1sum(&out_dir.join(name)), b.sha1_of(name).to_hex());
    }

    let out = b.cli("get", &["--all", "--dir", &d]);
    assert_eq!(exit_code(&out), Some(0), "{}", stderr_text(&out));
    assert!(
        stdout_text(&out).contains("nothing to download"),
        "{}",
        stdout_text(&out)
    );

    // A registered peer that does not answer: `--all` may be short of its
    // files, so the batch is a partial result (1), the others all saved.
    let mut dead = TestPeer::start("dead", Vec::new());
    let _reg = dead.register(&b.etcd.endpoint(), NS);
    dead.kill();
    let short_dir = b.out_dir("all-short");
    let sd = short_dir.display().to_string();
    let out = b.cli("get", &["--all", "--dir", &sd]);
    assert_eq!(exit_code(&out), Some(1), "{}", stderr_text(&out));
    let names: Vec<&str> = b.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_exactly(&short_dir, &b, &names);
}

#[test]
fn a_batch_with_a_sha1_nobody_holds_completes_the_others_and_exits_1() {
    let b = Batch::start();
    let nobody = Sha1Digest::of(b"no peer holds this");
    let names = ["alpha-2.bin", "beta-0.bin"];
    let hexes: Vec<String> = names.iter().map(|n| b.sha1_of(n).to_hex()).collect();

    let out_dir = b.out_dir("partial");
    let d = out_dir.display().to_string();
    let missing = nobody.to_hex();
    let out = b.cli("get", &[&hexes[0], &missing, &hexes[1], "--dir", &d]);
    assert_eq!(exit_code(&out), Some(1), "{}", stderr_text(&out));
    assert_exactly(&out_dir, &b, &names);
    let failed: Vec<String> = stderr_text(&out)
        .lines()
        .filter(|l| l.contains("failed"))
        .map(str::to_string)
        .collect();
    assert_eq!(failed.len(), 1, "{}", stderr_text(&out));
    assert!(failed[0].contains(&missing) && failed[0].contains("no peer holds"));
    assert!(
        stdout_text(&out).contains("saved 2 file(s)") && stdout_text(&out).contains("1 failed")
    );

    let json_dir = b.out_dir("partial-json");
    let j = json_dir.display().to_string();
    let out = b.cli("get", &[&missing, &hexes[0], "--dir", &j, "--json"]);
    assert_eq!(exit_code(&out), Some(1), "{}", stderr_text(&out));
    let lines: Vec<Value> = stdout_text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    let bad = lines.iter().find(|v| v["sha1"] == missing).unwrap();
    assert_eq!(bad["ok"], false);
    assert!(bad["error"].as_str().unwrap().contains("no peer holds"));
    assert!(
        bad["advice"]
            .as_str()
            .unwrap()
            .contains("piratebay-sync files"),
        "{bad}"
    );
    let good = lines.iter().find(|v| v["sha1"] == hexes[0]).unwrap();
    assert_eq!(good["ok"], true);
    assert_eq!(
        good["bytes"],
        std::fs::metadata(json_dir.join(names[0])).unwrap().len()
    );

    // Nothing downloadable at all: an error (2), not a partial result.
    let out = b.cli(
        "get",
        &[&missing, &Sha1Digest::of(b"neither").to_hex(), "--dir", &j],
    );
    assert_eq!(exit_code(&out), Some(2), "{}", stderr_text(&out));
}

#[test]
fn an_interrupted_batch_keeps_its_verified_pieces_and_the_rerun_completes_it() {
    init_test_log();
    let etcd = EtcdServer::new();
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("data");
    std::fs::create_dir_all(&dataset).unwrap();
    let sha1s: Vec<Sha1Digest> = (0..3)
        .map(|i| random_file(&dataset.join(format!("big-{i}.bin")), 512 * 1024, 40 + i))
        .collect();
    let _peer = Serve::new(&etcd.endpoint())
        .arg("--namespace", "batch-int")
        .dataset(&dataset)
        .state_dir(dir.path().join("peer-state"))
        .start();
    let state = dir.path().join("client-state").display().to_string();
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let d = out_dir.display().to_string();
    let ep = etcd.endpoint();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["get", "--etcd", &ep, "--namespace", "batch-int"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend([
            "--state-dir".to_string(),
            state.clone(),
            "--dir".into(),
            d.clone(),
        ]);
        v.extend(sha1s.iter().map(Sha1Digest::to_hex));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    wait_until(Duration::from_secs(30), "the peer lists 3 files", || {
        let out = cli(&[
            "files",
            "--json",
            "--etcd",
            &ep,
            "--namespace",
            "batch-int",
            "--state-dir",
            &state,
        ]);
        serde_json::from_str::<Value>(&stdout_text(&out))
            .ok()
            .and_then(|v| v.as_array().map(|a| a.len()))
            == Some(3)
    });
    // 1.5 MiB at 128 KiB/s for the whole batch: about 12 s, interrupted long before.
    let started = std::time::Instant::now();
    let mut child = command()
        .args(base(&["--max-rate", "128K"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let verified = |sha1: &Sha1Digest, i: usize| {
        verified_in_state(&out_dir.join(format!("big-{i}.bin")), sha1)
    };
    let total = || -> usize { sha1s.iter().enumerate().map(|(i, s)| verified(s, i)).sum() };
    wait_until(Duration::from_secs(30), "6 pieces verified", || {
        total() >= 6
    });
    // The cap is the batch's: 6 x 64 KiB at 128 KiB/s (16 KiB burst) take
    // at least 2.875 s; a cap per file (3 downloads) would allow ~1 s. A
    // lower bound only: a slow machine makes it longer, never shorter.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500), "6 pieces in {took:?}");
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("get stops on SIGINT");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let kept = total();
    assert!((6..24).contains(&kept), "verified pieces kept: {kept}");

    let out = cli(&base(&["--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    let resumed: u64 = stdout_text(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["resumed_bytes"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(resumed >= 6 * 65536, "resumed {resumed} bytes");
    for (i, sha1) in sha1s.iter().enumerate() {
        assert_eq!(
            sha1sum(&out_dir.join(format!("big-{i}.bin"))),
            sha1.to_hex()
        );
    }
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".part"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
