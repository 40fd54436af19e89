"""Grid worker processes, started and driven without importing TensorFlow.

Importing TensorFlow Federated takes seconds in every process, and on a machine
with as many cores as workers a third import (the parent's) slows the workers'
start. `pipelines.compare` therefore never imports it: it starts its workers
(`start_workers`) first and the first one resolves and validates the grid
(`resolve=`, answered by `Worker.read_grid`) once its own imports are done.
Nothing is written while they start: a worker's early output (its imports) goes
to a temporary boot log, and `Worker.adopt(log)` (sent once the grid is known to
be valid) makes the worker append that boot log to `log` and write there from
then on. A worker that dies before adoption leaves its boot log's last lines in
the error. Each worker runs in its own session (a terminal's Ctrl-C reaches only
the parent, which stops the workers in order) with PR_SET_PDEATHSIG=SIGKILL (the
kernel kills it if the parent dies, even by SIGKILL) and TensorFlow limited to
`threads` intra-/inter-op threads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

from tff_byz.processes import die_with_parent

__all__ = ["Worker", "start_workers", "stop_workers", "reap_workers", "available_cores", "thread_environment",
           "BOOT_LOG_ENV", "tree_rss_mb", "default_worker_memory_mb"]

BOOT_LOG_ENV = "TFF_BYZ_GRID_BOOT_LOG"


def available_cores() -> int:
    return len(os.sched_getaffinity(0))


def _children(pid: int) -> list[int]:
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                children += [int(child) for child in f.read().split()]
    except OSError:  # gone meanwhile
        pass
    return children


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants (e.g. a grid worker and its TFF
    `worker_binary`), in MB; 0 for a process that is gone."""
    total_kb, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status", encoding="ascii") as f:
                total_kb += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
        todo += _children(current)
    return total_kb / 1024


def default_worker_memory_mb(parallel: int) -> float:
    """Half of the machine's memory shared among `parallel` workers."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 / (2 * max(1, parallel))


def thread_environment(threads: int) -> dict[str, str]:
    """Environment limiting TensorFlow (Python side and the TFF C++ worker, which
    inherits it) to `threads` intra-op and inter-op threads."""
    value = str(threads)
    return {"TF_NUM_INTRAOP_THREADS": value, "TF_NUM_INTEROP_THREADS": value,
            "OMP_NUM_THREADS": value}


class Worker:
    """One `orchestration.grid.worker` process and what the parent knows about it.

    Must be created from the main thread: PR_SET_PDEATHSIG fires when the *thread*
    that forked the child exits.
    """

    def __init__(self, threads: int, log: Optional[str] = None,
                 resolve: Optional[tuple[str, str]] = None):
        """`resolve=(grid file, runs directory)`: the worker first resolves that grid
        (read the answer with `read_grid`)."""
        fd, self.boot_log = tempfile.mkstemp(prefix="tff_byz_grid_worker_", suffix=".log")
        env = dict(os.environ, **thread_environment(threads))
        env[BOOT_LOG_ENV] = self.boot_log
        self.resolves = resolve is not None
        command = [sys.executable, "-m", "orchestration.grid.worker"]
        if resolve is not None:
            command += ["--resolve", *resolve]
        with os.fdopen(fd, "ab") as stderr:
            # Unbuffered bytes: `read_messages` reads what select() saw, so no line can
            # wait unseen in a reader's buffer.
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env,
                close_fds=True, start_new_session=True, preexec_fn=die_with_parent, bufsize=0)
        self._unread = b""
        self.log: Optional[str] = None
        self.cell = None
        self.ready = False
        self.retiring = False  # stdin closed: finishes and exits
        self.cells_run = 0
        if log is not None:
            self.adopt(log)

    def adopt(self, log: str) -> None:
        """From now on the worker writes to `log` (its boot log appended first)."""
        self.log = log
        self._write(dict(log=log))

    def send(self, cell, resume: bool, log: str) -> None:
        self.cell = cell
        self.cells_run += 1
        self._write(dict(id=cell.id, config=dict(cell.config), resume=resume, log=log))

    def _write(self, message: dict) -> None:
        data = memoryview((json.dumps(message) + "\n").encode())
        while data:  # a raw pipe may take a long line in parts
            data = data[self.process.stdin.write(data):]

    def read_messages(self) -> Optional[list[dict]]:
        """Reads once from the worker's protocol pipe (blocks until something comes):
        the complete messages so far (maybe none), or None when the worker has exited.
        A `{"ready"}` message sets `ready` (and is returned too)."""
        chunk = os.read(self.process.stdout.fileno(), 1 << 16)
        if not chunk:
            return None
        *lines, self._unread = (self._unread + chunk).split(b"\n")
        messages = [json.loads(line) for line in lines if line.strip()]
        self.ready = self.ready or any("ready" in message for message in messages)
        return messages

    def read_grid(self) -> Optional[dict]:
        """The answer of a worker started with `resolve=`: `{"name", "cells"}` (see
        `orchestration.grid.spec.resolve_grid`) or `{"error"}` for an invalid grid; None if
        the worker exited or could not resolve it (its boot log has the traceback)."""
        while True:
            messages = self.read_messages()
            if messages is None:
                return None
            for message in messages:
                if "grid" in message:
                    return message["grid"]

    def boot_output(self, lines: int = 5) -> str:
        """The last lines of the boot log (a worker that died before adoption)."""
        try:
            with open(self.boot_log, encoding="utf-8", errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-lines:])
        except OSError:
            return ""

    def retire(self) -> None:
        """Closes the worker's input: it finishes its cell, if any, and exits."""
        self.retiring = True
        if not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:  # the worker is gone (broken pipe)
                pass

    def stop(self) -> None:
        """SIGTERM (a running cell saves its state), and end of input: an idle worker blocked
        reading stdin may never see the signal when the kernel hands it to one of its
        gRPC/TensorFlow threads (its handler runs only once the main thread's read
        returns); the end of input returns it (that idle worker took the 60 s reap timeout)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.retire()

    def discard_boot_log(self) -> None:
        try:
            os.unlink(self.boot_log)
        except OSError:
            pass


def start_workers(count: int, threads: int,
                  resolve: Optional[tuple[str, str]] = None) -> list[Worker]:
    """`count` workers; the first also resolves the grid `resolve` (see `Worker`)."""
    return [Worker(threads, resolve=resolve if index == 0 else None) for index in range(count)]


def stop_workers(workers, timeout: float = 60.0) -> None:
    """SIGTERM every worker (each saves its cell's state), wait, then SIGKILL stragglers."""
    for worker in workers:
        worker.stop()
    reap_workers(workers, timeout)


def reap_workers(workers, timeout: float = 60.0) -> None:
    """Waits (`timeout` in all) for workers that were told to end, then SIGKILLs stragglers."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        worker.discard_boot_log()
