"""Decentralized PDMM in TFF (server as relay) against a NumPy reference on a ring."""

import numpy as np
import pytest

from attacks import build_attack_plan
from pdmm import graphs
from pdmm.decentralized import build_decentralized_pdmm_process
from pdmm.process import PDMMOptions
from tff_byz import client_state
from tests.pdmm.test_process import CLIENTS, DATA, INITIAL, LR, STEPS, B0, W0, inputs, model_fn, \
    optimum

C = 1.0


def numpy_decentralized(graph, rounds, *, theta, init="consensus", flip=()):
    """pdmm.md §1/§3 with K full-batch gradient steps; nodes in `flip` send −y on every edge."""
    neighbours = graph.neighbours
    w0 = np.concatenate([W0[:, 0], B0])
    w = [w0.copy() for _ in DATA]
    sign = {(i, j): 1.0 if i < j else -1.0 for i in range(CLIENTS) for j in neighbours[i]}
    z = {(i, j): (-C * sign[i, j] * w0 if init == "consensus" else np.zeros_like(w0))
         for (i, j) in sign}
    for _ in range(rounds):
        for i, (x, y) in enumerate(DATA):
            rows = np.hstack([x, np.ones([len(x), 1])])
            dual = sum(sign[i, j] * z[i, j] for j in neighbours[i])
            for _ in range(STEPS):
                gradient = 2.0 * rows.T @ (rows @ w[i] - y[:, 0]) / len(x)
                w[i] = w[i] - LR * (gradient + dual + C * len(neighbours[i]) * w[i])
        messages = {(i, j): z[i, j] + 2 * C * sign[i, j] * w[i] for (i, j) in z}
        messages = {k: (-m if k[0] in flip else m) for k, m in messages.items()}
        z = {(i, j): (1 - theta) * z[i, j] + theta * messages[j, i] for (i, j) in z}
    return w


def run(process, graph, rounds, byzantine=()):
    store = client_state.ClientStateStore(process.client_state_template, CLIENTS,
                                          id_key="client_id")
    ids = np.arange(CLIENTS)
    store.put(ids, [process.initial_client_state(i) for i in ids])
    data = inputs(byzantine)
    state, output = process.initialize(), None
    for _ in range(rounds):
        output = process.next(state, data, store.get(ids))
        store.put(ids, output["client_states"])
        state = output["state"]
    nodes = [s["wz"][0] for s in store.get(ids)]
    return nodes, output


def build(graph, theta=1.0, attack="none"):
    plan = build_attack_plan(attack, seed=0, dataset=None)
    return build_decentralized_pdmm_process(
        model_fn, INITIAL, graph, options=PDMMOptions(c=C, theta=theta), local_steps=STEPS,
        batch_size=100, learning_rate=LR, seed=0, attacks=plan.local_attacks)


@pytest.fixture(scope="module")
def ring_process(tff_context):
    del tff_context
    graph = graphs.ring_graph(CLIENTS)
    return graph, build(graph)


def test_rounds_match_the_numpy_reference(ring_process):
    graph, process = ring_process
    nodes, output = run(process, graph, 3)
    reference = numpy_decentralized(graph, 3, theta=1.0)
    for node, expected in zip(nodes, reference):
        np.testing.assert_allclose(node, expected, rtol=2e-5, atol=1e-6)
    assert output["metrics"]["pdmm"]["message_norm"] > 0


def test_ring_reaches_consensus_at_the_optimum(ring_process):
    graph, process = ring_process
    nodes, _ = run(process, graph, 150)
    for node in nodes:
        np.testing.assert_allclose(node, optimum(), atol=2e-3)


def test_byzantine_node_corrupts_every_outgoing_message(tff_context):
    graph = graphs.complete_graph(CLIENTS)
    process = build(graph, theta=0.5, attack="sign_flip")
    nodes, _ = run(process, graph, 2, byzantine=(2,))
    reference = numpy_decentralized(graph, 2, theta=0.5, flip=(2,))
    for node, expected in zip(nodes, reference):
        np.testing.assert_allclose(node, expected, rtol=2e-5, atol=1e-6)
