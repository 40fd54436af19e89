"""Report math on hand-made DataFrames, checked against numbers worked out by hand."""

import math

import pandas as pd
import pytest

from orchestration.report import stats

# Student t quantiles t_{0.975, df} (tables): df = 1, 2.
T1, T2 = 12.706204736, 4.302652730


def frame():
    # mean/median × none/sign_flip × seeds 0, 1, 2; chosen so rules disagree.
    rows = []
    values = {("mean", "none"): [0.90, 0.92, 0.94], ("mean", "sign_flip"): [0.10, 0.30, 0.20],
              ("median", "none"): [0.88, 0.90, 0.92], ("median", "sign_flip"): [0.80, 0.84, 0.82]}
    for (aggregator, attack), accuracies in values.items():
        for seed, accuracy in enumerate(accuracies):
            rows.append(dict(aggregator=aggregator, attack=attack, seed=seed,
                             final_accuracy=accuracy, diverged=False))
    return pd.DataFrame(rows)


def test_summarize_mean_std_and_t_interval():
    summary = stats.summarize(frame(), ["aggregator", "attack"], "final_accuracy")
    row = summary.set_index(["aggregator", "attack"]).loc[("mean", "sign_flip")]
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(0.2)
    assert row["std"] == pytest.approx(0.1)  # deviations -0.1, 0.1, 0: sqrt(0.02 / 2)
    assert row["ci_low"] == pytest.approx(0.2 - T2 * 0.1 / math.sqrt(3))
    assert row["ci_high"] == pytest.approx(0.2 + T2 * 0.1 / math.sqrt(3))
    assert list(summary["aggregator"]) == ["mean", "mean", "median", "median"]  # grid order


def test_summarize_single_seed_and_identical_values_and_nan():
    one = pd.DataFrame(dict(a=["x", "y", "y", "z", "z"], v=[0.5, 0.7, 0.7, 0.3, math.nan]))
    summary = stats.summarize(one, ["a"], "v").set_index("a")
    assert summary.loc["x", "n"] == 1 and math.isnan(summary.loc["x", "std"])
    assert math.isnan(summary.loc["x", "ci_low"])
    assert summary.loc["y", "ci_low"] == summary.loc["y", "ci_high"] == pytest.approx(0.7)
    assert summary.loc["z", "n"] == 1  # the NaN is left out


def test_two_seed_interval_uses_t_with_one_degree_of_freedom():
    two = pd.DataFrame(dict(a=["x", "x"], v=[0.6, 0.8]))
    row = stats.summarize(two, ["a"], "v").iloc[0]
    std = math.sqrt(0.02)
    assert row["std"] == pytest.approx(std)
    assert row["ci_high"] - row["mean"] == pytest.approx(T1 * std / math.sqrt(2))


def test_pivot_strings_and_best_per_column():
    summary = stats.summarize(frame(), ["aggregator", "attack"], "final_accuracy")
    text, best = stats.pivot(summary, ["aggregator"], ["attack"])
    assert text.loc["mean", "none"] == "0.920 ± 0.020"
    assert text.loc["median", "sign_flip"] == "0.820 ± 0.020"
    assert best.loc["mean", "none"] and not best.loc["median", "none"]
    assert best.loc["median", "sign_flip"] and not best.loc["mean", "sign_flip"]
    low = stats.pivot(summary, ["aggregator"], ["attack"], higher_is_better=False)[1]
    assert low.loc["mean", "sign_flip"] and low.loc["median", "none"]
    text_ci, _ = stats.pivot(summary, ["aggregator"], ["attack"], style="ci", digits=2)
    half = T2 * 0.02 / math.sqrt(3)
    assert text_ci.loc["mean", "none"] == f"0.92 [{0.92 - half:.2f}, {0.92 + half:.2f}]"


def test_pivot_multi_columns_labels_and_diverged_dagger():
    rows = [dict(aggregator="mean", attack="lie", byzantine_fraction=f, seed=s, final_accuracy=v,
                 diverged=d)
            for f, s, v, d in ((0.1, 0, 0.5, False), (0.1, 1, 0.7, False),
                               (0.3, 0, 0.0, True), (0.3, 1, 0.4, False))]
    summary = stats.summarize(pd.DataFrame(rows), ["aggregator", "attack", "byzantine_fraction"],
                              "final_accuracy")
    text, best = stats.pivot(summary, ["aggregator"], ["attack", "byzantine_fraction"])
    assert list(text.columns) == [("lie", "0.1"), ("lie", "0.3")]
    assert text.loc["mean", ("lie", "0.3")] == f"0.200 ± {math.sqrt(0.08):.3f} †1"
    assert not best.any().any()  # one row: nothing to compare with


