"""The LAN lab for the benchmarks: the same commands, names, addresses and
locks as the tests' tests/it/support/lab.rs (read its module doc first).

Hosts are network namespaces joined by veth pairs to one bridge; each link
can be capped both ways with `tc ... tbf`. A lab owns `198.18.<n>.0/24`
(n in 1..=255) while it holds an exclusive flock on
/run/piratebay-lab/<n>.lock (released by the kernel when this process
dies, however it dies); every name derives from n (`pbl<n>-br`,
`pbl<n>-<i>`, `pbl<n>-h<i>`). A new lab first removes the leftovers of
labs whose lock it can take (their owner is dead) and never touches a lab
whose lock is held.

    with Lab() as lab:
        h = lab.add_host(rate_mbit=400)
        h.popen(["piratebay-sync", "serve", ...])   # runs "on" host h
        h.tx_bytes()                               # its interface counter

Needs root and CAP_NET_ADMIN plus ip, tc (iproute2); exits with one line
saying what is missing. python3 standard library only.
"""

import fcntl
import os
import signal
import subprocess
import sys
import time

LOCK_DIR = "/run/piratebay-lab"
PREFIX = "pbl"
TBF_BURST = "256kb"
TBF_LATENCY = "50ms"
MAX_HOSTS = 120


def _run(cmd, check=True):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    if check and p.returncode != 0:
        raise RuntimeError(f"lab: {' '.join(cmd)} failed: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout.decode(errors="replace")


def _quiet(cmd):
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=20)


# The kernel's ARP table is shared by every network namespace; past
# gc_thresh3 (1024 by default) new neighbours are refused ("neighbor table
# overflow") and hosts of every live lab stop reaching new peers. A 47-host
# swarm needs 47 x 46 entries. Raised, never lowered (tests/it/support/lab.rs
# does the same).
NEIGH_THRESH = (("gc_thresh1", 1024), ("gc_thresh2", 16384), ("gc_thresh3", 32768))


def _raise_neighbour_limits():
    for name, want in NEIGH_THRESH:
        path = f"/proc/sys/net/ipv4/neigh/default/{name}"
        with open(path) as f:
            now = int(f.read().strip())
        if now < want:
            with open(path, "w") as f:
                f.write(str(want))


