"""Run files -> results/rounds DataFrames, on hand-made run directories."""

import math

import pytest

from tests.report.helpers import write_manifest, write_run
from tff_byz.report import results


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


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(results.NotAGridError, match="no runs found"):
        results.load_results(str(tmp_path))
