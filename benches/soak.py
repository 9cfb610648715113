#!/usr/bin/env python3
"""Soak test (`make soak`, issue 5): many peers, many downloads, chaos.

On loopback: a 3-member etcd cluster and N `piratebay-sync serve` peers on
127.0.0.11, 127.0.0.12, ... (own dataset, own state dir, `--ttl 5`). The
datasets hold random files of log-uniform sizes (1 KiB to 64 MiB); most
files are copied into 2 to 4 peers' datasets so a download can fail over.

For `--minutes` a few workers run `piratebay-sync get <sha1> -o <out>
--json` for random files (the downloads are spread over the whole run)
while a chaos loop kills random peers (SIGKILL or SIGTERM) and restarts
them later with the same dataset and state dir, and now and then kills
one etcd member (never two at once) and restarts it. A failed download
is retried with the same output path (so it resumes from its `.part`).
After the chaos every peer and member is back and unfinished downloads
get a few calm attempts.

Checked:
- every completed output has the expected SHA1 (hashlib): else a WRONG
  OUTPUT;
- every failed attempt exits non-zero with its error on one
  `piratebay-sync: ...` line on stderr (log lines `[time LEVEL] ...`
  aside), no panic, no backtrace, no death by a signal we did not send;
- every download completes in the end (resumable);
- no peer panics or exits by itself, every peer stops on SIGTERM;
- every peer is registered in etcd again after the chaos;
- peer memory (VmRSS, sampled every 2 s): no sample above --max-rss-mib,
  no steady climb within one process lifetime.

Prints its counts at the end. Exit status 0 only if the run is clean.
Peer, etcd and get logs are kept in the run directory when it is not
(their paths are printed); a clean run removes everything.

python3 standard library only. Short run while developing:
    python3 benches/soak.py --peers 6 --minutes 1 --downloads 20
"""

import argparse
import hashlib
import heapq
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

KIB = 1024
MIB = 1024 * 1024

# env_logger lines: `[2025-11-25T10:13:00Z WARN ] message`.
LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\dT\S+\s+(ERROR|WARN|INFO|DEBUG|TRACE)\b")
PANIC = re.compile(r"panicked at|stack backtrace|RUST_BACKTRACE|SIGSEGV|core dumped")


def log(msg):
    print(f"soak: {msg}", flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=int, default=20, help="number of peers (default 20)")
    p.add_argument("--minutes", type=float, default=5.0, help="chaos duration (default 5)")
    p.add_argument("--downloads", type=int, default=200, help="downloads to run (default 200)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--workers", type=int, default=3, help="concurrent downloads (default 3)")
    p.add_argument("--data-mib", type=int, default=None,
                   help="data on disk over all datasets, copies included (default 75 per peer)")
    p.add_argument("--attempts", type=int, default=8,
                   help="attempts per download during the chaos (default 8)")
    p.add_argument("--calm-attempts", type=int, default=3,
                   help="attempts left after the chaos for an unfinished download (default 3)")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds before one get attempt is interrupted (default 180)")
    p.add_argument("--max-rss-mib", type=float, default=200.0,
                   help="a peer above this VmRSS fails the run (default 200)")
    p.add_argument("--max-rate", default="100M",
                   help="--max-rate of every get, so kills can land mid-transfer "
                        "(default 100M, 100 MiB/s: about a gigabit LAN; 0 for none)")
    p.add_argument("--keep", action="store_true", help="keep the run directory even when clean")
    a = p.parse_args()
    if a.peers < 2:
        p.error("--peers must be at least 2")
    if a.downloads < 1 or a.workers < 1 or a.minutes <= 0:
        p.error("--downloads, --workers and --minutes must be positive")
    if a.peers > 240:
        p.error("--peers must be at most 240 (one 127.0.0.x address each)")
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    if a.data_mib is None:
        a.data_mib = 75 * a.peers
    return a


# ---------------------------------------------------------------- processes


def spawn(cmd, log_path, env=None):
    """Starts `cmd` in its own session (a terminal Ctrl-C reaches only this
    script, which then stops everything in order), output appended to log_path."""
    with open(log_path, "ab") as logf:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                env=env or common.clean_env(), start_new_session=True)


def wait_exit(proc, timeout):
    """Waits up to `timeout` s for proc to exit; returns its code or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            return rc
        time.sleep(0.05)
    return proc.poll()


def stop_proc(proc, timeout=15.0):
    """SIGTERM, then SIGKILL after `timeout`; returns (exit code, needed SIGKILL)."""
    if proc.poll() is not None:
        return proc.returncode, False
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    rc = wait_exit(proc, timeout)
    if rc is not None:
        return rc, False
    proc.kill()
    return proc.wait(), True


def pick_port(used):
    """A free 127.0.0.1 port below the ephemeral range, so a restarted etcd
    member finds its ports free again."""
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(20000, 32000)
        if port in used:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        used.add(port)
        return port


def rss_kib(pid, field="VmRSS"):
    """VmRSS (or another /proc/<pid>/status field) in KiB, None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


# ---------------------------------------------------------------- etcd


