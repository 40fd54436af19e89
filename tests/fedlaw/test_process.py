"""FedLAW's TFF process against the spec's round (fedlaw.md §4) recomputed in NumPy.

Six honest digits clients, one full batch per client: the test runs the same
client work itself for pass A (at θ_k) and pass B (at θ̃), forms h, projects,
and checks the process's new weights and model.
"""

import numpy as np
import pytest

from fedlaw import math as fedlaw_math
from fedlaw.process import FedLAWOptions, build_fedlaw_process
from tff_byz import client_inputs, client_work, datasets, fedavg, models

N, ALPHA, BETA = 6, 0.1, 0.05


@pytest.fixture(scope="module")
def setup(tff_context):
    data = datasets.load_federated_dataset("digits", num_clients=N, seed=3)
    shape, classes, norm = data.input_shape, data.num_classes, data.normalization
    initial = fedavg.model_weights_from_keras(
        models.build_keras_model("small_mlp", shape, classes, norm, seed=3))
    model_fn = models.make_model_fn("small_mlp", shape, classes, norm)
    work = client_work.build_local_sgd_client_work(model_fn, epochs=1, batch_size=1000,
                                                   learning_rate=ALPHA, seed=4)
    inputs = [client_inputs.make_client_input(data.client_data.create_tf_dataset_for_client(c), i)
              for i, c in enumerate(data.client_ids)]
    process = build_fedlaw_process(
        model_fn, initial, work, options=FedLAWOptions(beta=BETA, s_start=0, s_end=0, f=2,
                                                       freeze=1),
        num_clients=N, rounds=3, declared_fraction=0.0, alpha=ALPHA)
    return initial, work, inputs, process


def client_pass(work, work_state, trainable, initial, inputs):
    weights = fedavg.tff.learning.models.ModelWeights(trainable=trainable,
                                                      non_trainable=initial.non_trainable)
    output = work.next(work_state, [weights] * N, inputs)
    deltas = np.stack([np.concatenate([np.ravel(x) for x in r.update["delta"]])
                       for r in output.result])
    losses = np.array([r.update["loss"] for r in output.result], np.float64)
    return deltas.astype(np.float64), losses, output.state


def add(trainable, vector):
    out, offset = [], 0
    for t in trainable:
        out.append(t + vector[offset:offset + t.size].reshape(t.shape).astype(np.float32))
        offset += t.size
    return out


def test_learning_round_then_frozen_round(setup):
    initial, work, inputs, process = setup
    state = process.initialize()
    assert np.allclose(process.client_weights(state), 1 / N)

    # Round 0 (learning), recomputed.
    theta = list(initial.trainable)
    w = np.full(N, 1 / N)
    deltas, _, work_state = client_pass(work, work.initialize(), theta, initial, inputs)
    look = add(theta, w @ deltas)
    deltas_b, losses_b, _ = client_pass(work, work.initialize(), look, initial, inputs)
    h = w + (BETA / ALPHA) * deltas @ (w @ deltas_b) - BETA * losses_b
    s, t = N - 2, fedlaw_math.default_cap(N, N - 2)
    expected_w = fedlaw_math.project_sparse_capped_simplex(h, s, t).numpy()
    expected_theta = add(theta, expected_w @ deltas)

    output = process.next(state, inputs)
    state = output.state
    np.testing.assert_allclose(process.client_weights(state), expected_w, atol=1e-6)
    for got, want in zip(process.get_model_weights(state).trainable, expected_theta):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert output.metrics["fedlaw"]["s"] == s
    assert np.count_nonzero(process.client_weights(state) > 0) <= s
    assert process.client_weights(state).sum() == pytest.approx(1.0)

    # Round 1 (frozen, freeze=1): one pass aggregated with the learned weights.
    theta = [np.asarray(x) for x in process.get_model_weights(state).trainable]
    learned = process.client_weights(state)
    deltas, _, _ = client_pass(work, work_state, theta, initial, inputs)
    output = process.next(state, inputs)
    np.testing.assert_array_equal(process.client_weights(output.state), learned)
    for got, want in zip(process.get_model_weights(output.state).trainable,
                         add(theta, learned @ deltas)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert "fedlaw_frozen" in output.metrics


def clip_rows(deltas):
    norms = np.linalg.norm(deltas, axis=1)
    radius = np.median(norms)
    return deltas * np.where(norms > radius, radius / norms, 1.0)[:, None]


def test_clip_learning_round_clips_the_look_ahead_too(setup):
    """clip=true: θ̃, h and the θ step all use the median-norm-clipped deltas (§6)."""
    initial, work, inputs, _ = setup
    data = datasets.load_federated_dataset("digits", num_clients=N, seed=3)
    model_fn = models.make_model_fn("small_mlp", data.input_shape, data.num_classes,
                                    data.normalization)
    process = build_fedlaw_process(
        model_fn, initial, work,
        options=FedLAWOptions(beta=BETA, s_start=0, s_end=0, f=2, clip=True),
        num_clients=N, rounds=3, declared_fraction=0.0, alpha=ALPHA)
    theta = list(initial.trainable)
    w = np.full(N, 1 / N)
    deltas, _, _ = client_pass(work, work.initialize(), theta, initial, inputs)
    deltas = clip_rows(deltas)
    look = add(theta, w @ deltas)
    deltas_b, losses_b, _ = client_pass(work, work.initialize(), look, initial, inputs)
    deltas_b = clip_rows(deltas_b)
    h = w + (BETA / ALPHA) * deltas @ (w @ deltas_b) - BETA * losses_b
    expected_w = fedlaw_math.project_sparse_capped_simplex(
        h, N - 2, fedlaw_math.default_cap(N, N - 2)).numpy()
    output = process.next(process.initialize(), inputs)
    np.testing.assert_allclose(process.client_weights(output.state), expected_w, atol=1e-6)
    for got, want in zip(process.get_model_weights(output.state).trainable,
                         add(theta, expected_w @ deltas)):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert output.metrics["fedlaw"]["clipped_clients"] > 0
