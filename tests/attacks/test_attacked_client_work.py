"""Local attacks as ClientWorkProcess transforms, executed in TFF.

Clients 1 and 3 of five are Byzantine. Honest clients' results must be
bit-identical to the unattacked process; Byzantine ones must be exactly the
transform of their own honest result.
"""

import numpy as np
import pytest

from attacks import build_attack_plan
from attacks.selection import split_groups
from tff_byz import client_inputs, client_work, datasets, fedavg, models

NUM_CLIENTS = 5
BYZANTINE = np.array([False, True, False, True, False])


@pytest.fixture(scope="module")
def setup():
    data = datasets.load_federated_dataset("digits", num_clients=NUM_CLIENTS, seed=2)
    shape, classes, norm = data.input_shape, data.num_classes, data.normalization
    weights = fedavg.model_weights_from_keras(
        models.build_keras_model("small_mlp", shape, classes, norm, seed=2))
    model_fn = models.make_model_fn("small_mlp", shape, classes, norm)
    return data, weights, model_fn


def make_inputs(data, groups):
    return [client_inputs.make_client_input(data.client_data.create_tf_dataset_for_client(cid), i,
                                            groups[i] >= 0, int(groups[i]))
            for i, cid in enumerate(data.client_ids)]


def honest_work(model_fn, training=client_work.honest_training):
    # One batch holds every example (batch_size 1000): ascent is then exactly −Δ up to rounding.
    return client_work.build_local_sgd_client_work(model_fn, epochs=1, batch_size=1000,
                                                   learning_rate=0.1, seed=4, training=training)


def run_rounds(work, weights, inputs, rounds):
    state = work.initialize()
    outputs = []
    for _ in range(rounds):
        out = work.next(state, [weights] * NUM_CLIENTS, inputs)
        state = out.state
        outputs.append(out)
    return outputs


@pytest.fixture(scope="module")
def honest_results(setup, tff_context):
    data, weights, model_fn = setup
    groups = split_groups(BYZANTINE, 1, seed=0).groups
    return [o.result for o in run_rounds(honest_work(model_fn), weights,
                                         make_inputs(data, groups), rounds=2)]


def attacked(setup, spec, rounds=2, seed=0):
    data, weights, model_fn = setup
    plan = build_attack_plan(spec, seed=seed, dataset=data)
    groups = split_groups(BYZANTINE, plan.num_groups, seed=seed).groups
    work = plan.client_work(honest_work(model_fn, plan.local_training()), seed=seed)
    return run_rounds(work, weights, make_inputs(data, groups), rounds), groups


def leaves(result):
    return [np.asarray(x) for x in result.update["delta"]]


def assert_honest_untouched(honest, results):
    for i in np.flatnonzero(~BYZANTINE):
        for a, b in zip(leaves(honest[i]), leaves(results[i])):
            assert np.array_equal(a, b)  # bit-identical
        assert honest[i].update["loss"] == results[i].update["loss"]
        assert honest[i].update_weight == results[i].update_weight


@pytest.mark.parametrize("spec, expected", [
    ("sign_flip", lambda d: -d),
    ("sign_flip:scale=3", lambda d: -3 * d),
    ("scaling", lambda d: 10 * d),
    ("zero", np.zeros_like),
    ("constant:c=2.5", lambda d: np.full_like(d, 2.5)),
    ("bit_flip:bits=sign,p=1", lambda d: -d),
])
def test_deterministic_local_attacks(setup, honest_results, tff_context, spec, expected):
    outputs, _ = attacked(setup, spec, rounds=1)
    results = outputs[0].result
    assert_honest_untouched(honest_results[0], results)
    for i in np.flatnonzero(BYZANTINE):
        for honest_leaf, leaf in zip(leaves(honest_results[0][i]), leaves(results[i])):
            np.testing.assert_array_equal(leaf, expected(honest_leaf))
    assert outputs[0].measurements["attacked_clients"] == 2


def test_inf_and_nan(setup, tff_context):
    for spec, check in (("inf", np.isposinf), ("nan", np.isnan)):
        results = attacked(setup, spec, rounds=1)[0][0].result
        assert all(np.all(check(x)) for i in np.flatnonzero(BYZANTINE) for x in leaves(results[i]))
        assert all(np.all(np.isfinite(x)) for i in np.flatnonzero(~BYZANTINE)
                   for x in leaves(results[i]))


