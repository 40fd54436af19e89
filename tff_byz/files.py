"""Atomic file writes (no TensorFlow here: the grid's parent process uses them too).

Every result file of the project (config, summary, grid, report tables and
plots, caches) is written through `replaced_atomically`: a temporary file
beside the target, renamed over it when complete, so a reader never sees a
half-written file, and with the mode a plain `open()` would give it (the
umask's; `tempfile` alone would leave it owner-only).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["BusyError", "exclusive", "lock_holder", "replaced_atomically", "umask_mode", "write_json_atomic",
           "write_text_atomic"]


class BusyError(RuntimeError):
    """Another live process holds the lock (the message names it)."""


def lock_holder(path: str | os.PathLike) -> str | None:
    """The pid written by the process holding the lock at `path`, or None if nobody holds it
    (nothing is created)."""
    try:
        lock = open(path, "r", encoding="utf-8")  # pylint: disable=consider-using-with
    except (FileNotFoundError, NotADirectoryError):
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock.read().strip() or "unknown"
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, in_use: str) -> Iterator[None]:
    """Holds an `flock` on the file `path` (created for the block, removed after it).

    The kernel drops the lock when its holder dies, so a killed run never leaves
    a stale lock (at most a lock file nobody holds, which the next holder takes).
    The holder writes its pid into the file; a second process gets
    `BusyError(f"{in_use} (pid N); ...")` at once, before it writes anything. The
    file is removed while still locked, and a new holder checks that the file it
    locked is still the one at `path`, so two holders never coexist.
    """
    path = os.fspath(path)
    while True:
        lock = open(os.open(path, os.O_RDWR | os.O_CREAT, umask_mode()), "r+",  # pylint: disable=consider-using-with
                    encoding="utf-8")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise BusyError(f"{in_use} (pid {holder}); wait for it to end or stop it, "
                            "then rerun") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(lock.fileno()).st_ino:
            break
        lock.close()  # the previous holder removed this file as we opened it: again
    try:
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        lock.close()


def umask_mode(mode: int = 0o666) -> int:
    """`mode` less the process's umask: what `open()`/`mkdir()` would give a new file/directory
    (`tempfile` creates owner-only ones)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path`; when the block ends without error the file
    there becomes `path` (mode per the umask), otherwise it is removed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with replaced_atomically(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Writes JSON atomically (`replaced_atomically`): never a half-written file."""
    write_text_atomic(path, json.dumps(value, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
