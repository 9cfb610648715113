//! A LAN on one machine for tests: hosts are network namespaces joined by
//! veth pairs to a bridge, with per-link rate caps (`tc tbf`), packet loss
//! (iptables `statistic`), partitions (iptables DROP) and cut links
//! (`ip link set ... down`). `benches/lab.py` builds the same lab for the
//! benchmarks with the same commands and the same locks.
//!
//! # Addresses and names
//!
//! Only 198.18.0.0/16 is used (RFC 2544 benchmark space; 198.19.0.0/16 is
//! left to docker, see shared/brief/lan-lab.md). A lab owns one /24,
//! `198.18.<n>.0/24` with `n` in 1..=255, for as long as it holds an
//! exclusive `flock` on `/run/piratebay-lab/<n>.lock`. The kernel drops the
//! lock when the owning process dies, however it dies, so a lock that can
//! be taken means no live process owns that /24. Every name derives from
//! `n` (`pbl<n>-br` the bridge, `pbl<n>-<i>` the bridge end of host `i`'s
//! veth, `pbl<n>-h<i>` its namespace), so names are unique among live labs
//! in every process on the machine, and interface names stay <= 9 chars.
//!
//! The /24 is split in two networks: the LAN `198.18.<n>.0/25`, where the
//! root namespace is `.1` on the bridge (so the test process can check
//! hosts directly) and hosts are `.2` up; and an "other" network `.128/25`
//! (bridge `pbl<n>-ob`, no address in the root namespace, so unreachable
//! from the LAN) for hosts with a second interface.
//!
//! # Cleanup
//!
//! [`Lab`]'s drop (also during a panic) kills every process left in its
//! namespaces (processes the test started there), deletes the namespaces
//! (their veth pairs go with them) and the bridges, then releases the lock.
//! A run that was SIGKILLed leaves its lab behind: the next [`Lab::new`]
//! in any process sweeps every `pbl<n>-*` leftover whose lock it can take,
//! and never touches a lab whose lock is held (its owner is alive).
//!
//! Needs root with CAP_NET_ADMIN, and `ip`, `tc` and `iptables`
//! (`scripts/deps.sh test`); [`Lab::new`] panics with one line saying what
//! is missing.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::process::run_with_timeout;

/// Where the per-/24 lock files live (tmpfs: gone after a reboot, like
/// the namespaces they guard).
const LOCK_DIR: &str = "/run/piratebay-lab";
/// Name prefix of everything a lab creates.
const PREFIX: &str = "pbl";
/// How long one `ip`/`tc`/`iptables` command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);
/// tbf burst and queue latency used for every capped link (from
/// shared/brief/lan-lab.md; a burst below rate/HZ would cap lower).
const TBF_BURST: &str = "256kb";
const TBF_LATENCY: &str = "50ms";
/// Hosts per network (`.2` ..= `.126` on the LAN).
const MAX_HOSTS: u8 = 120;

/// `ip netns exec <ns> <program>` when `netns` is given, else `<program>`.
/// `ip netns exec` execs the program, so the child's pid is the program's.
pub fn command_in(netns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Runs a command, panicking with its output if it fails.
#[track_caller]
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run_with_timeout(cmd, CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "lab: {shown} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// `ip <args>` in the root namespace, panicking on failure.
#[track_caller]
fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// Runs a command and ignores failures (teardown of things that may be gone).
fn run_quiet(cmd: &mut Command) {
    let _ = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The kernel's ARP table is one table for every network namespace, and
/// past `gc_thresh3` entries (1024 by default) it refuses new neighbours
/// ("neighbour: arp_cache: neighbor table overflow!"): then no host of any
/// live lab can reach a peer it had not talked to. A 47-host swarm alone
/// needs 47 x 46 entries, and tests run labs side by side. Raised (never
/// lowered) to what [`MAX_HOSTS`]-host labs side by side need.
const NEIGH_THRESH: [(&str, u64); 3] = [
    ("/proc/sys/net/ipv4/neigh/default/gc_thresh1", 1024),
    ("/proc/sys/net/ipv4/neigh/default/gc_thresh2", 16384),
    ("/proc/sys/net/ipv4/neigh/default/gc_thresh3", 32768),
];

/// Raises the shared neighbour table's limits to [`NEIGH_THRESH`].
fn raise_neighbour_limits() {
    for (path, want) in NEIGH_THRESH {
        let now: Option<u64> = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if now.is_some_and(|n| n < want) {
            std::fs::write(path, want.to_string())
                .unwrap_or_else(|e| panic!("lab: cannot raise {path} to {want}: {e}"));
        }
    }
}

/// One line saying why the lab cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!(
            "LAN lab tests need root with CAP_NET_ADMIN (network namespaces, veth, tc, iptables); \
             running as uid {euid}: run them as root, as CI does"
        ));
    }
    // CAP_NET_ADMIN (12) for links, tc and iptables; CAP_SYS_ADMIN (21)
    // for `ip netns add`, which mounts the namespace.
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    for (bit, name) in [(12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")] {
        if caps & (1 << bit) == 0 {
            return Some(format!(
                "LAN lab tests need {name} (network namespaces, veth, tc, iptables), which this \
                 process lacks: run them as root outside a restricted container, as CI does"
            ));
        }
    }
    for tool in ["ip", "tc", "iptables"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "LAN lab tests need `{tool}`, which is not installed: run scripts/deps.sh test"
            ));
        }
    }
    None
}