def test_gaussian_is_seeded_per_client_and_round(setup, honest_results, tff_context):
    outputs, _ = attacked(setup, "gaussian:sigma=2", rounds=2)
    again, _ = attacked(setup, "gaussian:sigma=2", rounds=2)
    first, second = outputs[0].result, outputs[1].result
    assert_honest_untouched(honest_results[0], first)
    flat = np.concatenate([x.ravel() for x in leaves(first[1])])
    assert abs(flat.std() - 2.0) < 0.1 and abs(flat.mean()) < 0.1
    assert not np.array_equal(leaves(first[1])[0], leaves(first[3])[0])   # per client
    assert not np.array_equal(leaves(first[1])[0], leaves(second[1])[0])  # per round
    for a, b in zip(leaves(first[1]), leaves(again[0].result[1])):
        assert np.array_equal(a, b)  # same seed, same draw


def test_schedule_starts_at_the_given_round(setup, honest_results, tff_context):
    outputs, _ = attacked(setup, "sign_flip:start=1", rounds=2)
    assert outputs[0].measurements["attacked_clients"] == 0
    for i in range(NUM_CLIENTS):  # round 0: everyone honest
        for a, b in zip(leaves(honest_results[0][i]), leaves(outputs[0].result[i])):
            assert np.array_equal(a, b)
    for i in np.flatnonzero(BYZANTINE):  # round 1: flipped
        for a, b in zip(leaves(honest_results[1][i]), leaves(outputs[1].result[i])):
            np.testing.assert_array_equal(b, -a)


def test_double_attack_splits_the_byzantine_clients(setup, honest_results, tff_context):
    outputs, groups = attacked(setup, "sign_flip:start=0+scaling:scale=2,start=1", rounds=2)
    flip, scale = int(np.flatnonzero(groups == 0)[0]), int(np.flatnonzero(groups == 1)[0])
    assert sorted([flip, scale]) == [1, 3]
    assert outputs[0].measurements["attacked_clients"] == 1
    assert outputs[1].measurements["attacked_clients"] == 2
    np.testing.assert_array_equal(leaves(outputs[0].result[flip])[0],
                                  -leaves(honest_results[0][flip])[0])
    np.testing.assert_array_equal(leaves(outputs[0].result[scale])[0],
                                  leaves(honest_results[0][scale])[0])
    np.testing.assert_array_equal(leaves(outputs[1].result[scale])[0],
                                  2 * leaves(honest_results[1][scale])[0])


def test_random_params_trains_from_perturbed_model(setup, honest_results, tff_context):
    outputs, _ = attacked(setup, "random_params", rounds=1)
    results = outputs[0].result
    assert_honest_untouched(honest_results[0], results)
    _, weights, _ = setup
    flat_theta = np.concatenate([w.ravel() for w in weights.trainable])
    delta = np.concatenate([x.ravel() for x in leaves(results[1])])
    # Δ = ψ − θ is dominated by ε ~ N(−5 μ_θ, (1.5 σ_θ)²).
    assert abs(delta.mean() - (-5 * flat_theta.mean())) < 0.2 * 1.5 * flat_theta.std()
    assert abs(delta.std() / (1.5 * flat_theta.std()) - 1) < 0.2
    # Its loss is the honest training loss from the perturbed start: much higher.
    assert results[1].update["loss"] > honest_results[0][1].update["loss"]


def test_ascent_negates_gradients_during_training(setup, honest_results, tff_context):
    outputs, _ = attacked(setup, "sign_flip:mode=ascent", rounds=1)
    results = outputs[0].result
    assert_honest_untouched(honest_results[0], results)
    for i in np.flatnonzero(BYZANTINE):  # one full batch: ascent = −Δ (up to rounding)
        for a, b in zip(leaves(honest_results[0][i]), leaves(results[i])):
            np.testing.assert_allclose(b, -a, atol=1e-6)


def test_weight_lying_and_loss_value(setup, honest_results, tff_context):
    results = attacked(setup, "weight_lying:loss=value:0.5", rounds=1)[0][0].result
    assert_honest_untouched(honest_results[0], results)
    for i in np.flatnonzero(BYZANTINE):
        assert results[i].update_weight == 1e6 and results[i].update["num_examples"] == 1e6
        assert results[i].update["loss"] == np.float32(0.5)
        for a, b in zip(leaves(honest_results[0][i]), leaves(results[i])):
            assert np.array_equal(a, b)


def test_mimic_misaligned_moves_by_eta(setup, honest_results, tff_context):
    # Its default loss forgery needs the server: the records carry the group for the wrapper.
    results = attacked(setup, "mimic_misaligned:loss=honest", rounds=1)[0][0].result
    assert_honest_untouched(honest_results[0], results)
    for i in np.flatnonzero(BYZANTINE):
        honest_flat = np.concatenate([x.ravel() for x in leaves(honest_results[0][i])])
        flat = np.concatenate([x.ravel() for x in leaves(results[i])])
        assert np.linalg.norm(flat + honest_flat) == pytest.approx(0.1, rel=1e-4)
