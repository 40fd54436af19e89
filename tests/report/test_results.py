"""Run files -> results/rounds DataFrames, on hand-made run directories."""

import math

import pandas as pd
import pytest

from tests.report.helpers import write_manifest, write_run
from orchestration.report import results


def test_results_one_row_per_run_with_config_summary_and_final_values(tmp_path):
    write_run(tmp_path, "a", [0.5, 0.6, 0.7], aggregator="mean:weighted=true", seed=0)
    write_run(tmp_path, "b", [0.4, math.nan, 0.8], aggregator="median:even=mean", seed=1,
              asr=[0.9, math.nan, 0.2], partition="q", q=0.9)
    write_run(tmp_path, "c", [0.3, 0.35], status="failed", seed=2,
              reason="model became non-finite at round 3 (aggregate non-finite: 1)")
    frame, rounds = results.load_results(str(tmp_path))
    frame = frame.set_index("run_name")
    assert frame.loc["a", "final_accuracy"] == 0.7
    assert frame.loc["b", "final_accuracy"] == 0.8
    assert frame.loc["b", "final_attack_success_rate"] == 0.2  # last evaluated
    assert frame.loc["b", "heterogeneity"] == "q=0.9" and frame.loc["a", "heterogeneity"] == "iid"
    assert bool(frame.loc["c", "diverged"]) and frame.loc["c", "final_accuracy"] == 0.0
    assert frame.loc["a", "aggregator"] == "mean:weighted=true"  # no manifest: canonical
    assert frame.loc["a", "byzantine_ids"] == "[1]"
    assert frame.loc["a", "clients_in_run"] == 4
    assert len(rounds) == 3 + 3 + 2
    assert list(rounds[rounds["run_name"] == "b"]["test_accuracy"].fillna(-1)) == [0.4, -1, 0.8]
    assert set(rounds[rounds["run_name"] == "b"]["heterogeneity"]) == {"q=0.9"}


def test_pdmm_honest_mean_is_a_result_column_scored_like_final_accuracy(tmp_path):
    write_run(tmp_path, "p", [0.2, 0.3], honest_mean=0.85, aggregator="pdmm")
    write_run(tmp_path, "q", [0.1], status="failed", aggregator="pdmm:theta=0.5",
              reason="model became non-finite at round 1 (aggregate non-finite: 2)")
    write_run(tmp_path, "m", [0.6], aggregator="mean")
    frame, _ = results.load_results(str(tmp_path))
    frame = frame.set_index("run_name")
    assert frame.loc["p", "final_accuracy_honest_mean"] == 0.85
    assert frame.loc["p", "final_accuracy"] == 0.3
    assert frame.loc["q", "final_accuracy_honest_mean"] == 0.0  # diverged: the diverged score
    assert math.isnan(frame.loc["m", "final_accuracy_honest_mean"])


def test_manifest_selects_runs_and_labels_axes(tmp_path):
    write_run(tmp_path, "a", [0.7], aggregator="median:even=mean", attack="sign_flip")
    write_run(tmp_path, "old", [0.1])  # not in the manifest: a cell of an earlier grid
    write_manifest(tmp_path, [("a", {"aggregator": "median", "attack": "sign_flip:start=2",
                                     "algorithm": "robust"})])
    frame, _ = results.load_results(str(tmp_path))
    assert list(frame["run_name"]) == ["a"]
    row = frame.iloc[0]
    assert (row["aggregator"], row["aggregator_resolved"]) == ("median", "median:even=mean")
    assert row["attack"] == "sign_flip:start=2" and row["algorithm"] == "robust"


def test_diverged_score_and_unfinished_runs(tmp_path):
    write_run(tmp_path, "d", [0.3], status="failed", reason="model became non-finite at round 2")
    write_run(tmp_path, "e", [0.3], status="failed", reason="MemoryError: out of memory")
    frame, _ = results.load_results(str(tmp_path), diverged_score=None)
    frame = frame.set_index("run_name")
    assert frame.loc["d", "final_accuracy"] is None or math.isnan(frame.loc["d", "final_accuracy"])
    assert not frame.loc["e", "diverged"] and frame.loc["e", "status"] == "failed"


def _metrics(rounds, accuracies, losses):
    return pd.DataFrame(dict(round=rounds, test_accuracy=accuracies, test_loss=losses))


@pytest.mark.parametrize("accuracies, losses, diverged, expected", [
    # never above the limit: not aborted
    ([0.5, 0.7, 0.8], [2.0, 1.0, 9.0], False, (math.nan, math.nan)),
    # the first evaluation above 9 ends the run; the one before is what is logged last
    ([0.5, 0.7, 0.6, 0.1], [2.0, 5.0, 9.5, 30.0], False, (3.0, 0.7)),
    # a NaN loss aborts like a large one; unevaluated rounds are skipped
    ([0.5, math.nan, 0.1, 0.6], [2.0, math.nan, math.nan, 1.0], False, (3.0, 0.5)),
    # aborted at the first evaluation: nothing logged before
    ([0.1, 0.8], [12.0, 1.0], False, (1.0, math.nan)),
    # a non-finite model after its last finite evaluation aborts at its last round
    ([0.5, 0.6, math.nan], [2.0, 3.0, math.nan], True, (3.0, 0.6)),
])
def test_accuracy_before_abort_by_hand(accuracies, losses, diverged, expected):
    got = results.accuracy_before_abort(_metrics(range(1, len(accuracies) + 1), accuracies, losses),
                                        9.0, diverged=diverged)
    assert got == pytest.approx(expected, nan_ok=True)


def test_accuracy_before_abort_reads_rounds_in_order():
    shuffled = _metrics([30, 10, 20], [0.2, 0.6, 0.7], [20.0, 1.0, 4.0])
    assert results.accuracy_before_abort(shuffled, 9.0) == (30.0, 0.7)


def test_abort_test_loss_rescores_final_accuracy(tmp_path):
    write_run(tmp_path, "collapsed", [0.5, 0.8, 0.6, 0.1], losses=[1.5, 0.8, 9.2, 40.0])
    write_run(tmp_path, "healthy", [0.5, 0.8, 0.9], losses=[1.5, 0.8, 0.5])
    write_run(tmp_path, "nan", [0.3, 0.4], status="failed", losses=[2.0, 3.0],
              reason="model became non-finite at round 3 (aggregate non-finite: 1)")
    write_run(tmp_path, "first", [0.1, 0.2], losses=[11.0, 12.0])
    raw = results.load_results(str(tmp_path))[0].set_index("run_name")
    assert raw.loc["collapsed", "final_accuracy"] == 0.1
    assert raw["aborted_round"].isna().all()
    frame = results.load_results(str(tmp_path), abort_test_loss=9.0,
                                 diverged_score=0.0)[0].set_index("run_name")
    assert frame.loc["collapsed", ["final_accuracy", "aborted_round"]].tolist() == [0.8, 3.0]
    assert frame.loc["collapsed", "final_test_accuracy"] == 0.1  # the raw value is kept
    assert frame.loc["healthy", "final_accuracy"] == 0.9
    assert math.isnan(frame.loc["healthy", "aborted_round"])
    assert frame.loc["nan", ["final_accuracy", "aborted_round"]].tolist() == [0.4, 2.0]
    assert frame.loc["first", ["final_accuracy", "aborted_round"]].tolist() == [0.0, 1.0]


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(results.NotAGridError, match="no runs found"):
        results.load_results(str(tmp_path))
