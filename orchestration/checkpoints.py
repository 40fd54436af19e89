"""Checkpoints of a run and the metrics rows they must agree with.

A checkpoint never runs ahead of metrics.csv: on resume the newest readable
checkpoint whose rounds all have their rows is loaded (a checkpoint cut short by
SIGKILL, or one of a round whose row is missing, is deleted and an older one
tried), and the CSV release manager drops rows after it, so a resumed run's
metrics equal an uninterrupted run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import sys
import threading
from typing import Optional

import pandas as pd
import tensorflow_federated as tff

from orchestration.run_directory import RunPaths
from tff_byz import files

__all__ = ["run_sync", "signals_deferred", "state_manager", "metrics_rows", "released_rounds",
           "evaluated_rows", "load_latest_state", "ranges"]

_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_sync(coroutine):
    return asyncio.run(coroutine)


@contextlib.contextmanager
def signals_deferred():
    """Holds back SIGINT/SIGTERM/SIGHUP inside the block; re-delivers one at its end.

    The checkpoint save runs partly in an executor thread, so masking the main
    thread is not enough: the Python-level handlers are swapped for recorders.
    SIGKILL cannot be deferred: resume discards an unreadable checkpoint.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {s: signal.signal(s, lambda signum, _: received.append(signum))
                for s in _DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            os.kill(os.getpid(), received[0])


def state_manager(paths: RunPaths) -> tff.program.FileProgramStateManager:
    """The run's checkpoint manager (the two newest kept). A checkpoint cut short by SIGKILL
    leaves its temporary directory (TFF writes `<version>_tempNNNN` and renames it); they are
    removed first (the caller holds the directory's lock)."""
    for temporary in glob.glob(os.path.join(paths.state, "*_temp[0-9]*")):
        shutil.rmtree(temporary, ignore_errors=True)
    return tff.program.FileProgramStateManager(paths.state, keep_total=2, keep_first=False)


def ranges(numbers) -> str:
    """[1, 2, 3, 7] → "1-3, 7"."""
    spans, start = [], None
    for index, number in enumerate(numbers):
        if start is None:
            start = number
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            spans.append(f"{start}" if start == number else f"{start}-{number}")
            start = None
    return ", ".join(spans)


def metrics_rows(paths: RunPaths):
    """The rows of metrics.csv (a DataFrame with a `round` column), or None when the file is
    missing, empty or has no `round` column; such a file is removed (it holds no row, and
    TFF's CSV release manager would refuse it). Lines that do not parse (e.g. a line cut by
    a crash, or garbage) are dropped and the file rewritten with the others, with a warning:
    resume then recomputes those rounds."""
    if not os.path.exists(paths.metrics):
        return None
    try:
        rows = pd.read_csv(paths.metrics)
    except pd.errors.EmptyDataError:
        rows = None
    except (pd.errors.ParserError, UnicodeDecodeError):
        rows = _readable_rows(paths.metrics)
    if rows is None or "round" not in rows:
        os.unlink(paths.metrics)
        return None
    return rows


def _readable_rows(path: str):
    """The lines of the CSV at `path` that parse, written back in place of the file."""
    try:
        rows = pd.read_csv(path, on_bad_lines="skip", encoding_errors="replace")
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
    if "round" not in rows:
        return None
    rows = rows[pd.to_numeric(rows["round"], errors="coerce").notna()]
    rows = rows.astype({"round": int})
    with open(path, "rb") as f:
        lines = max(0, f.read().count(b"\n") - 1)
    with files.replaced_atomically(path) as temporary:
        rows.to_csv(temporary, index=False)
    print(f"warning: {path}: dropped {max(lines - len(rows), 1)} line(s) that do not parse; "
          "their rounds are recomputed", file=sys.stderr)
    return rows


def released_rounds(paths: RunPaths) -> set[int]:
    rows = metrics_rows(paths)
    return set() if rows is None else set(rows["round"].dropna().astype(int))


def evaluated_rows(paths: RunPaths, rounds_completed: int):
    """On resume: the evaluated metrics rows up to the checkpoint, by round (None if none)."""
    rows = metrics_rows(paths) if rounds_completed else None
    if rows is None or "test_accuracy" not in rows:
        return None
    rows = rows[(rows["round"] <= rounds_completed) & rows["test_accuracy"].notna()]
    return rows.sort_values("round") if len(rows) else None


def load_latest_state(manager, template, released: Optional[set] = None):
    """The newest readable checkpoint whose rounds all have their metrics rows, or None.

    A checkpoint cut short by SIGKILL cannot be read; it is deleted (so the
    round can be saved again) and the next older one is tried. So is a
    checkpoint of a round some of whose rows are missing from `released` (the
    rounds in metrics.csv): going back to an older one recomputes those rounds.
    """
    versions = run_sync(manager.get_versions()) or []
    for version in sorted(versions, reverse=True):
        if released is not None and not set(range(1, int(version) + 1)) <= released:
            path = manager._get_path_for_version(version)  # pylint: disable=protected-access
            missing = sorted(set(range(1, int(version) + 1)) - released)
            print(f"warning: metrics.csv has no row for round(s) {ranges(missing)} of checkpoint "
                  f"{path}; deleting it and going back further to recompute them",
                  file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
            continue
        try:
            return run_sync(manager.load(version, template))
        except Exception as error:  # pylint: disable=broad-except
            path = manager._get_path_for_version(version)  # pylint: disable=protected-access
            print(f"warning: checkpoint {path} unreadable ({type(error).__name__}); "
                  "deleting it and trying an older one", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
    return None