class EtcdMember:
    def __init__(self, name, root, client_port, peer_port):
        self.name = name
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.log_path = os.path.join(self.dir, "etcd.log")
        self.endpoint = f"http://127.0.0.1:{client_port}"
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        self.proc = None
        self.initial_cluster = None
        self.token = None

    def start(self):
        etcd = common.find_tool("etcd")
        with open(self.log_path, "ab") as f:
            f.write(f"=== soak: start at {time.strftime('%H:%M:%S')}\n".encode())
        env = {k: v for k, v in common.clean_env().items() if not k.startswith("ETCD_")}
        # Once the data dir exists the --initial-* flags are ignored: a
        # restart rejoins the same cluster.
        self.proc = spawn([
            etcd, "--name", self.name, "--data-dir", os.path.join(self.dir, "data"),
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster, "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new", "--enable-v2=false",
        ], self.log_path, env=env)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def healthy(self):
        return common.etcd_healthy(self.endpoint)


class EtcdCluster:
    def __init__(self, root, used_ports):
        self.members = [
            EtcdMember(f"m{i}", root, pick_port(used_ports), pick_port(used_ports)) for i in range(3)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = f"soak-{os.getpid()}-{self.members[0].endpoint.rsplit(':', 1)[1]}"
        for m in self.members:
            m.initial_cluster, m.token = initial, token
        self.endpoints = ",".join(m.endpoint for m in self.members)

    def start(self, timeout=60.0):
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(m.healthy() for m in self.members):
                return True
            for m in self.members:
                if not m.alive():
                    sys.exit(f"soak: etcd {m.name} exited; log tail:\n{common.tail(m.log_path, 8)}")
            time.sleep(0.1)
        return False

    def stop(self):
        for m in self.members:
            if m.proc is not None:
                stop_proc(m.proc, 10)


# ---------------------------------------------------------------- peers


class Peer:
    def __init__(self, idx, root, binary, endpoints, witness):
        self.idx = idx
        self.name = f"p{idx:02d}"
        self.ip = f"127.0.0.{11 + idx}"
        self.dir = os.path.join(root, self.name)
        self.dataset = os.path.join(self.dir, "dataset")
        self.state = os.path.join(self.dir, "state")
        self.log_path = os.path.join(self.dir, "serve.log")
        os.makedirs(self.dataset)
        os.makedirs(self.state)
        self.binary = binary
        self.endpoints = endpoints
        self.witness = witness  # never killed: its memory is watched for the whole run
        self.proc = None
        self.started_at = 0.0
        self.incarnation = 0
        self.files = []  # sha1s

    def start(self):
        self.incarnation += 1
        self.started_at = time.monotonic()
        with open(self.log_path, "ab") as f:
            f.write(f"=== soak: start #{self.incarnation} at {time.strftime('%H:%M:%S')}\n".encode())
        env = common.clean_env()
        env["RUST_LOG"] = "info"
        self.proc = spawn([
            self.binary, "serve", "--listen", f"{self.ip}:0", "--dataset", self.dataset,
            "--state-dir", self.state, "--etcd", self.endpoints, "--ttl", "5",
        ], self.log_path, env=env)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


# ---------------------------------------------------------------- data


def log_uniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def make_data(rng, peers, budget_bytes, scratch):
    """Random files copied into 1-4 peers' datasets until the budget is
    spent and every peer holds at least two. Returns {sha1: (size, holders)}."""
    files = {}
    spent = 0
    n = 0
    while spent < budget_bytes or min(len(p.files) for p in peers) < 2:
        size = log_uniform(rng, KIB, 64 * MIB)
        k = min(len(peers), rng.choices([1, 2, 3, 4], weights=[25, 35, 25, 15])[0])
        if spent + size * k > budget_bytes * 1.05 and min(len(p.files) for p in peers) >= 2:
            break
        # Fill the emptiest peers first, ties broken at random.
        holders = sorted(peers, key=lambda p: (len(p.files), rng.random()))[:k]
        data = random.Random(rng.random()).randbytes(size)
        sha1 = hashlib.sha1(data).hexdigest()
        name = f"f{n:04d}-{size}.bin"
        n += 1
        src = os.path.join(scratch, name)
        with open(src, "wb") as f:
            f.write(data)
        for p in holders:
            shutil.copyfile(src, os.path.join(p.dataset, name))
            p.files.append(sha1)
        os.unlink(src)
        files[sha1] = (size, [p.idx for p in holders])
        spent += size * k
    return files, spent


# ---------------------------------------------------------------- stats


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.attempts = 0
        self.completed = 0
        self.resumed = 0  # completed after at least one failed attempt
        self.resumed_bytes_jobs = 0  # ... of which kept bytes from a .part
        self.failed_for_good = []  # (job id, sha1, last reason)
        self.wrong = []  # descriptions
        self.unclear = []  # descriptions
        self.failure_reasons = {}  # normalized reason -> count
        self.timeouts = 0
        self.bytes_received = 0
        self.bytes_completed = 0
        self.get_max_rss_kib = 0
        self.get_max_rss_size = 0  # size of the file that get was downloading
        self.get_seconds = []  # wall time of each successful get process
        self.peer_kills = {"SIGKILL": 0, "SIGTERM": 0}
        self.peer_restarts = 0
        self.targeted_kills = 0  # of a holder of a download in flight at that moment
        self.peer_problems = []  # crashes, slow stops, non-zero exits
        self.etcd_kills = {"SIGKILL": 0, "SIGTERM": 0}
        self.etcd_restarts = 0
        self.problem_logs = set()

    def reason(self, text):
        with self.lock:
            self.failure_reasons[text] = self.failure_reasons.get(text, 0) + 1


def normalize_reason(msg):
    """An error line with its variable parts (sha1s, ids, addresses,
    numbers, paths) replaced, so equal causes count together."""
    s = msg.removeprefix("piratebay-sync: ")
    s = re.sub(r"\b[0-9a-f]{40}\b", "<sha>", s)
    s = re.sub(r"\(([^()]*\([^()]*\)[^()]*)+\)", "(<details>)", s)
    s = re.sub(r"/\S+", "<path>", s)
    s = re.sub(r"\b\d+(\.\d+){3}:\d+\b", "<addr>", s)
    s = re.sub(r"\b[0-9a-f]{16}\b", "<id>", s)
    s = re.sub(r"\b\d+\b", "N", s)
    return s[:160]


# ---------------------------------------------------------------- downloads


def parse_rate(text):
    """`100M` -> 100 MiB/s as get reads it (only to guess how long a get takes); 0 -> None."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)", text.strip().upper())
    if not m:
        raise SystemExit(f"soak: --max-rate {text!r}: expected a number with K, M or G")
    v = float(m.group(1)) * {"": 1, "K": KIB, "M": MIB, "G": 1024 * MIB}[m.group(2)]
    return v or None


class Job:
    def __init__(self, jid, sha1, size):
        self.id = jid
        self.sha1 = sha1
        self.size = size
        self.attempts = 0
        self.failures = 0
        self.calm_left = None  # set when the chaos ends
        self.last_reason = ""


def sha1_file(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


class Downloads:
    """A heap of jobs by the time they may run; `workers` threads run them."""

    def __init__(self, args, binary, endpoints, run_dir, stats, files, rng):
        self.args = args
        self.binary = binary
        self.endpoints = endpoints
        self.dir = os.path.join(run_dir, "gets")
        self.client_state = os.path.join(run_dir, "client-state")
        os.makedirs(self.dir)
        os.makedirs(self.client_state)
        self.stats = stats
        self.cond = threading.Condition()
        self.heap = []
        self.seq = itertools.count()
        self.pending = 0
        self.parked = []  # out of attempts during the chaos: wait for calm
        self.calm = False
        self.stopping = False
        self.active = set()  # running get processes (for cleanup)
        self.running = {}  # job id -> sha1 of the downloads in flight
        self.snipe = None  # Chaos.snipe, set once both exist
        self.rate = parse_rate(args.max_rate) or 400e6
        self.threads = []
        self.done_log = []
        start = time.monotonic()
        spread = args.minutes * 60.0 * 0.9
        sha1s = sorted(files)
        for i in range(args.downloads):
            sha1 = rng.choice(sha1s)
            self.push(Job(i, sha1, files[sha1][0]), start + spread * i / args.downloads)
        self.pending = args.downloads

    def push(self, job, at):
        with self.cond:
            heapq.heappush(self.heap, (at, next(self.seq), job))
            self.cond.notify()

    def start(self):
        for i in range(self.args.workers):
            t = threading.Thread(target=self.worker, name=f"soak-get-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def set_calm(self):
        """The chaos is over: parked jobs and retries get their calm attempts now."""
        with self.cond:
            self.calm = True
            now = time.monotonic()
            for job in self.parked:
                job.calm_left = self.args.calm_attempts
                heapq.heappush(self.heap, (now, next(self.seq), job))
            self.parked = []
            items = []
            for _at, s, job in self.heap:
                if job.failures and job.calm_left is None:
                    job.calm_left = self.args.calm_attempts
                items.append((min(_at, now) if job.failures else _at, s, job))
            self.heap = items
            heapq.heapify(self.heap)
            self.cond.notify_all()

    def next_job(self):
        with self.cond:
            while not self.stopping:
                if self.pending == 0:
                    return None
                now = time.monotonic()
                if self.heap and self.heap[0][0] <= now:
                    return heapq.heappop(self.heap)[2]
                wait = self.heap[0][0] - now if self.heap else 0.5
                self.cond.wait(timeout=max(0.01, min(wait, 0.5)))
            return None

    def worker(self):
        while True:
            job = self.next_job()
            if job is None:
                return
            ok = self.attempt(job)
            with self.cond:
                if ok:
                    self.pending -= 1
                elif self.stopping:
                    return
                elif job.calm_left is not None:
                    job.calm_left -= 1
                    if job.calm_left <= 0:
                        self.pending -= 1
                        with self.stats.lock:
                            self.stats.failed_for_good.append((job.id, job.sha1, job.last_reason))
                    else:
                        heapq.heappush(self.heap, (time.monotonic() + 2.0, next(self.seq), job))
                elif self.calm:
                    job.calm_left = self.args.calm_attempts - 1
                    heapq.heappush(self.heap, (time.monotonic() + 2.0, next(self.seq), job))
                elif job.attempts >= self.args.attempts:
                    self.parked.append(job)
                else:
                    backoff = min(15.0, 2.0 * job.failures)
                    heapq.heappush(self.heap, (time.monotonic() + backoff, next(self.seq), job))
                self.cond.notify_all()

    def attempt(self, job):
        """One `get` run; returns True if the download completed and is correct."""
        st = self.stats
        job.attempts += 1
        base = os.path.join(self.dir, f"j{job.id:04d}")
        out = base + ".bin"
        out_log = f"{base}.a{job.attempts}.stdout"
        err_log = f"{base}.a{job.attempts}.stderr"
        env = common.clean_env()
        env["RUST_LOG"] = "warn"
        env["RUST_BACKTRACE"] = "1"
        cmd = [self.binary, "get", job.sha1, "-o", out, "--json",
               "--etcd", self.endpoints, "--state-dir", self.client_state]
        if self.args.max_rate not in ("0", ""):
            cmd += ["--max-rate", self.args.max_rate]
        with open(out_log, "wb") as o, open(err_log, "wb") as e:
            with self.cond:
                if self.stopping:
                    return False
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                        env=env, start_new_session=True)
                self.active.add(proc)
                self.running[job.id] = job.sha1
        with st.lock:
            st.attempts += 1
        if job.size >= MIB and self.snipe is not None:
            self.snipe(job.sha1, job.size / self.rate)
        interrupted = False
        started = time.monotonic()
        deadline = started + self.args.timeout
        rc = None
        # Peak RSS of this get: VmHWM of its own address space, read while
        # it runs (wait4's ru_maxrss would include this big python, whose
        # high-water mark a forked child inherits across exec).
        hwm = 0
        while rc is None:
            hwm = max(hwm, rss_kib(proc.pid, "VmHWM") or 0)
            try:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by stop()'s kill
                rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
                break
            if pid:
                rc = os.waitstatus_to_exitcode(status)
                proc.returncode = rc
                break
            now = time.monotonic()
            if not interrupted and now > deadline:
                interrupted = True
                proc.send_signal(signal.SIGINT)
                deadline = now + 20.0
            elif interrupted and now > deadline:
                proc.kill()
                deadline = now + 3600
            time.sleep(0.05)
        with self.cond:
            self.active.discard(proc)
            self.running.pop(job.id, None)
        if self.stopping:
            return False
        with st.lock:
            if hwm > st.get_max_rss_kib:
                st.get_max_rss_kib, st.get_max_rss_size = hwm, job.size
            if interrupted:
                st.timeouts += 1
        stdout = open(out_log, "rb").read().decode(errors="replace")
        stderr = open(err_log, "rb").read().decode(errors="replace")
        if rc == 0:
            return self.completed(job, out, stdout, err_log, time.monotonic() - started)
        return self.failed(job, out, rc, stderr, err_log, interrupted)

    def completed(self, job, out, stdout, err_log, seconds):
        st = self.stats
        try:
            summary = json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            summary = None
        actual = sha1_file(out) if os.path.exists(out) else None
        if actual != job.sha1 or summary is None or summary.get("sha1") != job.sha1:
            with st.lock:
                st.wrong.append(f"job {job.id}: get exited 0 but {out} has sha1 {actual} "
                                f"(expected {job.sha1}), summary {stdout.strip()[:200]!r}")
                st.problem_logs.add(err_log)
            return True  # done (wrongly): not retried
        for leftover in (out + ".part", out + ".part.state"):
            if os.path.exists(leftover):
                with st.lock:
                    st.unclear.append(f"job {job.id}: completed but left {leftover}")
        with st.lock:
            st.completed += 1
            st.bytes_completed += job.size
            st.bytes_received += int(summary.get("bytes_received", 0))
            st.get_seconds.append(seconds)
            if job.failures:
                st.resumed += 1
                if summary.get("resumed_bytes", 0) > 0:
                    st.resumed_bytes_jobs += 1
        os.unlink(out)
        return True

    def failed(self, job, out, rc, stderr, err_log, interrupted):
        st = self.stats
        job.failures += 1
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        messages = [ln for ln in lines if not LOG_LINE.match(ln)]
        problem = None
        if PANIC.search(stderr):
            problem = "panic or backtrace"
        elif rc < 0 and not interrupted:
            problem = f"killed by signal {-rc}"
        elif rc not in (1, 2):
            problem = f"exit code {rc}"
        elif len(messages) != 1 or not messages[0].startswith("piratebay-sync: "):
            problem = f"{len(messages)} non-log stderr lines"
        elif lines[-1] != messages[0]:
            problem = "error line is not the last line"
        if problem:
            with st.lock:
                st.unclear.append(f"job {job.id} attempt {job.attempts}: {problem}: see {err_log}")
                st.problem_logs.add(err_log)
            job.last_reason = problem
        else:
            reason = ("timeout: " if interrupted else "") + normalize_reason(messages[0])
            job.last_reason = reason
            st.reason(reason)
        if os.path.exists(out):
            actual = sha1_file(out)
            if actual != job.sha1:
                with st.lock:
                    st.wrong.append(f"job {job.id}: get failed but left {out} with sha1 {actual}")
        return False

    def stop(self):
        with self.cond:
            self.stopping = True
            procs = list(self.active)
            self.cond.notify_all()
        for p in procs:
            try:
                p.kill()
            except ProcessLookupError:
                pass

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def in_flight(self):
        """SHA1s of the downloads running now."""
        with self.cond:
            return set(self.running.values())

    def status(self):
        with self.cond:
            return self.pending, len(self.parked), len(self.active)


# ---------------------------------------------------------------- chaos


class Chaos:
    """Kills and restarts random peers and one etcd member at a time.

    Two kinds of peer kills: one every 2-8 s at random, and "snipes": when
    a download of 1 MiB or more starts, 30% of the time one of its holders
    is killed a moment later, mid-transfer (failover, resume). At most a
    quarter of the peers (at least 2) are down at once, random kills
    leave one of those slots to snipes; witnesses are never killed.
    """

    def __init__(self, rng, peers, cluster, stats, end_at, files):
        self.rng = rng
        self.files = files  # sha1 -> (size, holder idxs)
        self.in_flight = lambda: set()  # sha1s being downloaded now
        self.peers = peers
        self.cluster = cluster
        self.stats = stats
        self.end_at = end_at
        self.stop_event = threading.Event()
        self.lock = threading.Lock()  # guards peer.proc / member.proc swaps
        self.dead = {}  # peer idx -> restart time
        # Random kills leave one slot free for snipes.
        self.max_dead = max(2, len(peers) // 4)
        self.etcd_down = None  # (member, restart time)
        now = time.monotonic()
        self.next_peer_kill = now + 5.0
        self.next_etcd_kill = now + rng.uniform(15.0, 30.0)
        self.next_etcd_step = now
        self.snipes = []  # (time, sha1), guarded by snipe_lock
        self.snipe_lock = threading.Lock()
        self.snipe_rng = random.Random(rng.random())
        self.thread = threading.Thread(target=self.run, name="soak-chaos", daemon=True)

    def snipe(self, sha1, seconds):
        """Called by a download worker as it starts a get of `sha1` expected
        to take about `seconds`: maybe kill one of its holders meanwhile."""
        with self.snipe_lock:
            if time.monotonic() >= self.end_at or self.snipe_rng.random() >= 0.3:
                return
            at = time.monotonic() + self.snipe_rng.uniform(0.05, 0.1 + seconds)
            self.snipes.append((at, sha1))

    def run(self):
        while not self.stop_event.wait(0.1):
            now = time.monotonic()
            self.check_crashes()
            self.restart_due(now)
            if now >= self.end_at:
                continue
            with self.snipe_lock:
                due = [sha1 for at, sha1 in self.snipes if at <= now]
                self.snipes = [(at, sha1) for at, sha1 in self.snipes if at > now]
            for sha1 in due:
                if len(self.dead) < self.max_dead and sha1 in self.in_flight():
                    self.kill_peer(now, set(self.files[sha1][1]))
            if now >= self.next_peer_kill and len(self.dead) < self.max_dead - 1:
                self.kill_peer(now)
                self.next_peer_kill = time.monotonic() + self.rng.uniform(2.0, 8.0)
            if now >= self.next_etcd_step:
                self.etcd_step(now)
                self.next_etcd_step = time.monotonic() + 1.0

    def check_crashes(self):
        for p in self.peers:
            if p.idx in self.dead or p.proc is None:
                continue
            rc = p.proc.poll()
            if rc is not None:
                with self.stats.lock:
                    self.stats.peer_problems.append(
                        f"{p.name} exited by itself with {rc}: see {p.log_path}")
                    self.stats.problem_logs.add(p.log_path)
                with self.lock:
                    p.start()
                with self.stats.lock:
                    self.stats.peer_restarts += 1

    def restart_due(self, now):
        for idx, at in list(self.dead.items()):
            if now >= at or now >= self.end_at:
                with self.lock:
                    self.peers[idx].start()
                    del self.dead[idx]
                with self.stats.lock:
                    self.stats.peer_restarts += 1

    def kill_peer(self, now, among=None):
        # Up for 3 s at least: a SIGTERM before `serve` installs its handler
        # (within milliseconds of exec) kills it like any other process.
        victims = [p for p in self.peers if not p.witness and p.idx not in self.dead and p.alive()
                   and now - p.started_at >= 3.0 and (among is None or p.idx in among)]
        if not victims:
            return
        p = self.rng.choice(victims)
        busy = {i for sha1 in self.in_flight() for i in self.files[sha1][1]}
        mid_download = p.idx in busy
        sig = self.rng.choice(["SIGKILL", "SIGTERM"])
        if sig == "SIGKILL":
            p.proc.kill()
            p.proc.wait()
        else:
            t0 = time.monotonic()
            rc, forced = stop_proc(p.proc, 15.0)
            took = time.monotonic() - t0
            if forced or rc != 0:
                with self.stats.lock:
                    what = "did not stop within 15 s of SIGTERM" if forced else f"exited {rc} on SIGTERM"
                    self.stats.peer_problems.append(f"{p.name} {what}: see {p.log_path}")
                    self.stats.problem_logs.add(p.log_path)
            elif took > 5.0:
                log(f"note: {p.name} took {took:.1f}s to stop on SIGTERM")
        with self.stats.lock:
            self.stats.peer_kills[sig] += 1
            self.stats.targeted_kills += int(mid_download)
        self.dead[p.idx] = time.monotonic() + self.rng.uniform(3.0, 20.0)

    def etcd_step(self, now):
        if self.etcd_down is not None:
            m, at = self.etcd_down
            if now >= at:
                self.restart_member(m)
            return
        if now < self.next_etcd_kill or not all(m.healthy() for m in self.cluster.members):
            return
        m = self.rng.choice(self.cluster.members)
        sig = self.rng.choice(["SIGKILL", "SIGTERM"])
        if sig == "SIGKILL":
            m.proc.kill()
            m.proc.wait()
        else:
            stop_proc(m.proc, 10.0)
        with self.stats.lock:
            self.stats.etcd_kills[sig] += 1
        self.etcd_down = (m, now + self.rng.uniform(5.0, 15.0))

    def restart_member(self, m):
        with self.lock:
            m.start()
        self.etcd_down = None
        self.next_etcd_kill = time.monotonic() + self.rng.uniform(20.0, 40.0)
        with self.stats.lock:
            self.stats.etcd_restarts += 1

    def finish(self):
        """Stops the loop and brings every peer and member back."""
        self.stop_event.set()
        self.thread.join()
        if self.etcd_down is not None:
            self.restart_member(self.etcd_down[0])
        for idx in list(self.dead):
            with self.lock:
                self.peers[idx].start()
                del self.dead[idx]
            with self.stats.lock:
                self.stats.peer_restarts += 1
        self.check_crashes()

    def down_counts(self):
        return len(self.dead), 1 if self.etcd_down else 0


# ---------------------------------------------------------------- memory


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Memory:
    """Samples every live peer's VmRSS every 2 s, per process lifetime, and
    its thread and open-file counts (a leak of either shows there too)."""

    MAX_THREADS = 200
    MAX_FDS = 500

    def __init__(self, peers):
        self.peers = peers
        self.samples = {}  # (peer idx, incarnation) -> [(t, kib)]
        self.max_threads = {}  # peer idx -> most threads seen
        self.max_fds = {}  # peer idx -> most open files seen
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, name="soak-memory", daemon=True)
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop_event.wait(2.0):
            self.sample()

    def sample(self):
        t = time.monotonic() - self.t0
        for p in self.peers:
            proc, inc = p.proc, p.incarnation
            if proc is None or proc.poll() is not None:
                continue
            kib = rss_kib(proc.pid)
            if kib is not None:
                self.samples.setdefault((p.idx, inc), []).append((t, kib))
            threads, fds = rss_kib(proc.pid, "Threads"), fd_count(proc.pid)
            self.max_threads[p.idx] = max(self.max_threads.get(p.idx, 0), threads or 0)
            self.max_fds[p.idx] = max(self.max_fds.get(p.idx, 0), fds or 0)

    def stop(self):
        self.stop_event.set()
        self.thread.join()

    def analyse(self, max_rss_mib):
        """Per peer: first, max and last sample (MiB) over the run, number of
        lives, and problems: any sample above max_rss_mib; a steady climb
        in one life of at least 90 s (after a 25% warm-up, the median of
        the last third exceeds the median of the first third by more than
        max(4 MiB, 25%))."""
        rows, problems = [], []
        for p in self.peers:
            lives = sorted((inc, s) for (idx, inc), s in self.samples.items() if idx == p.idx and s)
            if not lives:
                continue
            allv = [kib for _inc, s in lives for _t, kib in s]
            first, last = lives[0][1][0][1], lives[-1][1][-1][1]
            climb = None
            for inc, s in lives:
                if s[-1][0] - s[0][0] < 90 or len(s) < 30:
                    continue
                rest = [kib for _t, kib in s[len(s) // 4:]]
                third = len(rest) // 3
                a = statistics.median(rest[:third])
                b = statistics.median(rest[-third:])
                if b - a > max(4 * KIB, 0.25 * a):
                    climb = (inc, a, b, s[-1][0] - s[0][0])
            rows.append((p, first, max(allv), last, len(lives),
                         self.max_threads.get(p.idx, 0), self.max_fds.get(p.idx, 0)))
            if max(allv) > max_rss_mib * KIB:
                problems.append(f"{p.name} reached {max(allv) / KIB:.1f} MiB VmRSS (> {max_rss_mib:g})")
            if self.max_threads.get(p.idx, 0) > self.MAX_THREADS:
                problems.append(f"{p.name} ran {self.max_threads[p.idx]} threads (> {self.MAX_THREADS})")
            if self.max_fds.get(p.idx, 0) > self.MAX_FDS:
                problems.append(f"{p.name} held {self.max_fds[p.idx]} open files (> {self.MAX_FDS})")
            if climb:
                inc, a, b, span = climb
                problems.append(f"{p.name} life #{inc} climbed from {a / KIB:.1f} to {b / KIB:.1f} MiB "
                                f"over {span:.0f} s")
        return rows, problems


# ---------------------------------------------------------------- readiness


def files_json(binary, endpoints, state_dir):
    p = subprocess.run([binary, "files", "--json", "--etcd", endpoints, "--state-dir", state_dir],
                       capture_output=True, env=common.clean_env(), timeout=60)
    if p.returncode != 0:
        return None
    try:
        return {f["sha1"]: f["peers"] for f in json.loads(p.stdout)}
    except (ValueError, KeyError, TypeError):
        return None


def wait_all_shared(binary, endpoints, state_dir, files, timeout):
    """Until `files` lists every file with all its holders; returns the
    number of files still short at the deadline."""
    deadline = time.monotonic() + timeout
    short = len(files)
    while time.monotonic() < deadline:
        got = files_json(binary, endpoints, state_dir) or {}
        short = sum(1 for s, (_size, h) in files.items() if got.get(s, 0) < len(h))
        if short == 0:
            return 0
        time.sleep(1.0)
    return short


def registered_peers(binary, endpoints):
    p = subprocess.run([binary, "list", "--json", "--etcd", endpoints],
                       capture_output=True, env=common.clean_env(), timeout=60)
    if p.returncode != 0:
        return None
    try:
        return len(json.loads(p.stdout))
    except ValueError:
        return None


def wait_registered(binary, endpoints, n, timeout):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = registered_peers(binary, endpoints)
        if got == n:
            return got
        time.sleep(0.5)
    return got


# ---------------------------------------------------------------- main


def fmt_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def main():
    args = parse_args()
    binary = common.release_bin()
    rng = random.Random(args.seed)
    run_dir = tempfile.mkdtemp(prefix="soak-")
    log(f"seed {args.seed}; {args.peers} peers, {args.minutes:g} min, {args.downloads} downloads, "
        f"{args.workers} at once; run dir {run_dir}")

    def on_term(_sig, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Also when started in the background by a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stats = Stats()
    cluster = None
    peers = []
    downloads = chaos = memory = None
    clean = False
    interrupted = False
    try:
        cluster = EtcdCluster(os.path.join(run_dir, "etcd"), set())
        cluster.start()
        log(f"etcd cluster up: {cluster.endpoints}")
        peers = [Peer(i, os.path.join(run_dir, "peers"), binary, cluster.endpoints,
                      witness=i < max(1, args.peers // 10)) for i in range(args.peers)]
        t0 = time.monotonic()
        scratch = os.path.join(run_dir, "scratch")
        os.makedirs(scratch)
        files, spent = make_data(rng, peers, args.data_mib * MIB, scratch)
        unique = sum(size for size, _h in files.values())
        log(f"{len(files)} files ({fmt_bytes(unique)} distinct, {fmt_bytes(spent)} on disk with "
            f"copies; holders 1/2/3/4: "
            f"{'/'.join(str(sum(1 for _s, h in files.values() if len(h) == k)) for k in (1, 2, 3, 4))}) "
            f"written in {time.monotonic() - t0:.1f}s")
        for p in peers:
            p.start()
        short = wait_all_shared(binary, cluster.endpoints, os.path.join(run_dir, "probe-state"),
                                files, timeout=300)
        if short:
            raise SystemExit(f"soak: {short} files not listed by all their holders after 300 s; "
                             f"peer logs in {os.path.join(run_dir, 'peers')}")
        log(f"all peers registered and indexed in {time.monotonic() - t0:.1f}s; chaos starts")

        memory = Memory(peers)
        memory.thread.start()
        start = time.monotonic()
        end_at = start + args.minutes * 60.0
        chaos = Chaos(random.Random(rng.random()), peers, cluster, stats, end_at, files)
        downloads = Downloads(args, binary, cluster.endpoints, run_dir, stats, files,
                              random.Random(rng.random()))
        chaos.in_flight = downloads.in_flight
        downloads.snipe = chaos.snipe
        chaos.thread.start()
        downloads.start()

        next_report = start + 15.0
        while time.monotonic() < end_at:
            time.sleep(0.5)
            if time.monotonic() >= next_report:
                next_report += 15.0
                pending, parked, active = downloads.status()
                dead, etcd_down = chaos.down_counts()
                with stats.lock:
                    log(f"t={time.monotonic() - start:4.0f}s completed {stats.completed}/{args.downloads}, "
                        f"attempts {stats.attempts}, running {active}, parked {parked}; "
                        f"peers down {dead}, etcd members down {etcd_down}")
        log("chaos over: restarting every peer and member")
        chaos.finish()
        healthy = cluster.wait_healthy(60)
        if not healthy:
            stats.peer_problems.append("etcd cluster not healthy 60 s after the chaos")
        n_reg = wait_registered(binary, cluster.endpoints, args.peers, 60)
        if n_reg != args.peers:
            stats.peer_problems.append(
                f"{n_reg} of {args.peers} peers registered in etcd 60 s after the chaos")
        downloads.set_calm()
        grace = max(600.0, args.timeout * (args.calm_attempts + 1))
        drain_end = time.monotonic() + grace
        while time.monotonic() < drain_end:
            pending, parked, active = downloads.status()
            if pending == 0:
                break
            time.sleep(0.5)
        pending, _parked, _active = downloads.status()
        downloads.stop()
        downloads.join(30)
        memory.stop()
        chaos.check_crashes()

        # Panics in any peer log.
        for p in peers:
            text = open(p.log_path, "rb").read().decode(errors="replace")
            if PANIC.search(text):
                stats.peer_problems.append(f"{p.name} log shows a panic: see {p.log_path}")
                stats.problem_logs.add(p.log_path)

        rows, mem_problems = memory.analyse(args.max_rss_mib)
        clean = report(args, stats, rows, mem_problems, pending, time.monotonic() - start)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping everything")
    finally:
        if downloads is not None:
            downloads.stop()
        # Join the chaos loop first: it must not restart a peer stopped below.
        for part in (chaos, memory):
            if part is not None:
                part.stop_event.set()
                if part.thread.is_alive():
                    part.thread.join(30)
        for p in peers:
            if p.proc is not None:
                stop_proc(p.proc, 10)
        if cluster is not None:
            cluster.stop()
        if clean and not args.keep or interrupted:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            # Keep the logs, drop the data.
            for p in peers:
                shutil.rmtree(p.dataset, ignore_errors=True)
            shutil.rmtree(os.path.join(run_dir, "scratch"), ignore_errors=True)
            gets = os.path.join(run_dir, "gets")
            if os.path.isdir(gets):
                for name in os.listdir(gets):
                    if not name.endswith((".stdout", ".stderr")):
                        os.unlink(os.path.join(gets, name))
            log(f"logs kept in {run_dir} (peers/pNN/serve.log, etcd/mN/etcd.log, "
                f"gets/jNNNN.aN.stderr)")
            for path in sorted(stats.problem_logs):
                log(f"  see {path}")
    return 0 if clean else 1


def report(args, stats, mem_rows, mem_problems, pending, seconds):
    s = stats
    print()
    print(f"== soak: {args.peers} peers, {args.minutes:g} min of chaos, seed {args.seed}, "
          f"{seconds:.0f} s in all")
    print(f"downloads attempted     {args.downloads} ({s.attempts} get runs)")
    print(f"completed               {s.completed}")
    print(f"failed then resumed     {s.resumed} (of which {s.resumed_bytes_jobs} kept bytes "
          f"from their .part)")
    print(f"failed for good         {len(s.failed_for_good)}")
    for jid, sha1, why in s.failed_for_good:
        print(f"    job {jid} {sha1}: {why}")
    if pending:
        print(f"unfinished at the end   {pending}")
    print(f"wrong outputs           {len(s.wrong)}")
    for w in s.wrong:
        print(f"    {w}")
    print(f"unclear failures        {len(s.unclear)}")
    for u in s.unclear[:20]:
        print(f"    {u}")
    print(f"failed attempts         {sum(s.failure_reasons.values())} clear "
          f"({s.timeouts} interrupted at --timeout {args.timeout:g}s), by reason:")
    for why, n in sorted(s.failure_reasons.items(), key=lambda kv: -kv[1]):
        print(f"    {n:4d}  {why}")
    print(f"peer kills              {s.peer_kills['SIGKILL']} SIGKILL + {s.peer_kills['SIGTERM']} "
          f"SIGTERM ({s.targeted_kills} of a holder mid-download), "
          f"restarts {s.peer_restarts}")
    print(f"etcd member kills       {s.etcd_kills['SIGKILL']} SIGKILL + {s.etcd_kills['SIGTERM']} "
          f"SIGTERM, restarts {s.etcd_restarts}")
    print(f"bytes downloaded        {fmt_bytes(s.bytes_received)} received "
          f"({fmt_bytes(s.bytes_completed)} of completed files)")
    if s.get_seconds:
        secs = sorted(s.get_seconds)
        print(f"get wall time           median {statistics.median(secs):.2f} s, "
              f"p90 {secs[int(0.9 * (len(secs) - 1))]:.2f} s, max {secs[-1]:.2f} s")
    print(f"get peak RSS            {s.get_max_rss_kib / KIB:.1f} MiB "
          f"(downloading {fmt_bytes(s.get_max_rss_size)})")
    print(f"peer problems           {len(s.peer_problems)}")
    for pp in s.peer_problems:
        print(f"    {pp}")
    print("peer memory: VmRSS MiB (first sample, max, last sample), process lives, "
          "most threads and open files; * = never killed")
    print(f"    {'peer':5} {'first':>6} {'max':>6} {'last':>6} {'lives':>6} {'threads':>8} {'fds':>5}")
    for p, first, mx, last, lives, threads, fds in mem_rows:
        name = p.name + ("*" if p.witness else "")
        print(f"    {name:5} {first / KIB:6.1f} {mx / KIB:6.1f} {last / KIB:6.1f} {lives:6d} "
              f"{threads:8d} {fds:5d}")
    print(f"memory problems         {len(mem_problems)}")
    for m in mem_problems:
        print(f"    {m}")
    clean = (not s.wrong and not s.unclear and not s.failed_for_good and not pending
             and not s.peer_problems and not mem_problems)
    print(f"result                  {'CLEAN' if clean else 'FAILED'}")
    return clean


if __name__ == "__main__":
    sys.exit(main())
