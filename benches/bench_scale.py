#!/usr/bin/env python3
"""Benchmark of the index at scale (issue 12, "Index at 100k files").

100,000 files of 1-8 KiB in 100 directories (BENCH_SCALE_FILES to change
the count), made once under /tmp/piratebay-bench/scale-data, read once
before measuring so every run works from the page cache. Rows, each
printed beside its reference or target, measured in the same run:

- cold `index` (fresh state dir) vs `find -print0 | xargs -0 -P2 openssl
  sha1` over the same tree; runs alternate, medians of BENCH_RUNS (5);
- warm `index` (nothing changed) as a share of cold, and whether it
  rewrote the cache (inode or mtime of the cache file changed); beside it
  the floor of any warm check that looks at every file: `find -printf`
  of each file's size, mtime and inode, two processes of 50 directories
  each (runs alternate with the warm ones);
- peak RSS of the cold and warm `index` per indexed file (getrusage);
- `serve` restarted on the unchanged dataset: time from exec until
  `GET /v1/files` returns the full catalog (polled every 5 ms), medians
  of BENCH_RUNS restarts, and its RSS per file once idle (real etcd from
  common.Etcd; the peer checks the dataset in the background meanwhile);
- `GET /v1/files` of the whole catalog from that peer by `curl
  --compressed` (gzip) and plain `curl`: median time and bytes on the
  wire of BENCH_RUNS requests after one (which builds the body); then how
  much the peer's peak RSS rises while 10 slow plain requests are in
  flight at once (its peak reset through /proc/PID/clear_refs first);
- `files --json` over that catalog, first and warm (cached by
  generation), and `files --search` warm (1 % of the names match).

Targets on 2 cores: cold <= 1.0x the openssl pipeline, warm <= 10 % of
cold, restart <= 0.3 s, <= 600 bytes of RSS per file, no cache rewrite
when nothing changed, the gzip catalog <= 50 ms and <= 4 MB. The machine may be loaded: compare the rows of one
run with each other, not with another run's; CPU seconds (user + system
from getrusage) are printed too, being less sensitive to other load than
wall time.

Run: cargo build --release && python3 benches/bench_scale.py
"""

import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FILES = int(os.environ.get("BENCH_SCALE_FILES", "100000"))
DIRS = 100
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
DATA = f"/tmp/piratebay-bench/scale-data-{FILES}"

#: Figures of the last run (see scale_table.py).
RESULTS = {}


def make_data():
    marker = DATA + ".ok"
    if os.path.exists(marker) and os.path.isdir(os.path.join(DATA, "d000")):
        return
    print(f"creating {FILES} files of 1-8 KiB in {DIRS} directories under {DATA} ...", flush=True)
    shutil.rmtree(DATA, ignore_errors=True)
    rnd = random.Random(12)
    old = time.time() - 3600  # not "just written": no settling wait
    per_dir = (FILES + DIRS - 1) // DIRS
    for i in range(FILES):
        d = os.path.join(DATA, f"d{i // per_dir:03}")
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"f{i % per_dir:05}.bin")
        with open(path, "wb") as f:
            f.write(rnd.randbytes(rnd.randint(1024, 8192)))
        os.utime(path, (old, old))
    with open(marker, "w") as f:
        f.write("ok\n")


def warm_page_cache():
    subprocess.run(f"find {DATA}/ -type f -print0 | xargs -0 cat > /dev/null", shell=True, check=True)


def run_timed(cmd, env, shell=False):
    """Wall seconds, peak RSS in bytes and CPU seconds (user + system, its
    children included) of one whole process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, shell=shell, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench: {cmd} failed: {err.strip()[-500:]}")
    return dt, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def cache_file(state):
    names = [n for n in os.listdir(state) if n.endswith(".cache")]
    return os.path.join(state, names[0]) if names else None


def catalog_len(url):
    """Entries in one `GET /v1/files` (counted, not parsed: parsing 10 MB
    in Python would weigh more than the answer)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().count(b'"sha1"')
    except OSError:
        return -1


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def serve_restarts(exe, etcd, state, env):
    """Seconds from exec to the full catalog, per restart; idle RSS of the last."""
    port = common.free_port()
    url = f"http://127.0.0.1:{port}/v1/files"
    cmd = [exe, "serve", "--dataset", DATA, "--state-dir", state, "--listen", f"127.0.0.1:{port}",
           "--advertise", f"127.0.0.1:{port}", "--etcd", etcd.endpoint, "--namespace", "bench-scale"]
    times, idle_rss = [], 0
    for i in range(RUNS + 1):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        try:
            deadline = t0 + 120
            while catalog_len(url) != FILES:
                if p.poll() is not None or time.perf_counter() > deadline:
                    sys.exit("bench: serve never served the full catalog")
                time.sleep(0.005)
            dt = time.perf_counter() - t0
            if i > 0:  # the first start may have to write the cache
                times.append(dt)
            time.sleep(1.0)  # the background check finishes; idle
            idle_rss = rss(p.pid)
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return times, idle_rss


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def concurrent_catalogs(curl, url, pid):
    """Bytes the peer's peak RSS rose by while CLIENTS plain catalog requests
    (10 MB each at 100,000 files) were read at once, each slowly (50 MB/s),
    so all of them are in flight together: the body is shared, so this
    should be about one body at most. The peak is reset first (clear_refs)."""
    clients = 10
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    before = status_kib(pid, "VmRSS")
    procs = [subprocess.Popen([curl, "-s", "-f", "-o", "/dev/null", "--limit-rate", "50M", url])
             for _ in range(clients)]
    for c in procs:
        if c.wait() != 0:
            sys.exit("bench: a concurrent catalog request failed")
    return (status_kib(pid, "VmHWM") - before) * 1024


