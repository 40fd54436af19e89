"""Tests of tff_byz.momentum against a NumPy reference of client-momentum SGD.

The model is one Dense layer (softmax regression), whose gradient is written
out in NumPy: for logits z = xW + b, p = softmax(z), the mean cross-entropy
over n examples has ∂/∂z = (p − onehot(y))/n, ∂W = xᵀ ∂z, ∂b = Σ ∂z.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz import client_inputs, context
from tff_byz.client_state import ClientStateStore, StatefulClientsProcess, StatefulRounds
from tff_byz.client_work import client_seed
from tff_byz.momentum import build_momentum_sgd_process, sample_batch_indices
from tff_byz.packing import pack_numpy, unpack_numpy

NUM_FEATURES, NUM_CLASSES = 4, 3
BETA, WEIGHT_DECAY, SERVER_LR, SEED = 0.9, 0.1, 0.5, 7


def model_fn():
    keras_model = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(NUM_FEATURES,)),
        tf.keras.layers.Dense(NUM_CLASSES),
    ])
    return tff.learning.models.from_keras_model(
        keras_model,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=collections.OrderedDict(
            x=tf.TensorSpec([None, NUM_FEATURES], tf.float32), y=tf.TensorSpec([None], tf.int32)))


def initial_weights():
    rng = np.random.default_rng(1)
    return tff.learning.models.ModelWeights(
        trainable=[rng.normal(size=(NUM_FEATURES, NUM_CLASSES)).astype(np.float32),
                   rng.normal(size=NUM_CLASSES).astype(np.float32) * 0.1],
        non_trainable=[])


def client_data(client_id, num_examples):
    rng = np.random.default_rng(100 + client_id)
    x = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, num_examples).astype(np.int32)
    return x, y


def make_input(client_id, num_examples):
    x, y = client_data(client_id, num_examples)
    examples = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))
    return client_inputs.make_client_input(examples, client_id)


# --- NumPy reference ---------------------------------------------------------

def np_loss_and_gradient(theta, x, y, weight_decay=WEIGHT_DECAY):
    """Mean softmax cross-entropy and the gradient of loss + (wd/2)‖θ‖²."""
    w, b = (np.asarray(t, np.float64) for t in theta)
    logits = x.astype(np.float64) @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    dz = p.copy()
    dz[np.arange(n), y] -= 1.0
    dz /= n
    return loss, [x.T @ dz + weight_decay * w, dz.sum(axis=0) + weight_decay * b]


def np_momentum(m, g, beta=BETA, dampening=True):
    return [beta * mi + ((1 - beta) if dampening else 1.0) * gi for mi, gi in zip(m, g)]


def leaves(client_state):
    """A client state's packed momentum as the model's leaves."""
    return unpack_numpy(client_state["momentum"], initial_weights().trainable)


def assert_close(actual, expected):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


# --- fixtures ----------------------------------------------------------------

# Computations run in the session's one ExecutionContext (`tff_context`, tests/conftest.py).

@pytest.fixture(scope="module")
def process(tff_context):
    del tff_context
    # batch_size 8 >= every full-batch client's examples below: the batch is all of them.
    return build_momentum_sgd_process(
        model_fn, initial_weights(), batch_size=8, momentum=BETA, weight_decay=WEIGHT_DECAY,
        server_lr=SERVER_LR, seed=SEED)


@pytest.fixture(scope="module")
def heavy_ball_process(tff_context):
    del tff_context
    return build_momentum_sgd_process(
        model_fn, initial_weights(), batch_size=3, momentum=BETA, weight_decay=WEIGHT_DECAY,
        server_lr=SERVER_LR, seed=SEED, dampening=False)


def trainable(process, state):
    return process.get_model_weights(state).trainable


# --- tests -------------------------------------------------------------------

def test_process_contract(process):
    assert isinstance(process, StatefulClientsProcess)
    result_type = process.next.type_signature.result
    assert tff.structure.name_list(result_type) == ["state", "metrics", "client_states"]
    assert result_type["client_states"].placement == tff.CLIENTS
    assert tff.structure.name_list(result_type["state"].member) == [
        "global_model_weights", "aggregator", "finalizer", "seed", "round"]
    metrics = result_type["metrics"].member
    # The FedAvg LearningProcess's metric names, so CSV columns agree.
    assert tff.structure.name_list(metrics) == ["distributor", "client_work", "aggregator",
                                                "finalizer"]
    assert tff.structure.name_list(metrics["client_work"]) == ["train_loss", "num_examples"]
    assert tff.structure.name_list(metrics["finalizer"]) == ["update_non_finite"]
    template = process.client_state_template
    assert list(template) == ["client_id", "momentum"]
    assert template["client_id"].dtype == np.int32
    # One packed vector (TFF moves client values tensor by tensor): W then b.
    assert template["momentum"].shape == (NUM_FEATURES * NUM_CLASSES + NUM_CLASSES,)
    assert template["momentum"].dtype == np.float32 and not np.any(template["momentum"])


def test_one_client_one_round_matches_numpy(process):
    state = process.initialize()
    theta0 = trainable(process, state)
    assert_close(theta0, initial_weights().trainable)
    output = process.next(state, [make_input(3, 5)], [process.client_state_template])

    x, y = client_data(3, 5)
    loss, gradient = np_loss_and_gradient(theta0, x, y)
    momentum = np_momentum([np.zeros_like(t) for t in gradient], gradient)
    client_state, = output["client_states"]
    assert int(client_state["client_id"]) == 3  # written by the client, not copied from input
    assert_close(leaves(client_state), momentum)
    assert_close(trainable(process, output["state"]),
                 [t - SERVER_LR * m for t, m in zip(theta0, momentum)])
    metrics = output["metrics"]
    np.testing.assert_allclose(metrics["client_work"]["train_loss"], loss, rtol=1e-5)
    assert metrics["client_work"]["num_examples"] == 5.0
    assert metrics["finalizer"]["update_non_finite"] == 0
    assert metrics["distributor"] == ()
    assert output["state"]["round"] == 1 and output["state"]["seed"] == SEED


def test_momentum_persists_across_rounds_through_the_store(process):
    store = ClientStateStore(process.client_state_template, 10, id_key="client_id")
    state = process.initialize()
    theta = [np.asarray(t, np.float64) for t in trainable(process, state)]
    m = [np.zeros_like(t) for t in theta]
    x, y = client_data(4, 6)
    for _ in range(2):
        output = process.next(state, [make_input(4, 6)], store.get([4]))
        store.put([4], output["client_states"])
        state = output["state"]
        _, gradient = np_loss_and_gradient(theta, x, y)
        m = np_momentum(m, gradient)
        theta = [t - SERVER_LR * mi for t, mi in zip(theta, m)]
        assert_close(leaves(store.get([4])[0]), m)
        assert_close(trainable(process, state), theta)
    # Round 2 really used the stored m: a fresh momentum would give (1 − β) g only.
    assert not np.allclose(m[0], (1 - BETA) * gradient[0], atol=1e-4)


def test_heavy_ball_without_dampening(heavy_ball_process):
    process = heavy_ball_process
    state = process.initialize()
    theta0 = trainable(process, state)
    start = [np.full((NUM_FEATURES, NUM_CLASSES), 0.2, np.float32),
             np.full(NUM_CLASSES, -0.3, np.float32)]
    m0 = collections.OrderedDict(client_id=np.int32(0), momentum=pack_numpy(start))
    output = process.next(state, [make_input(1, 2)], [m0])  # 2 < batch_size 3: uses both
    x, y = client_data(1, 2)
    _, gradient = np_loss_and_gradient(theta0, x, y)
    momentum = np_momentum(start, gradient, dampening=False)
    assert_close(leaves(output["client_states"][0]), momentum)
    assert_close(trainable(process, output["state"]),
                 [t - SERVER_LR * m for t, m in zip(theta0, momentum)])
    assert output["metrics"]["client_work"]["num_examples"] == 2.0


def test_clients_keep_their_order_and_are_averaged_unweighted(process):
    ids, sizes = [5, 2, 7], [3, 8, 5]
    state = process.initialize()
    theta0 = trainable(process, state)
    output = process.next(state, [make_input(i, n) for i, n in zip(ids, sizes)],
                          [process.client_state_template] * 3)
    # TFF's C++ executor returns CLIENTS-placed values in argument order.
    assert [int(s["client_id"]) for s in output["client_states"]] == ids
    losses, momenta = [], []
    for client_state, client_id, size in zip(output["client_states"], ids, sizes):
        loss, gradient = np_loss_and_gradient(theta0, *client_data(client_id, size))
        momenta.append(np_momentum([np.zeros_like(g) for g in gradient], gradient))
        losses.append(loss)
        assert_close(leaves(client_state), momenta[-1])
    mean_momentum = [np.mean(leaves, axis=0) for leaves in zip(*momenta)]
    assert_close(trainable(process, output["state"]),
                 [t - SERVER_LR * m for t, m in zip(theta0, mean_momentum)])
    client_work = output["metrics"]["client_work"]
    np.testing.assert_allclose(client_work["train_loss"], np.average(losses, weights=sizes),
                               rtol=1e-5)
    assert client_work["num_examples"] == sum(sizes)


def test_non_participating_client_keeps_its_state(process):
    store = ClientStateStore(process.client_state_template, 3, id_key="client_id")
    state = process.initialize()
    output = process.next(state, [make_input(0, 4), make_input(1, 4)], store.get([0, 1]))
    store.put([0, 1], output["client_states"])
    after_round_1 = store.get([0, 1])
    state = output["state"]
    theta1 = trainable(process, state)

    output = process.next(state, [make_input(0, 4)], store.get([0]))
    assert len(output["client_states"]) == 1
    store.put([0], output["client_states"])
    client_0, client_1 = store.get([0, 1])
    assert_close(leaves(client_1), leaves(after_round_1[1]))
    assert not np.allclose(client_0["momentum"], after_round_1[0]["momentum"])
    # Only client 0's momentum moved the model in round 2.
    assert_close(trainable(process, output["state"]),
                 [t - SERVER_LR * m for t, m in zip(theta1, leaves(client_0))])
    assert store.seen.tolist() == [True, True, False]


def test_sample_batch_indices():
    seed = client_seed(SEED, 0, 3)
    first = sample_batch_indices(10, 4, seed).numpy()
    assert len(first) == 4 and len(set(first)) == 4 and set(first) <= set(range(10))
    np.testing.assert_array_equal(sample_batch_indices(10, 4, seed).numpy(), first)
    other_round = sample_batch_indices(10, 4, client_seed(SEED, 1, 3)).numpy()
    assert set(other_round) != set(first)
    # Fewer examples than the batch size: all of them, each once.
    assert sorted(sample_batch_indices(2, 4, seed).numpy()) == [0, 1]


def test_minibatch_is_deterministic_and_changes_with_the_round(heavy_ball_process):
    process = heavy_ball_process  # batch_size 3 out of 10 examples
    state = process.initialize()
    theta0 = trainable(process, state)
    x, y = client_data(6, 10)
    zero = [process.client_state_template]

    def momentum_at(round_num):
        round_state = collections.OrderedDict(state)
        round_state["round"] = np.int64(round_num)
        output = process.next(round_state, [make_input(6, 10)], zero)
        assert output["metrics"]["client_work"]["num_examples"] == 3.0
        return leaves(output["client_states"][0])

    round_0, round_0_again, round_1 = momentum_at(0), momentum_at(0), momentum_at(1)
    for a, b in zip(round_0, round_0_again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(round_0[0], round_1[0])
    # And it is exactly the batch `sample_batch_indices` draws with client_seed(seed, round, id).
    for round_num, actual in ((0, round_0), (1, round_1)):
        index = sample_batch_indices(10, 3, client_seed(SEED, round_num, 6)).numpy()
        _, gradient = np_loss_and_gradient(theta0, x[index], y[index])
        assert_close(actual, gradient)  # no dampening, zero momentum: m = g


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(momentum=1.0), ValueError, r"--momentum must be in \[0, 1\); got 1.0."),
    (dict(momentum=1.5), ValueError, r"--momentum must be in \[0, 1\); got 1.5."),
    (dict(momentum=-0.1), ValueError, r"--momentum must be in \[0, 1\); got -0.1."),
    (dict(momentum="0.9"), TypeError, r"--momentum must be a number; got '0.9'."),
    (dict(batch_size=0), ValueError, r"--batch_size must be >= 1; got 0."),
    (dict(batch_size=2.5), TypeError, r"--batch_size must be an integer; got 2.5."),
    (dict(batch_size=True), TypeError, r"--batch_size must be an integer; got True."),
    (dict(weight_decay=-1e-4), ValueError,
     r"--weight_decay must be a finite number >= 0; got -0.0001."),
    (dict(weight_decay=float("nan")), ValueError,
     r"--weight_decay must be a finite number >= 0; got nan."),
    (dict(server_lr=0), ValueError, r"--server_lr must be a finite number > 0; got 0."),
    (dict(server_lr=float("inf")), ValueError,
     r"--server_lr must be a finite number > 0; got inf."),
    (dict(seed=1.5), TypeError, r"--seed must be an integer; got 1.5."),
    (dict(dampening="no"), TypeError, r"dampening must be a bool; got 'no'."),
])
def test_validation(kwargs, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        build_momentum_sgd_process(model_fn, initial_weights(), **kwargs)


def test_initial_weights_must_match_the_model():
    wrong = tff.learning.models.ModelWeights(
        trainable=[np.zeros((NUM_FEATURES + 1, NUM_CLASSES), np.float32),
                   np.zeros(NUM_CLASSES, np.float32)], non_trainable=[])
    with pytest.raises(ValueError, match="initial_weights do not match model_fn's weights"):
        build_momentum_sgd_process(model_fn, wrong)


def test_integers_for_floats_and_an_unweighted_factory(tff_context):
    del tff_context
    process = build_momentum_sgd_process(
        model_fn, initial_weights(), aggregator=tff.aggregators.UnweightedMeanFactory(),
        batch_size=8, momentum=0, weight_decay=0, server_lr=1)
    state = process.initialize()
    theta0 = trainable(process, state)
    output = process.next(state, [make_input(0, 4), make_input(1, 6)],
                          [process.client_state_template] * 2)
    # momentum=0: m = g, and the server takes one plain SGD step on the mean gradient.
    gradients = [np_loss_and_gradient(theta0, *client_data(i, n), weight_decay=0.0)[1]
                 for i, n in ((0, 4), (1, 6))]
    assert_close(trainable(process, output["state"]),
                 [t - np.mean(g, axis=0) for t, g in zip(theta0, zip(*gradients))])
    assert list(output["metrics"]["aggregator"]) == ["mean_value", "mean_count"]


def _store_path(process, rounds):
    """`rounds` = list of client-id lists; every round through the store (the reference)."""
    store = ClientStateStore(process.client_state_template, 10, id_key="client_id")
    state = process.initialize()
    for ids in rounds:
        output = process.next(state, [make_input(i, 6) for i in ids], store.get(ids))
        store.put(ids, output["client_states"])
        state = output["state"]
    return state, store


@pytest.mark.parametrize("rounds", [[[1, 4, 2]] * 3, [[1, 4, 2], [1, 4, 2], [4, 2], [4, 2, 7]]],
                         ids=["same clients", "changing clients"])
def test_stateful_rounds_keep_states_on_the_worker_with_the_same_results(process, rounds):
    reference_state, reference = _store_path(process, rounds)
    store = ClientStateStore(process.client_state_template, 10, id_key="client_id")
    runner = StatefulRounds(process, store)
    state = process.initialize()
    for ids in rounds:
        state, _ = runner.next(state, [make_input(i, 6) for i in ids], ids)
    last = rounds[-1]
    if rounds[-2] == last:  # the last round's states are still on the worker, not in the store
        assert not np.array_equal(store.get(last)[0]["momentum"],
                                  reference.get(last)[0]["momentum"])
    runner.sync()
    np.testing.assert_array_equal(store.state_dict()["states"]["momentum"],
                                  reference.state_dict()["states"]["momentum"])
    np.testing.assert_array_equal(store.seen, reference.seen)
    for a, b in zip(trainable(process, state), trainable(process, reference_state)):
        np.testing.assert_array_equal(a, b)
    runner.sync()  # idempotent
    np.testing.assert_array_equal(store.state_dict()["states"]["momentum"],
                                  reference.state_dict()["states"]["momentum"])


def test_stateful_rounds_go_through_the_store_without_a_project_context(process, monkeypatch):
    monkeypatch.setattr(context, "current", lambda: None)
    rounds = [[3, 0]] * 2
    _, reference = _store_path(process, rounds)
    store = ClientStateStore(process.client_state_template, 10, id_key="client_id")
    runner = StatefulRounds(process, store)
    state = process.initialize()
    for ids in rounds:
        state, _ = runner.next(state, [make_input(i, 6) for i in ids], ids)
    # No sync: every round's states went into the store.
    np.testing.assert_array_equal(store.state_dict()["states"]["momentum"],
                                  reference.state_dict()["states"]["momentum"])


def test_a_resident_value_is_lost_with_its_executor(process, tff_context):
    store = ClientStateStore(process.client_state_template, 10, id_key="client_id")
    runner = StatefulRounds(process, store)
    runner.next(process.initialize(), [make_input(5, 6)], [5])
    resident = runner._resident[1]  # pylint: disable=protected-access
    assert resident.valid
    tff_context._single_factory.clean_up_executor({tff.CLIENTS: 1})  # pylint: disable=protected-access
    assert not resident.valid
    with pytest.raises(RuntimeError, match="executor holding this value was replaced"):
        runner.sync()
