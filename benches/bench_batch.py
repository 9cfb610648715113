#!/usr/bin/env python3
"""Many small files in one command: `get --all` against `aria2c -i list -j16`.

On loopback: a throwaway etcd and one `piratebay-sync serve` peer sharing
BENCH_BATCH_FILES (default 1,000) files of 1-64 KiB of random bytes.

Median wall time, each run into an empty directory, of:
- `aria2c -i list -j16 -d out` (the reference; no verification),
- `get --all --dir out` (one catalog refresh, 16 downloads at once, every
  piece and whole file SHA1-verified, fsync + atomic rename per file),
- for information: one `curl -K` (one process, one keep-alive connection,
  sequential) over the same URLs.

Also printed: the peak RSS of `get --all`. Target: get <= 1.0x aria2c. Exit status 0 when met, 1 otherwise or when a
command fails. python3 standard library only. Environment: BENCH_RUNS
(default 5), BENCH_WARMUP (default 1), BENCH_BATCH_FILES (default 1000).
"""

import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from bench_get import peak_rss_kib, serve_is_stub, start_peer  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "1"))
FILES = int(os.environ.get("BENCH_BATCH_FILES", "1000"))
TARGET_RATIO = 1.0

#: Figures of the last run (see scale_table.py).
RESULTS = {}


def wait_listed(binary, endpoint, state, count, timeout=300):
    """Waits until `files --json` lists `count` files."""
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = subprocess.run([binary, "files", "--json", "--etcd", endpoint, "--state-dir", state],
                           capture_output=True, env=common.clean_env(), timeout=60)
        if p.returncode == 0:
            try:
                if len(json.loads(p.stdout)) >= count:
                    return True
            except ValueError:
                pass
        time.sleep(0.5)
    return False


def fresh_dir(out, *cmd):
    """`cmd` run after emptying `out` (the removal is inside the timing for
    every row alike)."""
    return ["sh", "-c", 'rm -rf "$0" && mkdir "$0" && exec "$@"', out, *cmd]


def main():
    binary = common.release_bin()
    aria2c = common.find_tool("aria2c")
    curl = common.find_tool("curl")
    if serve_is_stub(binary):
        print("bench_batch: `piratebay-sync serve` is not wired on this branch")
        return 1
    work = tempfile.mkdtemp(prefix="bench-batch-")
    proc = None
    try:
        dataset = os.path.join(work, "dataset")
        os.makedirs(dataset)
        rng = random.Random(12)
        sha1s = {}
        for i in range(FILES):
            data = os.urandom(rng.randint(1024, 64 * 1024))
            name = f"f{i:05}.bin"
            with open(os.path.join(dataset, name), "wb") as f:
                f.write(data)
            sha1s[name] = hashlib.sha1(data).hexdigest()
        total = sum(os.path.getsize(os.path.join(dataset, n)) for n in sha1s)
        print(f"bench_batch: {FILES} files, {total / 1048576:.1f} MiB, one peer", flush=True)
        with common.Etcd() as etcd:
            ep = etcd.endpoint
            ip = "127.0.0.21"
            port = common.free_port(ip)
            log = os.path.join(work, "peer.log")
            proc = start_peer(binary, ep, dataset, os.path.join(work, "peer"), ip, port, log)
            client_state = os.path.join(work, "client")
            if not wait_listed(binary, ep, client_state, FILES):
                print(f"bench_batch: the peer did not list {FILES} files in time:\n{common.tail(log)}")
                return 1
            urls = [f"http://{ip}:{port}/v1/files/{s}" for s in sha1s.values()]
            aria_list = os.path.join(work, "aria2.list")
            with open(aria_list, "w") as f:
                f.writelines(f"{u}\n  out={n}\n" for n, u in zip(sha1s, urls))
            curl_list = os.path.join(work, "curl.list")
            with open(curl_list, "w") as f:
                f.writelines(f'url = "{u}"\noutput = "{n}"\n' for n, u in zip(sha1s, urls))
            out = os.path.join(work, "out")
            rows = []
            ok = True
            cmds = [
                ("aria2c -i list -j16", fresh_dir(out, aria2c, "-q", "-i", aria_list, "-j16",
                                                  "-d", out, "--allow-overwrite=true")),
                ("get --all (verified)", fresh_dir(out, binary, "get", "--all", "--dir", out,
                                                   "--etcd", ep, "--state-dir", client_state)),
                ("curl -K (info)", ["sh", "-c", 'rm -rf "$0" && mkdir "$0" && cd "$0" && exec "$@"',
                                    out, curl, "-s", "-f", "-K", curl_list]),
            ]
            for name, cmd in cmds:
                try:
                    rows.append((name, common.median_time(cmd, runs=RUNS, warmup=WARMUP, timeout=300)))
                except common.CommandFailed as e:
                    rows.append((name, str(e)))
                    ok = False
                if name.startswith("get"):
                    bad = [n for n, s in sha1s.items()
                           if not os.path.exists(os.path.join(out, n))
                           or hashlib.sha1(open(os.path.join(out, n), "rb").read()).hexdigest() != s]
                    if bad:
                        print(f"bench_batch: get left {len(bad)} file(s) missing or wrong, e.g. {bad[0]}")
                        ok = False
            try:
                kib = peak_rss_kib(fresh_dir(out, binary, "get", "--all", "--dir", out,
                                             "--etcd", ep, "--state-dir", client_state))
                rss = f"{kib / 1024:.1f} MiB"
            except common.CommandFailed as e:
                rss = f"FAILED: {e}"
                ok = False
            print()
            common.print_table(rows, rows[0][0])
            print(f"peak RSS of get --all: {rss}")
            RESULTS.update(rows=dict(rows), rss=rss, files=FILES, load=os.getloadavg()[0])
            if ok:
                ratio = rows[1][1]["median"] / rows[0][1]["median"]
                met = ratio <= TARGET_RATIO
                print(f"target get --all <= {TARGET_RATIO}x aria2c: {'met' if met else 'MISSED'} ({ratio:.2f}x)")
                ok = met
            return 0 if ok else 1
    finally:
        common.stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
