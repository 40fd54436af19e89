"""FedLAW's TFF process against the spec's round (fedlaw.md §4) recomputed in NumPy.

Six honest digits clients, one full batch per client: the test runs the same
client work itself for pass A (at θ_k) and pass B (at θ̃), forms h, projects,
and checks the process's new weights and model; also for a round's subset of
participants (§9), the `bsum` and `loss_filter` ablations (§6), and the
learned-weights factory inside a plain FedAvg process.
"""

import numpy as np
import pytest
import tensorflow as tf

from fedlaw import math as fedlaw_math
from fedlaw.learned_weights import LearnedWeightsFactory
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
    return initial, work, inputs, build_process(initial, work, freeze=1)


def build_process(initial, work, **options):
    """A FedLAW process on the fixture's model with s fixed at N − 2 and `options`."""
    data = datasets.load_federated_dataset("digits", num_clients=N, seed=3)
    model_fn = models.make_model_fn("small_mlp", data.input_shape, data.num_classes,
                                    data.normalization)
    return build_fedlaw_process(
        model_fn, initial, work,
        options=FedLAWOptions(beta=BETA, s_start=0, s_end=0, f=2, **options),
        num_clients=N, rounds=3, declared_fraction=0.0, alpha=ALPHA)


def client_pass(work, work_state, trainable, initial, inputs):
    weights = fedavg.tff.learning.models.ModelWeights(trainable=trainable,
                                                      non_trainable=initial.non_trainable)
    output = work.next(work_state, [weights] * len(inputs), inputs)
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
    process = build_process(initial, work, clip=True)
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


