//! The exit codes README documents, command by command, against a real
//! etcd and real `serve` processes: 0 success, 1 partial result, 2 error
//! (usage errors included), `--help` and `--version` 0. Each error line is one line that
//! says what to do.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use piratebay_sync::Sha1Digest;
use serde_json::Value;

use crate::support::*;

const NS: &str = "exit-codes";

/// Asserts the exit code, and for an error that stderr's last line is the
/// `piratebay-sync: ...` line and carries `says`.
#[track_caller]
fn assert_code(out: &Output, code: i32, says: &str) {
    let err = stderr_text(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(says), "expected {says:?} in: {err}");
}

/// A `serve` peer sharing `files` (name, content), its files listed by `files`.
struct Net {
    etcd: EtcdServer,
    peers: Vec<ServePeer>,
    state: tempfile::TempDir,
    datasets: Vec<tempfile::TempDir>,
}

impl Net {
    fn new() -> Net {
        Net {
            etcd: EtcdServer::new(),
            peers: Vec::new(),
            state: tempfile::tempdir().unwrap(),
            datasets: Vec::new(),
        }
    }

    /// Starts a peer sharing `files` (name, content), waits until `files`
    /// lists them all.
    fn serve(&mut self, files: &[(&str, &[u8])]) -> &ServePeer {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let peer = Serve::new(&self.etcd.endpoint())
            .ttl(30)
            .arg("--namespace", NS)
            .dataset(dir.path())
            .start();
        self.datasets.push(dir);
        for (_, bytes) in files {
            let sha1 = Sha1Digest::of(bytes).to_hex();
            wait_for(Duration::from_secs(20), "the file in `files`", || {
                let out = self.cli("files", &["--json"]);
                let v: Value = serde_json::from_str(&stdout_text(&out)).ok()?;
                v.as_array()?.iter().find(|f| f["sha1"] == sha1.as_str())?;
                Some(())
            });
        }
        self.peers.push(peer);
        self.peers.last().unwrap()
    }

    fn args(&self, cmd: &str, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            cmd.into(),
            "--etcd".into(),
            self.etcd.endpoint(),
            "--namespace".into(),
            NS.into(),
        ];
        if cmd != "list" {
            v.extend([
                "--state-dir".into(),
                self.state.path().display().to_string(),
            ]);
        }
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn cli(&self, cmd: &str, args: &[&str]) -> Output {
        cli(&self.args(cmd, args))
    }
}

/// An etcd endpoint where nothing listens.
fn dead_etcd() -> String {
    format!("http://127.0.0.1:{}", free_port([127, 0, 0, 1]))
}

