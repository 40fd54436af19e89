"""pipelines.compare + pipelines.report end to end on a tiny grid of the embedded dataset.

2 aggregators × 2 attacks × 2 seeds, 5 clients, 4 rounds. The report's numbers are
recomputed by hand from the run files; a grid killed with SIGKILL in the middle of
a cell and rerun ends with exactly the uninterrupted grid's table, every round once.
"""

import collections
import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pipelines import compare, report
from tests.workers import wait_until_gone

GRID = """\
name = "tiny"
[settings]
num_clients = 5
rounds = 4
byzantine_fraction = 0.2
[axes]
aggregator = ["mean", "median"]
attack = ["none", "sign_flip"]
seed = [0, 1]
"""


def write_grid(directory):
    path = directory / "grid.toml"
    path.write_text(GRID)
    return str(path)


Result = collections.namedtuple("Result", "returncode stdout stderr")


def run_compare(*args):
    """pipelines.compare in this process (its workers are subprocesses either way)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = compare.main(["compare", *args, "--noprogress"])
    return Result(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    grid = write_grid(root)
    out = root / "out"
    done = run_compare(grid, f"--output_dir={out}", "--parallel=2")
    assert done.returncode == 0, done.stderr[-3000:]
    return grid, out, done


def summaries(out):
    found = {}
    for name in os.listdir(out / "runs"):
        with open(out / "runs" / name / "summary.json") as f:
            found[name] = json.load(f)
    return found


def test_grid_runs_every_cell_once_with_pipelines_train_layout(finished):
    _, out, done = finished
    assert "tiny: 8 cells: 8 complete, 0 failed (run verdict), 0 invalid, 0 errors; ran 8" in done.stdout
    runs = sorted(os.listdir(out / "runs"))
    assert len(runs) == 8
    manifest = json.loads((out / "grid.json").read_text())
    assert {c["outcome"] for c in manifest["cells"]} == {"complete"}
    for cell in manifest["cells"]:  # wall-clock start and finish, as the benchmark reads them
        assert cell["finished"] - cell["started"] == pytest.approx(cell["seconds"], abs=1.0)
    for name in runs:
        files = set(os.listdir(out / "runs" / name))
        assert {"config.json", "metrics.csv", "summary.json", "state"} <= files
        metrics = pd.read_csv(out / "runs" / name / "metrics.csv")
        assert list(metrics["round"]) == [1, 2, 3, 4]


def test_rerun_skips_complete_cells(finished):
    grid, out, _ = finished
    before = {n: os.path.getmtime(out / "runs" / n / "summary.json") for n in os.listdir(out / "runs")}
    again = run_compare(grid, f"--output_dir={out}", "--parallel=2")
    assert again.returncode == 0 and "ran 0" in again.stdout
    assert before == {n: os.path.getmtime(out / "runs" / n / "summary.json") for n in before}
    dry = run_compare(grid, f"--output_dir={out}", "--dry_run")
    assert "8 cells: 8 complete" in dry.stdout


def test_report_numbers_equal_hand_computed_from_run_files(finished, capsys):
    _, out, _ = finished
    assert report.main(["report", str(out), "--noplots"]) == 0
    capsys.readouterr()
    by_cell = {}
    for summary in summaries(out).values():
        with open(out / "runs" / summary["run_name"] / "config.json") as f:
            config = json.load(f)
        key = (config["aggregator"].split(":")[0], config["attack"].split(":")[0])
        by_cell.setdefault(key, []).append(summary["final_test_accuracy"])
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8
    markdown = (out / "report" / "report.md").read_text()
    for (aggregator, attack), accuracies in by_cell.items():
        mean = sum(accuracies) / 2
        std = math.sqrt(sum((a - mean) ** 2 for a in accuracies))  # n − 1 = 1
        half = 12.706204736 * std / math.sqrt(2)  # t_{0.975, 1}
        rows = results[(results["aggregator"] == aggregator) & (results["attack"] == attack)]
        assert sorted(rows["final_accuracy"]) == sorted(accuracies)
        assert f"{mean:.3f} ± {std:.3f}" in markdown
        low, high = max(0.0, mean - half), min(1.0, mean + half)  # accuracy CIs clipped to [0, 1]
        assert f"{mean:.3f} [{low:.3f}, {high:.3f}]" in markdown
    # Paired by seed: median − mean under sign_flip.
    diffs = []
    for seed in (0, 1):
        pick = lambda agg: results[(results["aggregator"] == agg) & (results["attack"] == "sign_flip")
                                   & (results["seed"] == seed)]["final_accuracy"].item()
        diffs.append(pick("median") - pick("mean"))
    low, high = scipy_stats.t.interval(0.95, 1, loc=np.mean(diffs), scale=scipy_stats.sem(diffs))
    assert f"{np.mean(diffs):.3f} [{low:.3f}, {high:.3f}]" in markdown


def _children(pid):
    output = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout
    pairs = [tuple(map(int, line.split())) for line in output.splitlines()[1:]]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in pairs if parent in frontier} - found
        found |= frontier
    return found


def test_sigkill_mid_cell_then_rerun_equals_the_uninterrupted_grid(finished, tmp_path, capsys):
    """A copy of the finished grid with two cells never run; the grid is killed (SIGKILL of
    pipelines.compare) in the middle of one of them, then rerun."""
    grid, reference, _ = finished
    out = tmp_path / "killed"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("report", "results.*", "rounds.*"))
    todo = sorted(n for n in os.listdir(out / "runs") if "median_sign_flip" in n)
    assert len(todo) == 2
    for name in todo:
        shutil.rmtree(out / "runs" / name)
    kept = {n: os.path.getmtime(out / "runs" / n / "summary.json")
            for n in os.listdir(out / "runs")}
    process = subprocess.Popen([sys.executable, "-m", "pipelines.compare", grid,
                                f"--output_dir={out}", "--parallel=1", "--noprogress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    mid_cell = None
    while mid_cell is None and time.monotonic() < deadline and process.poll() is None:
        for name in todo:
            try:
                summary = json.loads((out / "runs" / name / "summary.json").read_text())
            except (json.JSONDecodeError, FileNotFoundError):
                continue
            if summary["status"] == "running" and 1 <= summary["rounds_completed"] < 4:
                mid_cell = name
                break
        time.sleep(0.02)
    assert mid_cell is not None, "never saw a cell between rounds"
    descendants = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert descendants and wait_until_gone(descendants, timeout=20), \
        "a grid worker or TFF worker outlived the grid"

    resumed = run_compare(grid, f"--output_dir={out}", "--parallel=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"ran {len(todo)}" in resumed.stdout or "ran 1" in resumed.stdout
    for name, mtime in kept.items():  # cells complete before the kill were not run again
        assert os.path.getmtime(out / "runs" / name / "summary.json") == mtime
    for name in os.listdir(reference / "runs"):
        expected = pd.read_csv(reference / "runs" / name / "metrics.csv").drop(columns="round_seconds")
        actual = pd.read_csv(out / "runs" / name / "metrics.csv").drop(columns="round_seconds")
        assert list(actual["round"]) == [1, 2, 3, 4], name  # nothing lost or duplicated
        pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    tables = []
    for directory in (reference, out):
        assert report.main(["report", str(directory), "--noplots"]) == 0
        text = (directory / "report" / "report.md").read_text()
        tables.append(text.split("\n", 3)[3])  # after the title and the directory line
    capsys.readouterr()
    assert tables[0] == tables[1]


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path):
    """Krum cannot run with n = 5, f = 2 (needs n >= 2f + 3): found when the cell is built."""
    grid = tmp_path / "krum.toml"
    grid.write_text('[settings]\nnum_clients = 5\nrounds = 1\nbyzantine_fraction = 0.4\n'
                    '[axes]\naggregator = ["krum", "mean"]\n')
    out = tmp_path / "out"
    done = run_compare(str(grid), f"--output_dir={out}", "--parallel=1")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "1 complete, 0 failed (run verdict), 1 invalid" in done.stdout
    outcomes = {c["axes"]["aggregator"]: c for c in json.loads((out / "grid.json").read_text())["cells"]}
    assert outcomes["mean"]["outcome"] == "complete"
    assert outcomes["krum"]["outcome"] == "invalid"
    assert "krum" in outcomes["krum"]["reason"].lower() and "n=5" in outcomes["krum"]["reason"]
    assert f"invalid: {outcomes['krum']['run_name']}:" in done.stderr
    assert not (out / "runs" / outcomes["krum"]["run_name"]).exists()  # nothing written


def test_a_worker_above_its_memory_limit_is_replaced_after_its_cell(tmp_path):
    """TFF's worker keeps memory from cell to cell: past --worker_memory_mb a fresh process
    runs the next cell (here after every cell: no worker fits in 1 MB)."""
    grid = tmp_path / "two.toml"
    grid.write_text('[settings]\nnum_clients = 5\nrounds = 1\n[axes]\nseed = [0, 1]\n')
    out = tmp_path / "out"
    done = run_compare(str(grid), f"--output_dir={out}", "--parallel=1", "--worker_memory_mb=1")
    assert done.returncode == 0, done.stderr[-3000:]
    pids = set()
    for name in os.listdir(out / "logs"):
        if name.startswith("worker-"):
            continue
        header = (out / "logs" / name).read_text().splitlines()[0]
        assert header.startswith("--- cell ")
        pids.add(int(header.rsplit("pid ", 1)[1]))
    assert len(pids) == 2
    assert sorted(n for n in os.listdir(out / "logs") if n.startswith("worker-")) == [
        "worker-0.log", "worker-1.log"]
