"""Runs a grid's cells in N worker processes, resumably, with a progress bar.

`run_grid(cells, output_dir, parallel=N)` skips done cells (`tff_byz.grid.cells`),
resumes partial ones from their program state and hands the rest, in grid order,
to N `tff_byz.grid.worker` processes. Each worker is started from the main thread
in its own session (a terminal's Ctrl-C reaches only this process, which then
stops the workers in order) with PR_SET_PDEATHSIG=SIGKILL (the kernel kills it if
this process dies, even by SIGKILL; its TFF worker has the same guard), and with
TensorFlow limited to `threads` intra-/inter-op threads so N workers share the
cores instead of oversubscribing them. A cell that fails is recorded in
`grid.json` with its reason and the grid goes on; a worker that dies is replaced.
On Ctrl-C/SIGTERM the workers get SIGTERM (they save the running cell's state),
are waited for, and the interrupt propagates.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

import tqdm

from tff_byz.grid import cells as cell_files
from tff_byz.grid.cells import CellStatus
from tff_byz.grid.spec import Cell

__all__ = ["run_grid", "GridOutcome", "plan", "available_cores", "thread_environment"]

_PR_SET_PDEATHSIG = 1
# How long stopped workers get to save their cell's state before SIGKILL.
_STOP_TIMEOUT_SECONDS = 60.0


def available_cores() -> int:
    return len(os.sched_getaffinity(0))


def thread_environment(threads: int) -> dict[str, str]:
    """Environment limiting TensorFlow (Python side and the TFF C++ worker, which
    inherits it) to `threads` intra-op and inter-op threads."""
    value = str(threads)
    return {"TF_NUM_INTRAOP_THREADS": value, "TF_NUM_INTEROP_THREADS": value,
            "OMP_NUM_THREADS": value}


@dataclasses.dataclass
class GridOutcome:
    """What happened to each cell: id -> status (complete, failed, invalid, error, skipped...)."""
    statuses: dict
    reasons: dict
    ran: list  # ids run (or resumed) by this call

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)


def plan(cells: Sequence[Cell], output_dir: str) -> list[tuple[Cell, str]]:
    """Each cell with its status on disk (see `tff_byz.grid.cells.cell_status`)."""
    manifest = cell_files.read_manifest(output_dir)
    last = {c["id"]: c.get("outcome") for c in manifest.get("cells", [])}
    return [(cell, cell_files.cell_status(cell_files.run_dir(output_dir, cell.run_name),
                                          cell.config.rounds, last.get(cell.id)))
            for cell in cells]


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Worker:
    def __init__(self, index: int, output_dir: str, threads: int):
        log = os.path.join(output_dir, cell_files.LOGS, f"worker-{index}.log")
        env = dict(os.environ, **thread_environment(threads))
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tff_byz.grid.worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=stderr, env=env, close_fds=True,
                start_new_session=True, preexec_fn=_die_with_parent, text=True, bufsize=1)
        self.log = log
        self.cell: Optional[Cell] = None
        self.ready = False
        self.retiring = False  # stdin closed: finishes and exits
        self.cells_run = 0

    def send(self, cell: Cell, resume: bool, log: str) -> None:
        self.cell = cell
        self.cells_run += 1
        request = dict(id=cell.id, config=cell.config.to_dict(), resume=resume, log=log)
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)


def run_grid(cells: Sequence[Cell], output_dir: str, *, parallel: int, threads: int,
             progress: bool = True, grid_name: str = "grid",
             cells_per_worker: int = 0) -> GridOutcome:
    """Runs every cell not done yet; returns each cell's status. Interrupts propagate
    after the workers have saved and stopped."""
    for sub in (cell_files.RUNS, cell_files.LOGS):
        os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
    planned = plan(cells, output_dir)
    manifest = dict(name=grid_name, cells=[
        dict(id=cell.id, run_name=cell.run_name, axes=dict(cell.axes), rounds=cell.config.rounds,
             outcome=status, reason="") for cell, status in planned])
    previous = {c["id"]: c for c in cell_files.read_manifest(output_dir).get("cells", [])}
    for entry in manifest["cells"]:  # keep the last recorded reason of a failed cell
        if entry["outcome"] == CellStatus.FAILED:
            entry["reason"] = previous.get(entry["id"], {}).get("reason", "")
    by_id = {entry["id"]: entry for entry in manifest["cells"]}
    cell_files.write_manifest(output_dir, manifest)

    queue = collections.deque(
        (cell, status == CellStatus.PARTIAL) for cell, status in planned
        if status in (CellStatus.NEW, CellStatus.PARTIAL))
    ran = [cell.id for cell, _ in queue]
    total_rounds = sum(cell.config.rounds for cell in cells)
    bar = tqdm.tqdm(total=total_rounds, desc=grid_name, unit="round", file=sys.stderr,
                    disable=not progress, dynamic_ncols=True, smoothing=0.05)
    workers: list[_Worker] = []
    next_index = 0

    def record(cell: Cell, outcome: str, reason: str, seconds: float = 0.0) -> None:
        by_id[cell.id].update(outcome=outcome, reason=reason, seconds=round(seconds, 2))
        cell_files.write_manifest(output_dir, manifest)
        if outcome not in (CellStatus.COMPLETE,):
            bar.write(f"{outcome}: {cell.run_name}: {reason}", file=sys.stderr)

    on_disk = {cell.id: min(cell.config.rounds, cell_files.rounds_done(
        cell_files.run_dir(output_dir, cell.run_name))) for cell in cells}

    def rounds_done() -> int:
        for worker in workers:  # only running cells change on disk
            if worker.cell is not None:
                on_disk[worker.cell.id] = min(worker.cell.config.rounds, cell_files.rounds_done(
                    cell_files.run_dir(output_dir, worker.cell.run_name)))
        finished = (CellStatus.COMPLETE, CellStatus.FAILED, "invalid", "error")
        return sum(cell.config.rounds if by_id[cell.id]["outcome"] in finished else on_disk[cell.id]
                   for cell in cells)

    def refresh() -> None:
        bar.n = rounds_done()
        counts = collections.Counter(entry["outcome"] for entry in manifest["cells"])
        bar.set_postfix_str(f"cells {counts[CellStatus.COMPLETE] + counts[CellStatus.FAILED]}"
                            f"/{len(cells)} done, {len(queue)} queued, "
                            f"{counts['invalid'] + counts['error'] + counts[CellStatus.FAILED]} failed",
                            refresh=False)
        bar.refresh()

    try:
        while queue or any(w.cell is not None for w in workers):
            # Start workers while cells wait and fewer than `parallel` are alive.
            idle = [w for w in workers if w.cell is None and w.ready and not w.retiring]
            starting = [w for w in workers if not w.ready]
            while len(workers) < parallel and len(queue) > len(idle) + len(starting):
                worker = _Worker(next_index, output_dir, threads)
                next_index += 1
                workers.append(worker)
                starting.append(worker)
            for worker in idle:
                if not queue:
                    break
                cell, resume = queue.popleft()
                by_id[cell.id]["outcome"] = "running"
                try:
                    worker.send(cell, resume, cell_files.log_path(output_dir, cell.run_name))
                except BrokenPipeError:  # died meanwhile: its EOF is handled below
                    worker.cell, worker.retiring = None, True
                    queue.appendleft((cell, resume))
            refresh()
            streams = {w.process.stdout: w for w in workers}
            readable, _, _ = select.select(list(streams), [], [], 1.0)
            for stream in readable:
                worker = streams[stream]
                line = stream.readline()
                if not line:  # the worker died
                    worker.process.wait()
                    workers.remove(worker)
                    if worker.cell is not None:
                        record(worker.cell, "error", f"worker process exited with code "
                               f"{worker.process.returncode} (log: "
                               f"{cell_files.log_path(output_dir, worker.cell.run_name)})")
                    elif not worker.ready and not worker.retiring:
                        raise RuntimeError(f"a grid worker exited with code "
                                           f"{worker.process.returncode} before it was ready; "
                                           f"see {worker.log}")
                    continue
                message = json.loads(line)
                if "ready" in message:
                    worker.ready = True
                    continue
                cell, worker.cell = worker.cell, None
                record(cell, message["outcome"], message["reason"], message["seconds"])
                if message["outcome"] == "error":
                    worker.retiring = True  # the worker exits after an error
                elif cells_per_worker and worker.cells_run >= cells_per_worker:
                    worker.retiring = True  # a fresh process for the next cells
                    worker.process.stdin.close()
            if not queue:  # idle workers have nothing left to do
                for worker in [w for w in workers if w.cell is None and w.ready and not w.retiring]:
                    worker.process.stdin.close()
                    worker.process.wait()
                    workers.remove(worker)
        refresh()
    except BaseException:
        _stop(workers)
        for worker in workers:
            if worker.cell is not None:
                by_id[worker.cell.id]["outcome"] = CellStatus.PARTIAL
                by_id[worker.cell.id]["reason"] = "interrupted; rerun the same command to resume"
        cell_files.write_manifest(output_dir, manifest)
        raise
    finally:
        bar.close()
        for worker in workers:
            for stream in (worker.process.stdin, worker.process.stdout):
                try:
                    stream.close()
                except (OSError, BrokenPipeError):
                    pass
    statuses = {entry["id"]: entry["outcome"] for entry in manifest["cells"]}
    reasons = {entry["id"]: entry["reason"] for entry in manifest["cells"]}
    return GridOutcome(statuses, reasons, ran)


def _stop(workers: Sequence[_Worker]) -> None:
    """SIGTERM every worker (each saves its cell's state), wait, then SIGKILL stragglers."""
    for worker in workers:
        worker.stop()
    deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
