"""Coordinate-wise trimmed mean: exact values, properties, and the TFF factory."""

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest

import tensorflow as tf

from aggregators import base
from aggregators.base import RequirementError
from aggregators.trimmed_mean import TrimmedMeanFactory, trimmed_mean, weighted_trimmed_mean
from tests.aggregators import helpers
from tests.aggregators.test_median import (network_inputs, small_network_threshold,  # noqa: F401 (fixture)
                                           small_networks)

DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)


def test_exact_values():
    np.testing.assert_allclose(trimmed_mean(DISAGREE, beta=1), [5.0])
    np.testing.assert_allclose(trimmed_mean(DISAGREE, beta=0), [23.2])
    np.testing.assert_allclose(trimmed_mean(DISAGREE, beta=2), [6.0])
    np.testing.assert_allclose(trimmed_mean(DISAGREE[:4], beta=1), [4.0])  # even n


def test_per_coordinate_with_ties():
    x = np.array([[1, 5], [1, 3], [2, 3], [9, 3]], np.float32)
    np.testing.assert_allclose(trimmed_mean(x, beta=1), [1.5, 3.0])


def test_weighted_partial_boundary_weights():
    # trim mass 0.3 per side: keeps 0.1 of 2, all 0.2 of 6, 0.1 of 7 → (0.2+1.2+0.7)/0.4
    np.testing.assert_allclose(weighted_trimmed_mean(DISAGREE, np.ones(5), beta=1.5), [5.25])
    np.testing.assert_allclose(weighted_trimmed_mean(DISAGREE, np.ones(5), beta=1),
                               trimmed_mean(DISAGREE, beta=1), rtol=1e-6)
    # weights .1 .1 .1 .1 .6, trim mass 0.2 per side: keeps .1 of 6, .1 of 7, .4 of 100
    np.testing.assert_allclose(weighted_trimmed_mean(DISAGREE, [1, 1, 1, 1, 6], beta=1),
                               [(0.1 * 6 + 0.1 * 7 + 0.4 * 100) / 0.6], rtol=1e-5)


def test_requires_two_beta_below_n():
    with pytest.raises(Exception, match="2\\*beta < n"):
        trimmed_mean(DISAGREE, beta=3)


rows = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=3, max_side=8),
                  elements=dict(min_value=-1e3, max_value=1e3))


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(rows, hypothesis.strategies.randoms(use_true_random=False))
def test_permutation_invariance(x, rnd):
    order = list(range(len(x)))
    rnd.shuffle(order)
    beta = (len(x) - 1) // 2
    np.testing.assert_allclose(trimmed_mean(x, beta=beta), trimmed_mean(x[order], beta=beta),
                               rtol=1e-5, atol=1e-4)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(rows, hypothesis.strategies.sampled_from([1e30, -1e30, 3e38]))
def test_up_to_beta_huge_rows_stay_within_honest_range(x, huge):
    beta = (len(x) - 1) // 2
    attacked = x.copy()
    attacked[:beta] = huge
    honest = x[beta:]
    out = trimmed_mean(attacked, beta=beta).numpy()
    assert np.all(out >= honest.min(0) - 1e-2) and np.all(out <= honest.max(0) + 1e-2)


SPEC = [tf.TensorSpec([None, 21], tf.float32), tf.TensorSpec([], tf.int32)]


@pytest.fixture(scope="module")
def traced_trimmed_means():
    """The trimmed mean through the networks (padded for any n, and one graph per exact n₀)
    and through sorting, traced once for every kind of input (the network graphs take
    most of these tests' time to build)."""
    with pytest.MonkeyPatch.context() as patch:
        small_networks(patch)
        network = tf.function(lambda x, beta: trimmed_mean(x, beta=beta), input_signature=SPEC)
        network.get_concrete_function()

        @tf.function(input_signature=SPEC)
        def sort(x, beta):
            return tf.reduce_mean(tf.sort(x, axis=0)[beta:tf.shape(x)[0] - beta], axis=0)

        exact = {}
        for size in (3, 10, 50):
            with base._max_rows(size):  # pylint: disable=protected-access
                exact[size] = tf.function(lambda x, beta: trimmed_mean(x, beta=beta),
                                          input_signature=SPEC)
                exact[size].get_concrete_function()
        yield network, sort, exact


