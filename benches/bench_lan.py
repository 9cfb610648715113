#!/usr/bin/env python3
"""Downloads across a LAN: `piratebay-sync get` on the LAN lab (network
namespaces on one bridge, every host's link capped at 400 Mbit/s both
ways with tbf; see benches/lab.py), side by side with the tools a user
would otherwise use, measured in the same run. These are the figures to
trust for a LAN; the loopback benches (bench_get.py) only show CPU cost.

Multi-source (issue 8), a 256 MiB file of random bytes, medians of
BENCH_RUNS runs, the client on its own host (its link uncapped, so the
holders' links are the limit):
  1. `get` from 3 holders vs `curl` from one holder: the links allow
     0.33x; target <= 0.40x.
  2. `get` from 3 holders vs `aria2c -s3 --checksum=sha-1=...` from the
     same 3: target <= 0.80x.
  3. `get` from 6 holders vs six parallel range `curl`s, one per holder
     (the links' limit): target <= 1.25x.

Swarm (issues 10 and 19): one seed and N hosts, each running `serve` on
its own dataset and, all at the same moment, `get SHA -o <its dataset>/file`.
Rows (BENCH_SWARM_ROWS, `N:Mbit/s:MiB`, default 8:400:128, 16:25:16,
32:25:16, 47:25:16), each the median of BENCH_RUNS runs, with every link
(the seed's and the hosts') capped at the row's rate. Printed per row: the
time until all N hold a verified copy (the slowest host's time), the median
host's, one host alone with `curl` from the seed (median), their ratio
(targets 1.4 / 1.5 / 1.5 / 1.6; 1.8 for 16:400:128, issue 20's row, which
the 2-core VM's CPU bounds), the lab's own limit with N hosts busy (a
ring of N concurrent curls, each host fetching the file from the next:
every link carries the file once each way, as in a perfect swarm; target
<= 1.2x it at 32 and 47), the seed's upload in files (its eth0 tx_bytes;
target <= 1.5), the CPU-seconds (user + system) of the swarm's processes
(the peers and the gets) per GiB delivered, and the failed gets (target 0).

Exit status: 0 every target met; 1 a target missed or a command failed.
Needs root (network namespaces). python3 standard library only.
Environment: BENCH_LAN_ONLY=swarm (the swarm only), BENCH_RUNS (default 3), BENCH_LAN_MIB (256),
BENCH_SWARM_ROWS (see above), BENCH_RATE_MBIT (400, the multi-source part).
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from lab import Lab  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
LAN_MIB = int(os.environ.get("BENCH_LAN_MIB", "256"))
SWARM_ROWS = [tuple(int(v) for v in x.split(":"))
              for x in os.environ.get("BENCH_SWARM_ROWS", "8:400:128,16:25:16,32:25:16,47:25:16").split(",")
              if x.strip()]
RATE = int(os.environ.get("BENCH_RATE_MBIT", "400"))
# BENCH_LAN_ONLY=swarm skips the multi-source comparisons.
ONLY = os.environ.get("BENCH_LAN_ONLY", "")
PORT = 7070
SWARM_TARGETS = {8: 1.4, 16: 1.5, 32: 1.5, 47: 1.6}
# Rows of a given link and file with their own target: issue 20's CPU-bound
# row (16 hosts at 400 Mbit/s, 128 MiB: one SHA-1 pass per byte).
ROW_TARGETS = {(16, 400, 128): 1.8}
# Ratio to the ring of N curls (issue 19: at 32 and 47 hosts).
RING_TARGETS = {32: 1.2, 47: 1.2}
SWARM_UPLOAD_TARGET = 1.5



def url(host, sha1):
    return f"http://{host.ip}:{PORT}/v1/files/{sha1}"


def wait_serving(host, sha1, timeout=120, fatal=True):
    """Until the peer on `host` lists `sha1` (its index is built); False
    (or the bench's end, if `fatal`) if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{host.ip}:{PORT}/v1/files", timeout=2) as r:
                if sha1 is None or sha1 in r.read().decode(errors="replace"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    if fatal:
        sys.exit(f"bench: the peer on {host.netns} does not serve {sha1} after {timeout} s")
    print(f"  the peer on {host.netns} does not list {sha1} {timeout} s after its get ended: "
          f"no ring measured", file=sys.stderr)
    return False


class Run:
    """Processes started on lab hosts, with their logs; all killed at the end."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, host, argv, name):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        p = host.popen(argv, stdout=log, stderr=log, env=common.clean_env())
        log.close()
        self.procs.append((p, name))
        return p

    def stop(self, only=None):
        for p, name in list(self.procs):
            if only is not None and p not in only:
                continue
            common.stop_process(p)
            self.procs.remove((p, name))


def start_etcd(run, host):
    etcd = common.find_tool("etcd")
    ep = f"http://{host.ip}:2379"
    data = os.path.join(run.work, "etcd-data")
    run.start(host, [
        etcd, "--name", "lan", "--data-dir", data,
        "--listen-client-urls", f"{ep},http://127.0.0.1:2379",
        "--advertise-client-urls", ep,
        "--listen-peer-urls", "http://127.0.0.1:2380",
        "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", "lan=http://127.0.0.1:2380",
        "--initial-cluster-state", "new",
    ], "etcd")
    deadline = time.monotonic() + 20
    while not common.etcd_healthy(ep):
        if time.monotonic() > deadline:
            sys.exit(f"bench: etcd on the lab did not start; log:\n{common.tail(os.path.join(run.work, 'etcd.log'))}")
        time.sleep(0.05)
    return ep


def start_peer(run, binary, host, etcd, dataset, ns, name):
    state = os.path.join(run.work, f"state-{name}")
    return run.start(host, [
        binary, "serve", "--dataset", dataset, "--state-dir", state,
        "--listen", f"0.0.0.0:{PORT}", "--etcd", etcd, "--namespace", ns,
    ], name)


def timed(host, argv, cleanup=None):
    """Wall seconds of `argv` on `host`; raises CommandFailed on a non-zero exit."""
    t0 = time.perf_counter()
    p = subprocess.run(host.cmd(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=common.clean_env(), timeout=600)
    dt = time.perf_counter() - t0
    if cleanup:
        cleanup()
    if p.returncode != 0:
        raise common.CommandFailed(argv, p.returncode, p.stderr.decode(errors="replace"))
    return dt


def median_of(fn):
    fn()  # warm-up: page cache on the holders, catalog caches
    return statistics.median(fn() for _ in range(RUNS))


def proc_cpu(pid):
    """CPU seconds (user + system) process `pid` used so far; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_busy():
    """(busy, total, kernel) jiffies of the whole machine from /proc/stat;
    kernel = system + irq + softirq (the lab's veth, bridge and tbf work
    is done there, outside the processes' own CPU time)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v), v[2] + v[5] + v[6]


def multi_source(lab, run, binary, etcd, client, holders):
    """The three comparisons of issue 8; returns rows for the table."""
    data = os.path.join(run.work, "data")
    os.makedirs(data)
    sha1 = common.random_file(os.path.join(data, "big.bin"), LAN_MIB)
    out_dir = os.path.join(run.work, "out")
    os.makedirs(out_dir)
    out = os.path.join(out_dir, "got.bin")

    def rm():
        for f in os.listdir(out_dir):
            p = os.path.join(out_dir, f)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    state = os.path.join(run.work, "client-state")
    get = [binary, "get", sha1, "-o", out, "--etcd", etcd, "--namespace", "lan",
           "--state-dir", state, "--force"]
    peers = []
    for i, h in enumerate(holders[:3]):
        peers.append(start_peer(run, binary, h, etcd, data, "lan", f"holder{i + 1}"))
    for h in holders[:3]:
        wait_serving(h, sha1)

    rows = []
    t_get3 = median_of(lambda: timed(client, get, rm))
    t_curl = median_of(lambda: timed(client, ["curl", "-fsS", "-o", out, url(holders[0], sha1)], rm))
    aria = [common.find_tool("aria2c"), "-q", "-s3", "-x1", "--file-allocation=none",
            "--allow-overwrite=true", "--auto-file-renaming=false",
            f"--checksum=sha-1={sha1}", "-d", out_dir, "-o", "got.bin"]
    aria += [url(h, sha1) for h in holders[:3]]
    t_aria = median_of(lambda: timed(client, aria, rm))
    rows.append((f"get, 3 holders vs curl from one ({LAN_MIB} MiB)", t_get3, "curl, 1 holder", t_curl, 0.40))
    rows.append(("get, 3 holders vs aria2c -s3 --checksum", t_get3, "aria2c -s3", t_aria, 0.80))

    for i, h in enumerate(holders[3:6]):
        peers.append(start_peer(run, binary, h, etcd, data, "lan", f"holder{i + 4}"))
    for h in holders[3:6]:
        wait_serving(h, sha1)
    size = LAN_MIB << 20
    step = size // 6
    script = []
    for i, h in enumerate(holders[:6]):
        a, b = i * step, (size - 1 if i == 5 else (i + 1) * step - 1)
        script.append(f"curl -fsS -r {a}-{b} -o {out}.{i} {url(h, sha1)} & p{i}=$!")
    script.append("for p in $p0 $p1 $p2 $p3 $p4 $p5; do wait $p || exit 1; done")
    t_get6 = median_of(lambda: timed(client, get, rm))
    t_curl6 = median_of(lambda: timed(client, ["bash", "-c", "\n".join(script)], rm))
    rows.append(("get, 6 holders vs six range curls", t_get6, "6 x curl -r, one per holder", t_curl6, 1.25))
    run.stop(only=peers)
    shutil.rmtree(data, ignore_errors=True)
    return rows


def swarm(lab, run, binary, etcd, seed, hosts, n, mib, k, want_ring=True):
    """One run of the swarm: one seed, n hosts getting into their own datasets at once."""
    ns = f"swarm{n}r{k}"
    base = os.path.join(run.work, ns)
    seed_data = os.path.join(base, "seed")
    os.makedirs(seed_data)
    sha1 = common.random_file(os.path.join(seed_data, "swarm.bin"), mib)
    peers = [start_peer(run, binary, seed, etcd, seed_data, ns, f"{ns}-seed")]
    datasets = []
    for i, h in enumerate(hosts[:n]):
        d = os.path.join(base, f"host{i + 1}")
        os.makedirs(d)
        datasets.append(d)
        peers.append(start_peer(run, binary, h, etcd, d, ns, f"{ns}-peer{i + 1}"))
    wait_serving(seed, sha1)
    for h in hosts[:n]:
        wait_serving(h, None)

    # One host alone with curl from the seed (the reference), measured in
    # the first run of each row.
    t_alone = None
    if k == 0:
        alone_out = os.path.join(base, "alone.bin")
        t_alone = median_of(lambda: timed(hosts[0], ["curl", "-fsS", "-o", alone_out, url(seed, sha1)],
                                          lambda: os.path.exists(alone_out) and os.remove(alone_out)))

    tx0 = seed.tx_bytes()
    busy0, total0, kernel0 = cpu_busy()
    serve_cpu0 = sum(proc_cpu(p.pid) for p in peers)
    t0 = time.perf_counter()
    gets = []
    for i, h in enumerate(hosts[:n]):
        argv = [binary, "get", sha1, "-o", os.path.join(datasets[i], "swarm.bin"), "--etcd", etcd,
                "--namespace", ns, "--state-dir", os.path.join(base, f"get-state{i + 1}")]
        log = open(os.path.join(base, f"get{i + 1}.log"), "wb")
        gets.append(h.popen(argv, stdout=log, stderr=log, env=common.clean_env()))
        log.close()
    finish = []
    failed = []
    get_cpu = 0.0
    pending = dict(enumerate(gets))
    while pending:
        # wait4 for the CPU time of each get (ip netns exec execs it), in
        # the order they end.
        for i, p in list(pending.items()):
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid == 0:
                continue
            del pending[i]
            p.returncode = os.waitstatus_to_exitcode(status)
            get_cpu += usage.ru_utime + usage.ru_stime
            finish.append(time.perf_counter() - t0)
            if p.returncode != 0:
                failed.append(f"host{i + 1}: {common.tail(os.path.join(base, f'get{i + 1}.log'), 1)}")
        time.sleep(0.005)
    t_all = max(finish)
    busy1, total1, kernel1 = cpu_busy()
    own_cpu = get_cpu + sum(proc_cpu(p.pid) for p in peers) - serve_cpu0
    uploaded = seed.tx_bytes() - tx0
    # The ring once per row (after the first run that allows it), on the
    # same hosts.
    t_ring = ring(hosts[:n], sha1, base) if not failed and want_ring else None
    run.stop(only=peers)
    # The gets' logs stay with the peers' (RUST_LOG applies to them too).
    for i in range(n):
        shutil.copy(os.path.join(base, f"get{i + 1}.log"), os.path.join(run.work, f"{ns}-get{i + 1}.log"))
    print(f"  {ns}: each get's end, seconds after the start: "
          + " ".join(f"{t:.2f}" for t in sorted(finish)), file=sys.stderr)
    shutil.rmtree(base, ignore_errors=True)
    busy = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
    kernel = 100.0 * (kernel1 - kernel0) / max(1, total1 - total0)
    own = 100.0 * own_cpu / (t_all * (os.cpu_count() or 1))
    return {"n": n, "all": t_all, "median_host": statistics.median(finish), "alone": t_alone,
            "uploaded": uploaded, "busy": busy, "own": own, "own_cpu": own_cpu, "kernel": kernel,
            "failed": failed, "ring": t_ring}


def ring(hosts, sha1, base):
    """The lab's own limit with n hosts busy at once: every host downloads
    the file with curl from the next host's peer (a ring: each link carries
    the file once in and once out, as in a perfect swarm), all at the same
    moment; the time until the last curl ends. On 2 cores this shows how
    much the veth/bridge/tbf work itself costs at that aggregate rate."""
    for h in hosts:
        if not wait_serving(h, sha1, timeout=60, fatal=False):
            return None
    outs = [os.path.join(base, f"ring{i}.bin") for i in range(len(hosts))]
    t0 = time.perf_counter()
    procs = [h.popen(["curl", "-fsS", "-o", outs[i], url(hosts[(i + 1) % len(hosts)], sha1)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=common.clean_env())
             for i, h in enumerate(hosts)]
    ends = []
    for p in procs:
        p.wait(timeout=600)
        ends.append(time.perf_counter() - t0)
    for o in outs:
        if os.path.exists(o):
            os.remove(o)
    if any(p.returncode != 0 for p in procs):
        return None
    return max(ends)


def main():
    binary = common.release_bin()
    for tool in ("curl", "aria2c", "etcd"):
        common.find_tool(tool)
    work = tempfile.mkdtemp(prefix="bench-lan-")
    missed = False
    with Lab() as lab:
        run = Run(work)
        try:
            etcd_host = lab.add_host()
            # The client's link is not capped: what is measured is how well
            # get uses the holders' links (the links' limit for 3 holders is
            # 0.33x one curl).
            client = lab.add_host()
            holders = [lab.add_host(RATE) for _ in range(6)]
            etcd = start_etcd(run, etcd_host)
            print(f"LAN lab {lab.bridge_ip[:-1]}0/24: holders' links {RATE} Mbit/s both ways (tbf), "
                  f"client uncapped; release binary; median of {RUNS} runs after a warm-up")
            rows = [] if ONLY == "swarm" else multi_source(lab, run, binary, etcd, client, holders)
            w = max([len(r[0]) for r in rows] + [10]) + 2
            print(f"{'comparison':<{w}}{'get':>9}  {'reference':<30}{'ref':>9}{'ratio':>8}  target")
            for name, t, ref_name, t_ref, target in rows:
                ratio = t / t_ref
                ok = ratio <= target
                missed |= not ok
                print(f"{name:<{w}}{t:>8.2f}s  {ref_name:<30}{t_ref:>8.2f}s{ratio:>7.2f}x  "
                      f"<= {target:.2f}x {'ok' if ok else 'MISSED'}")

            # The swarm: a seed and up to max(N) hosts, every link at the row's rate.
            seed = holders[0]
            need = max((r[0] for r in SWARM_ROWS), default=0)
            swarm_hosts = [client] + holders[1:]
            while len(swarm_hosts) < need:
                swarm_hosts.append(lab.add_host())
            print()
            print(f"swarm: 1 seed, N hosts `get` one file at once into their shared datasets; "
                  f"median of {RUNS} runs (uptime: {os.getloadavg()[0]:.1f} load)")
            head = (f"{'N':>3} {'link':>9} {'file':>8} {'all done':>9} {'median':>7} {'alone':>7} "
                    f"{'ratio':>7} {'ring':>7} {'/ring':>6} {'seed up':>8} {'CPU-s/GiB':>9} {'failed':>6}  targets")
            print(head)
            for n, mbit, mib in SWARM_ROWS:
                seed.set_rate(mbit)
                for h in swarm_hosts[:n]:
                    h.set_rate(mbit)
                runs = []
                for k in range(RUNS):
                    want_ring = not any(r["ring"] for r in runs)
                    runs.append(swarm(lab, run, binary, etcd, seed, swarm_hosts, n, mib, k, want_ring))
                size = mib << 20
                t_alone = runs[0]["alone"]
                med = lambda key: statistics.median(r[key] for r in runs)
                t_all = med("all")
                rings = [r["ring"] for r in runs if r["ring"]]
                t_ring = statistics.median(rings) if rings else None
                up = med("uploaded") / size
                cpu_gib = med("own_cpu") / (n * size / 2**30)
                failed = sum(len(r["failed"]) for r in runs)
                ratio = t_all / t_alone
                target = ROW_TARGETS.get((n, mbit, mib), SWARM_TARGETS.get(n, 1.6))
                ring_target = RING_TARGETS.get(n)
                ok = ratio <= target and up <= SWARM_UPLOAD_TARGET and failed == 0
                if ring_target and t_ring:
                    ok &= t_all / t_ring <= ring_target
                missed |= not ok
                ring_s = f"{t_ring:>6.2f}s {t_all / t_ring:>5.2f}x" if t_ring else f"{'-':>7} {'-':>6}"
                targets = f"<= {target}x alone" + (f", <= {ring_target}x ring" if ring_target else "") + \
                          f", seed <= {SWARM_UPLOAD_TARGET}, 0 failed"
                print(f"{n:>3} {mbit:>4}Mbit/s {mib:>4} MiB {t_all:>8.2f}s {med('median_host'):>6.2f}s "
                      f"{t_alone:>6.2f}s {ratio:>6.2f}x {ring_s} {up:>7.2f}x {cpu_gib:>9.1f} "
                      f"{failed:>3}/{n * RUNS:<3} {targets} {'ok' if ok else 'MISSED'}", flush=True)
                for r in runs:
                    for f in r["failed"]:
                        print(f"    get failed on {f}")
        except common.CommandFailed as e:
            print(f"bench: {e}")
            missed = True
        finally:
            run.stop()
    if missed:
        print(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
