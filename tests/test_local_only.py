"""The local-only baseline: tff_byz.local_only against NumPy, and `--aggregator=local`."""

import json
import math

import numpy as np
import pytest

from algorithms.local import LocalOnly
from pdmm.regimes import linear_factor, weight_decay
from tff_byz.client_state import ClientStateStore, StatefulRounds
from tff_byz.local_only import build_local_only_process
from tff_byz.packing import unpack_numpy
from tests.test_algorithm_choice import _config, _refuses
from tests.test_momentum import (client_data, initial_weights, make_input, model_fn,
                                 np_loss_and_gradient)
from tests.test_train_cli import run_cli

LR = 0.3


@pytest.fixture(scope="module")
def process(tff_context):
    del tff_context
    # One full-batch step per round (batch 8 >= every client's examples).
    return build_local_only_process(model_fn, initial_weights(), epochs=1, batch_size=8,
                                    learning_rate=LR, seed=3)


def _gd_step(theta, client, size):
    x, y = client_data(client, size)
    _, gradient = np_loss_and_gradient(theta, x, y, weight_decay=0.0)
    return [t - LR * g for t, g in zip(theta, gradient)]


def test_each_client_trains_its_own_model_and_nothing_else(process):
    store = ClientStateStore(process.client_state_template, 3, id_key="client_id",
                             initial=process.initial_client_state)
    rounds = StatefulRounds(process, store)
    sizes = {0: 5, 1: 7, 2: 6}
    state = process.initialize()
    theta = {c: [np.asarray(t, np.float64) for t in initial_weights().trainable] for c in sizes}
    for participants in ([0, 1, 2], [0, 2], [1, 2]):
        state, metrics = rounds.next(
            state, [make_input(c, sizes[c]) for c in participants], participants)
        for c in participants:
            theta[c] = _gd_step(theta[c], c, sizes[c])
        assert metrics["client_work"]["num_examples"] == sum(sizes[c] for c in participants)
    rounds.sync()
    for c, stored in zip(sizes, store.get(np.array(list(sizes)))):
        for got, expected in zip(unpack_numpy(stored["weights"], initial_weights().trainable),
                                 theta[c]):
            np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)
    # The server learns nothing.
    for got, initial in zip(process.get_model_weights(state).trainable,
                            initial_weights().trainable):
        np.testing.assert_array_equal(got, initial)


def test_the_baseline_refuses_what_it_cannot_take():
    LocalOnly.validate(_config(aggregator="local", byzantine_fraction=0.3))
    _refuses(LocalOnly, _config(aggregator="local", attack="sign_flip"),
             "--aggregator=local: clients exchange nothing, so no attack can act; use "
             "--attack=none (the baseline is the same under every attack); got "
             "--attack='sign_flip'.")
    _refuses(LocalOnly, _config(aggregator="local", client_work="momentum_sgd"),
             "--aggregator=local trains with local SGD; --client_work must stay local_sgd; got "
             "momentum_sgd.")
    _refuses(LocalOnly, _config(aggregator="local", server_lr=0.5),
             "--aggregator=local has no server step; --server_lr must be 1; got 0.5.")


def test_the_pipeline_reports_the_honest_clients_own_models(capsys, tmp_path):
    code, captured = run_cli(capsys, tmp_path, "--aggregator=local", "--num_clients=5",
                             "--byzantine_selection=ids:4", "--rounds=4", "--eval_every=2",
                             "--local_epochs=2")
    assert code == 0, captured.err
    assert "honest clients' own models: final test accuracy" in captured.out
    (run,) = (tmp_path / "out").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert 0.5 < summary["final_test_accuracy_node_min"] <= summary[
        "final_test_accuracy_node_mean"] <= 1.0
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"test_accuracy_node_mean", "test_accuracy_node_min"} <= set(header)


# --- PDMM's weight decay under a linear attack (pdmm.regimes) -----------------------------------

def test_weight_decay_by_hand():
    assert weight_decay(-1.0, 0.3, 0.4) == pytest.approx(0.6)  # 2 · 0.3 · 0.4 / 0.4
    assert weight_decay(0.0, 0.2, 0.4) == pytest.approx(0.1)  # zero: 0.2 · 0.4 / 0.8
    assert weight_decay(1.0, 0.3, 0.4) == 0.0  # an honest message adds nothing
    assert weight_decay(-1.0, 0.1, 0.04) == pytest.approx(2 * 0.1 * 0.04 / 0.8)
    assert weight_decay(-1.0, 0.5, 0.4) == math.inf  # 1 − β + κβ = 0: no minimiser
    assert weight_decay(-3.0, 0.3, 0.4) == math.inf


def test_linear_factor_of_each_attack():
    assert linear_factor("sign_flip", dict(scale=1.0, mode="final")) == -1.0
    assert linear_factor("sign_flip", dict(scale=3.0, mode="final")) == -3.0
    assert linear_factor("sign_flip", dict(scale=1.0, mode="ascent")) is None
    assert linear_factor("scaling", dict(scale=10.0)) == 10.0
    assert linear_factor("zero", {}) == 0.0
    assert linear_factor("bit_flip", dict(bits="sign", p=0.3)) == pytest.approx(0.4)
    assert linear_factor("bit_flip", dict(bits="all", p=0.3)) is None
    assert linear_factor("gaussian", dict(sigma=1.0)) is None
