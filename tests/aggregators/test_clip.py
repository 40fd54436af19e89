"""Norm clipping (`clip`, `arc`, `clip:adaptive`): exact values, properties, and TFF."""

import collections
import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from aggregators.base import RequirementError
from aggregators.clip import (ARC, AdaptiveClippingFactory, NormClip, adaptive_clipping_factory,
                              arc, norm_clip, row_norms)
from aggregators.compose import ComposedFactory
from aggregators.median import MedianFactory
from aggregators.trimmed_mean import TrimmedMeanFactory
from tests.aggregators import helpers

# Inputs on which rules disagree (STYLE.md): mean 23.2, median 6, trimmed mean (f=1) 5.
DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)
SEED = tf.constant([0, 0], tf.int64)


def numpy_arc(x, f):
    """Reference: Allouah et al. 2024, k = ⌊2(f/n)(n − f)⌋ (float64)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    k = int(math.floor(2 * (f / n) * (n - f) + 1e-9))
    norms = np.linalg.norm(x, axis=1)
    threshold = np.sort(norms)[::-1][k]
    return x * np.minimum(1.0, threshold / np.maximum(norms, 1e-300))[:, None]


# --- static clipping ----------------------------------------------------------------------

def test_norm_clip_exact_values():
    x = np.array([[3, 4], [0.3, 0.4], [0, 0], [6, 8]], np.float32)
    np.testing.assert_allclose(norm_clip(x, c=5), [[3, 4], [0.3, 0.4], [0, 0], [3, 4]],
                               rtol=1e-6)
    # 1-D: [1, 2, 5, 5, 5]; their mean 3.6 (mean 23.2, median 6 before clipping).
    np.testing.assert_allclose(norm_clip(DISAGREE, c=5)[:, 0], [1, 2, 5, 5, 5])
    clipped, weights, ids, measurements = NormClip(5).transform(
        tf.constant(DISAGREE), tf.fill([5], 0.2), tf.range(5), f=0, seed=SEED)
    np.testing.assert_allclose(tf.reduce_mean(clipped), 3.6, rtol=1e-6)
    # 6, 7 and 100 exceed 5.
    assert int(measurements["clipped_clients"]) == 3 and list(measurements) == ["clipped_clients"]
    np.testing.assert_array_equal(ids, tf.range(5))
    np.testing.assert_allclose(weights, tf.fill([5], 0.2))


def test_norm_clip_of_huge_rows_is_exact():
    x = np.array([[1e30, -1e30], [3e38, 0]], np.float32)
    out = norm_clip(x, c=2.0).numpy()
    np.testing.assert_allclose(out, [[np.sqrt(2), -np.sqrt(2)], [2.0, 0]], rtol=1e-6)
    np.testing.assert_allclose(row_norms(x), [np.sqrt(2) * 1e30, 3e38], rtol=1e-6)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1,
                                                          max_side=6),
                             elements=dict(min_value=-1e3, max_value=1e3, allow_subnormal=False)),
                  st.floats(0.1, 100.0))
def test_norm_clip_properties(x, c):
    out = norm_clip(x, c=c).numpy()
    rows, clipped_rows = x.reshape(len(x), -1), out.reshape(len(x), -1)
    norms = np.linalg.norm(rows, axis=1)
    assert np.all(np.linalg.norm(clipped_rows, axis=1) <= c * (1 + 1e-5))
    np.testing.assert_array_equal(clipped_rows[norms <= c * (1 - 1e-6)],
                                  rows[norms <= c * (1 - 1e-6)])
    np.testing.assert_allclose(clipped_rows, rows * np.minimum(1, c / np.maximum(norms, 1e-30))[
        :, None], rtol=1e-5, atol=1e-6)


# --- ARC --------------------------------------------------------------------------------

def test_arc_exact_values():
    # f = 1: k = ⌊2·4/5⌋ = 1: 100 clipped to the 2nd largest norm 7 → mean 4.6.
    np.testing.assert_allclose(arc(DISAGREE, f=1)[:, 0], [1, 2, 6, 7, 7])
    # f = 2: k = ⌊2·2·3/5⌋ = 2: 100 and 7 clipped to 6.
    np.testing.assert_allclose(arc(DISAGREE, f=2)[:, 0], [1, 2, 6, 6, 6])
    np.testing.assert_array_equal(arc(DISAGREE, f=0), DISAGREE)
    # Ties at the threshold: k = ⌊2·3/4⌋ = 1, the 2nd largest norm is also 5: nothing changes.
    tied = np.array([[5.0], [-5.0], [5.0], [1.0]], np.float32)
    np.testing.assert_array_equal(arc(tied, f=1), tied)
    _, _, _, measurements = ARC().transform(tf.constant(tied), tf.fill([4], 0.25), tf.range(4),
                                            f=1, seed=SEED)
    assert int(measurements["clipped_clients"]) == 0
    np.testing.assert_allclose(measurements["clipping_norm"], 5.0)


def test_arc_against_numpy_reference():
    rng = np.random.default_rng(0)
    for n in (5, 10, 21):
        x = (rng.normal(size=(n, 3, 2)) * rng.uniform(0.1, 10, size=(n, 1, 1))).astype(np.float32)
        for f in range(0, (n + 1) // 2):
            got = arc(x, f=f).numpy()
            assert got.shape == x.shape
            np.testing.assert_allclose(got.reshape(n, -1), numpy_arc(x, f), rtol=1e-5, atol=1e-6)


def test_arc_requirement():
    assert ARC().min_clients(1, 2) == 5
    assert ARC().min_clients(7, 2) == 7  # the inner rule's requirement dominates
    assert int(ARC().min_clients(tf.constant(1), tf.constant(2))) == 5
    with pytest.raises(Exception, match="arc needs f < n/2"):
        arc(DISAGREE, f=3)
    composed = ComposedFactory([ARC()], TrimmedMeanFactory(beta=0, f=2))
    with pytest.raises(RequirementError, match=r"arc\+trimmed_mean needs f < n/2.*n=4, f=2"):
        composed.check_requirement(4)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=3,
                                                          max_side=9),
                             elements=dict(min_value=-1e3, max_value=1e3, allow_subnormal=False)),
                  st.data())
def test_arc_properties(x, data):
    n = len(x)
    f = data.draw(st.integers(0, (n - 1) // 2))
    k = (2 * f * (n - f)) // n
    out = arc(x, f=f).numpy()
    norms = np.linalg.norm(x, axis=1)
    threshold = np.sort(norms)[::-1][k]
    assert np.sum(np.any(out != x, axis=1)) <= k  # at most k rows change
    assert np.all(np.linalg.norm(out, axis=1) <= threshold * (1 + 1e-5) + 1e-6)
    order = data.draw(st.permutations(range(n)))
    np.testing.assert_array_equal(arc(x[order], f=f), out[order])  # row-wise equivariant


def test_arc_then_mean_in_tff(tff_context):
    factory = ComposedFactory([ARC()], TrimmedMeanFactory(beta=0, byzantine_fraction=0.2))
    values = [collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[0.0, 0.0]],
                                                                               np.float32))
              for v in DISAGREE[:, 0]]
    process = helpers.build_process(factory, values[0])
    output = helpers.run_once(None, values, process=process)
    # f = ⌈0.2·5⌉ = 1: [1, 2, 6, 7, 7], mean 4.6 (the plain mean would be 23.2).
    np.testing.assert_allclose(output.result["a"], [4.6], rtol=1e-6)
    assert list(output.measurements) == ["non_finite_clients", "f", "arc/clipped_clients",
                                         "arc/clipping_norm", "beta"]
    assert output.measurements["arc/clipped_clients"] == 1
    np.testing.assert_allclose(output.measurements["arc/clipping_norm"], 7.0)
    assert str(process.next.type_signature.result.measurements) == (
        "<non_finite_clients=int32,f=int32,arc/clipped_clients=int32,arc/clipping_norm=float32,"
        "beta=int32>@SERVER")


def test_clip_then_median_in_tff(tff_context):
    factory = ComposedFactory([NormClip(c=5)], MedianFactory())
    values = [np.array([v, 0.0], np.float32) for v in (1.0, -2.0, 6.0, 7.0, 100.0, 4.0)]
    output = helpers.run_once(factory, values)
    np.testing.assert_allclose(output.result, [4.5, 0.0])  # [1, −2, 5, 5, 5, 4]: (4 + 5)/2
    assert output.measurements["clip/clipped_clients"] == 3


@pytest.mark.parametrize("build, error, message", [
    (lambda: NormClip(0), ValueError, r"^clip: c must be a finite number > 0; got 0\.$"),
    (lambda: NormClip(-1.0), ValueError, r"^clip: c must be a finite number > 0; got -1\.0\.$"),
    (lambda: NormClip("5"), TypeError, r"^clip: c must be a number; got '5'\.$"),
    (lambda: norm_clip(DISAGREE, c=0), ValueError, r"clip: c must be a finite number > 0; got 0"),
    (lambda: arc(DISAGREE, f=-1), ValueError, r"^arc: f must be an integer >= 0; got -1\.$"),
    (lambda: arc(DISAGREE, f=0.5), TypeError, r"^arc: f must be an integer; got 0\.5\.$"),
    (lambda: adaptive_clipping_factory(MedianFactory(), target_quantile=1.5), ValueError,
     r"^clip:adaptive: target_quantile must be in \[0, 1\]; got 1\.5\.$"),
    (lambda: adaptive_clipping_factory(MedianFactory(), initial_norm=0), ValueError,
     r"^clip:adaptive: initial_norm must be a finite number > 0; got 0\.$"),
    (lambda: adaptive_clipping_factory(MedianFactory(), learning_rate=-0.2), ValueError,
     r"^clip:adaptive: learning_rate must be a finite number > 0; got -0\.2\.$"),
    (lambda: adaptive_clipping_factory("median"), TypeError,
     r"clip:adaptive: inner_factory must be a TFF aggregation factory; got str"),
])
def test_parameter_validation(build, error, message):
    with pytest.raises(error, match=message):
        build()


# --- clip:adaptive ----------------------------------------------------------------------

def next_norm(norm, norms):
    """TFF's no-noise geometric quantile update, target 0.8, learning rate 0.2."""
    below = np.mean(np.asarray(norms) <= norm)
    return norm * np.exp(-0.2 * (below - 0.8))


