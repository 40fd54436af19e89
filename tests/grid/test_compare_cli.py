"""pipelines.compare's error paths (exit 2, one line, nothing written) and --dry_run."""

import ctypes
import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from orchestration.grid import pool, runner, spec
from orchestration.grid.cells import CellRecord
from pipelines import compare
from tests.workers import session_pids, wait_until_gone, worker_pids

GRID = '[settings]\nnum_clients = 5\nrounds = 2\n[axes]\naggregator = ["mean", "median"]\nseed = [0, 1]\n'


def run(capsys, *args):
    code = compare.main(["compare", *args])
    return code, capsys.readouterr()


@pytest.mark.parametrize("grid, flags, expected", [
    (None, [], "the following arguments are required: grid"),
    ("missing.toml", [], "grid file not found: "),
    (GRID, ["--parallel=0"], "--parallel must be an integer >= 1; got 0."),
    (GRID, ["--parallel=two"], "--parallel: expected an integer; got 'two'"),
    (GRID, ["--threads_per_cell=0"], "--threads_per_cell must be an integer >= 1; got 0."),
    (GRID, ["--bogus=1"], "unknown flag --bogus; valid flags: --cells_per_worker, --dry_run"),
    ('[axes]\nseed = [0]\n[[exclude]]\nseed = 0\n', [], "the grid has no cells"),
    ('[settings]\nrounds = 0\n', [], "cell {}: --rounds must be an integer >= 1; got 0."),
    ('[axes]\naggregator = ["mean", "medain"]\n', [],
     "cell {aggregator='medain'}: --aggregator: unknown name 'medain'; valid choices: mean"),
])
def test_invalid_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, grid, flags, expected):
    args = []
    if grid is not None:
        path = tmp_path / "grid.toml"
        if grid != "missing.toml":
            path.write_text(grid)
        args.append(str(path))
    out = tmp_path / "out"
    code, captured = run(capsys, *args, f"--output_dir={out}", *flags)
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ") and expected in line
    assert not out.exists()


def test_dry_run_lists_cells_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    out = tmp_path / "out"
    code, captured = run(capsys, str(path), f"--output_dir={out}", "--dry_run")
    assert code == 0
    lines = captured.out.strip().splitlines()
    assert len(lines) == 5 and lines[-1] == "4 cells: 4 new"
    assert lines[0].split()[0] == "new" and "aggregator=mean seed=0" in lines[0]
    assert "digits_iid_n5_median_none_f0_s1_" in lines[3]
    assert not out.exists()


def _grid_worker_pids() -> set[int]:
    """This test session's grid workers (other jobs' are ignored)."""
    return session_pids("-m orchestration.grid.worker")


def test_invalid_grid_stops_the_workers_started_early(tmp_path, capsys):
    """Workers start importing TFF before the grid is read; an invalid grid stops them and
    leaves neither a process nor a boot log behind."""
    path = tmp_path / "grid.toml"
    path.write_text('[axes]\naggregator = ["mean", "medain"]\n')
    before, tff_before = _grid_worker_pids(), worker_pids()
    boot_logs = set(glob.glob(f"{tempfile.gettempdir()}/tff_byz_grid_worker_*"))
    code, captured = run(capsys, str(path), f"--output_dir={tmp_path / 'out'}", "--parallel=2")
    assert code == 2 and "medain" in captured.err
    assert not _grid_worker_pids() - before
    assert wait_until_gone(worker_pids() - tff_before)
    assert set(glob.glob(f"{tempfile.gettempdir()}/tff_byz_grid_worker_*")) <= boot_logs


def test_a_second_run_on_a_busy_directory_exits_2_and_writes_nothing(tmp_path, capsys):
    """Two runs on one DIR would run the same cells twice into the same run directories."""
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    out = tmp_path / "out"
    before = _grid_worker_pids()
    with runner.exclusive(str(out)):
        code, captured = run(capsys, str(path), f"--output_dir={out}", "--parallel=1")
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert line == (f"error: {out} is in use by another grid run (pid {os.getpid()}); "
                    "wait for it to end or stop it, then rerun")
    assert not os.listdir(out)  # nothing written (the holder's lock file went with its lock)
    assert not _grid_worker_pids() - before
    with runner.exclusive(str(out)):  # released: the next run takes it
        assert (out / runner.LOCK_FILE).read_text() == str(os.getpid())
    assert not os.listdir(out)  # and the lock file goes with the lock


