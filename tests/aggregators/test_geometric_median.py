"""Geometric median (smoothed Weiszfeld): exact values, a NumPy reference, properties, factory."""

import collections

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from aggregators.base import RequirementError
from aggregators.geometric_median import GeometricMedianFactory, geometric_median
from tests.aggregators import helpers

# Inputs on which rules disagree (STYLE.md): mean 23.2, median 6, trimmed mean (f=1) 5.
DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)


def numpy_weiszfeld(x, weights=None, *, nu=1e-6, iterations=3, start="median"):
    """Reference: aggregators.md §1, in float64, from the coordinate-wise median or the mean."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    p = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    p = p / p.sum()
    v = np.median(x, axis=0) if start == "median" else p @ x
    for _ in range(iterations):
        beta = p / np.maximum(nu, np.linalg.norm(x - v, axis=1))
        v = beta @ x / beta.sum()
    return v


def test_one_iteration_by_hand_from_the_mean():
    # v⁰ = 23.2; distances 22.2, 21.2, 17.2, 16.2, 76.8; v¹ = Σ x/d / Σ 1/d
    d = np.array([22.2, 21.2, 17.2, 16.2, 76.8])
    x = np.array([1.0, 2.0, 6.0, 7.0, 100.0])
    expected = np.sum(x / d) / np.sum(1 / d)  # 9.8728...
    np.testing.assert_allclose(geometric_median(DISAGREE, iterations=1, start="mean"), [expected],
                               rtol=1e-6)
    np.testing.assert_allclose(expected, 9.87280, atol=1e-4)


def test_one_iteration_by_hand_from_the_median():
    # v⁰ = 6 (the median); distances 5, 4, 0 → ν = 1e-6, 1, 94: the row at 6 dominates.
    d = np.array([5.0, 4.0, 1e-6, 1.0, 94.0])
    x = np.array([1.0, 2.0, 6.0, 7.0, 100.0])
    expected = np.sum(x / d) / np.sum(1 / d)  # (6e6 + 8.7638) / (1e6 + 1.4606) = 6 − 5e-12
    np.testing.assert_allclose(geometric_median(DISAGREE, iterations=1), [expected], atol=1e-5)
    np.testing.assert_allclose(expected, 6.0, atol=1e-9)


def test_three_iterations_from_the_mean_are_not_yet_the_median():
    out = geometric_median(DISAGREE, start="mean").numpy()
    np.testing.assert_allclose(out, numpy_weiszfeld(DISAGREE, start="mean"), rtol=1e-6)
    np.testing.assert_allclose(out, [6.16007], atol=1e-4)  # mean 23.2, median 6
    np.testing.assert_allclose(geometric_median(DISAGREE), [6.0], atol=1e-4)  # median start


def test_a_huge_finite_outlier_moves_the_mean_start_but_not_the_median_start():
    """A 1e15 row (scaling attack): 3 iterations from the mean stay ~1e14 away; from the
    median the outlier's weight is ~1e-15 and the result stays inside the honest rows."""
    honest = np.random.default_rng(3).normal(size=(8, 5)).astype(np.float32)
    x = np.concatenate([honest, np.full((2, 5), 1e15, np.float32)])
    from_mean = geometric_median(x, start="mean").numpy()
    from_median = geometric_median(x).numpy()
    assert np.all(np.abs(from_mean) > 1e12)
    assert np.all(from_median >= honest.min(axis=0)) and np.all(from_median <= honest.max(axis=0))
    np.testing.assert_allclose(from_median, numpy_weiszfeld(x).ravel(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("iterations", [10, 30, 100])
def test_converges_to_the_median_in_one_dimension(iterations):
    np.testing.assert_allclose(geometric_median(DISAGREE, iterations=iterations), [6.0],
                               atol=1e-5)


def test_fermat_point_of_a_right_triangle():
    # Each side seen at 120° from (t, t): 6t² − 6t + 1 = 0.
    # (The mean is (1/3, 1/3), the coordinate-wise median (0, 0).)
    t = (3 - np.sqrt(3)) / 6
    corners = np.array([[0, 0], [1, 0], [0, 1]], np.float32)
    np.testing.assert_allclose(geometric_median(corners, iterations=200), [t, t], atol=1e-5)


def test_weighted_exact_values():
    # A client holding more than half the mass is the weighted geometric median.
    np.testing.assert_allclose(
        geometric_median(DISAGREE, [1, 1, 1, 1, 10], iterations=100), [100.0], atol=1e-4)
    np.testing.assert_allclose(geometric_median(DISAGREE, np.ones(5)), geometric_median(DISAGREE),
                               rtol=1e-6)
    for start in ("median", "mean"):
        np.testing.assert_allclose(geometric_median(DISAGREE, [3, 1, 1, 2, 1], start=start),
                                   numpy_weiszfeld(DISAGREE, [3, 1, 1, 2, 1], start=start),
                                   rtol=1e-5)


def test_against_numpy_reference_on_random_inputs():
    rng = np.random.default_rng(0)
    for n, shape in [(7, (3, 4)), (12, (5,)), (30, (2, 2, 2))]:
        x = rng.normal(size=(n, *shape)).astype(np.float32)
        w = rng.uniform(0.5, 3.0, size=n)
        for iterations in (1, 3, 20):
            for start in ("median", "mean"):
                got = geometric_median(x, iterations=iterations, start=start).numpy()
                assert got.shape == shape
                np.testing.assert_allclose(
                    got.reshape(-1), numpy_weiszfeld(x, iterations=iterations, start=start),
                    rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(
                    geometric_median(x, w, iterations=iterations, start=start).numpy().reshape(-1),
                    numpy_weiszfeld(x, w, iterations=iterations, start=start), rtol=1e-4,
                    atol=1e-5)


def test_rescale_to_the_norm_of_the_mean_with_clamped_factor():
    # ||mean|| / ||v|| = 23.2 / 6.16 ∈ [0.25, 4]: the result has the mean's norm.
    np.testing.assert_allclose(geometric_median(DISAGREE, rescale=True, start="mean"), [23.2],
                               rtol=1e-5)
    # mean 0.04, v ≈ 1: the factor 0.04 is clamped to 0.25.
    x = np.array([[-3.0], [-2.0], [1.0], [2.0], [2.2]], np.float32)
    v = numpy_weiszfeld(x)
    assert abs(0.04 / v[0]) < 0.25
    np.testing.assert_allclose(geometric_median(x, rescale=True), 0.25 * v, rtol=1e-5)
    # ... and the factor 40 / 1 is clamped to 4.
    y = np.array([[0.0], [1.0], [1.0], [2.0], [196.0]], np.float32)
    vy = numpy_weiszfeld(y)
    assert y.mean() / vy[0] > 4
    np.testing.assert_allclose(geometric_median(y, rescale=True), 4 * vy, rtol=1e-5)


def test_identical_inputs_return_that_input():
    x = np.tile(np.array([[1.5, -2.0, 3.0]], np.float32), (5, 1))
    np.testing.assert_allclose(geometric_median(x), x[0], rtol=1e-6)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(nu=0), ValueError, r"^geometric_median: nu must be a finite number > 0; got 0\.$"),
    (dict(nu=-1e-6), ValueError, r"nu must be a finite number > 0; got -1e-06"),
    (dict(nu="small"), TypeError, r"geometric_median: nu must be a number; got 'small'"),
    (dict(iterations=0), ValueError,
     r"^geometric_median: iterations must be an integer >= 1; got 0\.$"),
    (dict(iterations=2.0), TypeError, r"iterations must be an integer; got 2\.0"),
    (dict(rescale="true"), TypeError, r"geometric_median: rescale must be a bool; got 'true'"),
    (dict(start="zero"), ValueError,
     r"^geometric_median: start must be one of median, mean; got start='zero'\.$"),
])
def test_parameter_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        GeometricMedianFactory(**kwargs)
    if "rescale" not in kwargs:
        with pytest.raises(error, match=message):
            geometric_median(DISAGREE, **kwargs)


