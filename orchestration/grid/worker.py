"""A grid worker process: runs the cells its parent sends, one at a time, in one TFF context.

    python -m orchestration.grid.worker [--resolve GRID RUNS_DIR]   (started by `orchestration.grid.pool`)

Importing TensorFlow Federated and starting its worker takes seconds, often more
than a small cell's training, so a worker process serves many cells. Protocol:
one JSON object per line on stdin, `{"id", "config", "resume", "log"}`, answered
by one line on the original stdout, `{"id", "outcome", "reason", "seconds"}`.
With `--resolve`, the first line the worker writes, before `{"ready"}`, is the
grid resolved for the runner: `{"grid": {"name", "cells"}}`, `{"grid": {"error"}}`
for an invalid grid, or `{"grid": null}` after an unexpected exception (printed to
the boot log; the parent then resolves the grid itself and shows it);
`{"log"}` alone (sent once, see `orchestration.grid.pool`) moves the worker's own
output from its temporary boot log to that file. While
a cell runs, file descriptors 1 and 2 (Python, TensorFlow's C++ logs and the
progress bar alike) go to the cell's log file, so nothing can write into the
protocol pipe. Outcomes: `complete`; `failed` (the run's own verdict, e.g. a
non-finite model); `invalid` (settings rejected when the experiment is built,
e.g. Krum with too few clients; nothing written); `error` (any other exception:
the worker then exits so the next cell gets a fresh process). SIGTERM/SIGHUP
save the running cell's state (`orchestration.training`) and end the process; the
parent sets PR_SET_PDEATHSIG so a worker never outlives it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from tff_byz import context, processes  # noqa: E402
from orchestration import training  # noqa: E402
from orchestration.grid import pool, spec  # noqa: E402
from orchestration.config import ConfigError, ExperimentConfig  # noqa: E402


@contextlib.contextmanager
def _output_to(path: str):
    """Points fds 1 and 2 at `path` for the block (C++ and Python output alike)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _move_output_to(path: str) -> None:
    """Appends the boot log (if any) to `path`, then points fds 1 and 2 at `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    boot = os.environ.pop(pool.BOOT_LOG_ENV, None)
    with open(path, "ab", buffering=0) as log:
        if boot:
            try:
                with open(boot, "rb") as early:
                    log.write(early.read())
                os.unlink(boot)
            except OSError:
                pass
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)


def run_cell(request: dict) -> dict:
    """Runs one cell; returns its outcome record. Interrupts propagate."""
    config = ExperimentConfig.from_dict(request["config"])
    started = time.monotonic()
    outcome = dict(id=request["id"], outcome="error", reason="")
    os.makedirs(os.path.dirname(request["log"]), exist_ok=True)
    with _output_to(request["log"]):
        print(f"--- cell {request['id'][:8]} {config.run_name}, resume={request['resume']}, "
              f"pid {os.getpid()}", file=sys.stderr, flush=True)
        try:
            summary = training.run_experiment(config, resume=request["resume"], progress=False)
            outcome["outcome"] = "complete" if summary["status"] == "complete" else "failed"
            outcome["reason"] = summary.get("reason", "")
        except ConfigError as error:
            outcome.update(outcome="invalid", reason=str(error))
            print(f"invalid: {error}", file=sys.stderr)
        except Exception as error:  # pylint: disable=broad-except
            traceback.print_exc()
            outcome["reason"] = f"{type(error).__name__}: {error}".splitlines()[0]
    outcome["seconds"] = time.monotonic() - started
    return outcome


def resolve_grid(path: str, runs_dir: str) -> dict:
    """The `{"grid": ...}` message for the parent (see the module docstring)."""
    try:
        return dict(grid=spec.resolve_grid(path, runs_dir))
    except Exception:  # pylint: disable=broad-except
        traceback.print_exc()
        return dict(grid=None)


def main(argv: list[str]) -> int:
    # The protocol keeps the original stdout; fd 1 itself goes to stderr between cells.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    if argv[:1] == ["--resolve"]:
        protocol.write(json.dumps(resolve_grid(*argv[1:3])) + "\n")
    with context.managed_execution_context(log_path=os.environ.get("TFF_BYZ_WORKER_LOG")):
        protocol.write(json.dumps({"ready": os.getpid()}) + "\n")
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            if "id" not in request:
                _move_output_to(request["log"])
                continue
            outcome = run_cell(request)
            protocol.write(json.dumps(outcome) + "\n")
            if outcome["outcome"] == "error":
                return 1
    return 0


if __name__ == "__main__":
    try:
        exit_code = main(sys.argv[1:])
    except KeyboardInterrupt:
        exit_code = 130
    # Cells are saved and the TFF worker is stopped (the context has closed).
    processes.exit_now(exit_code)
