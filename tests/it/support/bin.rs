//! The real `piratebay-sync` binary: one-shot commands ([`cli`]) and
//! long-running peers ([`PeerProcess`]), always without the caller's
//! `PIRATEBAY_*` environment and always with a deadline.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::process::{run_with_timeout, send_signal, tail, wait_timeout, DEFAULT_TIMEOUT};
use super::wait::wait_until;

/// Lines of a peer's log printed when a test panics while it runs.
const LOG_TAIL: usize = 60;

/// Path of the binary under test, built by cargo for this test run.
pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_piratebay-sync"))
}

/// A `Command` for the binary with every `PIRATEBAY_*` variable removed,
/// so the developer's environment cannot change a test.
pub fn command() -> Command {
    command_on(None)
}

/// Like [`command`], run on a lab host (`ip netns exec <netns>`) when
/// `netns` is given.
pub fn command_on(netns: Option<&str>) -> Command {
    let mut cmd = super::lab::command_in(netns, bin_path());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PIRATEBAY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Starts `get SHA1 -o out --json` against `etcd` (on lab host `netns` if
/// given).
pub fn spawn_get(
    netns: Option<&str>,
    etcd: &str,
    sha1: &str,
    out: &std::path::Path,
    state: &std::path::Path,
) -> Child {
    command_on(netns)
        .args(["get", sha1, "-o"])
        .arg(out)
        .args(["--json", "--etcd", etcd, "--state-dir"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("get starts")
}

/// Runs `piratebay-sync <args>` to completion (killed and failing the test
/// after 30 s) and returns its output.
#[track_caller]
pub fn cli<S: AsRef<OsStr>>(args: &[S]) -> Output {
    cli_with(args, &[], DEFAULT_TIMEOUT)
}

/// Like [`cli`] with extra environment variables and an explicit timeout.
#[track_caller]
pub fn cli_with<S: AsRef<OsStr>>(args: &[S], envs: &[(&str, &str)], timeout: Duration) -> Output {
    cli_on(None, args, envs, timeout)
}

/// Like [`cli_with`], on the lab host whose namespace is `netns` if given.
#[track_caller]
pub fn cli_on<S: AsRef<OsStr>>(
    netns: Option<&str>,
    args: &[S],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let mut cmd = command_on(netns);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, timeout)
}

/// stdout of an [`Output`] as text.
pub fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of an [`Output`] as text.
pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `piratebay-sync serve` with its stdout and stderr in a log
/// file. SIGKILLed and reaped on drop; if the test is panicking, the log
/// tail is printed first.
pub struct PeerProcess {
    child: Option<Child>,
    status: Option<ExitStatus>,
    log_dir: TempDir,
}

impl PeerProcess {
    /// Starts `piratebay-sync serve <args>`.
    #[track_caller]
    pub fn spawn<S: AsRef<OsStr>>(args: &[S]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// Starts `piratebay-sync serve <args>` with extra environment variables.
    /// `RUST_LOG` is passed through if set.
    #[track_caller]
    pub fn spawn_with_env<S: AsRef<OsStr>>(args: &[S], envs: &[(&str, &str)]) -> Self {
        Self::spawn_on(None, args, envs)
    }

    /// Like [`spawn_with_env`](Self::spawn_with_env), on the lab host whose
    /// namespace is `netns` if given.
    #[track_caller]
    pub fn spawn_on<S: AsRef<OsStr>>(
        netns: Option<&str>,
        args: &[S],
        envs: &[(&str, &str)],
    ) -> Self {
        let log_dir = tempfile::Builder::new()
            .prefix("peer-log-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the peer log: {e}"));
        let log_path = log_dir.path().join("peer.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let mut cmd = command_on(netns);
        cmd.arg("serve").args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin_path().display()));
        PeerProcess {
            child: Some(child),
            status: None,
            log_dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The log file (stdout and stderr interleaved).
    pub fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("peer.log")
    }

    /// Everything the peer printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log on timeout.
    #[track_caller]
    pub fn wait_log_contains(&self, timeout: Duration, needle: &str) {
        wait_until(timeout, &format!("peer log to contain {needle:?}"), || {
            self.log_text().contains(needle)
        });
    }

    /// True while the process has not exited (records the status if it has).
    pub fn is_running(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(None) => return true,
                Ok(Some(status)) => {
                    self.status = Some(status);
                    self.child = None;
                }
                Err(_) => self.child = None,
            }
        }
        false
    }

    /// SIGKILL (a crash: no lease revoke, no cleanup) and reap.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.status = Some(status);
            }
        }
        self.status
            .unwrap_or_else(|| panic!("peer already reaped without a status"))
    }

    /// Sends SIGTERM (a graceful stop); use [`wait_exit`](Self::wait_exit) after.
    pub fn sigterm(&self) {
        if let Some(child) = self.child.as_ref() {
            send_signal(child.id(), libc::SIGTERM);
        }
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn sigint(&self) {
        if let Some(child) = self.child.as_ref() {
            send_signal(child.id(), libc::SIGINT);
        }
    }

    /// Waits for the process to exit; panics with the log tail if it does
    /// not within `timeout` (the process is then killed by drop).
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let Some(child) = self.child.as_mut() else {
            panic!("peer has no process and no exit status");
        };
        match wait_timeout(child, timeout) {
            Some(status) => {
                self.status = Some(status);
                self.child = None;
                status
            }
            None => panic!(
                "peer pid {} did not exit within {timeout:?}; log tail:\n{}",
                self.pid(),
                tail(&self.log_path(), LOG_TAIL)
            ),
        }
    }

    /// The directory holding the log (removed on drop).
    pub fn log_dir(&self) -> &Path {
        self.log_dir.path()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- log of peer (tail) ---\n{}",
                tail(&self.log_path(), LOG_TAIL)
            );
        }
    }
}
