#!/usr/bin/env python3
"""Benchmark of `piratebay-sync index` (issue 3).

Cold index of ~400 MiB in ~130 files (4 MiB and 1 MiB random files and one
empty file) against `openssl sha1` over the same files run sequentially (one
openssl process over all files), whole-process wall-clock medians; then the
warm restart (same state directory, nothing changed).

Targets on 2 cores: cold <= 0.65x openssl's wall time and <= 1.05x its CPU
time (user + system: one SHA-1 pass per byte, the pieces' chaining values
taken in the same pass, issue 20), warm restart <= 5 % of cold.

Both sides read from a warm page cache: the files are read once before
measuring, and runs alternate. The data is made once and kept in
/tmp/piratebay-bench/index-data. Run via `make bench` (which builds the
release binary first) or: cargo build --release && python3 benches/bench_index.py
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
DATA = Path("/tmp/piratebay-bench/index-data")
LAYOUT = [(f"big/b{i:03}.bin", 4 * MIB) for i in range(90)] + \
         [(f"small/s{i:03}.bin", 1 * MIB) for i in range(40)] + \
         [("empty", 0)]
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
COLD_TARGET = 0.65
CPU_TARGET = 1.05
WARM_TARGET = 0.05


def binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR",
                                 Path(__file__).resolve().parent.parent / "target"))
    return target / "release" / "piratebay-sync"


def make_data() -> list:
    marker = DATA.parent / "index-data.ok"
    files = [DATA / rel for rel, _ in LAYOUT]
    if marker.exists() and all(f.exists() for f in files):
        return files
    print(f"creating {sum(s for _, s in LAYOUT) / MIB:.0f} MiB in {len(LAYOUT)} files under {DATA} ...",
          flush=True)
    shutil.rmtree(DATA, ignore_errors=True)
    old = time.time() - 3600  # not "just written": no settling wait
    for (rel, size), path in zip(LAYOUT, files):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        os.utime(path, (old, old))
    marker.write_text("ok\n")
    return files


def timed(cmd, env=None) -> float:
    return timed_cpu(cmd, env)[0]


def timed_cpu(cmd, env=None) -> tuple:
    """Wall seconds and CPU seconds (user + system) of one run of `cmd`."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    exe = binary()
    if not exe.exists():
        print(f"{exe} is missing: run `cargo build --release` first (make bench does)", file=sys.stderr)
        return 2
    if not shutil.which("openssl"):
        print("openssl is missing: apt-get install openssl", file=sys.stderr)
        return 2
    files = make_data()
    total = sum(f.stat().st_size for f in files)
    for f in files:  # warm the page cache
        f.read_bytes()
    env = dict(os.environ, RUST_LOG="warn")
    openssl = ["openssl", "sha1"] + [str(f) for f in files]
    index = [str(exe), "index", "--json", "--dataset", str(DATA), "--state-dir"]

    scratch = Path(tempfile.mkdtemp(prefix="pbs-bench-index-"))
    try:
        cold, ref, cold_cpu, ref_cpu = [], [], [], []
        for i in range(RUNS):
            w, c = timed_cpu(openssl)
            ref.append(w)
            ref_cpu.append(c)
            w, c = timed_cpu(index + [str(scratch / f"cold-{i}")], env)
            cold.append(w)
            cold_cpu.append(c)
        warm_state = str(scratch / "warm")
        timed(index + [warm_state], env)  # fills the cache
        warm = [timed(index + [warm_state], env) for _ in range(RUNS)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    m_ref, m_cold, m_warm = (statistics.median(x) for x in (ref, cold, warm))
    c_ref, c_cold = statistics.median(ref_cpu), statistics.median(cold_cpu)
    ratio, warm_pct, cpu_ratio = m_cold / m_ref, m_warm / m_cold, c_cold / c_ref
    print(f"\nindex benchmark: {total / MIB:.0f} MiB in {len(files)} files, {os.cpu_count()} cores, "
          f"warm page cache, median of {RUNS} whole-process runs")
    print(f"{'run':<40}{'median s':>10}{'MB/s':>10}{'vs openssl':>12}{'CPU s':>8}{'CPU vs':>8}")
    print(f"{'openssl sha1 (sequential, 1 process)':<40}{m_ref:>10.3f}{total / 1e6 / m_ref:>10.0f}{1:>12.2f}"
          f"{c_ref:>8.3f}{1:>8.2f}")
    print(f"{'piratebay-sync index (cold)':<40}{m_cold:>10.3f}{total / 1e6 / m_cold:>10.0f}{ratio:>12.2f}"
          f"{c_cold:>8.3f}{cpu_ratio:>8.2f}")
    print(f"{'piratebay-sync index (warm restart)':<40}{m_warm:>10.3f}{'':>10}{m_warm / m_ref:>12.3f}")
    ok_cold, ok_warm = ratio <= COLD_TARGET, warm_pct <= WARM_TARGET
    print(f"\ncold / openssl = {ratio:.2f} (target <= {COLD_TARGET}): {'met' if ok_cold else 'MISSED'}")
    print(f"cold CPU / openssl CPU = {cpu_ratio:.2f} (target <= {CPU_TARGET}): "
          f"{'met' if cpu_ratio <= CPU_TARGET else 'MISSED'}")
    print(f"warm / cold = {warm_pct * 100:.1f} % (target <= {WARM_TARGET * 100:.0f} %): "
          f"{'met' if ok_warm else 'MISSED'}")
    print("reproduce: cargo build --release && python3 benches/bench_index.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
