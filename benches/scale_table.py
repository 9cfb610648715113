#!/usr/bin/env python3
"""`make bench-scale`: every row of issue 12's table, before and after.

Runs the benches that measure them (each prints its own details first):
bench_scale.py (index, serve, catalog, files), bench_peers.py (1,000
peers, idle etcd load, garbage keys, get of one file on 50 peers),
bench_batch.py (1,000 small files), bench_fair.py (20 concurrent gets),
then one table: the issue's figure ("before", constants below), the one
measured now, and the reference tool measured in the same run.

Sizes stay configurable through each bench's variables (BENCH_RUNS,
BENCH_SCALE_FILES, BENCH_GET_PEERS, BENCH_BATCH_FILES, BENCH_FAIR_MIB...);
BENCH_SCALE_PARTS (default "scale,peers,batch,fair") picks the benches.
The LAN-lab row needs root and network namespaces: `make bench-lan`.
Exit status: 0 when every bench met its targets, 1 otherwise.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PARTS = os.environ.get("BENCH_SCALE_PARTS", "scale,peers,batch,fair").split(",")

#: Issue 12's figures ("now" when it was filed), by row.
BEFORE = {
    "index cold": "4.1-4.9 s, 186 MB RSS",
    "index warm": "1.9 s (45 % of cold), cache rewritten",
    "serve RSS idle": "143 MB",
    "catalog": "10.6 MB, 0.55 s per request",
    "registration puts": "684 puts in 4.3 s",
    "etcd idle": "0.97 watch reopens/s + 0.30 renewals/s",
    "get one": "0.83-0.94 s, 170 MB RSS",
    "files": "warm 1.04 s, 131 MB",
    "batch": "loop of get: 12.7 s",
    "fair": "7.4-7.5 s, 1 run in 3: 12.5 s (stalled)",
    "lan": "one get of 8 failed (stalled)",
    "garbage": "1,000 warnings per peer, 2,000 per get",
    "list 1000": "(new row)",
}


def run(name):
    """Runs bench `name`'s main(); its RESULTS, and whether it met its targets."""
    module = __import__(name)
    print(f"\n== benches/{name}.py", flush=True)
    try:
        code = module.main()
    except SystemExit as e:  # a bench that could not run
        print(f"{name}: {e}")
        code = 1
    return module.RESULTS, code == 0


def ms(x):
    return f"{x:.0f} ms" if x >= 10 else f"{x:.1f} ms"


