//! Real etcd processes for tests: one member ([`EtcdServer`]) or a
//! three-member cluster ([`EtcdCluster`]) on loopback, on a LAN lab's
//! bridge ([`EtcdServer::on_bridge`], a lab host of its own) or on lab hosts
//! ([`EtcdServer::on_host`], [`EtcdCluster::on_hosts`]), plus an `etcdctl`
//! wrapper and a few raw gateway calls for checks.
//!
//! Uses Debian's `/usr/bin/etcd` (3.4) or the first `etcd` on `PATH`, or
//! the one named by `PIRATEBAY_TEST_ETCD_BIN`. Every member gets its own
//! temp dir (data in `data/`, stdout+stderr in `etcd.log`), free loopback
//! ports, and short raft timers so elections take well under a second.
//! Processes are SIGKILLed and reaped on drop.

use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use tempfile::TempDir;

use super::lab::{command_in, Host, Lab};
use super::net::{free_port, next_loopback_ip};
use super::process::{run_with_timeout, send_signal, tail, wait_timeout, DEFAULT_TIMEOUT};
use super::wait::{try_wait_for, wait_for};

/// How long a member gets to become healthy after it starts.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERMed member gets to exit before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at picking ports when another process takes one first.
const PORT_ATTEMPTS: usize = 4;
/// Lines of the etcd log shown when a start fails.
const LOG_TAIL: usize = 40;

/// Path of the etcd binary: `PIRATEBAY_TEST_ETCD_BIN`, `/usr/bin/etcd`, or `etcd` on `PATH`.
pub fn etcd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PIRATEBAY_TEST_ETCD_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let debian = Path::new("/usr/bin/etcd");
    if debian.exists() {
        return debian.to_path_buf();
    }
    PathBuf::from("etcd")
}

/// Path of etcdctl: `PIRATEBAY_TEST_ETCDCTL_BIN`, `/usr/bin/etcdctl`, or `etcdctl` on `PATH`.
pub fn etcdctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PIRATEBAY_TEST_ETCDCTL_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let debian = Path::new("/usr/bin/etcdctl");
    if debian.exists() {
        return debian.to_path_buf();
    }
    PathBuf::from("etcdctl")
}

/// Runs `etcdctl --endpoints <endpoints> <args>` (API v3) with a timeout.
/// `endpoints` is comma-separated, as etcdctl wants it.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(etcdctl_bin());
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=5s")
        .args(args);
    run_with_timeout(&mut cmd, DEFAULT_TIMEOUT)
}

/// Like [`etcdctl`] but panics unless it exits 0, and returns its stdout.
#[track_caller]
pub fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into()
    })
}