@pytest.mark.parametrize("kind", ["plain", "ties", "extreme"])
def test_sorting_network_equals_sort_bitwise(traced_trimmed_means, kind):
    """The network path averages the same sorted values in the same order as tf.sort."""
    network, sort, _ = traced_trimmed_means
    rng = np.random.default_rng(10 + len(kind))
    for n in list(range(1, 34)) + [47, 50, 63, 64, 65, 100, 127, 128, 129, 200, 256, 257]:
        x = network_inputs(kind, n, 21, rng)
        for beta in sorted({0, (n - 1) // 4, (n - 1) // 2}):
            got, want = network(x, beta).numpy(), sort(x, beta).numpy()
            assert np.array_equal(got, want, equal_nan=True), (n, beta, got, want)


@pytest.mark.parametrize("kind", ["plain", "extreme"])
def test_exact_size_network_equals_sort_bitwise(traced_trimmed_means, kind):
    """The branch for exactly the expected clients per round (pads resolved statically)
    averages the same sorted values in the same order as tf.sort."""
    _, sort, networks = traced_trimmed_means
    rng = np.random.default_rng(20 + len(kind))
    for exact, network in networks.items():
        for n in sorted({exact, exact - 1, 1}):
            x = network_inputs(kind, n, 21, rng)
            for beta in sorted({0, (n - 1) // 4, (n - 1) // 2}):
                got, want = network(x, beta).numpy(), sort(x, beta).numpy()
                assert np.array_equal(got, want, equal_nan=True), (exact, n, beta, got, want)


def test_factory_with_sorting_network(tff_context, small_network_threshold):  # noqa: F811
    rng = np.random.default_rng(4)
    values = [row for row in rng.standard_normal((9, 20)).astype(np.float32)]
    values[2] = np.full(20, np.inf, np.float32)
    # n₀ = 12 expected: networks for m ≤ 16 only; the 9 rows take the padded m = 16 one.
    output = helpers.run_once(TrimmedMeanFactory(beta=2, expected_clients=12), values)
    finite = np.sort(np.stack(values[:2] + values[3:]), axis=0)
    np.testing.assert_allclose(output.result, finite[2:6].mean(axis=0), rtol=1e-6)
    assert output.measurements["non_finite_clients"] == 1


def test_factory_default_beta_is_declared_f_and_measured(tff_context):
    values = [np.array([v], np.float32) for v in (1.0, 2.0, 6.0, 7.0, 100.0)]
    output = helpers.run_once(TrimmedMeanFactory(byzantine_fraction=0.2), values)
    np.testing.assert_allclose(output.result, [5.0])
    assert dict(output.measurements) == {"non_finite_clients": 0, "f": 1, "beta": 1}


def test_factory_explicit_beta_and_non_finite(tff_context):
    values = [np.array([v], np.float32) for v in (1.0, np.inf, 2.0, 6.0, 7.0, 100.0)]
    output = helpers.run_once(TrimmedMeanFactory(beta=2), values)
    np.testing.assert_allclose(output.result, [6.0])
    assert output.measurements["non_finite_clients"] == 1


def test_requirement_at_build():
    with pytest.raises(RequirementError, match="trimmed_mean needs 2\\*beta < n; got n=4"):
        TrimmedMeanFactory(beta=2, expected_clients=4)
    with pytest.raises(ValueError, match="beta must be an integer >= 0; got -1"):
        TrimmedMeanFactory(beta=-1)


def test_a_trimmed_mean_must_be_told_how_much_to_trim():
    """`TrimmedMeanFactory()` in one's own TFF code used to trim nothing (f from a declared
    fraction of 0) and equal the mean, silently; the registry always passes the fraction."""
    with pytest.raises(ValueError, match=r"^trimmed_mean: say how many values to trim: beta= "):
        TrimmedMeanFactory()
    with pytest.raises(ValueError, match="say how many values to trim"):
        TrimmedMeanFactory(weighted=True)
    TrimmedMeanFactory(f=1)  # any one of the three will do
    TrimmedMeanFactory(byzantine_fraction=0.0)  # an explicit 0 is a choice


def test_the_requirement_error_names_beta_when_beta_is_set():
    with pytest.raises(RequirementError, match=r"got n=4, beta=2 \(needs n >= 5\)"):
        TrimmedMeanFactory(beta=2, expected_clients=4)
