#!/usr/bin/env python3
"""`piratebay-sync list --json` against `etcdctl get --prefix`.

One throwaway etcd holds 60 peer records under /piratebay/peers/<id>;
both commands are run 30+ times after a warmup and their medians compared.
Target: list <= 0.3x etcdctl (a Go binary that dials gRPC).
No peer needs to run. Exit status: 0 target met, 1 missed or list failed.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PEERS = 60
RUNS = int(os.environ.get("BENCH_RUNS", "30"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "3"))
TARGET_RATIO = 0.3


def peer_record(i):
    return {
        "id": f"{i:032x}",
        "addr": f"10.0.{i // 250}.{i % 250 + 1}:7070",
        "name": f"host-{i:02d}.lan",
        "version": "0.1.0",
        "started_at": int(time.time()) - 3600 + i,
        "index_gen": 1000 + i,
    }


def check_list_output(cmd, env):
    """None if `list --json` prints the 60 peers, else what is wrong."""
    import subprocess

    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=60)
    if p.returncode != 0:
        return None  # reported by the timing run
    try:
        peers = json.loads(p.stdout)
    except ValueError as e:
        return f"list --json printed invalid JSON: {e}"
    if not isinstance(peers, list) or len(peers) != PEERS:
        n = len(peers) if isinstance(peers, list) else type(peers).__name__
        return f"list --json printed {n} peers, expected {PEERS}"
    return None


def main():
    binary = common.release_bin()
    etcdctl = common.find_tool("etcdctl")
    with common.Etcd() as etcd:
        for i in range(PEERS):
            rec = peer_record(i)
            etcd.put(f"/piratebay/peers/{rec['id']}", json.dumps(rec))
        ep = etcd.endpoint
        env = common.clean_env()
        ctl_env = dict(env, ETCDCTL_API="3")
        cmds = [
            ("piratebay-sync list --json", [binary, "list", "--json", "--etcd", ep], env),
            ("etcdctl get --prefix", [etcdctl, f"--endpoints={ep}", "get", "--prefix", "/piratebay/peers/"], ctl_env),
        ]
        results = []
        check = check_list_output(cmds[0][1], env)
        for name, cmd, e in cmds:
            try:
                results.append((name, common.median_time(cmd, runs=RUNS, warmup=WARMUP, env=e)))
            except common.CommandFailed as err:
                results.append((name, str(err)))
    print(f"bench_list: {PEERS} peer keys, {RUNS} runs after {WARMUP} warmup, whole-process wall time")
    common.print_table(results, reference="etcdctl get --prefix")
    ours, ref = results[0][1], results[1][1]
    if not isinstance(ours, dict):
        print(f"bench_list: FAILED: `list` did not run: {ours}")
        return 1
    if not isinstance(ref, dict):
        print(f"bench_list: FAILED: etcdctl did not run: {ref}")
        return 1
    if check:
        print(f"bench_list: FAILED: {check}")
        return 1
    ratio = ours["median"] / ref["median"]
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"bench_list: target list <= {TARGET_RATIO}x etcdctl: {ratio:.2f}x, {verdict}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
