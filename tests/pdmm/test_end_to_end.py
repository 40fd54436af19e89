"""PDMM through the training loop on the embedded dataset: accuracy of both evaluated
models, exact resume (client states and server copies saved with the program state),
decentralized runs, and the side-by-side baseline of `pipelines.train`."""

import pandas as pd
import pytest

from pipelines import train
from orchestration import training
from orchestration.config import ExperimentConfig

COLUMNS = ["round", "test_accuracy", "test_loss", "train_loss", "test_accuracy_honest_mean",
           "consensus_gap_honest", "client_work/num_examples", "clients"]
SETTINGS = dict(dataset="digits", num_clients=10, local_steps=10, batch_size=64, client_lr=0.05,
                eval_every=1, checkpoint_every=1, seed=1)


def config(out, rounds, **overrides):
    values = dict(SETTINGS, rounds=rounds, output_dir=str(out), run_name="run")
    values.update(overrides)
    return ExperimentConfig(**values)


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory, tff_context):
    del tff_context
    out = tmp_path_factory.mktemp("pdmm")
    summary = training.run_experiment(config(out, 12, aggregator="pdmm"), progress=False)
    return out / "run", summary


def test_pdmm_learns_digits_with_both_models(honest_run):
    run_dir, summary = honest_run
    assert summary["status"] == "complete"
    assert summary["final_test_accuracy"] >= 0.88
    assert summary["final_test_accuracy_honest_mean"] >= 0.88
    metrics = pd.read_csv(run_dir / "metrics.csv")
    gap = metrics["pdmm/consensus_gap"]
    assert gap.iloc[-1] < gap.iloc[0]  # the clients approach consensus


@pytest.mark.parametrize("overrides", [
    dict(aggregator="pdmm:theta=0.5", clients_per_round=6, attack="gaussian",
         byzantine_fraction=0.2),
    dict(aggregator="pdmm", topology="ring", attack="sign_flip", byzantine_fraction=0.2),
], ids=["partial-participation", "decentralized-ring"])
def test_resume_continues_exactly(tmp_path, tff_context, overrides):
    whole = training.run_experiment(config(tmp_path / "a", 4, **overrides), progress=False)
    training.run_experiment(config(tmp_path / "b", 2, **overrides), progress=False)
    resumed = training.run_experiment(config(tmp_path / "b", 4, **overrides), resume=True,
                                      progress=False)
    assert resumed["final_test_accuracy"] == whole["final_test_accuracy"]
    columns = COLUMNS + ["test_accuracy_node_mean", "test_accuracy_node_min"]
    if "topology" in overrides:
        # Sign flip (κ = −1) on 2 of 10 nodes, c = 0.4: λ_P = 2 · 0.2 · 0.4 / 0.6.
        columns += ["pdmm/message_norm", "lambda_p"]
        assert whole["lambda_p"] == pytest.approx(0.16 / 0.6)
    else:
        columns += ["pdmm/consensus_gap"]  # Gaussian noise is not linear: no λ_P
        assert "lambda_p" not in whole
    a = pd.read_csv(tmp_path / "a" / "run" / "metrics.csv")
    b = pd.read_csv(tmp_path / "b" / "run" / "metrics.csv")
    assert ("lambda_p" in a) == ("topology" in overrides)
    pd.testing.assert_frame_equal(a[columns], b[columns])
    assert a["test_accuracy_node_min"].iloc[-1] <= a["test_accuracy_node_mean"].iloc[-1]


def test_baseline_runs_the_same_settings_and_prints_both(tmp_path, capsys, tff_context):
    code = train.main(["train", "--progress=false", f"--output_dir={tmp_path}",
                       "--aggregator=pdmm:local_steps=3", "--baseline=mean", "--num_clients=5",
                       "--rounds=1", "--run_name=demo"])
    out = capsys.readouterr().out
    assert code == 0
    assert "pdmm:c=0.4,theta=1.0,local_steps=3,init=consensus" in out
    assert "mean:weighted=true" in out and "honest-mean acc" in out
    stored = ExperimentConfig.from_dict(
        __import__("json").loads((tmp_path / "demo_baseline" / "config.json").read_text()))
    assert stored.aggregator == "mean:weighted=true" and stored.local_steps == 3