/// The lock of /24 number `n`, if no live process holds it.
fn try_lock(n: u8) -> Option<File> {
    let path = Path::new(LOCK_DIR).join(format!("{n}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("lab: cannot open {}: {e}", path.display()));
    // std's File::try_lock is newer than the crate's MSRV (1.85).
    // SAFETY: flock(2) on a descriptor owned by `file`, alive for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Some(file);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        return None;
    }
    panic!("lab: cannot lock {}: {err}", path.display())
}

/// Names of the network namespaces on the machine.
fn netns_names() -> Vec<String> {
    let out = ip(&["netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Names of the links in the root namespace.
fn link_names() -> Vec<String> {
    let out = ip(&["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// The /24 number of a lab name (`pbl12-h3` -> 12).
fn lab_number(name: &str) -> Option<u8> {
    let rest = name.strip_prefix(PREFIX)?;
    let (num, _) = rest.split_once('-')?;
    num.parse().ok()
}

/// Kills what runs in lab `n`'s namespaces and deletes them and its links.
/// The caller holds lab `n`'s lock.
fn destroy(n: u8) {
    let mine = format!("{PREFIX}{n}-");
    for ns in netns_names().into_iter().filter(|s| s.starts_with(&mine)) {
        kill_all_in(&ns);
        run_quiet(Command::new("ip").args(["netns", "del", &ns]));
    }
    for link in link_names().into_iter().filter(|s| s.starts_with(&mine)) {
        run_quiet(Command::new("ip").args(["link", "del", &link]));
    }
}

/// SIGKILLs every process in namespace `ns` and waits (briefly) until none is left.
fn kill_all_in(ns: &str) {
    for _ in 0..50 {
        let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
            return;
        };
        let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            super::process::send_signal(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes the leftovers of labs whose owner is dead (their lock can be taken).
fn sweep_leftovers() {
    let mut numbers: Vec<u8> = netns_names()
        .iter()
        .chain(link_names().iter())
        .filter_map(|n| lab_number(n))
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    for n in numbers {
        if let Some(lock) = try_lock(n) {
            destroy(n);
            drop(lock);
        }
    }
}

/// True when an address of 198.18.<n>.0/24 is already on an interface of
/// the root namespace that is not ours (someone else's network there).
fn subnet_in_use(n: u8) -> bool {
    let out = ip(&["-4", "-o", "addr", "show"]);
    let needle = format!(" 198.18.{n}.");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains(&needle))
}

/// A network namespace on the lab's bridge: its LAN interface is `eth0`
/// (`eth1` on a [`Lab::add_two_interface_host`]).
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name (`pbl<n>-h<i>`).
    pub netns: String,
    /// Its LAN address.
    pub ip: Ipv4Addr,
    /// The bridge end of its LAN veth, in the root namespace.
    pub bridge_port: String,
    /// The LAN interface inside the namespace.
    pub iface: String,
}

impl Host {
    /// A `Command` running `program` on this host.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(Some(&self.netns), program)
    }

    /// Runs `program args` on this host, panicking if it fails.
    #[track_caller]
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        run(self.command(program).args(args))
    }

    /// Caps this host's link both ways (upload on `eth0`, download on the
    /// bridge end) at `mbit` Mbit/s with tbf; replaces an earlier cap.
    #[track_caller]
    pub fn set_rate(&self, mbit: u32) {
        let rate = format!("{mbit}mbit");
        let tbf = [
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            TBF_BURST,
            "latency",
            TBF_LATENCY,
        ];
        let mut up = vec!["qdisc", "replace", "dev", &self.iface];
        up.extend(tbf);
        self.run("tc", &up);
        let mut down = vec!["qdisc", "replace", "dev", &self.bridge_port];
        down.extend(tbf);
        run(Command::new("tc").args(&down));
    }

    /// Drops `percent` % of the packets this host sends and of those it
    /// receives on its LAN interface, at random (iptables `statistic`:
    /// this kernel has no netem).
    #[track_caller]
    pub fn set_loss(&self, percent: f64) {
        let p = format!("{}", percent / 100.0);
        for (chain, dir) in [("OUTPUT", "-o"), ("INPUT", "-i")] {
            self.run(
                "iptables",
                &[
                    "-w",
                    "-A",
                    chain,
                    dir,
                    &self.iface,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            );
        }
    }

    /// Drops every packet between this host and `other` (both ways, on
    /// this host): a partition, until [`heal`](Self::heal).
    #[track_caller]
    pub fn partition_from(&self, other: Ipv4Addr) {
        let o = other.to_string();
        self.run("iptables", &["-w", "-I", "INPUT", "-s", &o, "-j", "DROP"]);
        self.run("iptables", &["-w", "-I", "OUTPUT", "-d", &o, "-j", "DROP"]);
    }

    /// Drops TCP packets from `from` to this host's port `port`: `from`
    /// cannot open a connection to it (it hangs, as behind a firewall),
    /// everything else still works.
    #[track_caller]
    pub fn drop_tcp_from(&self, from: Ipv4Addr, port: u16) {
        self.run(
            "iptables",
            &[
                "-w",
                "-I",
                "INPUT",
                "-p",
                "tcp",
                "-s",
                &from.to_string(),
                "--dport",
                &port.to_string(),
                "-j",
                "DROP",
            ],
        );
    }

    /// Removes every iptables rule on this host (partitions and loss).
    #[track_caller]
    pub fn heal(&self) {
        self.run("iptables", &["-w", "-F", "INPUT"]);
        self.run("iptables", &["-w", "-F", "OUTPUT"]);
    }

    /// Cuts this host's LAN link (`ip link set eth0 down`).
    #[track_caller]
    pub fn link_down(&self) {
        self.run("ip", &["link", "set", &self.iface, "down"]);
    }

    /// Plugs the LAN link back in.
    #[track_caller]
    pub fn link_up(&self) {
        self.run("ip", &["link", "set", &self.iface, "up"]);
    }

    /// Bytes this host has received on its LAN link (the bridge end's
    /// transmit counter, read from the root namespace).
    pub fn rx_bytes(&self) -> u64 {
        read_counter(&self.bridge_port, "tx_bytes")
    }

    /// Bytes this host has sent on its LAN link.
    pub fn tx_bytes(&self) -> u64 {
        read_counter(&self.bridge_port, "rx_bytes")
    }
}

fn read_counter(link: &str, counter: &str) -> u64 {
    let p: PathBuf = ["/sys/class/net", link, "statistics", counter]
        .iter()
        .collect();
    std::fs::read_to_string(&p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A lab: its /24, its bridges and hosts. Torn down on drop.
pub struct Lab {
    n: u8,
    hosts: Vec<Host>,
    other_bridge: bool,
    next_other: u8,
    _lock: File,
}

impl Lab {
    /// Takes a free /24 (sweeping leftovers of dead runs first) and builds
    /// the LAN bridge with the root namespace on `.1`. Panics with one line
    /// if this machine cannot run the lab (no root, no `ip`/`tc`/`iptables`).
    #[track_caller]
    pub fn new() -> Lab {
        if let Some(why) = missing_prerequisite() {
            panic!("{why}");
        }
        std::fs::create_dir_all(LOCK_DIR)
            .unwrap_or_else(|e| panic!("lab: cannot create {LOCK_DIR}: {e}"));
        sweep_leftovers();
        raise_neighbour_limits();
        // Spread processes over the range so they rarely try the same /24.
        let start = (std::process::id() % 255) as u8;
        for k in 0..255u16 {
            let n = ((u16::from(start) + k) % 255 + 1) as u8;
            let Some(lock) = try_lock(n) else { continue };
            destroy(n);
            if subnet_in_use(n) {
                continue;
            }
            let lab = Lab {
                n,
                hosts: Vec::new(),
                other_bridge: false,
                next_other: 130,
                _lock: lock,
            };
            let br = lab.bridge();
            ip(&["link", "add", &br, "type", "bridge"]);
            ip(&[
                "addr",
                "add",
                &format!("{}/25", lab.bridge_ip()),
                "dev",
                &br,
            ]);
            ip(&["link", "set", &br, "up"]);
            return lab;
        }
        panic!("lab: every /24 of 198.18.0.0/16 is taken by a live lab or another network");
    }

    /// `198.18.<n>.1`: the root namespace's address on the LAN (the
    /// hosts' default gateway).
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.n, 1)
    }

    /// The LAN bridge's name.
    pub fn bridge(&self) -> String {
        format!("{PREFIX}{}-br", self.n)
    }

    /// The hosts made so far.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// A new host on the LAN (`eth0`) with an uncapped link and a default
    /// route via the root namespace.
    #[track_caller]
    pub fn add_host(&mut self) -> Host {
        self.new_host(false)
    }

    /// A host with two interfaces: `eth0` on the "other" network
    /// (`198.18.<n>.128/25`, unreachable from the LAN), created first and
    /// holding the default route (via a gateway that does not exist), and
    /// `eth1` on the LAN, where etcd is reached through the LAN's own
    /// route. Returns the host (its `ip` is the LAN address) and the
    /// address on the other network.
    #[track_caller]
    pub fn add_two_interface_host(&mut self) -> (Host, Ipv4Addr) {
        let host = self.new_host(true);
        let other = Ipv4Addr::new(198, 18, self.n, self.next_other - 1);
        (host, other)
    }

    #[track_caller]
    fn new_host(&mut self, other_first: bool) -> Host {
        let i = self.hosts.len() as u8 + 1;
        assert!(i <= MAX_HOSTS, "lab: at most {MAX_HOSTS} hosts");
        let netns = format!("{PREFIX}{}-h{i}", self.n);
        let bridge_port = format!("{PREFIX}{}-{i}", self.n);
        let host = Host {
            netns: netns.clone(),
            ip: Ipv4Addr::new(198, 18, self.n, i + 1),
            bridge_port: bridge_port.clone(),
            iface: if other_first { "eth1" } else { "eth0" }.into(),
        };
        // Recorded before it exists, so a failure below still tears it down.
        self.hosts.push(host.clone());
        ip(&["netns", "add", &netns]);
        host.run("ip", &["link", "set", "lo", "up"]);
        if other_first {
            let ob = format!("{PREFIX}{}-ob", self.n);
            if !self.other_bridge {
                ip(&["link", "add", &ob, "type", "bridge"]);
                ip(&["link", "set", &ob, "up"]);
                self.other_bridge = true;
            }
            let addr = Ipv4Addr::new(198, 18, self.n, self.next_other);
            self.next_other += 1;
            let port = format!("{bridge_port}o");
            ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ]);
            ip(&["link", "set", &port, "master", &ob]);
            ip(&["link", "set", &port, "up"]);
            host.run("ip", &["addr", "add", &format!("{addr}/25"), "dev", "eth0"]);
            host.run("ip", &["link", "set", "eth0", "up"]);
        }
        ip(&[
            "link",
            "add",
            &bridge_port,
            "type",
            "veth",
            "peer",
            "name",
            &host.iface,
            "netns",
            &netns,
        ]);
        ip(&["link", "set", &bridge_port, "master", &self.bridge()]);
        ip(&["link", "set", &bridge_port, "up"]);
        host.run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/25", host.ip),
                "dev",
                &host.iface,
            ],
        );
        host.run("ip", &["link", "set", &host.iface, "up"]);
        let gateway = if other_first {
            Ipv4Addr::new(198, 18, self.n, 129).to_string()
        } else {
            self.bridge_ip().to_string()
        };
        host.run("ip", &["route", "add", "default", "via", &gateway]);
        host
    }

    /// `n` hosts, each link capped at `mbit` both ways (`None`: uncapped).
    #[track_caller]
    pub fn add_hosts(&mut self, n: usize, mbit: Option<u32>) -> Vec<Host> {
        (0..n)
            .map(|_| {
                let h = self.add_host();
                if let Some(m) = mbit {
                    h.set_rate(m);
                }
                h
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        destroy(self.n);
        // The lock file stays (it is reused); the lock goes with `_lock`.
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lab_numbers_parse_only_our_names() {
        assert_eq!(super::lab_number("pbl12-h3"), Some(12));
        assert_eq!(super::lab_number("pbl7-br"), Some(7));
        assert_eq!(super::lab_number("pbl12"), None);
        assert_eq!(super::lab_number("pbbr0"), None);
        assert_eq!(super::lab_number("eth0"), None);
    }
}
