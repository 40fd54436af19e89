"""A grid's record on disk: each cell's status and the manifest `grid.json`.

    <output_dir>/grid.json          the last grid run here: its cells (id, run name, axis
                                    values) and each cell's last outcome (written only by
                                    the parent process, atomically)
    <output_dir>/runs/<run_name>/   one run directory per cell (pipelines.train's layout)
    <output_dir>/logs/<run_name>.log  the cell's stdout/stderr

A cell is *done* when its run says so: `summary.json` status `complete` with all
rounds, or `failed` (e.g. the model became non-finite) with the manifest recording
that the run itself reported the failure (exit 1). Anything else runs again: from
its program state when `config.json` exists (resume), else from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

from tff_byz.files import write_json_atomic

__all__ = ["CellRecord", "CellStatus", "cell_status", "read_manifest", "write_manifest", "run_dir", "log_path",
           "MANIFEST", "RUNS", "LOGS"]

MANIFEST = "grid.json"
RUNS = "runs"
LOGS = "logs"


@dataclasses.dataclass(frozen=True)
class CellRecord:
    """A resolved cell as the runner needs it: plain JSON values, no TensorFlow.

    The grid is resolved where TensorFlow is imported anyway (the first worker
    process, see `orchestration.grid.pool.Worker`), so the parent process never imports it.
    """
    id: str                    # hash of the resolved config (`orchestration.grid.spec.cell_id`)
    run_name: str
    rounds: int
    axes: Mapping[str, Any]    # the axis values that define the cell
    config: Mapping[str, Any]  # `ExperimentConfig.to_dict()`, as the worker runs it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "CellRecord":
        return cls(**value)


class CellStatus:
    NEW = "new"            # nothing on disk: runs from scratch
    PARTIAL = "partial"    # config.json written, not finished: resumes from its state
    COMPLETE = "complete"  # every round done
    FAILED = "failed"      # the run's own verdict (e.g. non-finite model): a result, kept


def run_dir(output_dir: str, run_name: str) -> str:
    return os.path.join(output_dir, RUNS, run_name)


def log_path(output_dir: str, run_name: str) -> str:
    return os.path.join(output_dir, LOGS, f"{run_name}.log")


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def cell_status(directory: str, rounds: int, last_outcome: Optional[str] = None) -> str:
    """Status of the run directory of a cell with `rounds` rounds."""
    if not os.path.exists(os.path.join(directory, "config.json")):
        return CellStatus.NEW
    summary = _read_json(os.path.join(directory, "summary.json")) or {}
    if summary.get("status") == "complete" and summary.get("rounds_completed") == rounds:
        return CellStatus.COMPLETE
    if summary.get("status") == "failed" and last_outcome == CellStatus.FAILED:
        return CellStatus.FAILED
    return CellStatus.PARTIAL


def rounds_done(directory: str) -> int:
    summary = _read_json(os.path.join(directory, "summary.json")) or {}
    return int(summary.get("rounds_completed") or 0)


def read_manifest(output_dir: str) -> dict[str, Any]:
    return _read_json(os.path.join(output_dir, MANIFEST)) or {}


def write_manifest(output_dir: str, manifest: Mapping[str, Any]) -> None:
    write_json_atomic(os.path.join(output_dir, MANIFEST), manifest)
