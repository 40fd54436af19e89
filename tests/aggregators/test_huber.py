"""Huber-loss aggregation: exact values, a NumPy reference, properties, and the TFF factory."""

import collections

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from aggregators.base import RequirementError
from aggregators.huber import HuberFactory, huber_aggregate, huber_iteration
from tests.aggregators import helpers

# Inputs on which rules disagree (STYLE.md): mean 23.2, median 6, trimmed mean (f=1) 5.
DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)
SEED = tf.constant([0, 0], tf.int64)


def numpy_huber(x, weights=None, *, tau=0.2, max_iterations=50, tolerance=1e-6):
    """Reference: aggregators.md §1 (float64); returns (v, updates run)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    p = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    p = p / p.sum()
    v = p @ x
    for i in range(1, max_iterations + 1):
        d = np.linalg.norm(x - v, axis=1)
        w = p * np.minimum(1.0, tau / np.maximum(d, 1e-300))
        new = w @ x / w.sum()
        converged = np.linalg.norm(new - v) <= tolerance * np.linalg.norm(new)
        v = new
        if converged:
            return v, i
    return v, max_iterations


def huber_objective(x, v, tau):
    r = np.linalg.norm(np.asarray(x, np.float64).reshape(len(x), -1) - v, axis=1)
    return np.mean(np.where(r <= tau, r ** 2 / 2, tau * r - tau ** 2 / 2))


def test_exact_values_between_median_and_mean():
    # τ = 0.2: the four others pull with equal force τ (two each way), so v = 6, the median.
    np.testing.assert_allclose(huber_aggregate(DISAGREE), [6.0], atol=1e-5)
    # τ = 10: 1, 2, 6, 7 inside the quadratic zone, 100 pulls with force 10:
    # (1 + 2 + 6 + 7 − 4v) + 10 = 0 → v = 6.5.
    np.testing.assert_allclose(huber_aggregate(DISAGREE, tau=10.0), [6.5], atol=1e-4)
    # τ = 1000: everyone quadratic, the mean.
    np.testing.assert_allclose(huber_aggregate(DISAGREE, tau=1000), [23.2], rtol=1e-6)


def test_weighted_exact_value():
    # p = (0.3, 0.1, 0.1, 0.1, 0.4), τ = 10:
    # (0.3·1 + 0.1·2 + 0.1·6 + 0.1·7 − 0.6v) + 0.4·10 = 0
    # → v = 5.8/0.6 (all four within 10 of it).
    np.testing.assert_allclose(huber_aggregate(DISAGREE, [3, 1, 1, 1, 4], tau=10.0), [5.8 / 0.6],
                               rtol=1e-5)


def test_iterations_run_and_stopping():
    x = tf.reshape(tf.constant(DISAGREE), [5, 1])
    p = tf.fill([5], 0.2)
    # Every client within τ of the mean: the first update returns the mean and stops.
    _, iterations = huber_iteration(x, p, tau=1000.0, max_iterations=50, tolerance=1e-6)
    assert int(iterations) == 1
    _, iterations = huber_iteration(x, p, tau=0.2, max_iterations=3, tolerance=1e-6)
    assert int(iterations) == 3
    v, iterations = huber_iteration(x, p, tau=10.0, max_iterations=50, tolerance=1e-6)
    expected, expected_iterations = numpy_huber(DISAGREE, tau=10.0)
    assert abs(int(iterations) - expected_iterations) <= 1  # float32 vs float64 stopping
    np.testing.assert_allclose(v, expected, rtol=1e-5)


def test_against_numpy_reference_and_minimises_the_objective():
    rng = np.random.default_rng(0)
    for n, shape in [(7, (3, 4)), (20, (5,))]:
        x = rng.normal(size=(n, *shape)).astype(np.float32)
        w = rng.uniform(0.5, 3.0, size=n)
        for tau in (0.2, 1.0, 5.0):
            got = huber_aggregate(x, tau=tau).numpy()
            assert got.shape == shape
            reference, _ = numpy_huber(x, tau=tau)
            np.testing.assert_allclose(got.reshape(-1), reference, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(huber_aggregate(x, w, tau=tau).numpy().reshape(-1),
                                       numpy_huber(x, w, tau=tau)[0], rtol=1e-4, atol=1e-4)
            # A minimiser: no better than small perturbations.
            best = huber_objective(x, got.reshape(-1), tau)
            for direction in rng.normal(size=(5, got.size)):
                assert best <= huber_objective(x, got.reshape(-1) + 1e-2 * direction, tau) + 1e-7


def test_identical_inputs_return_that_input():
    x = np.tile(np.array([[1.5, -2.0, 3.0]], np.float32), (5, 1))
    np.testing.assert_allclose(huber_aggregate(x), x[0], rtol=1e-6)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(tau=0), ValueError, r"^huber: tau must be a finite number > 0; got 0\.$"),
    (dict(tau=-0.2), ValueError, r"huber: tau must be a finite number > 0; got -0\.2"),
    (dict(tau=None), TypeError, r"huber: tau must be a number; got None"),
    (dict(max_iterations=0), ValueError,
     r"^huber: max_iterations must be an integer >= 1; got 0\.$"),
    (dict(max_iterations=50.0), TypeError, r"huber: max_iterations must be an integer; got 50\.0"),
    (dict(tolerance=0.0), ValueError, r"huber: tolerance must be a finite number > 0; got 0\.0"),
])
def test_parameter_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        HuberFactory(**kwargs)
    with pytest.raises(error, match=message):
        huber_aggregate(DISAGREE, **kwargs)


# --- properties ---------------------------------------------------------------------------

rows = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=3, max_side=8),
                  elements=dict(min_value=-1e3, max_value=1e3, allow_subnormal=False))
taus = st.sampled_from([0.2, 10.0, 1e4])
graph_huber = tf.function(huber_aggregate, reduce_retracing=True)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, taus, st.randoms(use_true_random=False))
def test_permutation_invariance(x, tau, rnd):
    order = list(range(len(x)))
    rnd.shuffle(order)
    np.testing.assert_allclose(graph_huber(x, tau=tau), graph_huber(x[order], tau=tau),
                               rtol=1e-4, atol=2e-2)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, taus, st.floats(-100, 100, width=32))
def test_translation_equivariance(x, tau, shift):
    np.testing.assert_allclose(graph_huber(x + np.float32(shift), tau=tau),
                               graph_huber(x, tau=tau) + np.float32(shift), rtol=1e-4, atol=2e-2)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(
    hnp.arrays(np.float32, st.tuples(st.integers(3, 7), st.integers(1, 3)),
               elements=dict(min_value=-100, max_value=100, allow_subnormal=False)),
    st.sampled_from([0.2, 10.0]), st.data())
def test_up_to_f_huge_rows_stay_close_to_the_honest_rows(honest, tau, data):
    """||v − c|| ≤ max(r·n/(n − 2f), τ), c = honest mean, r = max honest distance to c.

    (Balance of forces at the minimiser: each of the f others pulls with at most τ;
    beyond that radius each honest row pulls back with more.) Enough iterations to
    come back from 1e30 (a factor ≈ f/(n − f) ≤ 1/2 per iteration).
    """
    n_honest, dim = honest.shape
    f = data.draw(st.integers(1, n_honest // 2))
    signs = data.draw(hnp.arrays(np.float32, (f, dim), elements=st.sampled_from([-1.0, 1.0])))
    attacked = np.concatenate([signs * np.float32(1e30), honest])
    n = len(attacked)
    v = graph_huber(attacked, tau=tau, max_iterations=300, tolerance=1e-7).numpy()
    c = honest.mean(0)
    r = np.max(np.linalg.norm(honest - c, axis=1))
    assert np.linalg.norm(v - c) <= max(r * n / (n - 2 * f), tau) * (1 + 1e-3) + 1e-3


# --- the factory inside TFF ---------------------------------------------------------------

NESTED = [collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[v, -v]], np.float32))
          for v in (1.0, 2.0, 6.0, 7.0, 100.0)]


def test_factory_on_nested_values_and_signature(tff_context):
    process = helpers.build_process(HuberFactory(tau=10.0), NESTED[0])
    output = helpers.run_once(None, NESTED, process=process)
    # Rows v·(1, 1, −1): the 1-D problem with distances scaled by √3, i.e. τ' = 10/√3.
    expected = huber_aggregate(DISAGREE, tau=10.0 / np.sqrt(3)).numpy()[0]
    reference, iterations = numpy_huber(DISAGREE, tau=10.0 / np.sqrt(3))
    np.testing.assert_allclose(expected, reference, rtol=1e-5)
    np.testing.assert_allclose(output.result["a"], [expected], rtol=1e-5)
    np.testing.assert_allclose(output.result["b"], [[expected, -expected]], rtol=1e-5)
    assert list(output.measurements) == ["non_finite_clients", "f", "iterations_run"]
    assert abs(output.measurements["iterations_run"] - iterations) <= 1
    signature = process.next.type_signature
    assert str(signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,iterations_run=int32>@SERVER"
    assert str(signature.result.result) == "<a=float32[1],b=float32[1,2]>@SERVER"
    assert str(process.initialize.type_signature.result) == "<round=int64,rule=<>>@SERVER"


def test_factory_aggregate_weighted_and_unweighted():
    """`aggregate` is plain TF: checked eagerly, without building a TFF process."""
    weights = tf.constant([0.3, 0.1, 0.1, 0.1, 0.4])
    state = collections.OrderedDict()
    result, _, measurements = HuberFactory(tau=10.0, weighted=True).aggregate(
        DISAGREE, weights, tf.range(5), f=0, state=state, seed=SEED)
    np.testing.assert_allclose(result, [5.8 / 0.6], rtol=1e-5)
    assert 1 <= int(measurements["iterations_run"]) <= 50
    result, _, _ = HuberFactory(tau=10.0).aggregate(DISAGREE, weights, tf.range(5), f=0,
                                                    state=state, seed=SEED)
    np.testing.assert_allclose(result, [6.5], atol=1e-4)


def test_requirement_checked_at_build_and_each_round(tff_context):
    with pytest.raises(RequirementError, match=r"huber needs f < n/2.*n=4, f=2"):
        HuberFactory(byzantine_fraction=0.4, expected_clients=4)
    with pytest.raises(Exception, match="huber needs"):
        helpers.run_once(HuberFactory(f=2), [np.array([1.0], np.float32)] * 4)
