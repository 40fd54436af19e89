"""Coordinate-wise median: exact values, properties, and the TFF factory."""

import collections

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest

import tensorflow as tf
import tensorflow_federated as tff

from aggregators import base
from aggregators import median as median_module
from aggregators.base import RequirementError
from aggregators.median import MedianFactory, median, weighted_median
from tff_byz import collection
from tests.aggregators import helpers

# Inputs on which rules disagree (STYLE.md): mean 23.2, median 6, trimmed mean (f=1) 5.
DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)


def test_odd_n():
    np.testing.assert_array_equal(median(DISAGREE), [6.0])


def test_even_n_mean_and_lower():
    np.testing.assert_array_equal(median(DISAGREE[:4]), [4.0])
    np.testing.assert_array_equal(median(DISAGREE[:4], even="lower"), [2.0])


def test_per_coordinate_with_ties():
    x = np.array([[1, 5], [1, 3], [2, 3], [9, 3]], np.float32)
    np.testing.assert_array_equal(median(x), [1.5, 3.0])  # (1+2)/2; 3 tied


def test_weighted_exact_values():
    np.testing.assert_array_equal(weighted_median(DISAGREE, np.ones(5)), [6.0])
    # cumulative 1/6, 2/6, 3/6 (= 1/2 exactly at 6: average with 7), 1
    np.testing.assert_allclose(weighted_median(DISAGREE[:4], [1, 1, 1, 3]), [6.5])
    # the heavy client alone holds more than half the mass
    np.testing.assert_array_equal(weighted_median(DISAGREE, [1, 1, 1, 1, 10]), [100.0])


def test_weighted_equal_weights_equals_unweighted_even():
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    np.testing.assert_allclose(weighted_median(x, np.ones(6)), median(x), rtol=1e-6)


def test_invalid_even():
    with pytest.raises(ValueError, match="even"):
        median(DISAGREE, even="upper")


rows = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=3, max_side=8),
                  elements=dict(min_value=-1e3, max_value=1e3))


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(rows, hypothesis.strategies.randoms(use_true_random=False))
def test_permutation_invariance(x, rnd):
    order = list(range(len(x)))
    rnd.shuffle(order)
    np.testing.assert_array_equal(median(x), median(x[order]))


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(rows, hypothesis.strategies.floats(-100, 100, width=32))
def test_translation_equivariance(x, shift):
    np.testing.assert_allclose(median(x + np.float32(shift)), median(x) + np.float32(shift),
                               atol=1e-3)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(rows, hypothesis.strategies.sampled_from([1e30, -1e30, 3e38]))
def test_up_to_f_huge_rows_stay_within_honest_range(x, huge):
    n = len(x)
    f = (n - 1) // 2
    attacked = x.copy()
    attacked[:f] = huge
    honest = x[f:]
    out = median(attacked).numpy()
    assert np.all(out >= honest.min(0) - 1e-3) and np.all(out <= honest.max(0) + 1e-3)


def test_identical_inputs_return_that_input():
    x = np.tile(np.array([[1.5, -2.0, 3.0]], np.float32), (5, 1))
    np.testing.assert_array_equal(median(x), x[0])


# --- the sorting-network path (graph mode, many columns) ----------------------------------

def network_inputs(kind, n, d, rng):
    """Rows for network-vs-sort comparisons: plain, heavy ties (incl. ±0), extremes."""
    if kind == "ties":
        x = rng.integers(-2, 3, (n, d)).astype(np.float32)
        x[rng.random((n, d)) < 0.2] = -0.0
        return x
    x = rng.standard_normal((n, d)).astype(np.float32)
    if kind == "extreme":
        x[rng.random((n, d)) < 0.1] = np.inf
        x[rng.random((n, d)) < 0.1] = -np.inf
        x[rng.random((n, d)) < 0.1] = np.finfo(np.float32).max
    return x


@pytest.fixture
def small_network_threshold(monkeypatch):
    """Sorting networks from 8 columns on, in chunks of a few columns (several per call)."""
    small_networks(monkeypatch)


