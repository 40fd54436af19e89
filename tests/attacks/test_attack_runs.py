"""Every attack end to end: a real TFF FedAvg process on the embedded dataset, a few rounds."""

import collections

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from attacks import ATTACKS
from orchestration import training
from orchestration.experiment import Experiment
from orchestration.config import ExperimentConfig

NON_FINITE = {"inf", "nan"}


def run(tmp_path, attack, aggregator="mean", name=None, **overrides):
    values = dict(dataset="digits", partition="q", q=0.5, num_clients=10, rounds=3, seed=1,
                  byzantine_fraction=0.3, aggregator=aggregator, attack=attack,
                  output_dir=str(tmp_path), run_name=name or attack.replace(":", "_"))
    values.update(overrides)
    summary = training.run_experiment(ExperimentConfig(**values), progress=False)
    metrics = pd.read_csv(tmp_path / values["run_name"] / "metrics.csv")
    return summary, metrics


SPECS = {name: name for name in ATTACKS.names}
SPECS["double"] = "double:first_start=0,second_start=1"  # both halves active within 3 rounds
SPECS["backdoor"] = "backdoor:target=0"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_attack_runs_end_to_end(tmp_path, tff_context, name):
    summary, metrics = run(tmp_path, SPECS[name])
    assert summary["actual_byzantine_fraction"] == pytest.approx(0.3)
    assert len(summary["byzantine_ids"]) == 3
    if name in NON_FINITE:
        assert summary["status"] == "failed" and "non-finite" in summary["reason"]
        return
    if name == "bit_flip":  # exponent flips give finite values near 1e38: the mean overflows
        assert summary["status"] == "failed" and summary["rounds_completed"] == 1
        assert "every client's update was finite" in summary["reason"]
        assert "overflowed float32" in summary["reason"]
        return
    assert summary["status"] == "complete", summary["reason"]
    assert metrics["round"].tolist() == [1, 2, 3]
    if name == "backdoor":
        assert metrics["backdoor/attack_success_rate"].between(0, 1).all()
    if name in ("lie", "ipm", "min_max", "min_sum", "mimic"):
        assert (metrics[f"aggregator/attack/{name}/active"] == 1).all()
    if name not in ("none", "label_flip", "backdoor", "lie", "ipm", "min_max", "min_sum", "mimic"):
        assert (metrics["client_work/attacked_clients"] > 0).any()


def test_median_survives_bit_flip(tmp_path, tff_context):
    summary, metrics = run(tmp_path, "bit_flip", aggregator="median")
    assert summary["status"] == "complete", summary["reason"]
    assert (metrics["client_work/attacked_clients"] == 3).all()
    assert summary["final_test_accuracy"] > 0.5


def test_median_survives_nan_clients(tmp_path, tff_context):
    summary, metrics = run(tmp_path, "nan", aggregator="median")
    assert summary["status"] == "complete"
    assert (metrics["aggregator/non_finite_clients"] == 3).all()


@pytest.mark.parametrize("attack", ["lie", "random_params+gaussian"])
def test_runs_are_deterministic(tmp_path, tff_context, attack):
    _, first = run(tmp_path, attack, name="a")
    _, second = run(tmp_path, attack, name="b")
    columns = [c for c in first.columns if c != "round_seconds"]
    pd.testing.assert_frame_equal(first[columns], second[columns])


@pytest.mark.parametrize("attack, start", [("label_flip:start=2", 2), ("backdoor:start=3", 3),
                                           ("label_flip", 0)])
def test_data_poisoning_starts_at_its_round(tmp_path, tff_context, attack, start):
    """A Byzantine client trains on its clean data before its attack's `start` round, on
    its poisoned data from then on; honest clients' inputs never change."""
    experiment = Experiment(ExperimentConfig(
        dataset="digits", num_clients=10, byzantine_fraction=0.2, attack=attack, rounds=5,
        output_dir=str(tmp_path), run_name="poison_start").resolved())
    byzantine = int(np.flatnonzero(experiment.byzantine)[0])
    honest = int(np.flatnonzero(~np.asarray(experiment.byzantine))[0])
    inputs = experiment.inputs  # by reference: rows are read (and poisoned) in the worker
    spec = collections.OrderedDict(x=tf.TensorSpec(experiment.dataset.input_shape, tf.float32),
                                   y=tf.TensorSpec([], tf.int32))

    @tff.tensorflow.computation(inputs.type_signature(spec), np.int64)
    def read_all(value, round_index):
        @tf.function
        def run(value, round_index):
            return inputs.open(value, round_index).all()
        return run(value, round_index)

    def data(index, round_index):
        x, y = read_all(inputs.dataset_computation(np.int32(index)), np.int64(round_index))
        return x.reshape(len(y), -1), y

    clean_x, clean_y = experiment.dataset.client_arrays(byzantine)
    clean_x = clean_x.reshape(len(clean_y), -1)
    for round_index in range(5):
        x, y = data(byzantine, round_index)
        poisoned = not (np.array_equal(x, clean_x) and np.array_equal(y, clean_y))
        assert poisoned == (round_index >= start), round_index
    x, y = data(honest, 0)
    for round_index in range(1, 5):
        np.testing.assert_array_equal(data(honest, round_index)[1], y)


@pytest.mark.parametrize("attack", ["lie", "sign_flip+lie"])
def test_attacked_clients_counts_colluding_clients_too(tmp_path, tff_context, attack):
    """`client_work/attacked_clients` was always 0 under colluding attacks (the aggregator
    wrapper carries them out, so the client work did not count them)."""
    summary, metrics = run(tmp_path, attack, name=attack.replace("+", "_"), rounds=2)
    assert summary["status"] == "complete"
    assert (metrics["client_work/attacked_clients"] == len(summary["byzantine_ids"])).all()


@pytest.mark.parametrize("attack, reason", [
    ("scaling:scale=1e38", "every client's update was finite, but the aggregator 'mean:weighted"
                           "=true' or the model step overflowed float32"),
    ("nan", "3 client(s) sent NaN/Inf and the aggregator 'mean:weighted=true' let a NaN/Inf "
            "update through"),
])
def test_the_mean_says_why_the_model_became_non_finite(tmp_path, tff_context, attack, reason):
    """Huge finite updates that overflow are not NaN/Inf sent by clients (the reason said so)."""
    summary, _ = run(tmp_path, attack, rounds=2)
    assert summary["status"] == "failed"
    assert summary["reason"].startswith("model became non-finite at round 1: ")
    assert reason in summary["reason"]
