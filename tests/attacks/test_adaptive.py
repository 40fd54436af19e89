"""Adaptive LIE and IPM: the line search by hand, and the attacks against real rules in TFF.

The records of tests/attacks/test_colluding.py: five clients, 1 and 3 Byzantine (group 0).
"""

import numpy as np
import pytest
import tensorflow_federated as tff

from aggregators.build import AggregatorContext, build_aggregator
from attacks import build_attack_plan
from attacks.adaptive.search import line_maximize
from tests.attacks.test_colluding import (DELTAS, GROUPS, HONEST, RecordingFactory, aggregate,
                                          record_type, records)
from tff_byz.errors import ConfigError
from tff_byz.registry import SpecError

CONTEXT = AggregatorContext(declared_byzantine_fraction=0.4, clients_per_round=5)


def np_line_maximize(objective, start=0.0, delta=10.0, evals=20, ratio=0.8):
    tau, best = start, objective(start)
    left, expanding = evals - 1, True
    while left > 0:
        value = objective(tau + delta)
        left -= 1
        better = value > best
        if better:
            tau, best = tau + delta, value
        expanding = expanding and better
        delta = 2 * delta if expanding else ratio * delta
    return tau, best


def test_line_search_by_hand():
    # F = −(τ − 25)²: 0, 10, 30 improve (δ 10, 20), 70 does not; the contraction then only
    # tries τ > 30, all worse: τ = 30. A search never goes back below its best τ.
    tau, value = line_maximize(lambda t: -(t - 25.0) ** 2)
    assert float(tau) == 30.0 and float(value) == -25.0
    # An objective that keeps growing: 19 expansions after F(0), τ = 10 (2¹⁹ − 1).
    tau, _ = line_maximize(lambda t: t)
    assert float(tau) == 10.0 * (2 ** 19 - 1)
    tau, _ = line_maximize(lambda t: -(t - 25.0) ** 2, evals=1)
    assert float(tau) == 0.0
    for objective in (lambda t: -(t - 3.3) ** 2, lambda t: np.sin(t / 7.0), lambda t: -abs(t - 41)):
        assert float(line_maximize(objective)[0]) == pytest.approx(
            np_line_maximize(objective)[0], rel=1e-12)


def run(spec, aggregator):
    plan = build_attack_plan(spec, seed=0)
    rule = build_aggregator(aggregator, CONTEXT)
    process = plan.aggregator(rule, seed=0).create(record_type(), tff.TensorType(np.float32))
    return process.next(process.initialize(), records(), [np.float32(10)] * 5)


def defended(rule, byzantine_vector):
    rows = DELTAS.astype(np.float64).copy()
    rows[GROUPS >= 0] = byzantine_vector
    return rule(rows)


@pytest.mark.parametrize("spec, base", [
    ("ipm_optimal", lambda tau: -tau * HONEST.mean(0)),
    ("lie_optimal", lambda tau: HONEST.mean(0) - tau * HONEST.std(0, ddof=1)),
])
@pytest.mark.parametrize("aggregator, rule", [
    ("median", lambda rows: np.median(rows, axis=0)),
    ("trimmed_mean:beta=1", lambda rows: np.sort(rows, axis=0)[1:4].mean(0)),
])
def test_the_attack_maximises_the_distance_against_the_actual_rule(tff_context, spec, base,
                                                                   aggregator, rule):
    def objective(tau):
        return np.linalg.norm(defended(rule, base(tau)) - HONEST.mean(0))

    tau, distance = np_line_maximize(objective)
    output = run(spec, aggregator)
    name = spec
    measured = output.measurements["attack"][name]
    assert measured["tau"] == pytest.approx(tau, rel=1e-5)
    assert measured["distance"] == pytest.approx(distance, rel=1e-5)
    np.testing.assert_allclose(aggregate(output), defended(rule, base(tau)), rtol=1e-5, atol=1e-5)


def test_against_the_mean_the_search_only_expands(tff_context):
    output = run("ipm_optimal", "mean")
    assert output.measurements["attack"]["ipm_optimal"]["tau"] == 10.0 * (2 ** 19 - 1)


def test_a_defence_that_cannot_be_simulated_is_refused(tff_context):
    plan = build_attack_plan("lie_optimal", seed=0)
    with pytest.raises(ConfigError, match="^--attack: lie_optimal:.* searches against the "
                                          "defence, which must be a stacked rule or mean; "
                                          "RecordingFactory is neither.$"):
        plan.aggregator(RecordingFactory(), seed=0).create(record_type(),
                                                           tff.TensorType(np.float32))


def test_loss_forgery_is_refused():
    with pytest.raises(SpecError, match="ipm_optimal.*an adaptive attack reports the honest "
                                        "loss; loss= must be auto or honest"):
        build_attack_plan("ipm_optimal:loss=value:3")
