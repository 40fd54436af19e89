"""When a run ends early: a test loss over `--stop_test_loss`, or a non-finite model."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from orchestration.checkpoints import evaluated_rows
from orchestration.report.results import accuracy_before_abort, breaks_loss_limit
from orchestration.run_directory import RunPaths

__all__ = ["NonFiniteModelError", "RoundFailedError", "breaks_loss_limit", "mark_stopped",
           "stopped_before", "non_finite_reason"]


class NonFiniteModelError(RuntimeError):
    pass


class RoundFailedError(RuntimeError):
    """A round has no result, for a reason of the run's own (e.g. a robust rule with too
    few finite clients): the run ends `failed` with this one-line reason."""


def mark_stopped(summary: dict, round_num: int, test_loss: float, limit: float) -> None:
    summary["stopped_round"] = round_num
    summary["reason"] = (f"stopped at round {round_num}: test loss {test_loss:.4g} > "
                         f"stop_test_loss={limit:g}")


def stopped_before(paths: RunPaths, summary: dict, limit: Optional[float]) -> bool:
    """On resume: True (and the summary says so) if the run already ended by `limit`
    (the report's rule, `accuracy_before_abort`, over the rows up to the checkpoint)."""
    rows = None if limit is None else evaluated_rows(paths, summary["rounds_completed"])
    if rows is None:
        return False
    aborted, _ = accuracy_before_abort(rows, limit)
    if math.isnan(aborted):
        return False
    mark_stopped(summary, int(aborted), float(rows.set_index("round").loc[aborted, "test_loss"]),
                 limit)
    return True


def non_finite_reason(round_num: int, flat: dict, aggregator: str) -> str:
    """Why the model became non-finite: clients sent NaN/Inf that the aggregator let
    through, or finite updates overflowed float32 in the aggregate or the model."""
    counts = [v for k, v in flat.items() if k.split("/")[-1] == "non_finite_clients"
              and not np.isnan(v)]  # a NaN count says nothing
    sent = int(np.sum(counts)) if counts else None
    if sent == 0:
        return (f"model became non-finite at round {round_num}: every client's update was "
                f"finite, but the aggregator {aggregator!r} or the model step overflowed "
                f"float32 (updates too large, e.g. a scaling attack)")
    what = "" if sent is None else f"{sent} client(s) sent NaN/Inf and "
    return (f"model became non-finite at round {round_num}: {what}the aggregator "
            f"{aggregator!r} let a NaN/Inf update through (aggregate non-finite: "
            f"{flat.get('finalizer/update_non_finite', '?')})")
