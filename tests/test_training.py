"""The training loop end to end on the embedded dataset: accuracy, files, resume."""

import collections
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from orchestration import evaluation, experiment, training
from orchestration.config import ExperimentConfig
from orchestration.report import results
from tff_byz.context import ExecutionContext
from tff_byz.datasets import load_federated_dataset

from tests.runs import DETERMINISTIC_COLUMNS, assert_same_metrics, small_config


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """FedAvg on digits, 20 clients, the demo's settings."""
    out = tmp_path_factory.mktemp("digits")
    config = ExperimentConfig(dataset="digits", num_clients=20, rounds=25, eval_every=5,
                              output_dir=str(out), run_name="fedavg", seed=0)
    with ExecutionContext():
        summary = training.run_experiment(config, progress=False)
    return out / "fedavg", summary


def test_fedavg_on_digits_reaches_90_percent(digits_run):
    _, summary = digits_run
    assert summary["status"] == "complete"
    assert summary["rounds_completed"] == 25
    assert summary["final_test_accuracy"] >= 0.90


def test_run_directory_layout_and_stable_names(digits_run):
    run_dir, summary = digits_run
    assert sorted(os.listdir(run_dir)) == ["config.json", "metrics.csv", "state", "summary.json",
                                           "tensorboard"]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    for column in ("round", "test_accuracy", "test_loss", "train_loss", "round_seconds"):
        assert column in metrics.columns
    assert metrics["round"].tolist() == list(range(1, 26))
    evaluated = metrics.dropna(subset=["test_accuracy"])["round"].tolist()
    assert evaluated == [5, 10, 15, 20, 25]
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    train_examples = load_federated_dataset("digits", num_clients=20, seed=0).label_histograms.sum()
    assert (metrics["client_work/num_examples"] == train_examples).all()  # every client, every round
    assert summary["final_test_accuracy"] == pytest.approx(metrics["test_accuracy"].iloc[-1])
    stored = json.loads((run_dir / "summary.json").read_text())
    for key in ("status", "final_test_accuracy", "rounds_completed", "wall_seconds"):
        assert key in stored
    config = json.loads((run_dir / "config.json").read_text())
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "summary.json", "metrics.csv"):  # as open() makes them, not 0600
        assert os.stat(run_dir / name).st_mode & 0o777 == 0o666 & ~umask, name
    assert config["model"] == "small_mlp"  # defaults are explicit
    assert config["checkpoint_every"] == 5
    assert config["aggregator"] == "mean:weighted=true"
    assert set(config) == set(ExperimentConfig().to_dict())


def test_runs_are_deterministic_and_resume_extends_exactly(tmp_path, tff_context):
    """6 rounds in one go == 3 rounds, then --resume with rounds=6."""
    whole = training.run_experiment(small_config(tmp_path / "a"), progress=False)
    training.run_experiment(small_config(tmp_path / "b", rounds=3), progress=False)
    resumed = training.run_experiment(small_config(tmp_path / "b"), resume=True, progress=False)
    assert_same_metrics(tmp_path / "a", tmp_path / "b")
    assert resumed["final_test_accuracy"] == whole["final_test_accuracy"]
    assert resumed["best_test_accuracy"] == whole["best_test_accuracy"]


def test_stop_test_loss_ends_the_run_at_the_first_evaluation_above_it(tmp_path, tff_context):
    """Mean under a scaled sign flip climbs in loss; the limit between rounds 3 and 4 ends
    the run at 4, exactly as the unlimited run went, and a resume does not continue it."""
    attacked = dict(attack="sign_flip:scale=3", byzantine_fraction=0.4)
    training.run_experiment(small_config(tmp_path / "a", **attacked), progress=False)
    whole = pd.read_csv(tmp_path / "a" / "run" / "metrics.csv")
    losses = whole["test_loss"].to_numpy()
    assert (np.diff(losses[2:]) > 0).all()  # the premise: the loss climbs from round 3
    limit = float(losses[2] + losses[3]) / 2
    summary = training.run_experiment(small_config(tmp_path / "b", stop_test_loss=limit,
                                                   **attacked), progress=False)
    assert (summary["status"], summary["rounds_completed"], summary["stopped_round"]) == (
        "complete", 4, 4)
    assert summary["reason"].startswith("stopped at round 4: test loss ")
    stopped = pd.read_csv(tmp_path / "b" / "run" / "metrics.csv")
    pd.testing.assert_frame_equal(stopped[DETERMINISTIC_COLUMNS],
                                  whole[DETERMINISTIC_COLUMNS].iloc[:4])
    again = training.run_experiment(small_config(tmp_path / "b", stop_test_loss=limit, rounds=8,
                                                 **attacked), resume=True, progress=False)
    assert (again["status"], again["rounds_completed"], again["stopped_round"]) == (
        "complete", 4, 4)
    assert len(pd.read_csv(tmp_path / "b" / "run" / "metrics.csv")) == 4
    frame = results.load_results(str(tmp_path / "b"))[0]  # scored by the run's own limit
    assert frame.loc[0, "aborted_round"] == 4
    assert frame.loc[0, "final_accuracy"] == pytest.approx(whole["test_accuracy"].iloc[2])