D = 21  # three chunks for m = 64 and 128, the last one partial
SPEC = tf.TensorSpec([None, D], tf.float32)
EXACT_SIZES = (2, 3, 7, 8, 13, 50, 64, 100)


def small_networks(patch):
    """Sorting networks from 8 columns on, in chunks of a few columns (several per call)."""
    patch.setattr(median_module, "NETWORK_MIN_COLUMNS", 8)
    patch.setattr(median_module, "NETWORK_CHUNK_FLOATS", 64 * 8)


@pytest.fixture(scope="module")
def traced_medians():
    """The median through the networks (padded for any n, and one graph per exact n₀) and
    through sorting, traced once for every kind of input: the graphs holding the networks
    for n = 1 … 128 take most of these tests' time to build."""
    with pytest.MonkeyPatch.context() as patch:
        small_networks(patch)
        network = tf.function(lambda x: (median(x), median(x, even="lower")), input_signature=[SPEC])
        sort = tf.function(lambda x: (median_module._sorted_median(x, "mean"),  # pylint: disable=protected-access
                                      median_module._sorted_median(x, "lower")),  # pylint: disable=protected-access
                           input_signature=[SPEC])
        exact = {}
        for size in EXACT_SIZES:
            with base._max_rows(size):  # pylint: disable=protected-access
                exact[size] = tf.function(lambda x: (median(x), median(x, even="lower")),
                                          input_signature=[SPEC])
                exact[size].get_concrete_function()
        network.get_concrete_function()
        yield network, sort, exact


@pytest.mark.parametrize("kind", ["plain", "ties", "extreme"])
def test_sorting_network_equals_sort_bitwise(traced_medians, kind):
    """Every network size (n = 1 … 128), the tf.sort fallback above, odd/even n: the
    same values as sorting, in both even modes. (−0 and +0 compare equal, so which of
    the two a tie yields may differ: sorts order them arbitrarily too.)"""
    network, sort, _ = traced_medians
    rng = np.random.default_rng(len(kind))
    for n in list(range(1, 34)) + [47, 50, 63, 64, 65, 100, 127, 128, 129, 200, 256, 257]:
        x = network_inputs(kind, n, D, rng)
        for got, want in zip(network(x), sort(x)):
            got, want = got.numpy(), want.numpy()
            assert np.array_equal(got, want, equal_nan=True), (n, got, want)


@pytest.mark.parametrize("kind", ["plain", "ties", "extreme"])
def test_exact_size_network_equals_sort_bitwise(traced_medians, kind):
    """With the clients per round known (n₀), the branch for exactly n₀ rows (its pads
    resolved when the graph is built) gives the same values as sorting; other n still
    take the padded networks."""
    _, sort, networks = traced_medians
    rng = np.random.default_rng(7 + len(kind))
    for exact, network in networks.items():
        for n in sorted({exact, exact - 1, 1, max(1, exact // 2)}):
            x = network_inputs(kind, n, D, rng)
            for got, want in zip(network(x), sort(x)):
                got, want = got.numpy(), want.numpy()
                assert np.array_equal(got, want, equal_nan=True), (exact, n, got, want)


def test_exact_network_programs_count_fewer_comparators():
    """n = 50 on 64 wires: 403 of Batcher's 543 comparators remain once the 14 pads are
    resolved statically (330 for the two median wires, against 445 padded)."""
    compare = lambda program: sum(1 for op in program if op[0] == 1)  # noqa: E731
    assert len(median_module.batcher_pairs(64)) == 543
    assert compare(median_module.network_program(64, 50, None)) == 403
    assert compare(median_module.network_program(64, 50, (24, 25))) == 330
    assert len(median_module._needed_pairs(64, (31, 32))) == 445  # pylint: disable=protected-access


def test_factory_with_sorting_network(tff_context, small_network_threshold):
    rng = np.random.default_rng(3)
    values = [row for row in rng.standard_normal((9, 20)).astype(np.float32)]
    values[4] = np.full(20, np.nan, np.float32)
    # n₀ = 12 expected: the networks for m ≤ 16 are built (not all up to 256, which takes
    # seconds), and the 9 rows take the padded m = 16 network, not the exact-n₀ branch.
    output = helpers.run_once(MedianFactory(expected_clients=12), values)
    finite = np.stack(values[:4] + values[5:])
    np.testing.assert_allclose(output.result, np.median(finite, axis=0), rtol=1e-6)
    assert output.measurements["non_finite_clients"] == 1


# --- the factory inside TFF ---------------------------------------------------------------

NESTED = [collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[v, -v]], np.float32))
          for v in (1.0, 2.0, 6.0, 7.0, 100.0)]


