"""Atomic file writes (no TensorFlow here: the grid's parent process uses them too)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

__all__ = ["umask_mode", "write_json_atomic"]


def umask_mode(mode: int = 0o666) -> int:
    """`mode` less the process's umask: what `open()`/`mkdir()` would give a new file/directory
    (`tempfile` creates owner-only ones)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def write_json_atomic(path: str, value: Any) -> None:
    """Writes JSON via a temporary file and `os.replace`: never a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
