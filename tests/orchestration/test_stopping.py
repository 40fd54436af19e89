"""orchestration.stopping: why a model became non-finite, and a run stopped by its test loss."""

import math
import os

import pandas as pd
import pytest

from orchestration.report.results import accuracy_before_abort
from orchestration.run_directory import RunPaths
from orchestration.stopping import mark_stopped, non_finite_reason, stopped_before


# ---------------------------------------------------------------- non_finite_reason

def test_non_finite_reason_no_client_sent_non_finite():
    flat = {"client_work/non_finite_clients": 0, "finalizer/update_non_finite": 1,
            "train/loss": 0.3}
    assert non_finite_reason(5, flat, "median") == (
        "model became non-finite at round 5: every client's update was finite, but the "
        "aggregator 'median' or the model step overflowed float32 (updates too large, e.g. a "
        "scaling attack)")


def test_non_finite_reason_clients_sent_non_finite():
    flat = {"aggregator/non_finite_clients": 2, "finalizer/update_non_finite": 1}
    assert non_finite_reason(7, flat, "mean") == (
        "model became non-finite at round 7: 2 client(s) sent NaN/Inf and the aggregator 'mean' "
        "let a NaN/Inf update through (aggregate non-finite: 1)")


def test_non_finite_reason_without_count():
    flat = {"finalizer/update_non_finite": 1, "train/loss": math.nan}
    reason = non_finite_reason(3, flat, "krum")
    assert reason == ("model became non-finite at round 3: the aggregator 'krum' let a NaN/Inf "
                      "update through (aggregate non-finite: 1)")
    assert "client(s)" not in reason and "every client" not in reason


def test_non_finite_reason_without_any_key():
    assert non_finite_reason(1, {}, "mean") == (
        "model became non-finite at round 1: the aggregator 'mean' let a NaN/Inf update through "
        "(aggregate non-finite: ?)")


def test_non_finite_reason_sums_counts_and_matches_the_last_key_part():
    flat = {"a/b/non_finite_clients": 1.0, "c/non_finite_clients": 2, "non_finite_clients": 1,
            "d/non_finite_clients_total": 50, "e/x_non_finite_clients": 60}
    assert "4 client(s) sent NaN/Inf" in non_finite_reason(2, flat, "mean")


def test_non_finite_reason_ignores_nan_counts():
    flat = {"a/non_finite_clients": math.nan, "b/non_finite_clients": 3}
    assert "3 client(s) sent NaN/Inf" in non_finite_reason(2, flat, "mean")


# ---------------------------------------------------------------- mark_stopped

def test_mark_stopped():
    summary = {"status": "running", "rounds_completed": 6}
    mark_stopped(summary, 4, 12.3456, 9.0)
    assert summary == {"status": "running", "rounds_completed": 6, "stopped_round": 4,
                       "reason": "stopped at round 4: test loss 12.35 > stop_test_loss=9"}


def test_mark_stopped_formats():
    summary = {}
    mark_stopped(summary, 10, 123456.0, 0.5)
    assert summary == {"stopped_round": 10,
                       "reason": "stopped at round 10: test loss 1.235e+05 > stop_test_loss=0.5"}
    mark_stopped(summary, 11, math.nan, 9.0)  # overwrites
    assert summary == {"stopped_round": 11,
                       "reason": "stopped at round 11: test loss nan > stop_test_loss=9"}


# ---------------------------------------------------------------- stopped_before

@pytest.fixture
def paths(tmp_path):
    return RunPaths(str(tmp_path))


def _write(paths, text):
    with open(paths.metrics, "w") as f:
        f.write(text)


# Round 3 is the first evaluation over 9 (round 4's row comes first in the file, and round
# 2 has a large loss but was not evaluated, so its row does not count).
METRICS = ("round,test_loss,test_accuracy\n"
           "4,12.0,0.2\n"
           "1,2.0,0.5\n"
           "2,50.0,\n"
           "3,10.0,0.3\n")


def test_stopped_before_reports_the_first_evaluation_over_the_limit(paths):
    _write(paths, METRICS)
    summary = {"rounds_completed": 4, "status": "running"}
    assert stopped_before(paths, summary, 9.0) is True
    assert summary == {"rounds_completed": 4, "status": "running", "stopped_round": 3,
                       "reason": "stopped at round 3: test loss 10 > stop_test_loss=9"}
    assert type(summary["stopped_round"]) is int


def test_stopped_before_agrees_with_accuracy_before_abort(paths):
    _write(paths, METRICS)
    aborted, accuracy = accuracy_before_abort(pd.read_csv(paths.metrics), 9.0)
    assert (aborted, accuracy) == (3.0, 0.5)
    summary = {"rounds_completed": 4}
    stopped_before(paths, summary, 9.0)
    assert summary["stopped_round"] == aborted


def test_stopped_before_only_rows_up_to_the_checkpoint(paths):
    _write(paths, METRICS)
    summary = {"rounds_completed": 2}
    assert stopped_before(paths, summary, 9.0) is False
    assert summary == {"rounds_completed": 2}


def test_stopped_before_higher_limit(paths):
    _write(paths, METRICS)
    summary = {"rounds_completed": 4}
    assert stopped_before(paths, summary, 11.0) is True
    assert summary["stopped_round"] == 4
    assert summary["reason"] == "stopped at round 4: test loss 12 > stop_test_loss=11"
    summary = {"rounds_completed": 4}
    assert stopped_before(paths, summary, 12.0) is False  # equal to the limit is not over it
    assert "stopped_round" not in summary


def test_stopped_before_nan_loss_breaks_the_limit(paths):
    _write(paths, "round,test_loss,test_accuracy\n1,2.0,0.5\n2,,0.4\n3,20.0,0.1\n")
    summary = {"rounds_completed": 3}
    assert stopped_before(paths, summary, 9.0) is True
    assert summary["stopped_round"] == 2
    assert summary["reason"] == "stopped at round 2: test loss nan > stop_test_loss=9"


def test_stopped_before_without_limit_reads_nothing(paths):
    _write(paths, "")  # a reader would remove this file
    summary = {"rounds_completed": 3}
    assert stopped_before(paths, summary, None) is False
    assert summary == {"rounds_completed": 3}
    assert os.path.exists(paths.metrics)


def test_stopped_before_without_rows(paths):
    summary = {"rounds_completed": 3}
    assert stopped_before(paths, summary, 9.0) is False  # no metrics.csv
    _write(paths, "round,train_loss\n1,0.5\n")  # nothing evaluated
    assert stopped_before(paths, summary, 9.0) is False
    assert stopped_before(paths, {"rounds_completed": 0}, 9.0) is False
    assert summary == {"rounds_completed": 3}


def test_nan_counts_say_nothing_about_what_was_sent():
    reason = non_finite_reason(4, {"aggregator/non_finite_clients": float("nan")}, "mean")
    assert "every client's update was finite" not in reason
    assert "client(s) sent" not in reason and "let a NaN/Inf update through" in reason
