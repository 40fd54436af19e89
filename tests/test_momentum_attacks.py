"""Momentum SGD under attack (tff_byz.momentum with attacks.local.StepAttacks), against the
NumPy reference of tests/test_momentum.py.

Three clients (ids 0, 1, 2) with at most 8 examples take one full-batch step from θ0;
client 2 is the Byzantine one. Every honest momentum is (1 − β) g_i(θ0), the server
steps θ1 = θ0 − server_lr · mean(sent momenta) (MeanFactory).
"""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from attacks.registry import build_attack_plan
from tff_byz import client_inputs
from tff_byz.momentum import build_momentum_sgd_process
from tests.test_momentum import (BETA, NUM_CLASSES, SEED, SERVER_LR, assert_close, client_data,
                                 initial_weights, leaves, model_fn, np_loss_and_gradient)

SIZES = {0: 5, 1: 7, 2: 6}
BYZANTINE = 2


def _inputs(labels=None):
    """The three clients' by-value inputs; `labels` replaces client 2's labels."""
    values = []
    for client, size in SIZES.items():
        x, y = client_data(client, size)
        if client == BYZANTINE and labels is not None:
            y = labels(y)
        examples = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))
        values.append(client_inputs.make_client_input(examples, client,
                                                      byzantine=client == BYZANTINE))
    return values


def _zero_states(process):
    return [collections.OrderedDict(process.client_state_template, client_id=np.int32(c))
            for c in SIZES]


def _build(spec):
    plan = build_attack_plan(spec, seed=SEED)
    return build_momentum_sgd_process(
        model_fn, initial_weights(), batch_size=8, momentum=BETA, weight_decay=0.1,
        server_lr=SERVER_LR, seed=SEED, attacks=plan.step_attacks(),
        aggregator=plan.aggregator(tff.aggregators.MeanFactory(), seed=SEED),
        inputs=client_inputs.ByValue(poison=plan.data_poisoning(seed=SEED,
                                                                num_classes=NUM_CLASSES)))


def _round(spec, labels=None):
    process = _build(spec)
    state = process.initialize()
    output = process.next(state, _inputs(labels), _zero_states(process))
    return process, output


def _honest_momenta(labels=None):
    """(1 − β) g_i(θ0) and the batch loss of every client, honest data unless `labels`."""
    theta0 = initial_weights().trainable
    momenta, losses = {}, {}
    for client, size in SIZES.items():
        x, y = client_data(client, size)
        if client == BYZANTINE and labels is not None:
            y = labels(y)
        losses[client], gradient = np_loss_and_gradient(theta0, x, y)
        momenta[client] = [(1 - BETA) * g for g in gradient]
    return momenta, losses


def _expected_weights(sent):
    theta0 = initial_weights().trainable
    mean = [np.mean([m[k] for m in sent], axis=0) for k in range(len(theta0))]
    return [t - SERVER_LR * a for t, a in zip(theta0, mean)]


def _check(process, output, *, sent, states, losses, examples, attacked=1):
    assert_close(process.get_model_weights(output["state"]).trainable, _expected_weights(sent))
    for state, expected in zip(output["client_states"], states):
        assert_close(leaves(state), expected)
    metrics = output["metrics"]["client_work"]
    assert metrics["num_examples"] == examples
    np.testing.assert_allclose(metrics["train_loss"],
                               sum(losses[c] * SIZES[c] for c in losses) / examples, rtol=1e-5)
    assert metrics.get("attacked_clients", 0) == attacked


@pytest.fixture(scope="module")
def honest(tff_context):
    del tff_context
    return _honest_momenta()


def test_without_attack_the_byzantine_client_trains_honestly(honest):
    momenta, losses = honest
    process, output = _round("none")
    _check(process, output, sent=list(momenta.values()), states=list(momenta.values()),
           losses=losses, examples=18, attacked=0)
    assert "attacked_clients" not in output["metrics"]["client_work"]


def test_a_local_attack_changes_the_sent_momentum_and_not_the_clients_own(honest):
    momenta, losses = honest
    process, output = _round("sign_flip:scale=2")
    sent = [momenta[0], momenta[1], [-2 * m for m in momenta[2]]]
    _check(process, output, sent=sent, states=list(momenta.values()), losses=losses,
           examples=18)


def test_gradient_ascent_negates_the_byzantine_gradient_and_so_its_momentum(honest):
    momenta, losses = honest
    process, output = _round("sign_flip:mode=ascent")
    flipped = [-m for m in momenta[2]]
    _check(process, output, sent=[momenta[0], momenta[1], flipped],
           states=[momenta[0], momenta[1], flipped], losses=losses, examples=18)


def test_label_flip_computes_the_byzantine_gradient_on_flipped_labels(honest):
    flip = lambda y: (NUM_CLASSES - 1 - y).astype(np.int32)
    momenta, losses = _honest_momenta(flip)
    assert not np.allclose(momenta[2][1], honest[0][2][1])
    process, output = _round("label_flip")
    _check(process, output, sent=list(momenta.values()), states=list(momenta.values()),
           losses=losses, examples=18, attacked=0)  # data attacks act in the data, not here


def test_an_omniscient_attack_sends_minus_the_honest_mean_and_skips_the_step(honest):
    momenta, losses = honest
    process, output = _round("ipm:eps=1")
    mean = [(a + b) / 2 for a, b in zip(momenta[0], momenta[1])]
    zeros = [np.zeros_like(m) for m in mean]
    # θ1 = θ0 − lr (m0 + m1 − m̄)/3 = θ0 − lr m̄/3; the idle client keeps its zero momentum
    # and reports no examples, so train_loss is the honest clients'.
    _check(process, output, sent=[momenta[0], momenta[1], [-m for m in mean]],
           states=[momenta[0], momenta[1], zeros],
           losses={0: losses[0], 1: losses[1]}, examples=12)


def test_a_colluding_attack_on_its_own_vectors_trains(honest):
    momenta, losses = honest
    process, output = _round("ipm:eps=1,stats=byzantine")
    _check(process, output, sent=[momenta[0], momenta[1], [-m for m in momenta[2]]],
           states=list(momenta.values()), losses=losses, examples=18)


def test_a_replacing_local_attack_skips_the_step(honest):
    momenta, losses = honest
    process, output = _round("constant:c=0.5")
    sent = [momenta[0], momenta[1], [np.full_like(m, -0.5) for m in momenta[2]]]
    zeros = [np.zeros_like(m) for m in momenta[2]]
    _check(process, output, sent=sent, states=[momenta[0], momenta[1], zeros],
           losses={0: losses[0], 1: losses[1]}, examples=12)


def test_an_attack_waits_for_its_start_round(honest):
    momenta, losses = honest
    process = _build("ipm:eps=1,start=1")
    output = process.next(process.initialize(), _inputs(), _zero_states(process))
    _check(process, output, sent=list(momenta.values()), states=list(momenta.values()),
           losses=losses, examples=18, attacked=0)
    # Round 1: the attack is active; client 2 skips its step and keeps its round-0 momentum.
    second = process.next(output["state"], _inputs(), list(output["client_states"]))
    assert_close(leaves(second["client_states"][2]), momenta[2])
    assert second["metrics"]["client_work"]["num_examples"] == 12
    assert second["metrics"]["client_work"]["attacked_clients"] == 1
