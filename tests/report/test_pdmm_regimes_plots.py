"""examples/pdmm_regimes_plots.py on hand-made run directories: the method frame, the seed
summaries, λ_P in results.csv, and the two figures."""

import json
import os

import pytest

from examples import pdmm_regimes_plots as regime_plots
from orchestration.report.results import load_results
from tests.report.helpers import write_run


def _run(root, name, accuracy, *, node_mean=None, lambda_p=None, **config):
    directory = write_run(root, name, [accuracy], **config)
    path = os.path.join(directory, "summary.json")
    with open(path) as f:
        summary = json.load(f)
    if node_mean is not None:
        summary["final_test_accuracy_node_mean"] = node_mean
    if lambda_p is not None:
        summary["lambda_p"] = lambda_p
    with open(path, "w") as f:
        json.dump(summary, f)


@pytest.fixture
def grid(tmp_path):
    root = str(tmp_path)
    sign = dict(attack="sign_flip", byzantine_fraction=0.3)
    for seed, (a, b) in enumerate([(0.90, 0.50), (0.94, 0.60)]):
        _run(root, f"p02_s{seed}", a, node_mean=a - 0.01, lambda_p=0.03, seed=seed,
             aggregator="pdmm:c=0.02,theta=1.0,init=consensus", **sign)
        _run(root, f"p2_s{seed}", b, node_mean=b - 0.02, lambda_p=0.3, seed=seed,
             aggregator="pdmm:c=0.2,theta=1.0,init=consensus", **sign)
        _run(root, f"h2_s{seed}", b + 0.1, seed=seed,
             aggregator="pdmm:c=0.2,theta=0.5,init=consensus", **sign)
        _run(root, f"fm_s{seed}", 0.1, seed=seed, aggregator="mean", attack_message="model",
             **sign)
        _run(root, f"fd_s{seed}", 0.8, seed=seed, aggregator="mean", attack_message="delta",
             **sign)
    _run(root, "fm_b1", 0.7, aggregator="mean", attack_message="model", attack="sign_flip",
         byzantine_fraction=0.1)
    _run(root, "local", 0.09, node_mean=0.85, aggregator="local", attack="none",
         byzantine_fraction=0.3)
    return root


def test_results_carry_lambda_p_and_the_frame_names_each_method(grid):
    results, _ = load_results(grid)
    by_name = results.set_index("run_name")
    assert by_name.loc["p02_s0", "lambda_p"] == pytest.approx(0.03)
    assert by_name.loc["p2_s1", "lambda_p"] == pytest.approx(0.3)
    frame = regime_plots.method_frame(results).set_index(results["run_name"])
    assert frame.loc["p2_s0", ["kind", "c", "theta"]].tolist() == ["pdmm", 0.2, 1.0]
    assert frame.loc["h2_s1", "theta"] == 0.5
    assert frame.loc["fm_s0", "kind"] == "fedavg model"
    assert frame.loc["fd_s0", "kind"] == "fedavg delta"
    assert frame.loc["local", "kind"] == "local"
    assert frame.loc["local", "final_accuracy_node_mean"] == pytest.approx(0.85)
    assert frame.loc["p2_s0", "lambda_p"] == pytest.approx(0.3)


def test_summaries_over_seeds(grid):
    results, _ = load_results(grid)
    frame = regime_plots.method_frame(results)
    pdmm = frame[(frame["kind"] == "pdmm") & (frame["theta"] == 1.0)]
    table = regime_plots.summarize(pdmm, ["c"], "final_accuracy").set_index("c")
    assert table.loc[0.02, "mean"] == pytest.approx(0.92)
    assert table.loc[0.2, ["min", "max", "seeds"]].tolist() == pytest.approx([0.5, 0.6, 2])
    nodes = regime_plots.summarize(pdmm, ["c"], "final_accuracy_node_mean").set_index("c")
    assert nodes.loc[0.2, "mean"] == pytest.approx(0.53)


def test_main_writes_both_figures_and_prints_the_tables(grid, capsys):
    out = os.path.join(grid, "plots")
    assert regime_plots.main([grid, "--attack=sign_flip", "--data=iid", "--output", out]) == 0
    assert sorted(os.listdir(out)) == ["pdmm_vs_c_iid_sign_flip.png",
                                       "pdmm_vs_fraction_iid_sign_flip.png",
                                       "pdmm_vs_lambda_iid.png"]
    printed = capsys.readouterr().out
    assert "| pdmm" in printed and "0.920" in printed


def test_main_refuses_an_attack_without_lambda_p_and_a_missing_attack(grid, capsys):
    assert regime_plots.main([grid, "--attack=gaussian", "--data=iid"]) == 2
    assert "no finished runs" in capsys.readouterr().err
    _run(grid, "g", 0.5, aggregator="pdmm", attack="gaussian", byzantine_fraction=0.3)
    assert regime_plots.main([grid, "--attack=gaussian", "--data=iid"]) == 2
    assert "not linear" in capsys.readouterr().err
