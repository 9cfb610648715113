#!/usr/bin/env python3
"""20 concurrent `piratebay-sync get`s from one peer against 20 concurrent
`curl`s of the same file (issue 12: the server's fair share).

On loopback: a throwaway etcd and one `piratebay-sync serve --workers 8`
sharing one file of random bytes (BENCH_FAIR_MIB, default 256 MiB).

Each round starts CLIENTS clients at once and waits for all of them; the
wall time of the round is recorded. Rounds alternate between curl and
get, BENCH_RUNS (default 5) of each. Reported: the median, min and max
round time of each, their ratio (and, for information, curls followed
by an fsync of their file, as get fsyncs), and how many gets printed a stall
("stalled: no data") or failed. Targets: no stall, no failure, and the
median get round <= 1.3x the median curl round (issue 20: one SHA-1 pass
per byte; two passes put the floor near 1.6x on 2 cores).

Exit status: 0 every target met; 1 otherwise. python3 standard library
only. Environment: BENCH_RUNS (default 5), BENCH_FAIR_MIB (default 256),
BENCH_FAIR_CLIENTS (default 20).
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
MIB = int(os.environ.get("BENCH_FAIR_MIB", "256"))
CLIENTS = int(os.environ.get("BENCH_FAIR_CLIENTS", "20"))
WORKERS = 8
TARGET_RATIO = 1.3

#: Figures of the last run (see scale_table.py).
RESULTS = {}



def round_of(cmds):
    """Starts every command at once, waits for all; returns the wall time
    in ms and a list of (exit code, stderr) per command."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=common.clean_env()) for c in cmds]
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        results.append((p.returncode, err.decode(errors="replace")))
    return (time.perf_counter() - t0) * 1000.0, results


def summary(samples):
    return {"median": statistics.median(samples), "min": min(samples),
            "max": max(samples), "runs": len(samples), "samples": samples}


def main():
    binary = common.release_bin()
    curl = common.find_tool("curl")
    work = tempfile.mkdtemp(prefix="bench-fair-")
    proc = None
    try:
        dataset = os.path.join(work, "dataset")
        out_dir = os.path.join(work, "out")
        os.makedirs(dataset)
        print(f"bench_fair: writing {MIB} MiB of random data ...", flush=True)
        sha1 = common.random_file(os.path.join(dataset, "fair.bin"), MIB)
        with common.Etcd() as etcd:
            ep = etcd.endpoint
            ip = "127.0.0.31"
            port = common.free_port(ip)
            log_path = os.path.join(work, "peer.log")
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [binary, "serve", "--dataset", dataset,
                     "--state-dir", os.path.join(work, "peer"),
                     "--listen", f"{ip}:{port}", "--advertise", f"{ip}:{port}",
                     "--etcd", ep, "--workers", str(WORKERS)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=common.clean_env())
            url = f"http://{ip}:{port}/v1/files/{sha1}"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    print(f"bench_fair: serve exited {proc.returncode}:\n{common.tail(log_path)}")
                    return 1
                p = subprocess.run([curl, "-s", "-f", "-I", url], capture_output=True)
                if p.returncode == 0:
                    break
                time.sleep(0.5)
            else:
                print("bench_fair: the peer did not serve the file in time")
                return 1

            def outs():
                shutil.rmtree(out_dir, ignore_errors=True)
                os.makedirs(out_dir)
                return [os.path.join(out_dir, f"c{i}.bin") for i in range(CLIENTS)]

            curl_times, get_times, sync_times = [], [], []
            stalls = failures = 0
            for run in range(RUNS + 1):  # the first round of each warms up
                t, res = round_of([[curl, "-sS", "-f", "-o", o, url] for o in outs()])
                bad = [(code, err) for code, err in res if code != 0]
                if bad:
                    # curl's exit status says what failed (23: it could
                    # not write its output, e.g. a full disk).
                    code, err = bad[0]
                    print(f"bench_fair: {len(bad)} of {len(res)} curls failed, the first with exit "
                          f"status {code}: {err.strip() or '(no message)'}")
                    return 1
                if run:
                    curl_times.append(t)
                # For information: curls made as durable as get (which
                # fsyncs before its rename).
                files = outs()
                t, res = round_of([["sh", "-c", '"$@" && sync "$0"', o, curl, "-s", "-f",
                                    "-o", o, url] for o in files])
                if run and all(code == 0 for code, _ in res):
                    sync_times.append(t)
                client_state = os.path.join(work, "client")
                t, res = round_of([[binary, "get", sha1, "-o", o, "--etcd", ep,
                                    "--state-dir", client_state] for o in outs()])
                if run:
                    get_times.append(t)
                    stalls += sum(1 for _, err in res if "stalled" in err)
                    failures += sum(1 for code, _ in res if code != 0)
                for code, err in res:
                    if code != 0:
                        print(f"get failed (round {run}): {err.strip()[:300]}")
            rows = [(f"{CLIENTS} x curl ({MIB} MiB)", summary(curl_times)),
                    (f"{CLIENTS} x get verified", summary(get_times))]
            if sync_times:
                rows.append((f"{CLIENTS} x curl + fsync (info)", summary(sync_times)))
            print()
            common.print_table(rows, rows[0][0])
            ratio = rows[1][1]["median"] / rows[0][1]["median"]
            print(f"gets that stalled: {stalls}, failed: {failures} "
                  f"(of {CLIENTS * RUNS}; target 0)")
            RESULTS.update(rows=dict(rows), stalls=stalls, failures=failures, runs=RUNS,
                           clients=CLIENTS, mib=MIB, load=os.getloadavg()[0])
            met = ratio <= TARGET_RATIO and stalls == 0 and failures == 0
            print(f"target no stall and get <= {TARGET_RATIO}x curl: "
                  f"{'met' if met else 'MISSED'} ({ratio:.2f}x)")
            return 0 if met else 1
    finally:
        common.stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
