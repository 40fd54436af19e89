"""Grid throughput of `pipelines.compare` with 1 and with 2 worker processes, side by side.

    python -m benchmarks.compare_parallel [--cells=8 --rounds=5 --repeats=1 --out=/tmp/...]
    python -m benchmarks.compare_parallel --grid=examples/quick.toml

Runs the same grid (by default a small one: digits, 10 clients; mean/median ×
none/sign_flip × seeds; or the `--grid` file) from scratch with --parallel=1 and
--parallel=2 (each with the default threads per cell: cores // parallel),
alternating the order over repeats and resting `--pause` seconds before each run.
Prints the wall time of each, the rate in cells per minute, the ratio
rate(2) / rate(1), the CPU seconds used (all processes, TFF workers included) per
wall second, and each run's phases (start-up, cells, end) from the cells' start
and finish times in grid.json. Each run includes starting the worker processes
(importing TensorFlow Federated), as a user's grid does. Other load on the
machine makes single figures noisy: repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GRID = """\
name = "bench"
[settings]
dataset = "digits"
num_clients = 10
rounds = {rounds}
byzantine_fraction = 0.2
[axes]
aggregator = ["mean", "median"]
attack = ["none", "sign_flip"]
seed = {seeds}
"""


def phases(out: str, launched: float, ended: float) -> str:
    """Where the wall time went, from the cells' start and end times in grid.json."""
    with open(os.path.join(out, "grid.json"), encoding="utf-8") as f:
        cells = [c for c in json.load(f)["cells"] if "started" in c and "finished" in c]
    if not cells:
        return ""
    first = min(c["started"] for c in cells)
    last = max(c["finished"] for c in cells)
    busy = sum(c["finished"] - c["started"] for c in cells)
    return (f"start-up {first - launched:.1f} s, cells {last - first:.1f} s (cell time "
            f"{busy:.0f} s), end {ended - last:.1f} s")


def run(grid: str, out: str, parallel: int) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of every process of the grid, TFF workers included,
    the phases)."""
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    started = time.monotonic()
    with open(os.devnull, "w") as devnull:
        code = subprocess.run([sys.executable, "-m", "pipelines.compare", grid, f"--output_dir={out}",
                               f"--parallel={parallel}", "--noprogress"], stdout=devnull,
                              check=False).returncode
    if code != 0:
        raise SystemExit(f"pipelines.compare --parallel={parallel} exited with {code}")
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # grid.json's times are wall-clock (another process wrote them): compare on that clock.
    return wall, cpu, phases(out, launched, time.time())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=8, help="a multiple of 4 (seeds = cells / 4)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--pause", type=float, default=10.0,
                        help="seconds of rest before each run")
    parser.add_argument("--grid", default=None, help="a grid TOML file instead of the built-in one")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="compare_parallel_")
    os.makedirs(out, exist_ok=True)
    if args.grid:
        grid = os.path.abspath(args.grid)
        listing = subprocess.run([sys.executable, "-m", "pipelines.compare", grid,
                                  f"--output_dir={os.path.join(out, 'dry')}", "--dry_run"],
                                 capture_output=True, text=True, check=True).stdout
        cells = int(listing.strip().splitlines()[-1].split()[0])  # "N cells: ..."
        described = f"{args.grid}: {cells} cells"
    else:
        grid = os.path.join(out, "grid.toml")
        with open(grid, "w") as f:
            f.write(GRID.format(rounds=args.rounds, seeds=list(range(max(1, args.cells // 4)))))
        cells = 4 * max(1, args.cells // 4)
        described = f"{cells} cells of {args.rounds} rounds (digits, 10 clients)"
    print(f"grid: {described}; {len(os.sched_getaffinity(0))} cores; load average "
          f"{os.getloadavg()[0]:.2f}")
    ratios = []
    for repeat in range(args.repeats):
        order = (1, 2) if repeat % 2 == 0 else (2, 1)
        measured = {}
        for p in order:
            time.sleep(args.pause)  # the previous run's memory is freed, caches settle
            measured[p] = run(grid, os.path.join(out, f"p{p}"), p)
        seconds = {p: wall for p, (wall, _, _) in measured.items()}
        cpu = {p: c for p, (_, c, _) in measured.items()}
        rates = {p: 60.0 * cells / s for p, s in seconds.items()}
        print(f"repeat {repeat + 1}: --parallel=1 {seconds[1]:.1f} s ({rates[1]:.2f} cells/min, "
              f"{cpu[1]:.0f} CPU s), --parallel=2 {seconds[2]:.1f} s ({rates[2]:.2f} cells/min, "
              f"{cpu[2]:.0f} CPU s): ratio {rates[2] / rates[1]:.2f}x; CPU used per wall second "
              f"{cpu[1] / seconds[1]:.2f} vs {cpu[2] / seconds[2]:.2f} (load average now "
              f"{os.getloadavg()[0]:.2f})", flush=True)
        for p in (1, 2):
            print(f"  --parallel={p}: {measured[p][2]}", flush=True)
        ratios.append(rates[2] / rates[1])
    if len(ratios) > 1:
        print(f"ratio over {len(ratios)} repeats: median {statistics.median(ratios):.2f}x, "
              f"min {min(ratios):.2f}x, max {max(ratios):.2f}x")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
