//! Headless Chromium driven over the DevTools protocol, for what
//! `--dump-dom` cannot do: click a link and keep what it downloads.
//!
//! `--remote-debugging-pipe`: the browser reads commands on its fd 3 and
//! writes answers and events on its fd 4, each one JSON text ended by a
//! NUL byte (no WebSocket, no port). A reader thread turns fd 4 into a
//! channel so every wait has a deadline.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How every test starts Chromium: headless, no sandbox (root), and none
/// of its background connections (this machine's network is closed).
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
];

/// How long one command may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium with one page, downloads allowed into `downloads`.
pub struct Browser {
    child: Child,
    commands: File,
    messages: Receiver<Value>,
    reader: Option<std::thread::JoinHandle<()>>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
    downloads: tempfile::TempDir,
}

/// A pipe's two ends, moved to fd numbers of at least 10 (so placing them
/// on 3 and 4 in the child cannot clobber one another), close-on-exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fresh fds into `fds`, owned below.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fds from pipe2, owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let high = |fd: OwnedFd| {
        // SAFETY: fcntl on a valid fd we own; the new fd is owned by the result.
        let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        assert!(
            n >= 10,
            "fcntl F_DUPFD_CLOEXEC: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `n` is a fresh fd nobody else owns.
        unsafe { OwnedFd::from_raw_fd(n) }
    };
    (high(r), high(w))
}

impl Browser {
    /// Starts `chromium` (the path given) and opens `url` in a page.
    pub fn open(chromium: &Path, url: &str) -> Browser {
        Browser::open_with(Command::new(chromium), url)
    }

    /// As [`Browser::open`], with `cmd` running Chromium (e.g. inside a
    /// lab host's network namespace).
    pub fn open_with(mut cmd: Command, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let (to_browser_r, to_browser_w) = pipe();
        let (from_browser_r, from_browser_w) = pipe();
        let (in_fd, out_fd) = (to_browser_r.as_raw_fd(), from_browser_w.as_raw_fd());
        cmd.args(HEADLESS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe dup2 calls between fork and exec;
        // dup2 clears close-on-exec on the new fds 3 and 4.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(in_fd, 3) < 0 || libc::dup2(out_fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("chromium starts");
        drop((to_browser_r, from_browser_w));
        let (tx, messages) = mpsc::channel();
        let from = File::from(from_browser_r);
        let reader = std::thread::Builder::new()
            .name("devtools-read".into())
            .spawn(move || {
                let mut reader = BufReader::new(from);
                let mut buf = Vec::new();
                while matches!(reader.read_until(0, &mut buf), Ok(n) if n > 0) {
                    if buf.last() == Some(&0) {
                        buf.pop();
                    }
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    buf.clear();
                }
            })
            .expect("reader thread");
        let mut browser = Browser {
            child,
            commands: File::from(to_browser_w),
            messages,
            reader: Some(reader),
            next_id: 0,
            session: String::new(),
            _profile: profile,
            downloads,
        };
        let dir = browser.downloads.path().display().to_string();
        browser.call(
            None,
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": dir}),
        );
        let target = browser.call(None, "Target.createTarget", json!({ "url": url }));
        let id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().expect("a session").into();
        browser
    }

    /// Sends `method` (to the page's session `session`, else the browser) and
    /// waits for its answer; events meanwhile are dropped.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .messages
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("chromium did not answer {method}: {e}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        let r = self.call(
            Some(&session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`.
    pub fn wait_true(&mut self, expression: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.eval(expression) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "never true: {expression}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where downloads are saved.
    pub fn downloads(&self) -> &Path {
        self.downloads.path()
    }

    /// Waits until a download named `name` is complete (no `.crdownload`
    /// left); its path.
    pub fn downloaded(&self, name: &str, timeout: Duration) -> PathBuf {
        let path = self.downloads.path().join(name);
        let deadline = Instant::now() + timeout;
        loop {
            let partial = std::fs::read_dir(self.downloads.path())
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"))
                })
                .unwrap_or(false);
            if path.is_file() && !partial {
                return path;
            }
            let listing: Vec<String> = std::fs::read_dir(self.downloads.path())
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "no download named {name}; the directory holds {listing:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The browser's end of the pipe is closed now: the reader ends.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
