"""Centralized PDMM as a TFF process (pdmm/process.py) against a NumPy reference.

Linear regression with Keras' mean-squared-error loss and full-batch local
steps, so each local step is an exact gradient step and the NumPy reference
can follow the process number by number; after enough rounds the server model
is the least-squares optimum of Σ_i f_i (the inexact prox is warm-started, so
its fixed point is the exact one)."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from attacks import build_attack_plan
from pdmm.process import PDMMOptions, build_pdmm_process
from tff_byz.packing import pack_numpy, unpack_numpy
from tff_byz import client_inputs, client_state

DIM, CLIENTS, STEPS, LR = 3, 4, 5, 0.05
C = 1.0  # fast convergence on this problem (θ = 1/2: error 3e-5 after 100 rounds)


def model_fn():
    keras_model = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(DIM,)),
                                       tf.keras.layers.Dense(1)])
    return tff.learning.models.from_keras_model(
        keras_model, loss=tf.keras.losses.MeanSquaredError(),
        input_spec=collections.OrderedDict(x=tf.TensorSpec([None, DIM], tf.float32),
                                           y=tf.TensorSpec([None, 1], tf.float32)))


def problem():
    rng = np.random.default_rng(7)
    data = []
    for i in range(CLIENTS):
        x = (rng.normal(size=(6, DIM)) + 0.5 * i).astype(np.float32)
        y = (x @ np.array([1.0, -2.0, 0.5]) + i + 0.3 * rng.normal(size=6)).astype(np.float32)
        data.append((x, y[:, None]))
    return data


DATA = problem()
W0 = np.array([[0.1], [0.2], [-0.3]], np.float32)
B0 = np.array([0.05], np.float32)
INITIAL = tff.learning.models.ModelWeights(trainable=[W0, B0], non_trainable=[])


def inputs(byzantine=()):
    return [client_inputs.make_client_input(
        tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)), i, i in byzantine)
        for i, (x, y) in enumerate(DATA)]


def optimum():
    """argmin Σ_i mean_k (x_k·w + b − y_k)² (each client's mean loss, clients equal)."""
    rows = [np.hstack([x, np.ones([len(x), 1])]) for x, _ in DATA]
    lhs = sum(r.T @ r / len(r) for r in rows)
    rhs = sum(r.T @ y[:, 0] / len(r) for r, (_, y) in zip(rows, DATA))
    return np.linalg.solve(lhs, rhs)


def numpy_pdmm(rounds, *, c, theta, init="consensus", flip=()):
    """pdmm.md §2 with K full-batch gradient steps; clients in `flip` send −y."""
    w0 = np.concatenate([W0[:, 0], B0])
    anchor = w0 if init == "consensus" else np.zeros_like(w0)
    w = [w0.copy() for _ in DATA]
    v = [anchor.copy() for _ in DATA]
    u = [anchor.copy() for _ in DATA]
    w_s, history = anchor.copy(), []
    for _ in range(rounds):
        messages = []
        for i, (x, y) in enumerate(DATA):
            rows = np.hstack([x, np.ones([len(x), 1])])
            for _ in range(STEPS):
                gradient = 2.0 * rows.T @ (rows @ w[i] - y[:, 0]) / len(x)
                w[i] = w[i] - LR * (gradient + c * (w[i] - v[i]))
            message = 2 * w[i] - v[i]
            u[i] = (1 - theta) * u[i] + theta * message
            messages.append(-message if i in flip else message)
        w_s = (1 - theta) * w_s + theta * np.mean(messages, axis=0)
        for i in range(len(DATA)):
            v[i] = (1 - theta) * v[i] + theta * (2 * w_s - u[i])
        history.append((w_s.copy(), [wi.copy() for wi in w], [ui.copy() for ui in u]))
    return history


def build(options, *, partial=False, attack="none", byzantine=()):
    plan = build_attack_plan(attack, seed=0, dataset=None)
    return build_pdmm_process(
        model_fn, INITIAL, options=options, local_steps=STEPS, batch_size=100, learning_rate=LR,
        seed=0, num_clients=CLIENTS, partial=partial, attacks=plan.local_attacks,
        mark_groups=bool(plan.collusions),
        wrap_aggregator=lambda factory: plan.aggregator(factory, seed=0))


def run(process, rounds, *, byzantine=(), participants=None):
    store = client_state.ClientStateStore(process.client_state_template, CLIENTS,
                                          initial=process.initial_client_state, id_key="client_id")
    data = inputs(byzantine)
    state, outputs = process.initialize(), []
    for r in range(rounds):
        ids = np.arange(CLIENTS) if participants is None else participants(r)
        output = process.next(state, [data[i] for i in ids], store.get(ids))
        store.put(ids, output["client_states"])
        state = output["state"]
        outputs.append(output)
    return state, store, outputs


def server_vector(state):
    w, b = state["server"]["global_model_weights"].trainable
    return np.concatenate([np.ravel(w), np.ravel(b)])


@pytest.fixture(scope="module")
def processes(tff_context):
    del tff_context
    return {(theta, init): build(PDMMOptions(c=C, theta=theta, init=init))
            for theta, init in [(1.0, "consensus"), (0.5, "consensus"), (1.0, "zero")]}


@pytest.mark.parametrize("theta,init", [(1.0, "consensus"), (0.5, "consensus"), (1.0, "zero")])
def test_rounds_match_the_numpy_reference(processes, theta, init):
    state, store, outputs = run(processes[theta, init], 3)
    reference = numpy_pdmm(3, c=C, theta=theta, init=init)
    np.testing.assert_allclose(server_vector(state), reference[-1][0], rtol=2e-5, atol=1e-6)
    for i, stored in enumerate(store.get(np.arange(CLIENTS))):
        w, _, u = stored["wvu"]  # packed: W (3 × 1) row-major, then b
        np.testing.assert_allclose(w, reference[-1][1][i], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(u, reference[-1][2][i], rtol=2e-5, atol=1e-6)
        assert stored["steps"] == 3 * STEPS and stored["client_id"] == i
    metrics = outputs[-1]["metrics"]
    assert metrics["aggregator"]["non_finite_clients"] == 0
    gap = np.sqrt(np.mean([np.sum((reference[-1][1][i] - reference[-1][0]) ** 2)
                           for i in range(CLIENTS)]))
    assert metrics["pdmm"]["consensus_gap"] == pytest.approx(gap, rel=1e-3)


@pytest.mark.parametrize("theta,init", [(1.0, "consensus"), (0.5, "consensus"), (1.0, "zero")])
def test_converges_to_the_centralized_optimum(processes, theta, init):
    state, _, outputs = run(processes[theta, init], 100)
    np.testing.assert_allclose(server_vector(state), optimum(), atol=2e-4)
    assert outputs[-1]["metrics"]["pdmm"]["consensus_gap"] < 1e-3


def test_partial_participation_converges_and_keeps_absent_clients(tff_context):
    process = build(PDMMOptions(c=C), partial=True)
    rng = np.random.default_rng(0)
    draws = [np.sort(rng.choice(CLIENTS, 2, replace=False)) for _ in range(150)]
    state, store, _ = run(process, 1, participants=lambda r: draws[r])
    absent = sorted(set(range(CLIENTS)) - set(draws[0]))
    for i in absent:  # never took part: still the initial state
        assert not store.seen[i]
    # One round by hand: only participants' server copies change; w_s is the mean of all copies.
    w0 = np.concatenate([W0[:, 0], B0])
    copies = np.tile(w0, (CLIENTS, 1))
    reference = numpy_pdmm(1, c=C, theta=1.0)
    for i in draws[0]:
        x, y = DATA[i]
        rows = np.hstack([x, np.ones([len(x), 1])])
        w = w0.copy()
        for _ in range(STEPS):
            w = w - LR * (2.0 * rows.T @ (rows @ w - y[:, 0]) / len(x) + C * (w - w0))
        copies[i] = 2 * w - w0
        np.testing.assert_allclose(w, reference[0][1][i], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state["server"]["copies"]), copies, rtol=2e-5,
                               atol=1e-6)
    np.testing.assert_allclose(server_vector(state), copies.mean(axis=0), rtol=2e-5, atol=1e-6)
    state, _, _ = run(process, 150, participants=lambda r: draws[r])
    np.testing.assert_allclose(server_vector(state), optimum(), atol=2e-3)


def test_byzantine_clients_corrupt_only_their_message(tff_context):
    process = build(PDMMOptions(c=0.4), attack="sign_flip")
    state, store, _ = run(process, 2, byzantine=(1,))
    reference = numpy_pdmm(2, c=0.4, theta=1.0, flip=(1,))
    np.testing.assert_allclose(server_vector(state), reference[-1][0], rtol=2e-5, atol=1e-6)
    # The Byzantine client's own state is the honest computation (its u mirrors its true y).
    stored = store.get([1])[0]
    np.testing.assert_allclose(stored["wvu"][2], reference[-1][2][1], rtol=2e-5, atol=1e-6)


def test_colluding_attack_replaces_the_messages(tff_context):
    process = build(PDMMOptions(c=0.4), attack="ipm:eps=0.5")
    state, _, outputs = run(process, 1, byzantine=(3,))
    honest = numpy_pdmm(1, c=0.4, theta=1.0)
    # IPM: the Byzantine message is −ε · mean of the honest messages.
    w0 = np.concatenate([W0[:, 0], B0])
    honest_messages = [2 * honest[0][1][i] - w0 for i in range(3)]
    expected = np.mean(honest_messages + [-0.5 * np.mean(honest_messages, axis=0)], axis=0)
    np.testing.assert_allclose(server_vector(state), expected, rtol=2e-5, atol=1e-6)
    assert "attack" in outputs[0]["metrics"]["aggregator"]


def test_training_attacks_are_rejected(tff_context):
    with pytest.raises(ValueError, match="only their uplink message y"):
        build(PDMMOptions(), attack="random_params")


def test_packing_round_trips():
    leaves = [np.arange(6, dtype=np.float32).reshape(3, 2), np.array([7.0], np.float32)]
    packed = pack_numpy(leaves)
    np.testing.assert_array_equal(packed, [0, 1, 2, 3, 4, 5, 7])
    for got, expected in zip(unpack_numpy(packed, leaves), leaves):
        np.testing.assert_array_equal(got, expected)
    rows = np.stack([packed, packed + 1])  # leading axes (one row per client) are kept
    first, second = unpack_numpy(rows, leaves)
    assert first.shape == (2, 3, 2) and second.shape == (2, 1)
    np.testing.assert_array_equal(first[1], leaves[0] + 1)


@pytest.mark.parametrize("options,message", [
    (PDMMOptions(c=0.0), "c must be"), (PDMMOptions(theta=1.5), r"theta must be in \(0, 1\]"),
    (PDMMOptions(init="ones"), "init='ones'"), (PDMMOptions(local_steps=0), "local_steps")])
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        options.validate()