def test_tree_rss_counts_a_process_and_its_descendants():
    grandchild = ("import time; b = b'\\x01' * (300 * 2**20); print(1, flush=True); "
                  "time.sleep(60)")
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}])"
    parent = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert parent.stdout.readline().strip() == b"1"  # the grandchild holds 300 MB
        assert 300 < pool.tree_rss_mb(parent.pid) < 400
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    time.sleep(0.1)
    assert pool.tree_rss_mb(parent.pid) == 0
    with open("/proc/meminfo", encoding="ascii") as f:  # half the RAM, shared by the workers
        total_mb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:")) / 1024
    assert pool.default_worker_memory_mb(1) == pytest.approx(total_mb / 2, rel=0.01)
    assert pool.default_worker_memory_mb(2) == pytest.approx(total_mb / 4, rel=0.01)


def test_negative_worker_memory_exits_2(tmp_path, capsys):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    code, captured = run(capsys, str(path), f"--output_dir={tmp_path / 'out'}",
                         "--worker_memory_mb=-1")
    assert code == 2
    assert captured.err.strip() == "error: --worker_memory_mb must be a number >= 0; got -1.0."
    assert not (tmp_path / "out").exists()


def test_the_grid_parent_process_never_imports_tensorflow():
    """A third TensorFlow import beside two workers' slows a grid's start on two cores:
    everything `pipelines.compare` runs outside `--dry_run` is TensorFlow-free."""
    code = ("import sys, pipelines.compare, orchestration.grid.runner, orchestration.grid.pool, "
            "orchestration.grid.cells, tff_byz.files; "
            "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('tensorflow')))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[]"


def test_the_first_worker_resolves_the_grid_as_this_process_does(tmp_path):
    """`Worker(resolve=...)` answers with the cells `spec.resolve_grid` gives here (ids,
    run names, configs), then becomes ready: no message is lost in between."""
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    runs = str(tmp_path / "out" / "runs")
    worker = pool.Worker(threads=1, resolve=(str(path), runs))
    try:
        answer = worker.read_grid()
        expected = spec.resolve_grid(str(path), runs)
        assert answer == expected
        cells = [CellRecord.from_dict(cell) for cell in answer["cells"]]
        assert [cell.to_dict() for cell in cells] == expected["cells"]
        assert [cell.rounds for cell in cells] == [2] * 4
        assert cells[3].run_name.startswith("digits_iid_n5_median_none_f0_s1_")
        while not worker.ready:
            assert worker.read_messages() is not None, worker.boot_output()
    finally:
        pool.stop_workers([worker])
    assert not (tmp_path / "out").exists()


def test_an_invalid_grid_found_by_the_first_worker_exits_2_with_one_line(tmp_path):
    """The command line as users run it (the parent without TensorFlow): the worker's
    verdict comes back as the same one-line error; nothing written, no process left."""
    path = tmp_path / "grid.toml"
    path.write_text('[axes]\naggregator = ["mean", "medain"]\n')
    before = _grid_worker_pids()
    done = subprocess.run([sys.executable, "-m", "pipelines.compare", str(path),
                           f"--output_dir={tmp_path / 'out'}", "--parallel=2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: cell {aggregator='medain'}: --aggregator: unknown name "
                           "'medain'; valid choices: mean")
    assert not (tmp_path / "out").exists()
    assert not _grid_worker_pids() - before


def test_an_idle_worker_whose_sigterm_went_to_another_thread_exits_when_stopped(tmp_path):
    """The kernel may hand a process's SIGTERM to any of its threads; when a gRPC or TF
    thread gets it, Python's handler waits for the main thread, blocked reading stdin, and
    the idle worker lived until the 60 s reap timeout killed it. Stopping also ends its
    input, so it exits at once."""
    worker = pool.Worker(threads=1)
    try:
        while not worker.ready:
            assert worker.read_messages() is not None, worker.boot_output()
        pid = worker.process.pid
        others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        assert libc.syscall(234, pid, others[-1], signal.SIGTERM) == 0  # tgkill
        time.sleep(1.0)
        assert worker.process.poll() is None  # the astray SIGTERM did not end it
        started = time.monotonic()
        pool.stop_workers([worker], timeout=60)
        assert time.monotonic() - started < 20
        assert worker.process.stdin.closed and worker.process.poll() is not None
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
