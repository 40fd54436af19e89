"""Robust rules end to end: digits, 30 % sign-flipping clients, FedAvg process.

The Byzantine clients run the attack library's `sign_flip:scale=10` (they send
−10·Δ), composed onto the honest client work.
"""

import numpy as np
import pytest

from aggregators.build import AggregatorContext, build_aggregator
from aggregators.base import TOO_FEW_CLIENTS, too_few_clients_reason
from attacks import build_attack_plan
from orchestration import evaluation, training
from orchestration.config import ExperimentConfig
from tff_byz import client_inputs, client_work, datasets, fedavg, models

NUM_CLIENTS, BYZANTINE, ROUNDS = 10, 3, 20
ATTACK = build_attack_plan("sign_flip:scale=10", seed=1)


@pytest.fixture(scope="module")
def setup():
    data = datasets.load_federated_dataset("digits", num_clients=NUM_CLIENTS, seed=1)
    shape, classes, norm = data.input_shape, data.num_classes, data.normalization
    initial = fedavg.model_weights_from_keras(
        models.build_keras_model("small_mlp", shape, classes, norm, seed=1))
    model_fn = models.make_model_fn("small_mlp", shape, classes, norm)
    evaluator = evaluation.Evaluator(
        lambda: models.build_keras_model("small_mlp", shape, classes, norm), data.test_x, data.test_y)
    return data, initial, model_fn, evaluator


def final_accuracy(setup, spec, byzantine_count):
    data, initial, model_fn, evaluator = setup
    honest = client_work.build_local_sgd_client_work(model_fn, epochs=1, batch_size=32,
                                                     learning_rate=0.1, seed=1)
    aggregator = build_aggregator(spec, AggregatorContext(
        declared_byzantine_fraction=BYZANTINE / NUM_CLIENTS, clients_per_round=NUM_CLIENTS))
    process = fedavg.build_fedavg_process(model_fn, initial, aggregator=aggregator,
                                          client_work=ATTACK.client_work(honest, seed=1))
    inputs = [client_inputs.make_client_input(data.client_data.create_tf_dataset_for_client(cid), i,
                                              byzantine=i < byzantine_count)
              for i, cid in enumerate(data.client_ids)]
    state = process.initialize()
    for _ in range(ROUNDS):
        state = process.next(state, inputs).state
    weights = process.get_model_weights(state)
    if not all(np.all(np.isfinite(w)) for w in weights.trainable):
        return 0.0
    return evaluator(weights)[1]


@pytest.fixture(scope="module")
def honest_accuracy(setup, tff_context):
    return final_accuracy(setup, "mean", byzantine_count=0)


def test_honest_reference_learns(honest_accuracy):
    assert honest_accuracy >= 0.85


def test_mean_collapses_under_sign_flip(setup, honest_accuracy, tff_context):
    assert final_accuracy(setup, "mean", BYZANTINE) < 0.3


# Centered clipping's radius must match the update scale: digits deltas have norms
# around 1, so the default τ = 10 clips nothing (accuracy 0.03 here); the FedLAW
# paper tunes τ over {0.1, 10}.
ROBUST = ["median", "trimmed_mean", "krum", "geometric_median",
          "centered_clipping:tau=0.1,iterations=3"]


@pytest.mark.parametrize("spec", ROBUST)
def test_robust_rules_stay_close_to_honest(setup, honest_accuracy, tff_context, spec):
    accuracy = final_accuracy(setup, spec, BYZANTINE)
    assert accuracy >= honest_accuracy - 0.06, f"{spec}: {accuracy:.3f} vs honest {honest_accuracy:.3f}"


def test_geometric_median_survives_a_huge_finite_outlier_from_its_median_start(tmp_path,
                                                                              tff_context):
    """`scaling:scale=1e15` sends finite updates ~1e15 times the honest ones. Three Weiszfeld
    iterations from the mean cannot pull back from them (the test loss passed 3e32 after one
    round); from the coordinate-wise median (the default start) the run learns."""

    def run(aggregator):
        return training.run_experiment(ExperimentConfig(
            dataset="digits", num_clients=10, byzantine_fraction=0.2, attack="scaling:scale=1e15",
            aggregator=aggregator, rounds=6, eval_every=1, seed=1, output_dir=str(tmp_path),
            run_name=aggregator.replace(":", "_")), progress=False)

    from_median = run("geometric_median")
    assert from_median["status"] == "complete" and from_median["final_test_accuracy"] > 0.6
    from_mean = run("geometric_median:start=mean")
    assert from_mean["status"] == "failed" or from_mean["final_test_loss"] > 1e6


def test_too_few_finite_clients_end_the_run_failed_with_one_line(tmp_path, tff_context):
    """A client learning rate of 1e20 makes every update non-finite: the median has no
    aggregate. The run ends `failed`, its reason naming the rule, the finite count and f,
    instead of a 72-line gRPC traceback."""
    summary = training.run_experiment(ExperimentConfig(
        dataset="digits", num_clients=7, aggregator="median", client_lr=1e20, rounds=3,
        output_dir=str(tmp_path), run_name="median"), progress=False)
    assert summary["status"] == "failed" and summary["rounds_completed"] == 0
    reason = summary["reason"]
    assert "\n" not in reason
    assert reason.startswith("round 1: median:") and "median needs f < n/2" in reason
    assert "0 of 7 clients sent finite values, with f = 0 it needs at least 1" in reason


def test_too_few_clients_reason_reads_the_workers_assertion():
    message = (f"details = \"Failed to run computation: assertion failed: [{TOO_FEW_CLIENTS} "
               "krum needs n >= 2f + 3: clients] [9] [finite] [4] [f] [2] [needs] [7]\n ...")
    assert too_few_clients_reason(message) == (
        "krum needs n >= 2f + 3: 4 of 9 clients sent finite values, with f = 2 it needs at "
        "least 7; no aggregate exists (the others sent NaN/Inf)")
    assert too_few_clients_reason("some other error") is None