def test_factory_on_nested_values_and_signature(tff_context):
    output = helpers.run_once(MedianFactory(), NESTED)
    np.testing.assert_array_equal(output.result["a"], [6.0])
    np.testing.assert_array_equal(output.result["b"], [[6.0, -6.0]])
    assert list(output.measurements) == ["non_finite_clients", "f"]
    process = helpers.build_process(MedianFactory(), NESTED[0])
    signature = process.next.type_signature
    assert str(signature.result.measurements) == "<non_finite_clients=int32,f=int32>@SERVER"
    assert str(signature.result.result) == "<a=float32[1],b=float32[1,2]>@SERVER"
    assert str(process.initialize.type_signature.result) == "<round=int64,rule=<>>@SERVER"
    assert output.state["round"] == 1


def test_factory_excludes_non_finite_rows_and_counts_them(tff_context):
    values = [np.array([v], np.float32) for v in (1.0, np.nan, 6.0, np.inf, 100.0, 7.0, 2.0)]
    output = helpers.run_once(MedianFactory(byzantine_fraction=0.3), values)
    assert output.measurements["non_finite_clients"] == 2
    assert output.measurements["f"] == 1  # ⌈0.3·7⌉ = 3, minus the 2 excluded
    np.testing.assert_array_equal(output.result, [6.0])


def test_factory_order_does_not_matter(tff_context):
    values = [np.array([v, -v], np.float32) for v in (1.0, 2.0, 6.0, 7.0)]
    a = helpers.run_once(MedianFactory(), values, client_ids=[0, 1, 2, 3]).result
    b = helpers.run_once(MedianFactory(), values[::-1], client_ids=[3, 2, 1, 0]).result
    np.testing.assert_array_equal(a, b)


def test_weighted_factory_uses_example_counts(tff_context):
    values = [np.array([v], np.float32) for v in (1.0, 2.0, 6.0, 7.0)]
    output = helpers.run_once(MedianFactory(weighted=True), values, weights=[1, 1, 1, 3])
    np.testing.assert_allclose(output.result, [6.5])


def test_requirement_checked_at_build_and_each_round(tff_context):
    with pytest.raises(RequirementError, match=r"median needs f < n/2.*n=4, f=2"):
        MedianFactory(byzantine_fraction=0.4, expected_clients=4)
    factory = MedianFactory(f=2)
    with pytest.raises(Exception, match="median needs"):
        helpers.run_once(factory, [np.array([1.0], np.float32)] * 4)


def test_plain_tff_use_without_client_records(tff_context):
    """Composes like MeanFactory: `create(value_type, weight_type)` on plain values."""
    process = MedianFactory().create(tff.TensorType(np.float32, [2]), tff.TensorType(np.float32))
    out = process.next(process.initialize(), [np.array([v, v], np.float32) for v in (3, 1, 2)],
                       [np.float32(1)] * 3)
    np.testing.assert_array_equal(out.result, [2.0, 2.0])


def test_many_clients_fill_several_stacking_blocks(tff_context):
    """More clients than one accumulator block: every row arrives, sorted by id."""
    n = 2 * collection.NUM_BLOCKS + 5
    values = [np.array([float(i)], np.float32) for i in range(n)]
    ids = list(np.random.default_rng(0).permutation(n))
    output = helpers.run_once(MedianFactory(), values, client_ids=ids)
    np.testing.assert_array_equal(output.result, [np.median(np.arange(n))])