fn hex(bytes: &[u8]) -> String {
    Sha1Digest::of(bytes).to_hex()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn help_exits_0_and_usage_errors_exit_2_for_every_command() {
    let version = format!("Version: piratebay-sync {}", env!("CARGO_PKG_VERSION"));
    for cmd in ["serve", "list", "files", "get", "index"] {
        let out = cli(&[cmd, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{cmd} --help");
        let help = stdout_text(&out);
        assert!(help.starts_with("Usage:"), "{cmd} --help");
        assert_eq!(help.lines().last(), Some(version.as_str()), "{cmd} --help");
        let out = cli(&[cmd, "--no-such-flag"]);
        assert_code(&out, 2, &format!("run `piratebay-sync {cmd} --help`"));
        assert_eq!(
            stderr_text(&out).lines().count(),
            1,
            "{}",
            stderr_text(&out)
        );
    }
    let top = cli(&["--help"]);
    assert_eq!(top.status.code(), Some(0));
    assert!(
        stdout_text(&top).contains("-V, --version"),
        "{}",
        stdout_text(&top)
    );
    assert!(stdout_text(&top).ends_with(&format!("{version}\n")));
    assert_eq!(cli(&["help"]).status.code(), Some(0));
    // No command, an unknown one, a flag without its value, a bad number.
    let none = cli::<&str>(&[]);
    assert_code(&none, 2, "serve, list, index, files, get");
    assert_eq!(
        stderr_text(&none).lines().count(),
        1,
        "{}",
        stderr_text(&none)
    );
    assert_code(&cli(&["fetch"]), 2, "--help");
    assert_code(&cli(&["list", "--etcd"]), 2, "--help");
    assert_code(&cli(&["index", "--piece-size", "65536"]), 2, "--help");
    assert_code(&cli(&["get", "--jobs", "-1", "x"]), 2, "--help");
}

/// `--version` and `-V` print the version alone and exit 0, whatever
/// follows; `serve` logs it at start and `/v1/health` carries it.
#[test]
fn version_flag_serve_log_and_health_name_the_version() {
    let line = format!("piratebay-sync {}\n", env!("CARGO_PKG_VERSION"));
    for args in [&["--version"][..], &["-V"], &["-V", "list"]] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(stdout_text(&out), line, "{args:?}");
        assert_eq!(stderr_text(&out), "", "{args:?}");
    }
    // Commands have no version flag: a usage error like any other.
    assert_code(
        &cli(&["list", "--version"]),
        2,
        "run `piratebay-sync list --help`",
    );

    let etcd = EtcdServer::new();
    let peer = Serve::new(&etcd.endpoint()).start();
    let addr = peer.bound_addr();
    // The start-up line (an error before it stays one line on stderr).
    let log = peer.proc.log_text();
    let start = log.lines().find(|l| l.contains(" sharing "));
    assert!(
        start.is_some_and(|l| l.contains(&format!("{}: peer ", line.trim_end()))),
        "{log}"
    );
    let body = ureq::get(format!("http://{addr}/v1/health"))
        .call()
        .expect("health answers")
        .into_body()
        .read_to_string()
        .unwrap();
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "{health}");
}

#[test]
fn serve_exits_0_on_sigterm_and_2_when_it_cannot_start() {
    let etcd = EtcdServer::new();
    let mut peer = Serve::new(&etcd.endpoint()).start();
    peer.bound_addr();
    peer.proc.sigterm();
    let status = peer.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", peer.proc.log_text());

    let dirs = tempfile::tempdir().unwrap();
    let state = dirs.path().join("state");
    let missing = dirs.path().join("missing");
    let serve = |dataset: &Path, listen: &str| {
        cli(&[
            "serve",
            "--etcd",
            &etcd.endpoint(),
            "--state-dir",
            path_str(&state),
            "--dataset",
            path_str(dataset),
            "--listen",
            listen,
        ])
    };
    let out = serve(&missing, "127.0.0.1:0");
    assert_code(&out, 2, "mkdir -p");
    assert_eq!(stderr_text(&out).trim_end().lines().count(), 1);

    let file = dirs.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert_code(
        &serve(&file, "127.0.0.1:0"),
        2,
        "pass a directory with --dataset",
    );

    let taken = std::net::TcpListener::bind(format!("{}:0", next_loopback_ip())).unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = serve(dirs.path(), &addr);
    assert_code(&out, 2, "another process uses the port");
    assert!(
        stderr_text(&out).contains("--listen"),
        "{}",
        stderr_text(&out)
    );

    assert_code(&serve(dirs.path(), "nowhere"), 2, "--listen");
}

#[test]
fn list_exits_0_with_peers_and_2_without_etcd() {
    let mut net = Net::new();
    let id = net.serve(&[]).id();
    let out = wait_for(Duration::from_secs(10), "the peer listed", || {
        let out = net.cli("list", &["--json"]);
        stdout_text(&out).contains(&id).then_some(out)
    });
    assert_code(&out, 0, "");

    let out = cli(&["list", "--etcd", &dead_etcd()]);
    assert_code(&out, 2, "start etcd");
    assert_eq!(stderr_text(&out).trim_end().lines().count(), 1);
    assert_code(&cli(&["list", "--etcd", ","]), 2, "--etcd");
}

#[test]
fn files_exits_1_when_a_registered_peer_cannot_be_asked() {
    let mut net = Net::new();
    net.serve(&[("a.txt", b"alpha")]);
    assert_code(&net.cli("files", &[]), 0, "");

    // A peer killed without unregistering: its record stays (TTL 30 s)
    // but it answers nothing, so the list may be short of its files.
    let id = net.serve(&[]).id();
    wait_for(Duration::from_secs(10), "the peer listed", || {
        stdout_text(&net.cli("list", &[]))
            .contains(&id)
            .then_some(())
    });
    let mut dead = net.peers.pop().unwrap();
    dead.proc.kill9();
    let out = net.cli("files", &["--json"]);
    assert_code(&out, 1, "");
    let v: Value = serde_json::from_str(&stdout_text(&out)).unwrap();
    assert!(v.to_string().contains(&hex(b"alpha")), "{v}");

    // `get` of a file that no peer that answered holds, while that peer
    // cannot be asked (after the lookup's patience): the error says so,
    // and names it, instead of "no peer holds".
    let out_dir = tempfile::tempdir().unwrap();
    let out = net.cli(
        "get",
        &[&hex(b"nobody has this"), "--dir", path_str(out_dir.path())],
    );
    assert_code(&out, 2, "no reachable peer holds");
    let err = stderr_text(&out);
    assert!(err.contains("1 peer(s) could not be asked"), "{err}");
    assert!(err.contains(&id), "the unreachable peer is named: {err}");

    assert_code(&cli(&["files", "--etcd", &dead_etcd()]), 2, "start etcd");
}

#[test]
fn get_exits_0_1_2_for_one_file_and_for_a_batch() {
    let mut net = Net::new();
    net.serve(&[("a.txt", b"alpha"), ("b.txt", b"bravo")]);
    let out_dir = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let d = out_dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d.display().to_string()
    };
    let (a, b) = (hex(b"alpha"), hex(b"bravo"));
    let nobody = hex(b"no peer holds this");

    // One file.
    let one = dir("one");
    assert_code(&net.cli("get", &[&a, "--dir", &one]), 0, "");
    assert_eq!(
        std::fs::read(Path::new(&one).join("a.txt")).unwrap(),
        b"alpha"
    );
    assert_code(
        &net.cli("get", &[&nobody, "--dir", &one]),
        2,
        "piratebay-sync files",
    );
    let other = Path::new(&one).join("b.txt");
    std::fs::write(&other, b"not bravo").unwrap();
    assert_code(&net.cli("get", &[&b, "-o", path_str(&other)]), 2, "--force");
    assert_code(&net.cli("get", &["not-a-sha1"]), 2, "invalid sha1");
    assert_code(
        &cli(&["get", &a, "--etcd", &dead_etcd(), "--dir", &one]),
        2,
        "start etcd",
    );

    // A batch: all saved, some saved, none saved.
    assert_code(&net.cli("get", &[&a, &b, "--dir", &dir("all")]), 0, "");
    let some = net.cli("get", &[&a, &nobody, &b, "--dir", &dir("some")]);
    assert_code(&some, 1, "no peer holds");
    assert!(
        stdout_text(&some).contains("1 failed"),
        "{}",
        stdout_text(&some)
    );
    let none = net.cli("get", &[&nobody, &hex(b"neither"), "--dir", &dir("none")]);
    assert_code(&none, 2, "no peer holds");
    assert_code(&net.cli("get", &[&a, &b, "-o", "x"]), 2, "use --dir");
    assert_code(&net.cli("get", &["--search", "zzz-none"]), 2, "no file");
}

