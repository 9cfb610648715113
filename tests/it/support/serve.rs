//! `piratebay-sync serve` processes for tests: each on its own loopback IP
//! (port 0), or on a LAN lab host ([`Serve::on_host`]: in its namespace,
//! listening on 0.0.0.0:7070 as `make run` does), with its own state
//! directory and, unless given, its own dataset.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use super::{next_loopback_ip, wait_for, PeerProcess};

/// Options for one `serve` process; [`Serve::start`] runs it.
pub struct Serve {
    endpoints: String,
    dataset: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    netns: Option<String>,
    listen: Option<String>,
}

/// The port a peer on a lab host listens on (the `serve` default).
pub const LAB_PORT: u16 = 7070;

/// A running `serve` process and its directories (temp ones live as long as it).
pub struct ServePeer {
    /// The process (log, signals, exit status).
    pub proc: PeerProcess,
    /// The shared directory.
    pub dataset: PathBuf,
    /// The state directory (peer id, index cache).
    pub state_dir: PathBuf,
    _dir: TempDir,
}

impl Serve {
    /// A peer registering at `endpoints` (comma-separated).
    pub fn new(endpoints: &str) -> Serve {
        Serve {
            endpoints: endpoints.to_string(),
            dataset: None,
            state_dir: None,
            args: Vec::new(),
            env: Vec::new(),
            netns: None,
            listen: None,
        }
    }

    /// Run on this lab host, listening on `0.0.0.0:7070` unless
    /// [`listen`](Self::listen) says otherwise.
    pub fn on_host(mut self, host: &super::lab::Host) -> Serve {
        self.netns = Some(host.netns.clone());
        self
    }

    /// The `--listen` address.
    pub fn listen(mut self, addr: &str) -> Serve {
        self.listen = Some(addr.to_string());
        self
    }

    /// Lease TTL in seconds.
    pub fn ttl(self, secs: u64) -> Serve {
        self.arg("--ttl", &secs.to_string())
    }

    /// Share this directory instead of a fresh empty one.
    pub fn dataset(mut self, dir: impl Into<PathBuf>) -> Serve {
        self.dataset = Some(dir.into());
        self
    }

    /// Use this state directory instead of a fresh one.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Serve {
        self.state_dir = Some(dir.into());
        self
    }

    /// Any other flag and its value.
    pub fn arg(mut self, flag: &str, value: &str) -> Serve {
        self.args.extend([flag.to_string(), value.to_string()]);
        self
    }

    /// An environment variable for the process.
    pub fn env(mut self, key: &str, value: &str) -> Serve {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the process (it may still be indexing and registering).
    pub fn start(self) -> ServePeer {
        let dir = tempfile::Builder::new()
            .prefix("pbs-serve-")
            .tempdir()
            .unwrap();
        let dataset = self.dataset.unwrap_or_else(|| dir.path().join("dataset"));
        let state_dir = self.state_dir.unwrap_or_else(|| dir.path().join("state"));
        std::fs::create_dir_all(&dataset).unwrap();
        let mut args = vec![
            "--dataset".to_string(),
            dataset.display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--etcd".into(),
            self.endpoints,
        ];
        // Its own loopback IP (0.0.0.0:7070 on a lab host, as `make run`)
        // unless the test chose where to listen.
        if !self.args.iter().any(|a| a == "--listen") {
            let listen = self.listen.unwrap_or_else(|| match self.netns {
                Some(_) => format!("0.0.0.0:{LAB_PORT}"),
                None => format!("{}:0", next_loopback_ip()),
            });
            args.extend(["--listen".into(), listen]);
        }
        args.extend(self.args);
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ServePeer {
            proc: PeerProcess::spawn_on(self.netns.as_deref(), &args, &env),
            dataset,
            state_dir,
            _dir: dir,
        }
    }
}

impl ServePeer {
    /// The address the process is bound to, from its start-up log line
    /// (known without etcd).
    pub fn bound_addr(&self) -> std::net::SocketAddr {
        wait_for(Duration::from_secs(10), "the peer's bound address", || {
            let log = self.proc.log_text();
            let line = log.lines().find(|l| l.contains(" sharing "))?;
            line.split(" on ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    /// The peer id, once the process has written it to its state directory.
    pub fn id(&self) -> String {
        wait_for(Duration::from_secs(10), "peer id file", || {
            std::fs::read_to_string(self.state_dir.join("peer-id"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
    }
}