def test_int_accepted_where_float_expected():
    assert GeometricMedianFactory(nu=1).nu == 1.0


# --- properties ---------------------------------------------------------------------------

rows = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=3, max_side=8),
                  elements=dict(min_value=-1e3, max_value=1e3, allow_subnormal=False))
graph_geometric_median = tf.function(geometric_median, reduce_retracing=True)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, st.randoms(use_true_random=False))
def test_permutation_invariance(x, rnd):
    order = list(range(len(x)))
    rnd.shuffle(order)
    np.testing.assert_allclose(geometric_median(x), geometric_median(x[order]),
                               rtol=1e-4, atol=1e-2)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, st.floats(-100, 100, width=32))
def test_translation_equivariance(x, shift):
    np.testing.assert_allclose(geometric_median(x + np.float32(shift)),
                               geometric_median(x) + np.float32(shift), rtol=1e-4, atol=2e-2)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(
    hnp.arrays(np.float32, st.tuples(st.integers(3, 7), st.integers(1, 3)),
               elements=dict(min_value=-100, max_value=100, allow_subnormal=False)),
    st.data())
def test_up_to_f_huge_rows_stay_close_to_the_honest_geometric_median(honest, data):
    """||GM(all) − GM(honest)|| ≤ r·n/(n − 2f), r = max honest distance to GM(honest).

    (Optimality: the honest rows' unit vectors pull back with at least (R − r)/(R + r)
    each, the f others with at most 1.) Enough iterations to come back from 1e30:
    the iterate shrinks by about f/(n − f) ≤ 1/2 per iteration.
    """
    n_honest, dim = honest.shape
    f = data.draw(st.integers(1, n_honest // 2))
    signs = data.draw(hnp.arrays(np.float32, (f, dim), elements=st.sampled_from([-1.0, 1.0])))
    attacked = np.concatenate([signs * np.float32(1e30), honest])
    n = len(attacked)
    g = graph_geometric_median(honest, iterations=200).numpy()
    z = graph_geometric_median(attacked, iterations=200).numpy()
    assert np.all(np.isfinite(z))
    r = np.max(np.linalg.norm(honest - g, axis=1))
    assert np.linalg.norm(z - g) <= r * n / (n - 2 * f) + 1e-3 * (1 + r)


# --- the factory inside TFF ---------------------------------------------------------------

NESTED = [collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[v, -v]], np.float32))
          for v in (1.0, 2.0, 6.0, 7.0, 100.0)]