def test_paired_differences_pair_by_seed():
    differences = stats.paired_differences(frame(), "final_accuracy", {"aggregator": "mean"},
                                           keys=["aggregator", "attack", "seed"])
    row = differences.set_index(["aggregator", "attack"]).loc[("median", "sign_flip")]
    # Per seed: 0.80-0.10, 0.84-0.30, 0.82-0.20 = 0.70, 0.54, 0.62.
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(0.62)
    assert row["std"] == pytest.approx(0.08)
    assert row["ci_low"] == pytest.approx(0.62 - T2 * 0.08 / math.sqrt(3))
    # t = 0.62 / (0.08 / sqrt 3) = 13.42 on 2 df: p ≈ 0.0055.
    assert row["p_value"] == pytest.approx(0.005507, abs=2e-5)
    none = differences.set_index(["aggregator", "attack"]).loc[("median", "none")]
    assert none["mean"] == pytest.approx(-0.02) and none["std"] == pytest.approx(0.0)
    assert math.isnan(none["p_value"])  # no variation: no test
    assert "mean" not in set(differences["aggregator"])


def test_paired_differences_leave_out_unpaired_seeds():
    data = frame()
    data = data[~((data["aggregator"] == "mean") & (data["seed"] == 2))]
    differences = stats.paired_differences(data, "final_accuracy", {"aggregator": "mean"},
                                           keys=["aggregator", "attack", "seed"])
    assert set(differences["n"]) == {2}


def test_worst_case_over_attacks_excludes_the_honest_reference():
    rows = frame()
    extra = rows[rows["attack"] == "sign_flip"].assign(
        attack="lie", final_accuracy=[0.5, 0.5, 0.5, 0.6, 0.6, 0.6])
    summary = stats.summarize(pd.concat([rows, extra]), ["aggregator", "attack"], "final_accuracy")
    worst = stats.worst_case(summary, over="attack", by=["aggregator"])
    assert list(worst["aggregator"]) == ["mean", "median"]
    assert list(worst["worst_attack"]) == ["sign_flip", "lie"]
    assert list(worst["mean"]) == pytest.approx([0.2, 0.6])
    only_honest = summary[summary["attack"] == "none"]
    assert stats.worst_case(only_honest, over="attack", by=["aggregator"]).empty


def test_varying_columns():
    data = frame().assign(dataset="digits")
    assert stats.varying_columns(data, ["dataset", "aggregator", "attack", "missing"]) == [
        "aggregator", "attack"]


def test_facet_groups_label_each_setting_in_frame_order():
    data = pd.DataFrame(dict(q=[0.9, 0.5, 0.9], attack=["lie", "lie", "none"], v=[1, 2, 3]))
    groups = [(label, list(group["v"])) for label, group in stats.facet_groups(data, ["q", "attack"])]
    assert groups == [("q=0.9, attack=lie", [1]), ("q=0.5, attack=lie", [2]),
                      ("q=0.9, attack=none", [3])]
    assert [(label, len(g)) for label, g in stats.facet_groups(data, [])] == [("", 3)]


def test_intervals_of_rates_are_clipped_to_their_range():
    """Two seeds at 0.90 and 0.94: mean 0.92, t-interval [0.666, 1.174]; as a rate the table
    shows [0.666, 1] (it showed 1.174, while the plots clipped)."""
    frame = pd.DataFrame(dict(aggregator=["mean", "mean"], final_accuracy=[0.90, 0.94]))
    free = stats.summarize(frame, ["aggregator"], "final_accuracy")
    assert free["ci_high"].iloc[0] == pytest.approx(0.92 + 12.706 * 0.02, abs=1e-3)
    clipped = stats.summarize(frame, ["aggregator"], "final_accuracy",
                              bounds=stats.bounds_of("final_accuracy"))
    assert clipped["ci_high"].iloc[0] == 1.0
    assert clipped["ci_low"].iloc[0] == pytest.approx(free["ci_low"].iloc[0])
    assert stats.bounds_of("detection_recall") == (0.0, 1.0)
    assert stats.bounds_of("final_attack_success_rate") == (0.0, 1.0)
    assert stats.bounds_of("difference") is None and stats.bounds_of("wall_seconds") is None