/// POSTs `body` (JSON) to `<endpoint><path>` on the v3 gateway; the parsed
/// reply if the status is 200, else a one-line description of the failure.
pub fn gateway_post(
    endpoint: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let url = format!("{endpoint}{path}");
    let mut resp = agent()
        .post(&url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("POST {url}: reading body: {e}"))?;
    if status != 200 {
        return Err(format!("POST {url}: status {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("POST {url}: bad JSON {text:?}: {e}"))
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `PUT key=value` through the gateway of `endpoint`.
pub fn gateway_put(endpoint: &str, key: &str, value: &str) -> Result<(), String> {
    let body = serde_json::json!({ "key": b64(key.as_bytes()), "value": b64(value.as_bytes()) });
    gateway_post(endpoint, "/v3/kv/put", &body).map(|_| ())
}

/// The value of `key` through the gateway of `endpoint` (`None` if absent).
pub fn gateway_get(endpoint: &str, key: &str) -> Result<Option<String>, String> {
    let body = serde_json::json!({ "key": b64(key.as_bytes()) });
    let reply = gateway_post(endpoint, "/v3/kv/range", &body)?;
    let Some(kv) = reply.get("kvs").and_then(|k| k.get(0)) else {
        return Ok(None);
    };
    let value = kv.get("value").and_then(|v| v.as_str()).unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| format!("bad base64 value {value:?}: {e}"))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The sum of the samples of etcd's Prometheus metric `name` (at
/// `<endpoint>/metrics`) whose labels contain every one of `labels`
/// (e.g. `grpc_method="Watch"`); `None` if the page cannot be read.
pub fn etcd_metric(endpoint: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let url = format!("{endpoint}/metrics");
    let text = agent()
        .get(&url)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if labels.iter().all(|l| rest.contains(l)) {
            sum += rest.rsplit(' ').next()?.parse::<f64>().ok()?;
        }
    }
    Some(sum)
}

/// Watch streams etcd has started so far (through the gateway, one per
/// `/v3/watch` request).
pub fn etcd_watch_streams_started(endpoint: &str) -> f64 {
    etcd_metric(
        endpoint,
        "grpc_server_started_total",
        &["grpc_method=\"Watch\"", "etcdserverpb.Watch"],
    )
    .expect("etcd metrics")
}

/// True when `GET <endpoint>/health` answers `"health":"true"` (the member
/// has a leader and can serve a quorum read).
pub fn is_healthy(endpoint: &str) -> bool {
    let url = format!("{endpoint}/health");
    let Ok(mut resp) = agent().get(&url).call() else {
        return false;
    };
    if resp.status().as_u16() != 200 {
        return false;
    }
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("health").cloned())
        .is_some_and(|h| h == "true" || h == true)
}

/// A u64 that the gateway may send as a JSON string or a number.
fn json_u64(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// `(member_id, leader_id)` from `POST /v3/maintenance/status`; leader 0
/// (absent) means the member knows no leader.
pub fn member_status(endpoint: &str) -> Option<(u64, u64)> {
    let v = gateway_post(endpoint, "/v3/maintenance/status", &serde_json::json!({})).ok()?;
    let id = json_u64(v.get("header").and_then(|h| h.get("member_id")))?;
    let leader = json_u64(v.get("leader")).unwrap_or(0);
    Some((id, leader))
}

/// One etcd member: its ports, its temp dir and (while running) its process.
pub struct EtcdServer {
    name: String,
    ip: Ipv4Addr,
    client_port: u16,
    peer_port: u16,
    initial_cluster: String,
    cluster_token: String,
    dir: TempDir,
    child: Option<Child>,
    /// Extra flags for every start (e.g. `--auth-token-ttl`).
    extra_args: Vec<String>,
    /// Serve clients over https with these certificates.
    tls: Option<super::tls::TestCerts>,
    /// The lab host (network namespace) it runs on; `None`: this one.
    netns: Option<String>,
}

/// Client and peer ports of a member on a lab host (its namespace is its own).
const LAB_CLIENT_PORT: u16 = 2379;

impl EtcdServer {
    /// Starts a single-member etcd on free loopback ports and waits until
    /// it is healthy (retrying with other ports if one was taken meanwhile).
    #[track_caller]
    pub fn new() -> Self {
        Self::with_args(&[])
    }

    /// Like [`EtcdServer::new`] with extra etcd flags, kept across restarts.
    #[track_caller]
    pub fn with_args(args: &[&str]) -> Self {
        Self::configured(args, None)
    }

    /// A single member serving clients over `https://` with `certs`
    /// (a server certificate for 127.0.0.1 signed by the test CA).
    #[track_caller]
    pub fn with_tls(certs: &super::tls::TestCerts) -> Self {
        Self::configured(&[], Some(certs.clone()))
    }

    /// A single member on a new lab host of its own, on the bridge: every
    /// lab host reaches it, and a killed test leaves nothing behind that
    /// the next lab's sweep does not remove (it runs in a lab namespace).
    #[track_caller]
    pub fn on_bridge(lab: &mut Lab) -> Self {
        let host = lab.add_host();
        Self::on_host(&host)
    }

    /// A single member on lab host `host` (in its namespace), listening
    /// on the host's address and on its 127.0.0.1, ports 2379/2380.
    #[track_caller]
    pub fn on_host(host: &Host) -> Self {
        let mut s = Self::unstarted_on("solo", host, None);
        s.spawn();
        s.wait_started(START_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        s
    }

    /// A member on `host` (ports 2379/2380), not started.
    fn unstarted_on(name: &str, host: &Host, cluster: Option<(String, String)>) -> Self {
        let ip = host.ip;
        let peer_port = LAB_CLIENT_PORT + 1;
        let dir = tempfile::Builder::new()
            .prefix(&format!("etcd-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for etcd: {e}"));
        let (initial_cluster, cluster_token) = cluster.unwrap_or_else(|| {
            (
                format!("{name}=http://{ip}:{peer_port}"),
                format!("solo-{}-{}", std::process::id(), host.netns),
            )
        });
        EtcdServer {
            name: name.to_string(),
            ip,
            client_port: LAB_CLIENT_PORT,
            peer_port,
            initial_cluster,
            cluster_token,
            dir,
            child: None,
            extra_args: Vec::new(),
            tls: None,
            netns: Some(host.netns.clone()),
        }
    }

    #[track_caller]
    fn configured(args: &[&str], tls: Option<super::tls::TestCerts>) -> Self {
        let mut last_err = String::new();
        for _ in 0..PORT_ATTEMPTS {
            // Its own loopback IP: a port freed while another test's etcd is
            // stopped cannot be taken by this one (whose peers would then
            // register into the wrong etcd). The test CA's certificate names
            // 127.0.0.1 only.
            let ip = if tls.is_some() {
                Ipv4Addr::LOCALHOST
            } else {
                next_loopback_ip()
            };
            let mut s = Self::unstarted("solo", ip, None);
            s.extra_args = args.iter().map(|a| a.to_string()).collect();
            s.tls = tls.clone();
            s.spawn();
            match s.wait_started(START_TIMEOUT) {
                Ok(()) => return s,
                Err(e) if e.contains("address already in use") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("etcd: ports kept being taken: {last_err}");
    }

    /// A member with fresh ports and temp dir, not started. With `cluster`
    /// `None` it is its own single-member cluster.
    fn unstarted(name: &str, ip: Ipv4Addr, cluster: Option<(String, String)>) -> Self {
        let client_port = free_port(ip);
        let mut peer_port = free_port(ip);
        while peer_port == client_port {
            peer_port = free_port(ip);
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("etcd-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for etcd: {e}"));
        let (initial_cluster, cluster_token) = cluster.unwrap_or_else(|| {
            (
                format!("{name}=http://{ip}:{peer_port}"),
                format!("solo-{}-{client_port}", std::process::id()),
            )
        });
        EtcdServer {
            name: name.to_string(),
            ip,
            client_port,
            peer_port,
            initial_cluster,
            cluster_token,
            dir,
            child: None,
            extra_args: Vec::new(),
            tls: None,
            netns: None,
        }
    }

    /// `http://<its loopback IP>:<client port>`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip, self.client_port)
    }

    /// `http://<its loopback IP>:<peer port>`.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }

    /// The IP it listens on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The member name given to `--name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file that holds etcd's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), LOG_TAIL)
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited (reaps it if it has).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// True when the member answers `/health` with true.
    pub fn is_healthy(&self) -> bool {
        match &self.tls {
            None => is_healthy(&self.endpoint()),
            Some(t) => t.is_healthy(&self.endpoint()),
        }
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "etcd {} is already running",
            self.name
        );
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path().display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let client = self.endpoint();
        let peer = self.peer_url();
        // On a lab host it also answers on the host's own 127.0.0.1, as
        // the etcd that `make run` starts does.
        let listen = match self.netns {
            Some(_) => format!("{client},http://127.0.0.1:{}", self.client_port),
            None => client.clone(),
        };
        let child = command_in(self.netns.as_deref(), etcd_bin())
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&listen)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&self.cluster_token)
            .arg("--initial-cluster-state")
            .arg("new")
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // No metrics/pprof listeners, no v2 API, small snapshots.
            .args(["--snapshot-count", "10000", "--enable-v2=false"])
            .args(&self.extra_args)
            .args(self.tls.iter().flat_map(|t| {
                [
                    "--cert-file".to_string(),
                    t.server_cert.display().to_string(),
                    "--key-file".to_string(),
                    t.server_key.display().to_string(),
                ]
            }))
            .env_remove("ETCD_DATA_DIR")
            .env_remove("ETCD_NAME")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (install it with `scripts/deps.sh etcd`, or set PIRATEBAY_TEST_ETCD_BIN)",
                    etcd_bin().display()
                )
            });
        self.child = Some(child);
    }

    /// Waits until the member is healthy; on an early exit or a timeout
    /// returns a message with the log tail (and kills the process).
    fn wait_started(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if !self.is_running() {
                return Err(format!(
                    "etcd {} exited during startup; log tail:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if self.is_healthy() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                self.kill();
                return Err(format!(
                    "etcd {} not healthy at {} after {timeout:?}; log tail:\n{}",
                    self.name,
                    self.endpoint(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again on the same ports with the same data and
    /// waits until it is healthy. Retries a few times if the old process's
    /// ports are still being released.
    #[track_caller]
    pub fn start(&mut self) {
        self.start_no_wait();
        if let Err(e) = self.wait_started(START_TIMEOUT) {
            if e.contains("address already in use") {
                let ok = try_wait_for(START_TIMEOUT, || {
                    self.spawn();
                    self.wait_started(START_TIMEOUT).ok()
                });
                if ok.is_some() {
                    return;
                }
            }
            panic!("{e}");
        }
    }

    /// Starts the process (same ports, same data) without waiting: a
    /// cluster member cannot be healthy until a quorum runs.
    pub fn start_no_wait(&mut self) {
        if self.is_running() {
            return;
        }
        self.spawn();
    }

    /// SIGKILL, then reap. No-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), libc::SIGTERM);
            if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// SIGSTOP: the process stays but answers nothing (a hung member).
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, libc::SIGCONT);
        }
    }

    /// [`stop`](Self::stop) then [`start`](Self::start): same ports, same data.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Kills the process, deletes the data dir and starts again: a fresh
    /// etcd on the same ports with all keys and leases lost.
    #[track_caller]
    pub fn wipe_and_restart(&mut self) {
        self.kill();
        let data = self.data_dir();
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .unwrap_or_else(|e| panic!("cannot remove {}: {e}", data.display()));
        }
        self.start();
    }

    /// `PUT key=value` through this member's gateway; panics on failure.
    #[track_caller]
    pub fn put(&self, key: &str, value: &str) {
        gateway_put(&self.endpoint(), key, value).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The value of `key` through this member's gateway; panics on failure.
    #[track_caller]
    pub fn get(&self, key: &str) -> Option<String> {
        gateway_get(&self.endpoint(), key).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of etcd members on loopback, each with its own ports and dir.
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts a three-member cluster and waits for a leader.
    #[track_caller]
    pub fn new() -> Self {
        Self::with_members(3)
    }

    /// Starts an `n`-member cluster and waits for a leader and every member
    /// healthy (retrying with fresh ports if a port was taken meanwhile).
    #[track_caller]
    pub fn with_members(n: usize) -> Self {
        assert!(n >= 1, "a cluster needs at least one member");
        let mut last_err = String::new();
        for attempt in 0..PORT_ATTEMPTS {
            let ip = next_loopback_ip();
            let mut members: Vec<EtcdServer> = (0..n)
                .map(|i| {
                    EtcdServer::unstarted(
                        &format!("m{i}"),
                        ip,
                        Some((String::new(), String::new())),
                    )
                })
                .collect();
            let initial = members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url()))
                .collect::<Vec<_>>()
                .join(",");
            let token = format!(
                "cluster-{}-{}-{attempt}",
                std::process::id(),
                members[0].client_port
            );
            for m in &mut members {
                m.initial_cluster = initial.clone();
                m.cluster_token = token.clone();
                m.spawn();
            }
            let mut cluster = EtcdCluster { members };
            match cluster.try_wait_healthy(START_TIMEOUT) {
                Ok(()) => return cluster,
                Err(e) if e.contains("address already in use") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("etcd cluster: ports kept being taken: {last_err}");
    }

    fn try_wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            for m in &mut self.members {
                if !m.is_running() {
                    return Err(format!(
                        "etcd {} exited during startup; log tail:\n{}",
                        m.name,
                        m.log_tail()
                    ));
                }
            }
            if self.members.iter().all(EtcdServer::is_healthy) && self.leader_index().is_some() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {} ---\n{}", m.name, m.log_tail()))
                    .collect();
                return Err(format!(
                    "etcd cluster not healthy after {timeout:?}\n{}",
                    logs.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A three-member cluster, one member on each of `hosts` (ports
    /// 2379/2380 in each namespace); waits for a leader.
    #[track_caller]
    pub fn on_hosts(hosts: &[Host]) -> Self {
        let mut members: Vec<EtcdServer> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                EtcdServer::unstarted_on(&format!("m{i}"), h, Some((String::new(), String::new())))
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("cluster-{}-{}", std::process::id(), hosts[0].netns);
        for m in &mut members {
            m.initial_cluster = initial.clone();
            m.cluster_token = token.clone();
            m.spawn();
        }
        let mut cluster = EtcdCluster { members };
        cluster
            .try_wait_healthy(START_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        cluster
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Client endpoints of all members, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// The endpoints joined with commas (for `--etcd` and etcdctl).
    pub fn endpoints_csv(&self) -> String {
        self.endpoints().join(",")
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &EtcdServer {
        &self.members[i]
    }

    /// Member `i`, mutable (to kill, stop, pause or restart it).
    pub fn member_mut(&mut self, i: usize) -> &mut EtcdServer {
        &mut self.members[i]
    }

    /// The index of the current leader, if the members that answer agree on
    /// one that is itself alive and answering.
    pub fn leader_index(&self) -> Option<usize> {
        let statuses: Vec<Option<(u64, u64)>> = self
            .members
            .iter()
            .map(|m| m.pid().and_then(|_| member_status(&m.endpoint())))
            .collect();
        let mut leader = None;
        for (_, l) in statuses.iter().flatten() {
            if *l == 0 || leader.is_some_and(|x| x != *l) {
                return None;
            }
            leader = Some(*l);
        }
        let leader = leader?;
        statuses
            .iter()
            .position(|s| s.is_some_and(|(id, _)| id == leader))
    }

    /// Waits until the live members agree on a live leader; returns its index.
    #[track_caller]
    pub fn wait_for_leader(&self, timeout: Duration) -> usize {
        wait_for(timeout, "etcd cluster to elect a leader", || {
            self.leader_index()
        })
    }

    /// Waits until there is a leader and every running member is healthy
    /// (serves quorum reads).
    #[track_caller]
    pub fn wait_for_quorum(&self, timeout: Duration) {
        wait_for(timeout, "etcd cluster to have quorum", || {
            let healthy = self
                .members
                .iter()
                .filter(|m| m.pid().is_some())
                .all(EtcdServer::is_healthy);
            (healthy && self.leader_index().is_some()).then_some(())
        })
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again (same ports, same data) and waits until it is
    /// healthy (needs a quorum of the others to be running).
    #[track_caller]
    pub fn restart(&mut self, i: usize) {
        self.members[i].stop();
        self.members[i].start_no_wait();
        let m = &self.members[i];
        wait_for(START_TIMEOUT, &format!("etcd {} to rejoin", m.name), || {
            m.is_healthy().then_some(())
        });
    }

    /// Waits for a leader, SIGKILLs it and returns its index.
    #[track_caller]
    pub fn kill_leader(&mut self) -> usize {
        let i = self.wait_for_leader(START_TIMEOUT);
        self.kill(i);
        i
    }
}

impl Default for EtcdServer {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for EtcdCluster {
    fn default() -> Self {
        Self::new()
    }
}

/// The key a peer registers under: `/<namespace>/peers/<id>` (the layout
/// ARCHITECTURE.md documents; written here, not taken from the library).
pub fn peer_key(namespace: &str, id: &str) -> String {
    format!("/{}/peers/{id}", namespace.trim_matches('/'))
}