def test_clients_per_round_samples_deterministically(tmp_path, tff_context):
    summary = training.run_experiment(small_config(tmp_path, clients_per_round=4, rounds=2),
                                      progress=False)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert (metrics["clients"] == 4).all()
    assert summary["status"] == "complete"
    rounds = [experiment.sample_clients(10, 4, 3, r) for r in range(3)]
    assert all(len(set(r)) == 4 and list(r) == sorted(r) for r in rounds)
    assert not np.array_equal(rounds[0], rounds[1])
    np.testing.assert_array_equal(rounds[0], experiment.sample_clients(10, 4, 3, 0))


def test_momentum_sgd_learns_and_resumes_with_client_state(tmp_path, tff_context):
    """momentum_sgd keeps each client's momentum by id, saved with the program state."""
    settings = dict(client_work="momentum_sgd", server_lr=0.5, num_clients=10, eval_every=5)
    whole = training.run_experiment(small_config(tmp_path / "a", rounds=40, **settings),
                                    progress=False)
    assert whole["final_test_accuracy"] >= 0.85
    training.run_experiment(small_config(tmp_path / "b", rounds=20, **settings), progress=False)
    training.run_experiment(small_config(tmp_path / "b", rounds=40, **settings), resume=True,
                            progress=False)
    assert_same_metrics(tmp_path / "a", tmp_path / "b")


def test_evaluator_equals_numpy_over_uneven_batches():
    """Test loss (mean cross-entropy) and accuracy over 7 examples in batches of 3 (the last
    batch short), against numpy on the same linear model."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0, 2, 2], dtype=np.int32)
    kernel = rng.normal(size=(4, 3)).astype(np.float32)
    bias = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    evaluator = evaluation.Evaluator(
        lambda: tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)]),
        x, y, batch_size=3)
    weights = collections.namedtuple("Weights", "trainable non_trainable")([kernel, bias], [])
    loss, accuracy = evaluator(weights)
    logits = x @ kernel + bias
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_softmax[np.arange(7), y].mean(), rel=1e-5)
    assert accuracy == pytest.approx(np.mean(logits.argmax(axis=1) == y))
    assert 0 < accuracy < 1  # the case tells right from wrong


@pytest.mark.parametrize("damage", ["missing", "empty", "header only", "rows cut"])
def test_resume_rebuilds_metrics_rows_the_checkpoints_lack(tmp_path, tff_context, damage):
    """--resume with metrics.csv missing, empty, header-only or short: checkpoints whose rounds
    lack rows are dropped and those rounds recomputed (it used to crash with KeyError and leave
    a header-only file, so every retry failed the same way)."""
    reference = training.run_experiment(small_config(tmp_path / "ref"), progress=False)
    out = tmp_path / "damaged"
    training.run_experiment(small_config(out, rounds=4), progress=False)
    metrics = out / "run" / "metrics.csv"
    if damage == "missing":
        metrics.unlink()
    elif damage == "empty":
        metrics.write_text("")
    elif damage == "header only":
        metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    else:  # the rows of rounds 3 and 4 lost, checkpoints of rounds 3 and 4 kept
        lines = metrics.read_text().splitlines()
        metrics.write_text("\n".join(lines[:3]) + "\n")
    resumed = training.run_experiment(small_config(out), resume=True, progress=False)
    assert resumed["status"] == "complete"
    assert_same_metrics(tmp_path / "ref", out)
    assert resumed["final_test_accuracy"] == reference["final_test_accuracy"]


def test_an_interrupt_between_a_round_and_its_row_saves_no_checkpoint_of_that_round(
        tmp_path, tff_context, monkeypatch):
    """Ctrl-C after round 3 was computed but before its metrics row was written: round 3 must
    not be checkpointed (its row would be lost for good: --resume went on after it)."""
    training.run_experiment(small_config(tmp_path / "ref"), progress=False)
    flatten, calls = training._flatten, []  # pylint: disable=protected-access

    def interrupt_in_round_3(metrics, prefix=""):
        calls.append(prefix)
        if calls.count("") == 3 and not prefix:  # the round's own call (it recurses)
            raise KeyboardInterrupt
        return flatten(metrics, prefix)

    monkeypatch.setattr(training, "_flatten", interrupt_in_round_3)
    config = small_config(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        training.run_experiment(config, progress=False)
    summary = json.loads((tmp_path / "cut" / "run" / "summary.json").read_text())
    assert summary["interrupted"] and summary["rounds_completed"] == 2
    assert sorted(os.listdir(tmp_path / "cut" / "run" / "state")) == ["program_state_1",
                                                                     "program_state_2"]
    monkeypatch.setattr(training, "_flatten", flatten)
    training.run_experiment(config, resume=True, progress=False)
    assert_same_metrics(tmp_path / "ref", tmp_path / "cut")


def test_resume_removes_temporary_checkpoint_directories(tmp_path, tff_context):
    """SIGKILL during a checkpoint leaves TFF's `program_state_N_tempNNNN` directory."""
    config = small_config(tmp_path, rounds=2)
    training.run_experiment(config, progress=False)
    stale = tmp_path / "run" / "state" / "program_state_3_temp4321"
    stale.mkdir()
    (stale / "half.pb").write_bytes(b"x")
    training.run_experiment(small_config(tmp_path, rounds=3), resume=True, progress=False)
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path / "run" / "state")) == ["program_state_2",
                                                              "program_state_3"]
