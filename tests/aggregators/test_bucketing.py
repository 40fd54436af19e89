"""Bucketing (and its FedLAW split variant): exact values, properties, composition in TFF."""

import collections

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from aggregators.base import RequirementError
from aggregators.bucketing import (Bucketing, SplitBucketingFactory, bucket, bucketing,
                                   seeded_permutation)
from aggregators.centered_clipping import CenteredClippingFactory
from aggregators.compose import ComposedFactory
from aggregators.median import MedianFactory, median
from tests.aggregators import helpers

# Inputs on which rules disagree (STYLE.md): mean 23.2, median 6, trimmed mean (f=1) 5.
DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)
SEED = tf.constant([0, 0], tf.int64)  # what the base factory passes in round 0 with seed=0


def numpy_bucket_means(x, order, s, weights=None):
    """Reference: consecutive buckets of s rows of `x[order]`, weighted means."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    means, sums = [], []
    for start in range(0, len(x), s):
        members = order[start:start + s]
        means.append(w[members] @ x[members] / w[members].sum())
        sums.append(w[members].sum())
    return np.array(means), np.array(sums)


def test_exact_bucket_means_of_the_seeded_permutation():
    order = seeded_permutation(tf.range(5), SEED).numpy()
    assert sorted(order) == [0, 1, 2, 3, 4]
    v = DISAGREE[order, 0]
    means = bucketing(DISAGREE, s=2, seed=SEED).numpy()[:, 0]
    np.testing.assert_allclose(means, [(v[0] + v[1]) / 2, (v[2] + v[3]) / 2, v[4]], rtol=1e-6)
    # Every client counted once: 2·m0 + 2·m1 + m2 = 116.
    np.testing.assert_allclose(2 * means[0] + 2 * means[1] + means[2], 116.0, rtol=1e-6)


def test_s_one_is_a_permutation_and_s_n_the_mean():
    np.testing.assert_array_equal(np.sort(bucketing(DISAGREE, s=1, seed=SEED).numpy(), 0),
                                  DISAGREE)
    np.testing.assert_allclose(bucketing(DISAGREE, s=5, seed=SEED), [[23.2]], rtol=1e-6)
    np.testing.assert_allclose(bucketing(DISAGREE, s=7, seed=SEED), [[23.2]], rtol=1e-6)


def test_seed_changes_the_buckets_deterministically():
    ids = tf.range(10)
    orders = {tuple(seeded_permutation(ids, tf.constant([0, r], tf.int64)).numpy())
              for r in range(5)}
    assert len(orders) > 1
    np.testing.assert_array_equal(seeded_permutation(ids, SEED), seeded_permutation(ids, SEED))


def test_weighted_buckets_ids_and_zero_weight_bucket():
    x = np.array([[1.0], [3.0], [10.0], [20.0]], np.float32)
    ids = tf.constant([7, 3, 9, 4])
    weights = tf.constant([1.0, 3.0, 0.0, 0.0])
    # For these ids the round-0 permutation happens to keep the row order: buckets {7, 3}, {9, 4}.
    np.testing.assert_array_equal(seeded_permutation(ids, SEED), [0, 1, 2, 3])
    means, bucket_weights, bucket_ids = bucket(x, weights, ids, s=2, seed=SEED)
    # (1·1 + 3·3)/4; the all-zero-weight bucket takes the plain mean (10 + 20)/2.
    np.testing.assert_allclose(means, [[2.5], [15.0]], rtol=1e-6)
    np.testing.assert_allclose(bucket_weights, [4.0, 0.0])
    np.testing.assert_array_equal(bucket_ids, [3, 4])  # smallest member id


def test_against_numpy_reference_on_random_inputs():
    rng = np.random.default_rng(0)
    for n, s in [(7, 2), (10, 3), (12, 4), (5, 5)]:
        x = rng.normal(size=(n, 3, 2)).astype(np.float32)
        w = rng.uniform(0.5, 3.0, size=n).astype(np.float32)
        ids = rng.permutation(100)[:n].astype(np.int32)
        seed = tf.constant([1, n], tf.int64)
        means, weights, _ = bucket(x.reshape(n, -1), w, ids, s=s, seed=seed)
        expected, expected_weights = numpy_bucket_means(x, seeded_permutation(ids, seed).numpy(),
                                                        s, w)
        assert means.shape[0] == -(-n // s)
        np.testing.assert_allclose(means, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights, expected_weights, rtol=1e-5)
        assert bucketing(x, s=s, seed=seed, client_ids=ids).shape == (-(-n // s), 3, 2)


def test_min_clients_is_the_inner_requirement_at_ceil_n_over_s():
    assert Bucketing(2).min_clients(3, 1) == 5  # ⌈5/2⌉ = 3, ⌈4/2⌉ = 2
    assert Bucketing(3).min_clients(1, 0) == 1
    assert Bucketing(1).min_clients(4, 0) == 4
    composed = ComposedFactory([Bucketing(2)], MedianFactory(f=1))
    assert composed.min_clients(1) == 5
    composed.check_requirement(5)
    with pytest.raises(RequirementError, match=r"bucketing\+median needs .*n=4, f=1"):
        composed.check_requirement(4)
    # Per round (tensors): the same arithmetic.
    assert int(Bucketing(2).min_clients(tf.constant(3), tf.constant(1))) == 5


@pytest.mark.parametrize("s, error, message", [
    (0, ValueError, r"^bucketing: s must be an integer >= 1; got 0\.$"),
    (2.0, TypeError, r"^bucketing: s must be an integer; got 2\.0\.$"),
    (True, TypeError, r"bucketing: s must be an integer; got True"),
])
def test_parameter_validation(s, error, message):
    with pytest.raises(error, match=message):
        Bucketing(s)
    with pytest.raises(error, match=message):
        bucketing(DISAGREE, s=s, seed=SEED)
    with pytest.raises(error, match=message):
        SplitBucketingFactory(MedianFactory(), s=s)


# --- properties ---------------------------------------------------------------------------

rows = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=3, max_side=9),
                  elements=dict(min_value=-1e3, max_value=1e3, allow_subnormal=False))
sizes = st.integers(1, 4)
seeds = st.integers(0, 2**31 - 1)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, sizes, seeds, st.randoms(use_true_random=False))
def test_permuting_clients_with_their_ids_changes_nothing(x, s, seed, rnd):
    n = len(x)
    ids = np.array(rnd.sample(range(1000), n), np.int32)
    order = list(range(n))
    rnd.shuffle(order)
    seed = tf.constant([seed, 3], tf.int64)
    a = bucket(x, np.ones(n, np.float32), ids, s=s, seed=seed)
    b = bucket(x[order], np.ones(n, np.float32), ids[order], s=s, seed=seed)
    for left, right in zip(a, b):
        np.testing.assert_array_equal(left, right)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, sizes, seeds, st.floats(-100, 100, width=32))
def test_translation_equivariance(x, s, seed, shift):
    seed = tf.constant([seed, 0], tf.int64)
    np.testing.assert_allclose(bucketing(x + np.float32(shift), s=s, seed=seed),
                               bucketing(x, s=s, seed=seed) + np.float32(shift),
                               rtol=1e-5, atol=1e-3)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, sizes, seeds)
def test_identical_inputs_and_the_weighted_sum_is_preserved(x, s, seed):
    seed = tf.constant([seed, 0], tf.int64)
    same = np.tile(x[:1], (len(x), 1))
    np.testing.assert_allclose(bucketing(same, s=s, seed=seed),
                               np.tile(x[:1], (-(-len(x) // s), 1)), rtol=1e-6)
    w = np.arange(1, len(x) + 1, dtype=np.float32)
    means, weights, _ = bucket(x, w, np.arange(len(x), dtype=np.int32), s=s, seed=seed)
    np.testing.assert_allclose(weights.numpy() @ means.numpy(), w @ x, rtol=1e-4, atol=1e-1)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, sizes, seeds, st.data())
def test_f_arbitrary_rows_contaminate_at_most_f_buckets(x, s, seed, data):
    n = len(x)
    f = data.draw(st.integers(1, n - 1))
    attacked = x.copy()
    attacked[data.draw(st.permutations(range(n)))[:f]] = np.float32(1e30)
    means = bucketing(attacked, s=s, seed=tf.constant([seed, 0], tf.int64)).numpy()
    contaminated = np.sum(np.any(np.abs(means) > 1e20, axis=1))
    assert 1 <= contaminated <= f


# --- composition in TFF and the split variant ---------------------------------------------

def nested(v):
    return collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[v, -v]], np.float32))


def test_bucketing_then_median_in_tff(tff_context):
    factory = ComposedFactory([Bucketing(s=2)], MedianFactory())
    values = [nested(v) for v in DISAGREE[:, 0]]
    process = helpers.build_process(factory, values[0])
    output = helpers.run_once(None, values, process=process, client_ids=[0, 1, 2, 3, 4])
    expected = median(bucketing(DISAGREE, s=2, seed=SEED)).numpy()[0]
    np.testing.assert_allclose(output.result["a"], [expected], rtol=1e-6)
    np.testing.assert_allclose(output.result["b"], [[expected, -expected]], rtol=1e-6)
    assert expected not in (6.0, 23.2)  # neither the median nor the mean of the clients
    assert list(output.measurements) == ["non_finite_clients", "f", "bucketing/buckets"]
    assert output.measurements["bucketing/buckets"] == 3
    signature = process.next.type_signature
    assert str(signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,bucketing/buckets=int32>@SERVER"
    assert str(signature.result.result) == "<a=float32[1],b=float32[1,2]>@SERVER"
    # Arrival order does not matter, only client ids.
    reversed_output = helpers.run_once(None, values[::-1], process=process,
                                       client_ids=[4, 3, 2, 1, 0])
    np.testing.assert_array_equal(reversed_output.result["a"], output.result["a"])


def test_split_variant_runs_the_rule_per_group():
    factory = SplitBucketingFactory(MedianFactory(), s=2)
    values = tf.constant(np.arange(1, 9, dtype=np.float32)[:, None] ** 2)  # 1, 4, ..., 64
    ids = tf.range(8)
    result, _, measurements = factory.aggregate(values, tf.fill([8], 1 / 8), ids, f=0,
                                                state=collections.OrderedDict(), seed=SEED)
    order = seeded_permutation(ids, SEED).numpy()
    groups = [values.numpy()[order[g::2]] for g in range(2)]
    expected = (np.median(groups[0]) + np.median(groups[1])) / 2
    np.testing.assert_allclose(result, [expected], rtol=1e-6)
    assert np.median(values) != expected
    assert list(measurements) == []  # median reports nothing per group


def test_split_variant_requirement_and_group_f():
    # f = 2, s = 2: f' = max(1, ⌊2/2⌋) = 1, so each group needs 3 clients: n >= 6.
    factory = SplitBucketingFactory(MedianFactory(f=2), s=2)
    assert factory.min_clients(2) == 6
    assert factory.min_clients(0) == 2  # f = 0 stays 0 in the groups
    factory.check_requirement(6)
    with pytest.raises(RequirementError, match=r"bucketing:variant=split\+median needs .*n=5"):
        factory.check_requirement(5)
    with pytest.raises(TypeError, match="RobustAggregationFactory"):
        SplitBucketingFactory(object(), s=2)


def test_split_variant_with_centered_clipping_two_rounds_in_tff(tff_context):
    """Each group starts from the global centre; the new centre is the mean of the groups'."""
    factory = SplitBucketingFactory(CenteredClippingFactory(tau=10.0), s=2)
    first = [np.array([v], np.float32) for v in (1.0, 2.0, 6.0, 7.0, 100.0, -50.0)]
    second = [np.array([v], np.float32) for v in (3.0, 30.0, 5.0, 9.0, 8.0, 4.0)]
    out1, out2 = helpers.run_rounds(factory, [first, second])

    def by_hand(values, center, seed):
        order = seeded_permutation(tf.range(6), seed).numpy()
        outputs = []
        for g in range(2):
            x = np.array(values)[order[g::2], 0]
            outputs.append(center + np.mean(np.clip(x - center, -10.0, 10.0)))
        return np.mean(outputs)

    v1 = by_hand(first, 0.0, tf.constant([0, 0], tf.int64))
    v2 = by_hand(second, v1, tf.constant([0, 1], tf.int64))
    np.testing.assert_allclose(out1.result, [v1], rtol=1e-6)
    np.testing.assert_allclose(out1.state["rule"]["center"], [v1], rtol=1e-6)
    np.testing.assert_allclose(out2.result, [v2], rtol=1e-6)
    assert list(out1.measurements) == ["non_finite_clients", "f", "group_0/clipped_clients",
                                       "group_1/clipped_clients"]
    assert out1.measurements["group_0/clipped_clients"] + \
        out1.measurements["group_1/clipped_clients"] == 2  # 100 and −50