def test_factory_on_nested_values_and_signature(tff_context):
    process = helpers.build_process(GeometricMedianFactory(), NESTED[0])
    output = helpers.run_once(None, NESTED, process=process)
    # Rows (v, v, −v): collinear, so the 1-D result 6.16007 along (1, 1, −1).
    expected = geometric_median(DISAGREE).numpy()[0]
    np.testing.assert_allclose(output.result["a"], [expected], rtol=1e-5)
    np.testing.assert_allclose(output.result["b"], [[expected, -expected]], rtol=1e-5)
    assert list(output.measurements) == ["non_finite_clients", "f", "weiszfeld_objective"]
    objective = np.mean(np.abs(DISAGREE[:, 0] - expected)) * np.sqrt(3)
    np.testing.assert_allclose(output.measurements["weiszfeld_objective"], objective, rtol=1e-5)
    signature = process.next.type_signature
    assert str(signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,weiszfeld_objective=float32>@SERVER"
    assert str(signature.result.result) == "<a=float32[1],b=float32[1,2]>@SERVER"
    assert str(process.initialize.type_signature.result) == "<round=int64,rule=<>>@SERVER"


def test_factory_weighted_and_non_finite(tff_context):
    values = [np.array([v], np.float32) for v in (1.0, 2.0, np.nan, 6.0, 7.0, 100.0)]
    output = helpers.run_once(
        GeometricMedianFactory(weighted=True, iterations=5, byzantine_fraction=0.2), values,
        weights=[3, 1, 1, 1, 2, 1])
    assert output.measurements["non_finite_clients"] == 1
    assert output.measurements["f"] == 1  # ⌈0.2·6⌉ = 2, minus the excluded one
    np.testing.assert_allclose(output.result, geometric_median(DISAGREE, [3, 1, 1, 2, 1],
                                                               iterations=5), rtol=1e-5)


def test_factory_aggregate_rescales_and_ignores_weights_when_unweighted():
    """`aggregate` is plain TF: checked eagerly, without building a TFF process."""
    weights = tf.constant([0.5, 0.2, 0.1, 0.1, 0.1])
    ids = tf.range(5)
    state = collections.OrderedDict()
    result, new_state, measurements = GeometricMedianFactory(rescale=True).aggregate(
        DISAGREE, weights, ids, f=0, state=state, seed=tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(result, [23.2], rtol=1e-5)
    assert new_state is state and list(measurements) == ["weiszfeld_objective"]
    unweighted, _, _ = GeometricMedianFactory().aggregate(
        DISAGREE, weights, ids, f=0, state=state, seed=tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(unweighted, geometric_median(DISAGREE), rtol=1e-6)
    weighted, _, _ = GeometricMedianFactory(weighted=True).aggregate(
        DISAGREE, weights, ids, f=0, state=state, seed=tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(weighted, geometric_median(DISAGREE, weights), rtol=1e-6)


def test_requirement_checked_at_build_and_each_round(tff_context):
    with pytest.raises(RequirementError, match=r"geometric_median needs f < n/2.*n=4, f=2"):
        GeometricMedianFactory(byzantine_fraction=0.4, expected_clients=4)
    with pytest.raises(Exception, match="geometric_median needs"):
        helpers.run_once(GeometricMedianFactory(f=2), [np.array([1.0], np.float32)] * 4)
