"""Atomic file writes (no TensorFlow here: the grid's parent process uses them too)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

__all__ = ["write_json_atomic"]


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