#[test]
fn index_exits_0_for_a_dataset_and_2_without_one() {
    // Exit 1 (some files unreadable) is `index::cli_unreadable_file_is_skipped_with_exit_1`.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"hello").unwrap();
    let state = dir.path().join("state");
    let index = |dataset: &Path| {
        cli(&[
            "index",
            "--dataset",
            path_str(dataset),
            "--state-dir",
            path_str(&state),
        ])
    };
    let out = index(&data);
    assert_code(&out, 0, "");
    assert!(stdout_text(&out).contains(&hex(b"hello")));
    let out = index(&dir.path().join("missing"));
    assert_code(&out, 2, "mkdir -p");
    assert_eq!(stderr_text(&out).trim_end().lines().count(), 1);
    assert_code(&index(&data.join("f")), 2, "not a directory");
}

/// A dataset this user may not reach is an error (2) whose advice differs
/// from a missing one: access, not `mkdir`. Root reads anything, so as
/// root the binary runs as `nobody` (setpriv), as in `index.rs`.
#[test]
fn index_tells_a_dataset_it_may_not_open_or_list_from_a_missing_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let set_mode =
        |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    // `closed/ds`: the parent cannot be searched; `unlisted`: can be
    // entered but not listed.
    let closed = dir.path().join("closed");
    std::fs::create_dir_all(closed.join("ds")).unwrap();
    let unlisted = dir.path().join("unlisted");
    std::fs::create_dir_all(&unlisted).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    set_mode(dir.path(), 0o755).unwrap();
    set_mode(&state, 0o777).unwrap();
    set_mode(&closed, 0o700).unwrap();
    set_mode(&unlisted, 0o311).unwrap();
    let privileged = std::fs::read_dir(&unlisted).is_ok();
    let exe = dir.path().join("pbs");
    std::fs::copy(bin_path(), &exe).unwrap();
    set_mode(&exe, 0o755).unwrap();
    let index = |dataset: &Path| {
        let mut cmd = if privileged {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        cmd.args(["index", "--dataset"])
            .arg(dataset)
            .arg("--state-dir")
            .arg(&state);
        run_with_timeout(&mut cmd, DEFAULT_TIMEOUT)
    };
    let out = index(&closed.join("ds"));
    assert_code(&out, 2, "cannot open dataset directory");
    let err = stderr_text(&out);
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    assert!(
        err.contains("give this user access") && !err.contains("mkdir"),
        "{err}"
    );

    let out = index(&unlisted);
    assert_code(&out, 2, "cannot list dataset directory");
    assert!(
        stderr_text(&out).contains("read access"),
        "{}",
        stderr_text(&out)
    );
    set_mode(&closed, 0o755).unwrap();
    set_mode(&unlisted, 0o755).unwrap();
}