def reference_learning_round(work, theta, initial, inputs, ids, w_all, s_k, t, *,
                             weight_step="full", loss_filter=False):
    """One learning round on participants `ids` (§4 with §9), in NumPy.

    Returns (new weights over all N ids, new trainable, details)."""
    ids = np.asarray(ids)
    w_p = w_all[ids]
    mass = w_p.sum()
    w_hat = w_p / mass
    deltas, _, _ = client_pass(work, work.initialize(), theta, initial, inputs)
    deltas_b, losses_b, _ = client_pass(work, work.initialize(), add(theta, w_hat @ deltas),
                                        initial, inputs)
    h = w_hat - BETA * losses_b
    if weight_step == "full":
        h = h + (BETA / ALPHA) * deltas @ (w_hat @ deltas_b)
    m = len(ids)
    s_p, t_p = -(-s_k * m // N), min(1.0, t * N / m)
    flagged = np.zeros(m, bool)
    if loss_filter:
        med = np.median(losses_b)
        mad = np.median(np.abs(losses_b - med))
        flagged = (mad > 0) & (losses_b < med - 3 * 1.4826 * mad)
        if m - flagged.sum() < np.ceil(1 / t_p - 1e-9):
            flagged[:] = False
        h = np.where(flagged, -np.inf, h)
    w_new = fedlaw_math.project_sparse_capped_simplex(h, s_p, t_p).numpy()
    w_all_new = w_all.copy()
    w_all_new[ids] = w_new * mass
    w_all_new /= w_all_new.sum()
    return w_all_new, add(theta, w_new @ deltas), dict(s=s_p, cap=t_p, flagged=flagged,
                                                       w_new=w_new, losses_b=losses_b)


def assert_round(process, output, expected_w, expected_theta):
    np.testing.assert_allclose(process.client_weights(output.state), expected_w, atol=1e-6)
    for got, want in zip(process.get_model_weights(output.state).trainable, expected_theta):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.fixture(scope="module")
def learning_process(setup):
    initial, work, _, _ = setup
    return build_process(initial, work)


def test_partial_participation_round(setup, learning_process):
    """§9: a full round, then a round on participants 4, 1, 3, 0 (in that order): ŵ is their
    renormalised weight, s_P = ⌈4·4/6⌉ = 3 and t_P = min(1, (1/3)·6/4) = 1/2, the new weights
    are written back with the participants' old mass and the others keep theirs."""
    initial, work, inputs, _ = setup
    process = learning_process
    theta, w = list(initial.trainable), np.full(N, 1 / N)
    s, t = N - 2, fedlaw_math.default_cap(N, N - 2)
    w, theta, _ = reference_learning_round(work, theta, initial, inputs, range(N), w, s, t)
    output = process.next(process.initialize(), inputs)
    assert_round(process, output, w, theta)
    assert len(set(np.round(w, 9))) > 1  # unequal weights, so ŵ ≠ uniform below

    ids = [4, 1, 3, 0]
    theta = [np.asarray(x) for x in process.get_model_weights(output.state).trainable]
    w_before = process.client_weights(output.state)
    w, theta, details = reference_learning_round(
        work, theta, initial, [inputs[i] for i in ids], ids, w_before, s, t)
    output = process.next(output.state, [inputs[i] for i in ids])
    assert_round(process, output, w, theta)
    assert details["s"] == 3 and details["cap"] == pytest.approx(1 / 2)
    assert output.metrics["fedlaw"]["s"] == 3
    assert output.metrics["fedlaw"]["cap"] == pytest.approx(1 / 2)
    assert np.count_nonzero(details["w_new"]) <= 3
    others = [2, 5]
    np.testing.assert_allclose(process.client_weights(output.state)[others], w_before[others],
                               atol=1e-12)
    assert process.client_weights(output.state).sum() == pytest.approx(1.0)


def test_frozen_round_on_participants_uses_their_renormalised_weights(setup):
    """Frozen round (freeze=1) on participants 5 and 0: θ + Σ_P w_i Δ_i / Σ_P w_i."""
    initial, work, inputs, process = setup
    state = process.next(process.initialize(), inputs).state
    learned = process.client_weights(state)
    ids = [5, 0]
    theta = [np.asarray(x) for x in process.get_model_weights(state).trainable]
    deltas, _, _ = client_pass(work, work.initialize(), theta, initial, [inputs[i] for i in ids])
    w_hat = learned[ids] / learned[ids].sum()
    output = process.next(state, [inputs[i] for i in ids])
    assert_round(process, output, learned, add(theta, w_hat @ deltas))


def low_loss_inputs(inputs, initial, client=2, keep=5):
    """Client `client`'s `keep` examples the initial model fits best: its reported loss
    is an outlier far below the others' (a target for the MAD loss filter)."""
    data = datasets.load_federated_dataset("digits", num_clients=N, seed=3)
    dataset = data.client_data.create_tf_dataset_for_client(data.client_ids[client])
    examples = list(dataset.as_numpy_iterator())
    x = np.stack([e["x"] for e in examples])
    y = np.array([e["y"] for e in examples])
    keras_model = models.build_keras_model("small_mlp", data.input_shape, data.num_classes,
                                           data.normalization, seed=3)  # = `initial`
    for got, want in zip(keras_model.trainable_weights, initial.trainable):
        np.testing.assert_array_equal(got.numpy(), want)
    loss = tf.keras.losses.sparse_categorical_crossentropy(y, keras_model(x),
                                                           from_logits=True).numpy()
    best = np.argsort(loss)[:keep]
    easy = tf.data.Dataset.from_tensor_slices({"x": x[best], "y": y[best]})
    return [client_inputs.make_client_input(easy, client) if i == client else inputs[i]
            for i in range(N)]


@pytest.mark.parametrize("weight_step, loss_filter", [("bsum", False), ("full", True)])
def test_ablation_rounds(setup, weight_step, loss_filter):
    """`weight_step=bsum` (h = w − β f̃) and `loss_filter` (the low-loss outlier, client 2,
    leaves the candidate set) through the process, against the NumPy round."""
    initial, work, inputs, _ = setup
    process = build_process(initial, work, weight_step=weight_step, loss_filter=loss_filter)
    inputs = low_loss_inputs(inputs, initial)
    s, t = N - 2, fedlaw_math.default_cap(N, N - 2)
    w, theta, details = reference_learning_round(
        work, list(initial.trainable), initial, inputs, range(N), np.full(N, 1 / N), s, t,
        weight_step=weight_step, loss_filter=loss_filter)
    output = process.next(process.initialize(), inputs)
    assert_round(process, output, w, theta)
    assert np.argmin(details["losses_b"]) == 2
    if loss_filter:
        np.testing.assert_array_equal(details["flagged"], np.arange(N) == 2)
        assert output.metrics["fedlaw"]["loss_filter_flagged"] == 1
        assert output.metrics["fedlaw"]["loss_filter_skipped"] == 0
        assert process.client_weights(output.state)[2] == 0.0
    else:  # loss only: the lowest loss wins the most weight
        assert np.argmax(process.client_weights(output.state)) == 2


def test_learned_weights_factory_in_a_plain_fedavg_learning_process(setup):
    """FedLAW's learned weights reused by `LearnedWeightsFactory` as the update aggregator
    of TFF's composed FedAvg (`tff.learning.templates.compose_learning_process`):
    θ ← θ + Σ_i w_i Δ_i, with client 1 given no weight at all."""
    initial, work, inputs, process = setup
    learned = process.client_weights(process.next(process.initialize(), inputs).state).copy()
    learned[1] = 0.0
    data = datasets.load_federated_dataset("digits", num_clients=N, seed=3)
    model_fn = models.make_model_fn("small_mlp", data.input_shape, data.num_classes,
                                    data.normalization)
    fedavg_process = fedavg.build_fedavg_process(
        model_fn, initial, aggregator=LearnedWeightsFactory(learned), client_work=work)
    assert isinstance(fedavg_process, fedavg.tff.learning.templates.LearningProcess)
    output = fedavg_process.next(fedavg_process.initialize(), inputs)
    deltas, _, _ = client_pass(work, work.initialize(), list(initial.trainable), initial, inputs)
    expected = add(list(initial.trainable), learned / learned.sum() @ deltas)
    got = fedavg_process.get_model_weights(output.state).trainable
    for g, want in zip(got, expected):
        np.testing.assert_allclose(g, want, atol=1e-5)
    measurements = output.metrics["aggregator"]
    assert measurements["participant_mass"] == pytest.approx(learned.sum())