def _missing_prerequisite():
    if os.geteuid() != 0:
        return (f"the LAN lab needs root with CAP_NET_ADMIN (network namespaces, veth, tc); "
                f"running as uid {os.geteuid()}")
    for tool in ("ip", "tc"):
        try:
            subprocess.run([tool, "-V"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            return f"the LAN lab needs `{tool}`: run scripts/deps.sh bench"
    return None


def _try_lock(n):
    """The open, flocked lock file of /24 number n, or None if a live process holds it."""
    fd = os.open(os.path.join(LOCK_DIR, f"{n}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _netns_names():
    return [l.split()[0] for l in _run(["ip", "netns", "list"]).splitlines() if l.strip()]


def _link_names():
    names = []
    for line in _run(["ip", "-o", "link", "show"]).splitlines():
        parts = line.split(": ")
        if len(parts) > 1:
            names.append(parts[1].split("@")[0])
    return names


def _lab_number(name):
    if not name.startswith(PREFIX) or "-" not in name:
        return None
    num = name[len(PREFIX):].split("-", 1)[0]
    return int(num) if num.isdigit() and 0 < int(num) < 256 else None


def _kill_all_in(ns):
    for _ in range(50):
        p = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
        pids = [int(x) for x in p.stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _destroy(n):
    """Kills what runs in lab n's namespaces, deletes them and its links (lock held)."""
    mine = f"{PREFIX}{n}-"
    for ns in _netns_names():
        if ns.startswith(mine):
            _kill_all_in(ns)
            _quiet(["ip", "netns", "del", ns])
    for link in _link_names():
        if link.startswith(mine):
            _quiet(["ip", "link", "del", link])


def _sweep_leftovers():
    numbers = sorted({n for n in map(_lab_number, _netns_names() + _link_names()) if n})
    for n in numbers:
        fd = _try_lock(n)
        if fd is not None:
            _destroy(n)
            os.close(fd)


class Host:
    """A network namespace on the lab's bridge; its LAN interface is eth0."""

    def __init__(self, netns, ip, bridge_port):
        self.netns, self.ip, self.bridge_port, self.iface = netns, ip, bridge_port, "eth0"

    def cmd(self, argv):
        """`argv` prefixed to run on this host."""
        return ["ip", "netns", "exec", self.netns] + list(argv)

    def run(self, argv, check=True):
        return _run(self.cmd(argv), check=check)

    def popen(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.cmd(argv), **kw)

    def set_rate(self, mbit):
        """Caps the link both ways at `mbit` Mbit/s (tbf on eth0 and on the bridge end)."""
        tbf = ["root", "tbf", "rate", f"{mbit}mbit", "burst", TBF_BURST, "latency", TBF_LATENCY]
        self.run(["tc", "qdisc", "replace", "dev", self.iface] + tbf)
        _run(["tc", "qdisc", "replace", "dev", self.bridge_port] + tbf)

    def tx_bytes(self):
        """Bytes sent on eth0, read inside the namespace (ip netns exec mounts its /sys)."""
        return int(self.run(["cat", f"/sys/class/net/{self.iface}/statistics/tx_bytes"]).strip())


class Lab:
    """A lab: one /24, a bridge, hosts; torn down on exit (also on SIGTERM/SIGINT)."""

    def __init__(self):
        why = _missing_prerequisite()
        if why:
            sys.exit(f"bench: {why}")
        os.makedirs(LOCK_DIR, exist_ok=True)
        self.n = None
        self.fd = None
        self.hosts = []

    def __enter__(self):
        # A SIGTERM (make's, a timeout's) runs the teardown too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
        _sweep_leftovers()
        _raise_neighbour_limits()
        start = os.getpid() % 255
        for k in range(255):
            n = (start + k) % 255 + 1
            fd = _try_lock(n)
            if fd is None:
                continue
            _destroy(n)
            if f" 198.18.{n}." in _run(["ip", "-4", "-o", "addr", "show"]):
                os.close(fd)
                continue
            self.n, self.fd = n, fd
            br = self.bridge
            _run(["ip", "link", "add", br, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.bridge_ip}/25", "dev", br])
            _run(["ip", "link", "set", br, "up"])
            return self
        sys.exit("bench: every /24 of 198.18.0.0/16 is taken by a live lab or another network")

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if self.n is not None:
            _destroy(self.n)
            os.close(self.fd)
            self.n = None

    @property
    def bridge(self):
        return f"{PREFIX}{self.n}-br"

    @property
    def bridge_ip(self):
        return f"198.18.{self.n}.1"

    def add_host(self, rate_mbit=None):
        """A new host on the LAN (default route via the root namespace),
        its link capped at `rate_mbit` both ways if given."""
        i = len(self.hosts) + 1
        if i > MAX_HOSTS:
            raise RuntimeError(f"lab: at most {MAX_HOSTS} hosts")
        h = Host(f"{PREFIX}{self.n}-h{i}", f"198.18.{self.n}.{i + 1}", f"{PREFIX}{self.n}-{i}")
        self.hosts.append(h)
        _run(["ip", "netns", "add", h.netns])
        _run(["ip", "link", "add", h.bridge_port, "type", "veth", "peer", "name", "eth0",
              "netns", h.netns])
        _run(["ip", "link", "set", h.bridge_port, "master", self.bridge])
        _run(["ip", "link", "set", h.bridge_port, "up"])
        h.run(["ip", "link", "set", "lo", "up"])
        h.run(["ip", "addr", "add", f"{h.ip}/25", "dev", "eth0"])
        h.run(["ip", "link", "set", "eth0", "up"])
        h.run(["ip", "route", "add", "default", "via", self.bridge_ip])
        if rate_mbit:
            h.set_rate(rate_mbit)
        return h