def test_adaptive_clipping_around_tff_mean(tff_context):
    factory = adaptive_clipping_factory(tff.aggregators.MeanFactory())
    assert isinstance(factory, tff.aggregators.WeightedAggregationFactory)
    rounds = [[np.array([v, 0.0], np.float32) for v in (0.5, 2.0, -3.0)]] * 2
    out1, out2 = helpers.run_rounds(factory, rounds)
    # Round 1 at norm 1.0: [0.5, 1, −1] → mean 1/6; 1 of 3 norms ≤ 1.
    np.testing.assert_allclose(out1.result, [0.5 / 3, 0.0], rtol=1e-5)
    np.testing.assert_allclose(out1.measurements["clipping_norm"], 1.0)
    assert out1.measurements["clipped_count"] == 2
    c2 = next_norm(1.0, [0.5, 2.0, 3.0])  # exp(0.2·(0.8 − 1/3)) ≈ 1.0978
    np.testing.assert_allclose(out2.measurements["clipping_norm"], c2, rtol=1e-5)
    np.testing.assert_allclose(out2.result, [(0.5 + c2 - c2) / 3, 0.0], rtol=1e-5, atol=1e-7)


def test_adaptive_clipping_keeps_client_records_for_robust_rules(tff_context):
    factory = adaptive_clipping_factory(MedianFactory())
    assert isinstance(factory, AdaptiveClippingFactory)
    values = [collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[0.0, 0.0]],
                                                                               np.float32))
              for v in (-3.0, 0.5, 0.7, 6.0, 100.0)]
    process = helpers.build_process(factory, values[0])
    out1, out2 = helpers.run_rounds(None, [values, values], process=process,
                                    client_ids=[4, 0, 3, 1, 2])
    # Round 1 at norm 1: [−1, 0.5, 0.7, 1, 1] → median 0.7; 2 of 5 norms ≤ 1.
    np.testing.assert_allclose(out1.result["a"], [0.7], rtol=1e-6)
    assert out1.measurements["clipped_count"] == 3
    assert list(out1.measurements) == ["clipping", "clipping_norm", "clipped_count"]
    assert list(out1.measurements["clipping"]) == ["non_finite_clients", "f"]
    c2 = next_norm(1.0, [3.0, 0.5, 0.7, 6.0, 100.0])
    np.testing.assert_allclose(out2.measurements["clipping_norm"], c2, rtol=1e-5)
    np.testing.assert_allclose(out2.result["a"], [0.7], rtol=1e-6)
    assert out2.state["inner_agg"]["round"] == 2  # the inner rule's state is carried
    signature = process.next.type_signature
    assert str(signature.result.result) == "<a=float32[1],b=float32[1,2]>@SERVER"
    assert str(signature.result.measurements) == (
        "<clipping=<non_finite_clients=int32,f=int32>,clipping_norm=float32,"
        "clipped_count=int32>@SERVER")
    assert str(process.initialize.type_signature.result).startswith("<clipping_norm=<")
