"""Runs a grid of experiments: `python -m pipelines.compare GRID.toml --output_dir=DIR`.

    --parallel=N          worker processes (default: the number of cores)
    --threads_per_cell=T  TensorFlow threads per worker (default: cores // N, at least 1)
    --dry_run             print the cells and their status; run and write nothing
    --progress / --noprogress

Thin: start the worker processes (`orchestration.grid.pool`); the first one reads the
grid (`orchestration.grid.spec`) and expands and validates every cell once its own
TensorFlow import is done, so this process never imports TensorFlow (an invalid
grid stops the workers again; `--dry_run` reads the grid here); then
`orchestration.grid.runner.run_grid`. Each cell is a run directory under DIR/runs
(pipelines.train's layout); DIR/grid.json records the cells and their outcomes.
Rerunning the same command skips done cells and resumes partial ones. Exit codes:
0 every cell has a result (complete, or failed by the run's own verdict such as a
non-finite model); 1 some cell could not run (invalid settings found when built,
or an error: see grid.json and DIR/logs); 2 invalid grid or flags (one line on
stderr, nothing written); 130/143 interrupted (rerun to resume).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import signal  # noqa: E402
import sys  # noqa: E402

from orchestration.grid import pool, runner, spec  # noqa: E402  (no TensorFlow)
from orchestration.grid.cells import CellRecord  # noqa: E402
from pipelines import cli  # noqa: E402
from tff_byz import processes  # noqa: E402


def _parser() -> cli.Parser:
    parser = cli.Parser("python -m pipelines.compare",
                        usage="GRID.toml --output_dir=DIR [--flag=value ...]")
    parser.add_argument("grid", help="grid TOML file")
    parser.add_argument("--output_dir", required=True, help="directory of the grid's runs")
    parser.add_argument("--parallel", type=cli.integer, default=None,
                        help="worker processes (default: the number of cores)")
    parser.add_argument("--threads_per_cell", type=cli.integer, default=None,
                        help="TensorFlow intra/inter-op threads per worker (default: cores // parallel)")
    parser.add_argument("--cells_per_worker", type=cli.integer, default=0,
                        help="restart a worker process after this many cells (0: never)")
    parser.add_argument("--worker_memory_mb", type=cli.number, default=None,
                        help="restart a worker process after a cell leaves it (with its TFF "
                             "worker) above this resident memory (default: half the RAM / "
                             "parallel; 0: never)")
    cli.add_switch(parser, "dry_run", False, "print the cells and their status, and exit")
    cli.add_switch(parser, "progress", True, "a progress bar on stderr")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args, code = cli.parse_command_line(_parser(), argv[1:], __doc__)
    if args is None:
        return code

    cores = pool.available_cores()
    parallel = cores if args.parallel is None else args.parallel
    if parallel < 1:
        return cli.error(f"--parallel must be an integer >= 1; got {parallel}.")
    threads = max(1, cores // parallel) if args.threads_per_cell is None else args.threads_per_cell
    if threads < 1:
        return cli.error(f"--threads_per_cell must be an integer >= 1; got {threads}.")
    if args.cells_per_worker < 0:
        return cli.error(f"--cells_per_worker must be an integer >= 0; got {args.cells_per_worker}.")
    memory = (pool.default_worker_memory_mb(parallel) if args.worker_memory_mb is None
              else args.worker_memory_mb)
    if not memory >= 0:  # also NaN
        return cli.error(f"--worker_memory_mb must be a number >= 0; got {args.worker_memory_mb}.")
    args.worker_memory_mb = memory
    if not os.path.isfile(args.grid):
        return cli.error(f"grid file not found: {args.grid}")
    # The first worker resolves the grid after importing TensorFlow Federated (seconds),
    # unless this process has it already (called from Python); the workers are stopped
    # again if the grid turns out invalid.
    args.runs_dir = os.path.join(args.output_dir, "runs")
    resolve = None if "tensorflow_federated" in sys.modules else (args.grid, args.runs_dir)
    started = [] if args.dry_run else pool.start_workers(parallel, threads, resolve=resolve)
    previous = {s: signal.signal(s, cli.raise_system_exit) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _run(args, parallel, threads, started)
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command to resume ({args.output_dir})", file=sys.stderr)
        return 130
    except SystemExit as exit_request:
        print(f"\nterminated: rerun the same command to resume ({args.output_dir})", file=sys.stderr)
        return exit_request.code if isinstance(exit_request.code, int) else 143
    finally:
        pool.stop_workers(started)  # no-op for the workers the grid ran (they have exited)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(args, parallel: int, threads: int, started) -> int:
    resolved = started[0].read_grid() if started and started[0].resolves else None
    if resolved is None:
        # Here (imports TensorFlow): --dry_run, a caller that has it already, or a worker that
        # could not answer (an unexpected exception is then raised here, with its traceback).
        resolved = spec.resolve_grid(args.grid, args.runs_dir)
    if "error" in resolved:
        return cli.error(resolved["error"])
    cells = [CellRecord.from_dict(cell) for cell in resolved["cells"]]
    if not cells:
        return cli.error(f"{args.grid}: the grid has no cells (every combination is excluded).")
    # Cells are resolved with output_dir = DIR/runs; the runner keeps files relative to DIR.

    if args.dry_run:
        for cell, status in runner.plan(cells, args.output_dir):
            axes = " ".join(f"{k}={v}" for k, v in cell.axes.items())
            print(f"{status:>8}  {cell.id[:8]}  {cell.run_name}  {axes}")
        counts = {}
        for _, status in runner.plan(cells, args.output_dir):
            counts[status] = counts.get(status, 0) + 1
        print(f"{len(cells)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        return 0

    try:
        outcome = runner.run_grid(cells, args.output_dir, parallel=parallel, threads=threads,
                                  progress=args.progress, grid_name=resolved["name"],
                                  cells_per_worker=args.cells_per_worker,
                                  worker_memory_mb=args.worker_memory_mb, started=started)
    except runner.GridBusyError as error:
        return cli.error(str(error))

    counts = {s: outcome.count(s) for s in ("complete", "failed", "invalid", "error")}
    print(f"{resolved['name']}: {len(cells)} cells: {counts['complete']} complete, {counts['failed']} failed "
          f"(run verdict), {counts['invalid']} invalid, {counts['error']} errors; ran "
          f"{len(outcome.ran)} ({args.output_dir})")
    by_id = {cell.id: cell for cell in cells}
    for cell_id, status in outcome.statuses.items():
        if status != "complete":
            print(f"  {status}: {by_id[cell_id].run_name}: {outcome.reasons[cell_id]}", file=sys.stderr)
    return 1 if counts["invalid"] or counts["error"] else 0


if __name__ == "__main__":
    exit_code = main()
    processes.exit_now(exit_code)  # workers have stopped; skip TensorFlow's teardown