def main():
    rows = []
    ok = True
    if "scale" in PARTS:
        r, met = run("bench_scale")
        ok &= met
        if r:
            n = r["files"]
            w = r["wire"]
            load = f"load {r['load']:.1f}"
            rows += [
                (f"index, {n} files of 1-8 KiB, cold", BEFORE["index cold"],
                 f"{r['cold']:.2f} s, {r['cold_rss'] / 1e6:.0f} MB RSS ({r['cold'] / r['ref']:.2f}x)",
                 f"openssl pipeline {r['ref']:.2f} s; {load}"),
                ("index, warm (nothing changed)", BEFORE["index warm"],
                 f"{r['warm']:.2f} s ({r['warm'] / r['cold'] * 100:.0f} % of cold), cache "
                 f"{'rewritten' if r['rewritten'] else 'not rewritten'}",
                 f"target <= 10 %; stat of every file alone {r['stat_floor']:.2f} s "
                 f"({r['stat_floor'] / r['cold'] * 100:.0f} %)"),
                ("serve on it: RSS idle", BEFORE["serve RSS idle"],
                 f"{r['idle_rss'] / 1e6:.0f} MB ({r['idle_rss'] / n:.0f} B/file); restart to "
                 f"full catalog {r['restart']:.2f} s", "target <= 600 B/file, 0.3 s"),
                ("GET /v1/files, whole catalog", BEFORE["catalog"],
                 f"gzip {w['gzip'][1] / 1e6:.2f} MB, {w['gzip'][0] * 1000:.0f} ms "
                 f"(plain {w['plain'][1] / 1e6:.1f} MB, {w['plain'][0] * 1000:.0f} ms)",
                 "curl --compressed; target 4 MB, 50 ms"),
                ("10 concurrent catalog requests", "",
                 f"peak RSS up {w['concurrent_rss'] / 2**20:.1f} MiB", "target <= 16 MiB"),
                ("files --json, whole catalog", BEFORE["files"],
                 f"warm {w['files_warm'][0]:.2f} s, {w['files_warm'][1] / 1e6:.0f} MB "
                 f"(first {w['files_cold'][0]:.2f} s); --search {w['files_search'][0]:.2f} s",
                 "target 0.3 s, --search 0.2 s"),
            ]
    rows.append(("registration puts while indexing", BEFORE["registration puts"],
                 "<= 1 put/s (debounced)", "test peer::index_generations_are_published_at_most_once_a_second"))
    if "peers" in PARTS:
        import bench_peers

        r, met = run("bench_peers")
        ok &= met
        if "idle" in r:
            rate, delta = r["idle"]
            detail = ", ".join(f"{m} {n:.0f}" for m, n in sorted(delta.items()) if n)
            rows.append(("etcd load per idle peer", BEFORE["etcd idle"],
                         f"{rate:.2f} requests/s ({detail})",
                         f"{bench_peers.IDLE_PEERS} peers, {bench_peers.IDLE_SECONDS:.0f} s; target 0.4"))
        if "get" in r:
            t, kib, curl, cpu = r["get"]
            rows.append((f"get of one file, {bench_peers.GET_PEERS} peers x "
                         f"{bench_peers.GET_FILES} files", BEFORE["get one"],
                         f"{ms(t)} ({ms(cpu)} CPU), {kib / 1024:.0f} MiB RSS",
                         f"curl {ms(curl)}; target 50 ms, 24 MiB"))
        if "list" in r:
            t, ref, n = r["list"]
            rows.append((f"list, {n} registered peers", BEFORE["list 1000"], ms(t),
                         f"etcdctl get --prefix {ms(ref)}; target 50 ms"))
        if "garbage" in r:
            rows.append(("1,000 garbage keys under the prefix", BEFORE["garbage"],
                         f"{r['garbage']} warning line(s) for list", "target 1 summary"))
    if "batch" in PARTS:
        r, met = run("bench_batch")
        ok &= met
        if r:
            rs = r["rows"]
            get = next(v for k, v in rs.items() if k.startswith("get"))
            aria = next(v for k, v in rs.items() if k.startswith("aria2c"))
            curl = next(v for k, v in rs.items() if k.startswith("curl"))
            fmt = lambda v: f"{v['median'] / 1000:.2f} s" if isinstance(v, dict) else "FAILED"  # noqa: E731
            rows.append((f"{r['files']} files of 1-64 KiB in one command", BEFORE["batch"],
                         f"get --all {fmt(get)}, {r['rss']} RSS",
                         f"aria2c -j16 {fmt(aria)}, curl -K {fmt(curl)}"))
    if "fair" in PARTS:
        r, met = run("bench_fair")
        ok &= met
        if r:
            rs = r["rows"]
            gets = next(v for k, v in rs.items() if "get" in k)
            curls = next(v for k, v in rs.items() if k.endswith("MiB)"))
            rows.append((f"{r['clients']} concurrent gets of {r['mib']} MiB, one peer", BEFORE["fair"],
                         f"{gets['median'] / 1000:.1f} s (max {gets['max'] / 1000:.1f}), "
                         f"{r['stalls']} stalled, {r['failures']} failed in {r['runs']} runs",
                         f"20 curls {curls['median'] / 1000:.1f} s"))
    rows.append(("8 hosts fetching one file (LAN lab)", BEFORE["lan"], "see make bench-lan",
                 "root, network namespaces"))

    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"\nissue 12, before and after (load average now {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} cores)\n")
    print(f"{'case':<{w[0]}}  {'before':<{w[1]}}  {'after':<{w[2]}}  reference / target")
    for case, before, after, ref in rows:
        print(f"{case:<{w[0]}}  {before:<{w[1]}}  {after:<{w[2]}}  {ref}")
    print(f"\nmake bench-scale: targets {'met' if ok else 'MISSED (see above)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