def catalog_wire(exe, etcd, state, env):
    """(seconds, bytes) medians of the whole catalog by curl, gzip and plain."""
    curl = common.find_tool("curl")
    port = common.free_port()
    url = f"http://127.0.0.1:{port}/v1/files"
    p = subprocess.Popen([exe, "serve", "--dataset", DATA, "--state-dir", state,
                          "--listen", f"127.0.0.1:{port}", "--advertise", f"127.0.0.1:{port}",
                          "--etcd", etcd.endpoint, "--namespace", "bench-scale"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.perf_counter() + 120
        while catalog_len(url) != FILES:
            if p.poll() is not None or time.perf_counter() > deadline:
                sys.exit("bench: serve never served the full catalog")
            time.sleep(0.05)
        time.sleep(2.0)  # the background check of the dataset is over
        out = {}
        for kind, extra in (("gzip", ["--compressed"]), ("plain", [])):
            samples = []
            for i in range(RUNS + 1):
                r = subprocess.run([curl, "-s", "-f", "-o", "/dev/null", "-w",
                                    "%{time_total} %{size_download}", *extra, url],
                                   capture_output=True, text=True, check=True)
                t, size = r.stdout.split()
                if i:
                    samples.append((float(t), int(size)))
            out[kind] = (statistics.median(s[0] for s in samples),
                         statistics.median(s[1] for s in samples))
        out["concurrent_rss"] = concurrent_catalogs(curl, url, p.pid)
        # `files --json` over the whole catalog: the first run fetches it,
        # the next ones find it cached at the peer's generation (warm).
        client = tempfile.mkdtemp(prefix="pbs-bench-files-")
        try:
            files = [exe, "files", "--json", "--etcd", etcd.endpoint, "--namespace", "bench-scale",
                     "--state-dir", client]
            runs = [run_timed(files, env) for _ in range(RUNS + 1)]
            out["files_cold"] = runs[0][:2]
            out["files_warm"] = (statistics.median(r[0] for r in runs[1:]),
                                 statistics.median(r[1] for r in runs[1:]))
            # `files --search`, warm: 1,000 of the 100,000 names match.
            search = [exe, "files", "--search", "f0099", "--etcd", etcd.endpoint,
                      "--namespace", "bench-scale", "--state-dir", client]
            runs = [run_timed(search, env) for _ in range(RUNS)]
            out["files_search"] = (statistics.median(r[0] for r in runs),
                                   statistics.median(r[1] for r in runs))
        finally:
            shutil.rmtree(client, ignore_errors=True)
        return out
    finally:
        common.stop_process(p)


def main():
    exe = common.release_bin()
    for tool in ("openssl", "find", "xargs"):
        common.find_tool(tool)
    make_data()
    warm_page_cache()
    env = dict(common.clean_env(), RUST_LOG="warn")
    index = [exe, "index", "--dataset", DATA, "--state-dir"]
    openssl = f"find {DATA}/ -type f -print0 | xargs -0 -P2 openssl sha1 > /dev/null"
    stat_every_file = (f"find {DATA}/ -mindepth 1 -maxdepth 1 -type d -print0 | xargs -0 -n {DIRS // 2} -P2 "
                       "sh -c 'find \"$@\" -type f -printf \"%s %T@ %i\\n\"' _ > /dev/null")
    scratch = tempfile.mkdtemp(prefix="pbs-bench-scale-")
    try:
        ref, cold, cold_rss, ref_cpu, cold_cpu = [], [], [], [], []
        for i in range(RUNS):
            dt, _, cpu = run_timed(openssl, env, shell=True)
            ref.append(dt)
            ref_cpu.append(cpu)
            dt, peak, cpu = run_timed(index + [os.path.join(scratch, f"cold-{i}")], env)
            cold.append(dt)
            cold_rss.append(peak)
            cold_cpu.append(cpu)
        state = os.path.join(scratch, "cold-0")
        cache = cache_file(state)
        before = os.stat(cache)
        warm, warm_rss, warm_cpu, stat_ref = [], [], [], []
        for _ in range(RUNS):
            dt, _, _ = run_timed(stat_every_file, env, shell=True)
            stat_ref.append(dt)
            dt, peak, cpu = run_timed(index + [state], env)
            warm.append(dt)
            warm_rss.append(peak)
            warm_cpu.append(cpu)
        after = os.stat(cache)
        rewritten = (before.st_ino, before.st_mtime_ns) != (after.st_ino, after.st_mtime_ns)
        with common.Etcd() as etcd:
            restart, idle_rss = serve_restarts(exe, etcd, state, env)
            wire = catalog_wire(exe, etcd, state, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    med = statistics.median
    m_ref, m_cold, m_warm, m_restart = med(ref), med(cold), med(warm), med(restart)
    print(f"\nindex at scale: {FILES} files of 1-8 KiB in {DIRS} directories, {os.cpu_count()} cores, "
          f"page cache warm, medians of {RUNS} whole-process runs (load average "
          f"{os.getloadavg()[0]:.1f})")
    rows = [
        ("reference: find | xargs -P2 openssl sha1", f"{m_ref:.3f} s", "", ""),
        ("index, cold", f"{m_cold:.3f} s", f"{m_cold / m_ref:.2f}x openssl", "<= 1.00x"),
        ("index, warm (nothing changed)", f"{m_warm:.3f} s", f"{m_warm / m_cold * 100:.1f} % of cold", "<= 10 %"),
        ("  floor: stat every file, 2 x find -printf", f"{med(stat_ref):.3f} s",
         f"{med(stat_ref) / m_cold * 100:.1f} % of cold", ""),
        ("  CPU time: openssl pipeline", f"{med(ref_cpu):.3f} s", "", ""),
        ("  CPU time: index, cold", f"{med(cold_cpu):.3f} s", f"{med(cold_cpu) / med(ref_cpu):.2f}x openssl", ""),
        ("  CPU time: index, warm", f"{med(warm_cpu):.3f} s", f"{med(warm_cpu) / med(cold_cpu) * 100:.1f} % of cold", ""),
        ("warm index rewrote the cache", "yes" if rewritten else "no", "", "no"),
        ("serve restart to full catalog", f"{m_restart:.3f} s", "", "<= 0.300 s"),
        ("RSS per file: index cold (peak)", f"{med(cold_rss) / FILES:.0f} B", "", "<= 600 B"),
        ("RSS per file: index warm (peak)", f"{med(warm_rss) / FILES:.0f} B", "", "<= 600 B"),
        ("RSS per file: serve idle", f"{idle_rss / FILES:.0f} B", "", "<= 600 B"),
        ("GET /v1/files, gzip (curl --compressed)", f"{wire['gzip'][0] * 1000:.1f} ms",
         f"{wire['gzip'][1] / 1e6:.2f} MB on the wire", "<= 50 ms, 4 MB"),
        ("GET /v1/files, plain", f"{wire['plain'][0] * 1000:.1f} ms",
         f"{wire['plain'][1] / 1e6:.2f} MB on the wire", ""),
        ("10 concurrent plain catalogs: peak RSS up", f"{wire['concurrent_rss'] / 2**20:.1f} MiB",
         "", "<= 16 MiB"),
        ("files --json, first (fetches the catalog)", f"{wire['files_cold'][0]:.3f} s",
         f"{wire['files_cold'][1] / 2**20:.0f} MiB peak RSS", ""),
        ("files --json, warm (cached by generation)", f"{wire['files_warm'][0]:.3f} s",
         f"{wire['files_warm'][1] / 2**20:.0f} MiB peak RSS", "<= 0.300 s"),
        ("files --search f0099, warm", f"{wire['files_search'][0]:.3f} s",
         f"{wire['files_search'][1] / 2**20:.0f} MiB peak RSS", "<= 0.200 s"),
    ]
    RESULTS.update(ref=m_ref, cold=m_cold, warm=m_warm, stat_floor=med(stat_ref), restart=m_restart,
                   rewritten=rewritten,
                   cold_rss=med(cold_rss), warm_rss=med(warm_rss), idle_rss=idle_rss,
                   wire=wire, files=FILES, load=os.getloadavg()[0])
    print(f"{'row':<42}{'measured':>12}  {'vs reference':<22}{'target':>10}")
    for name, value, ratio, target in rows:
        print(f"{name:<42}{value:>12}  {ratio:<22}{target:>10}")
    print("samples (s): openssl " + " ".join(f"{x:.2f}" for x in ref)
          + " | cold " + " ".join(f"{x:.2f}" for x in cold)
          + " | warm " + " ".join(f"{x:.3f}" for x in warm)
          + " | stat floor " + " ".join(f"{x:.3f}" for x in stat_ref)
          + " | restart " + " ".join(f"{x:.3f}" for x in restart))
    print("reproduce: cargo build --release && python3 benches/bench_scale.py")
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    sys.exit(main())
