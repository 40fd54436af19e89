"""Runs a grid's cells in N worker processes, resumably, with a progress bar.

`run_grid(cells, output_dir, parallel=N)` skips done cells (`orchestration.grid.cells`),
resumes partial ones from their program state and hands the rest, in grid order,
to N `orchestration.grid.worker` processes (`orchestration.grid.pool`: started from the main
thread, in their own session, killed by the kernel if this process dies, with
TensorFlow limited to `threads` intra-/inter-op threads so N workers share the
cores instead of oversubscribing them; some may have been started before the
grid was read, see `pipelines.compare`). A cell that fails is recorded in
`grid.json` with its reason and the grid goes on; a worker that dies is replaced.
On Ctrl-C/SIGTERM the workers get SIGTERM (they save the running cell's state),
are waited for, and the interrupt propagates.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import select
import sys
import time
from typing import Sequence

import tqdm

from tff_byz import files
from orchestration.grid import cells as cell_files
from orchestration.grid.cells import CellRecord, CellStatus
from orchestration.grid.pool import (Worker, available_cores, reap_workers, stop_workers,
                               thread_environment, tree_rss_mb)

__all__ = ["run_grid", "GridOutcome", "GridBusyError", "plan", "available_cores",
           "thread_environment"]

LOCK_FILE = ".grid.lock"

# How long stopped workers get to save their cell's state before SIGKILL.
_STOP_TIMEOUT_SECONDS = 60.0


@dataclasses.dataclass
class GridOutcome:
    """What happened to each cell: id -> status (complete, failed, invalid, error, skipped...)."""
    statuses: dict
    reasons: dict
    ran: list  # ids run (or resumed) by this call

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)


def plan(cells: Sequence[CellRecord], output_dir: str) -> list[tuple[CellRecord, str]]:
    """Each cell with its status on disk (see `orchestration.grid.cells.cell_status`)."""
    manifest = cell_files.read_manifest(output_dir)
    last = {c["id"]: c.get("outcome") for c in manifest.get("cells", [])}
    return [(cell, cell_files.cell_status(cell_files.run_dir(output_dir, cell.run_name),
                                          cell.rounds, last.get(cell.id)))
            for cell in cells]


class GridBusyError(files.BusyError):
    """Another process is running a grid in the same output directory."""


@contextlib.contextmanager
def exclusive(output_dir: str):
    """Holds `output_dir`'s grid lock (`tff_byz.files.exclusive`).

    Two runs on one directory would run the same cells twice into the same run
    directories and overwrite each other's `grid.json`.
    """
    os.makedirs(output_dir, exist_ok=True)
    try:
        with files.exclusive(os.path.join(output_dir, LOCK_FILE),
                             f"{output_dir} is in use by another grid run"):
            yield
    except files.BusyError as error:
        raise GridBusyError(str(error)) from None


def run_grid(cells: Sequence[CellRecord], output_dir: str, *, parallel: int, threads: int,
             progress: bool = True, grid_name: str = "grid",
             cells_per_worker: int = 0, worker_memory_mb: float = 0.0,
             started: Sequence[Worker] = ()) -> GridOutcome:
    """Runs every cell not done yet; returns each cell's status. Interrupts propagate
    after the workers have saved and stopped. `started`: workers already starting
    (`orchestration.grid.pool.start_workers`, with `threads`), used before new ones.
    A worker is replaced by a fresh process after `cells_per_worker` cells, or after
    a cell that leaves it (with its TFF `worker_binary`) above `worker_memory_mb`
    resident: TFF's worker keeps memory from cell to cell (~1.5 GB per MNIST cell).
    Raises `GridBusyError` when another run holds `output_dir` (nothing is written)."""
    with exclusive(output_dir):
        return _run_grid(cells, output_dir, parallel=parallel, threads=threads,
                         progress=progress, grid_name=grid_name,
                         cells_per_worker=cells_per_worker, worker_memory_mb=worker_memory_mb,
                         started=started)


def _run_grid(cells, output_dir, *, parallel, threads, progress, grid_name, cells_per_worker,
              worker_memory_mb, started) -> GridOutcome:
    for sub in (cell_files.RUNS, cell_files.LOGS):
        os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
    planned = plan(cells, output_dir)
    manifest = dict(name=grid_name, cells=[
        dict(id=cell.id, run_name=cell.run_name, axes=dict(cell.axes), rounds=cell.rounds,
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
    total_rounds = sum(cell.rounds for cell in cells)
    bar = tqdm.tqdm(total=total_rounds, desc=grid_name, unit="round", file=sys.stderr,
                    disable=not progress, dynamic_ncols=True, smoothing=0.05)
    workers: list[Worker] = []
    next_index = 0

    def worker_log() -> str:
        nonlocal next_index
        next_index += 1
        return os.path.join(output_dir, cell_files.LOGS, f"worker-{next_index - 1}.log")

    spare = list(started)

    def record(cell: CellRecord, outcome: str, reason: str, seconds: float = 0.0) -> None:
        by_id[cell.id].update(outcome=outcome, reason=reason, seconds=round(seconds, 2),
                              finished=round(time.time(), 3))
        cell_files.write_manifest(output_dir, manifest)
        if outcome not in (CellStatus.COMPLETE,):
            bar.write(f"{outcome}: {cell.run_name}: {reason}", file=sys.stderr)

    on_disk = {cell.id: min(cell.rounds, cell_files.rounds_done(
        cell_files.run_dir(output_dir, cell.run_name))) for cell in cells}

    def rounds_done() -> int:
        for worker in workers:  # only running cells change on disk
            if worker.cell is not None:
                on_disk[worker.cell.id] = min(worker.cell.rounds, cell_files.rounds_done(
                    cell_files.run_dir(output_dir, worker.cell.run_name)))
        finished = (CellStatus.COMPLETE, CellStatus.FAILED, "invalid", "error")
        return sum(cell.rounds if by_id[cell.id]["outcome"] in finished else on_disk[cell.id]
                   for cell in cells)

    def refresh() -> None:
        bar.n = rounds_done()
        counts = collections.Counter(entry["outcome"] for entry in manifest["cells"])
        bar.set_postfix_str(f"cells {counts[CellStatus.COMPLETE] + counts[CellStatus.FAILED]}"
                            f"/{len(cells)} done, {len(queue)} queued, "
                            f"{counts['invalid'] + counts['error'] + counts[CellStatus.FAILED]} failed",
                            refresh=False)
        bar.refresh()

    def finish(worker: Worker, message: dict) -> None:
        cell, worker.cell = worker.cell, None
        record(cell, message["outcome"], message["reason"], message["seconds"])
        if message["outcome"] == "error":
            worker.retiring = True  # the worker exits after an error
        elif ((cells_per_worker and worker.cells_run >= cells_per_worker) or
              (worker_memory_mb and tree_rss_mb(worker.process.pid) > worker_memory_mb)):
            worker.retire()  # a fresh process for the next cells

    try:
        while queue or any(w.cell is not None for w in workers):
            # Start workers while cells wait and fewer than `parallel` are alive.
            idle = [w for w in workers if w.cell is None and w.ready and not w.retiring]
            starting = [w for w in workers if not w.ready]
            while len(workers) < parallel and len(queue) > len(idle) + len(starting):
                if spare:
                    worker = spare.pop(0)
                    worker.adopt(worker_log())
                else:
                    worker = Worker(threads, worker_log())
                workers.append(worker)
                starting.append(worker)

            for worker in idle:
                if not queue:
                    break
                cell, resume = queue.popleft()
                by_id[cell.id].update(outcome="running", started=round(time.time(), 3))
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
                messages = worker.read_messages()  # sets worker.ready on {"ready"}
                if messages is None:  # the worker died
                    worker.process.wait()
                    workers.remove(worker)
                    if worker.cell is not None:
                        record(worker.cell, "error", f"worker process exited with code "
                               f"{worker.process.returncode} (log: "
                               f"{cell_files.log_path(output_dir, worker.cell.run_name)})")
                    elif not worker.ready and not worker.retiring:
                        raise RuntimeError(f"a grid worker exited with code "
                                           f"{worker.process.returncode} before it was ready; "
                                           f"see {worker.log} ({worker.boot_output()})")
                    continue
                for message in messages:
                    if "outcome" in message:
                        finish(worker, message)
            if not queue:  # idle workers have nothing left to do: they exit meanwhile
                for worker in [w for w in workers if w.cell is None and w.ready and not w.retiring]:
                    worker.retire()
        reap_workers(workers, _STOP_TIMEOUT_SECONDS)  # retired at the end: exiting side by side
        refresh()
    except BaseException:
        stop_workers(workers + spare, _STOP_TIMEOUT_SECONDS)
        for worker in workers:
            if worker.cell is not None:
                by_id[worker.cell.id]["outcome"] = CellStatus.PARTIAL
                by_id[worker.cell.id]["reason"] = "interrupted; rerun the same command to resume"
        cell_files.write_manifest(output_dir, manifest)
        raise
    finally:
        bar.close()
        if spare:  # started but not needed (fewer cells to run than workers)
            stop_workers(spare, _STOP_TIMEOUT_SECONDS)
        for worker in workers + spare:
            for stream in (worker.process.stdin, worker.process.stdout):
                try:
                    stream.close()
                except (OSError, BrokenPipeError):
                    pass
    statuses = {entry["id"]: entry["outcome"] for entry in manifest["cells"]}
    reasons = {entry["id"]: entry["reason"] for entry in manifest["cells"]}
    return GridOutcome(statuses, reasons, ran)
