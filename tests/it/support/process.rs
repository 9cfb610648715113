//! Child processes in tests: run with a timeout, signal, wait with a deadline.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::wait::POLL_INTERVAL;

/// Default limit for a command run by [`run_with_timeout`] callers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `cmd` to completion with stdout and stderr captured; kills it and
/// panics (with what it printed so far) if it runs longer than `timeout`,
/// so a hang fails the test instead of blocking the suite.
#[track_caller]
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
    // Drain both pipes on their own threads so a chatty child cannot block.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = match wait_timeout(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "{shown} did not exit within {timeout:?}; killed.\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::Builder::new()
        .name("test-pipe-drain".into())
        .spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
        .expect("spawn pipe drain thread")
}

/// Waits for `child` to exit, polling; `None` if `timeout` passed first.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("cannot wait for pid {}: {e}", child.id()),
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL.min(timeout - elapsed));
    }
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to process `pid`; false if it is gone.
pub fn send_signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only
    // makes it fail with ESRCH.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// The last `max_lines` lines of a text file (lossy UTF-8), or a note that
/// it cannot be read.
pub fn tail(path: &Path, max_lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(max_lines);
            lines[from..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
