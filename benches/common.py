"""Shared helpers for the benchmark scripts (python3 standard library only).

- `Etcd`: a throwaway single-member etcd on free loopback ports in a temp
  dir, started and stopped by a `with` block.
- `median_time(cmd, runs, warmup)`: times whole processes.
- `print_table(rows, reference)`: medians side by side with the ratio.
- `release_bin()`: path of target/release/piratebay-sync.
"""

import json
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def release_bin():
    """Path of the release binary; exits with a message if it is not built."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    path = os.path.join(target, "release", "piratebay-sync")
    if not os.access(path, os.X_OK):
        sys.exit(f"bench: {path} not found: run `cargo build --release` (make bench does)")
    return path


def find_tool(name):
    """Path of an external tool (PATH, then /usr/bin); exits if missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if not path:
        sys.exit(f"bench: {name} not found: run scripts/deps.sh bench")
    return path


def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def clean_env():
    """The environment without PIRATEBAY_* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PIRATEBAY_")}


class Etcd:
    """A single-member etcd in a temp dir on free loopback ports.

    with Etcd() as etcd:
        etcd.endpoint   # http://127.0.0.1:PORT
        etcd.put(key, value)
    """

    def __init__(self, timeout=20.0):
        self.timeout = timeout
        self.dir = None
        self.proc = None
        self.endpoint = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        etcd = find_tool("etcd")
        last = ""
        for _attempt in range(4):
            self.dir = tempfile.mkdtemp(prefix="bench-etcd-")
            client, peer = free_port(), free_port()
            while peer == client:
                peer = free_port()
            self.endpoint = f"http://127.0.0.1:{client}"
            peer_url = f"http://127.0.0.1:{peer}"
            log = open(os.path.join(self.dir, "etcd.log"), "ab")
            self.proc = subprocess.Popen(
                [
                    etcd,
                    "--name", "bench",
                    "--data-dir", os.path.join(self.dir, "data"),
                    "--listen-client-urls", self.endpoint,
                    "--advertise-client-urls", self.endpoint,
                    "--listen-peer-urls", peer_url,
                    "--initial-advertise-peer-urls", peer_url,
                    "--initial-cluster", f"bench={peer_url}",
                    "--initial-cluster-state", "new",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            log.close()
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self.healthy():
                    return
                time.sleep(0.05)
            last = self.log_tail()
            self.stop()
            if "address already in use" not in last:
                break
        sys.exit(f"bench: etcd did not start; log tail:\n{last}")

    def log_tail(self, lines=20):
        return tail(os.path.join(self.dir, "etcd.log"), lines)

    def healthy(self):
        return etcd_healthy(self.endpoint)

    def post(self, path, body):
        req = urllib.request.Request(
            self.endpoint + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def put(self, key, value):
        import base64

        b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
        self.post("/v3/kv/put", {"key": b64(key), "value": b64(value)})

    def stop(self):
        stop_process(self.proc)
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class CommandFailed(Exception):
    """A timed command exited non-zero; carries its stderr."""

    def __init__(self, cmd, code, stderr):
        self.cmd, self.code, self.stderr = cmd, code, stderr
        first = stderr.strip().splitlines()[-1] if stderr.strip() else "(no stderr)"
        super().__init__(f"{os.path.basename(cmd[0])} exited {code}: {first}")


def stop_process(proc, timeout=10):
    """SIGTERM `proc` if it still runs, SIGKILL it after `timeout` s, reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def random_file(path, mib):
    """Writes `mib` MiB of random bytes; returns the sha1 hex."""
    h = hashlib.sha1()
    with open(path, "wb") as f:
        for _ in range(mib):
            block = os.urandom(1 << 20)
            h.update(block)
            f.write(block)
    return h.hexdigest()


def tail(path, lines=15):
    """The last `lines` lines of the file at `path` (a note if unreadable)."""
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError as e:
        return f"(no log: {e})"


def etcd_healthy(endpoint):
    """True when `<endpoint>/health` says the member is healthy."""
    try:
        with urllib.request.urlopen(endpoint + "/health", timeout=1) as r:
            return json.loads(r.read()).get("health") in ("true", True)
    except (OSError, ValueError, urllib.error.URLError):
        return False


def etcd_requests(endpoint):
    """gRPC calls etcd has started, by method (`grpc_server_started_total`
    of the etcdserverpb services on its `/metrics`: every gateway request
    is one, a range, a put, a keepalive POST, a watch stream); {} if
    `/metrics` cannot be read."""
    try:
        with urllib.request.urlopen(endpoint + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("grpc_server_started_total{") and "etcdserverpb" in line:
            method = line.split('grpc_method="')[1].split('"')[0]
            out[method] = out.get(method, 0) + float(line.rsplit(" ", 1)[1])
    return out


def median_time(cmd, runs=30, warmup=3, env=None, timeout=60):
    """Whole-process wall time of `cmd`: `warmup` untimed runs, then `runs`
    timed ones. Uses hyperfine (no shell, `-N`) when it is installed, so
    the few milliseconds Python needs to fork and exec do not blur short
    commands; otherwise time.perf_counter around subprocess.run. Returns a
    dict with the median, min and max in milliseconds and the samples.
    Raises CommandFailed if the command exits non-zero."""
    env = clean_env() if env is None else env

    def once():
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=env, timeout=timeout)
        dt = (time.perf_counter() - t0) * 1000.0
        if p.returncode != 0:
            raise CommandFailed(cmd, p.returncode, p.stderr.decode(errors="replace"))
        return dt

    once()  # fails fast, with the command's own stderr, before timing
    hyperfine = shutil.which("hyperfine")
    if hyperfine:
        import json
        import shlex
        import tempfile
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(
                [hyperfine, "-N", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
                 "--export-json", out.name, shlex.join(cmd)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, check=True,
                timeout=timeout * (runs + warmup))
            samples = [t * 1000.0 for t in json.load(open(out.name))["results"][0]["times"]]
    else:
        for _ in range(warmup):
            once()
        samples = [once() for _ in range(runs)]
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "runs": runs,
        "samples": samples,
    }


def print_table(rows, reference):
    """Prints one line per (name, result) in `rows`: median, min, max in
    ms and the ratio of the median to the `reference` row's median. A
    result may be a string (an error) instead of a dict."""
    ref = dict(rows).get(reference)
    ref_median = ref["median"] if isinstance(ref, dict) else None
    width = max(len(n) for n, _ in rows) + 2
    print(f"{'command':<{width}}{'median ms':>11}{'min':>9}{'max':>9}{'ratio':>8}")
    for name, r in rows:
        if not isinstance(r, dict):
            print(f"{name:<{width}}  FAILED: {r}")
            continue
        ratio = f"{r['median'] / ref_median:.2f}x" if ref_median else "-"
        print(f"{name:<{width}}{r['median']:>11.2f}{r['min']:>9.2f}{r['max']:>9.2f}{ratio:>8}")
