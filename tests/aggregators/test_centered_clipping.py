"""Centered clipping: exact values, a NumPy reference, properties, and the stateful factory."""

import collections

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from aggregators.base import RequirementError
from aggregators.centered_clipping import CenteredClippingFactory, centered_clipping
from tests.aggregators import helpers

# Inputs on which rules disagree (STYLE.md): mean 23.2, median 6, trimmed mean (f=1) 5.
DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)
SEED = tf.constant([0, 0], tf.int64)


def numpy_centered_clipping(x, center, weights=None, *, tau=10.0, iterations=1):
    """Reference: aggregators.md §1, in float64."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    p = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    p = p / p.sum()
    v = np.asarray(center, np.float64).reshape(-1)
    for _ in range(iterations):
        d = x - v
        norms = np.linalg.norm(d, axis=1)
        scale = np.minimum(1.0, tau / np.maximum(norms, 1e-300))
        v = v + (p * scale) @ d
    return v


def test_exact_values_from_zero():
    # Only 100 is farther than τ = 10 from 0: it counts as 10. (1 + 2 + 6 + 7 + 10)/5
    np.testing.assert_allclose(centered_clipping(DISAGREE, center=[0.0]), [5.2], rtol=1e-6)
    # Second iteration from 5.2: −4.2 − 3.2 + 0.8 + 1.8 + 10 (94.8 clipped) = 5.2; /5 = 1.04
    np.testing.assert_allclose(centered_clipping(DISAGREE, center=[0.0], iterations=2), [6.24],
                               rtol=1e-6)
    # τ = 0.1: every client is clipped to +0.1 from 0.
    np.testing.assert_allclose(centered_clipping(DISAGREE, center=[0.0], tau=0.1), [0.1],
                               rtol=1e-6)
    # τ larger than every distance: the mean.
    np.testing.assert_allclose(centered_clipping(DISAGREE, center=[0.0], tau=1000), [23.2],
                               rtol=1e-6)


def test_centre_matters():
    # From 6: distances 5, 4, 0, 1, 94 → −5 −4 + 0 + 1 + 10 = 2; 6 + 2/5
    np.testing.assert_allclose(centered_clipping(DISAGREE, center=[6.0]), [6.4], rtol=1e-6)


def test_weighted_exact_values():
    # p = (0.1, 0.1, 0.1, 0.1, 0.6) from 0: 0.1·(1+2+6+7) + 0.6·10 = 7.6
    np.testing.assert_allclose(centered_clipping(DISAGREE, [1, 1, 1, 1, 6], center=[0.0]), [7.6],
                               rtol=1e-6)


def test_against_numpy_reference_on_random_inputs():
    rng = np.random.default_rng(0)
    for n, shape in [(7, (3, 4)), (20, (5,))]:
        x = rng.normal(size=(n, *shape)).astype(np.float32) * 5
        center = rng.normal(size=shape).astype(np.float32)
        w = rng.uniform(0.5, 3.0, size=n)
        for tau, iterations in [(1.0, 1), (3.0, 3), (100.0, 2)]:
            got = centered_clipping(x, center=center, tau=tau, iterations=iterations).numpy()
            assert got.shape == shape
            np.testing.assert_allclose(got.reshape(-1), numpy_centered_clipping(
                x, center, tau=tau, iterations=iterations), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(
                centered_clipping(x, w, center=center, tau=tau, iterations=iterations).numpy()
                .reshape(-1),
                numpy_centered_clipping(x, center, w, tau=tau, iterations=iterations),
                rtol=1e-5, atol=1e-5)


def test_identical_inputs():
    x = np.tile(np.array([[3.0, -4.0]], np.float32), (5, 1))  # norm 5
    np.testing.assert_allclose(centered_clipping(x, center=[0.0, 0.0]), x[0], rtol=1e-6)
    # Farther than τ from the centre: each iteration moves τ towards the common input.
    np.testing.assert_allclose(centered_clipping(x, center=[0.0, 0.0], tau=2.0), [1.2, -1.6],
                               rtol=1e-6)
    np.testing.assert_allclose(centered_clipping(x, center=[0.0, 0.0], tau=2.0, iterations=3),
                               x[0], rtol=1e-6)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(tau=0), ValueError, r"^centered_clipping: tau must be a finite number > 0; got 0\.$"),
    (dict(tau=float("inf")), ValueError,
     r"centered_clipping: tau must be a finite number > 0; got inf"),
    (dict(tau="10"), TypeError, r"centered_clipping: tau must be a number; got '10'"),
    (dict(iterations=0), ValueError,
     r"^centered_clipping: iterations must be an integer >= 1; got 0\.$"),
    (dict(iterations=1.5), TypeError,
     r"centered_clipping: iterations must be an integer; got 1\.5"),
])
def test_parameter_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        CenteredClippingFactory(**kwargs)
    with pytest.raises(error, match=message):
        centered_clipping(DISAGREE, center=[0.0], **kwargs)


# --- properties ---------------------------------------------------------------------------

rows = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=3, max_side=8),
                  elements=dict(min_value=-1e3, max_value=1e3, allow_subnormal=False))
taus = st.sampled_from([0.5, 10.0, 1e4])


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, taus, st.randoms(use_true_random=False))
def test_permutation_invariance(x, tau, rnd):
    order = list(range(len(x)))
    rnd.shuffle(order)
    center = x.mean(0) / 2
    np.testing.assert_allclose(centered_clipping(x, center=center, tau=tau, iterations=2),
                               centered_clipping(x[order], center=center, tau=tau, iterations=2),
                               rtol=1e-5, atol=1e-3)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, taus, st.floats(-100, 100, width=32))
def test_translation_equivariance_with_the_centre(x, tau, shift):
    shift = np.float32(shift)
    center = x[0] / 3
    np.testing.assert_allclose(
        centered_clipping(x + shift, center=center + shift, tau=tau, iterations=2),
        centered_clipping(x, center=center, tau=tau, iterations=2) + shift, rtol=1e-4, atol=2e-2)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(rows, taus, st.data())
def test_f_arbitrary_rows_move_the_result_by_at_most_f_tau_over_n(x, tau, data):
    """One step: v = c + (1/n)·Σ_honest clip(x_i − c) + (1/n)·Σ_byz clip(…).

    Each clipped term has norm ≤ τ, so the f others move v by at most f·τ/n.
    """
    n = len(x)
    f = data.draw(st.integers(1, (n - 1) // 2))
    attacked = x.copy()
    attacked[:f] = data.draw(st.sampled_from([1e30, -1e30, 3e38]))
    center = np.zeros(x.shape[1], np.float32)
    honest = numpy_centered_clipping(x[f:], center, tau=tau) * (n - f) / n  # c = 0
    out = centered_clipping(attacked, center=center, tau=tau).numpy()
    assert np.all(np.isfinite(out))
    assert np.linalg.norm(out - honest) <= f * tau / n * (1 + 1e-5) + 1e-3


# --- the factory inside TFF ---------------------------------------------------------------

def nested(v):
    return collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[v, -v]], np.float32))


def test_two_rounds_carry_the_centre_against_numpy_and_signature(tff_context):
    rng = np.random.default_rng(3)
    first = [nested(v) for v in DISAGREE[:, 0]]
    second = [nested(v) for v in rng.normal(size=6).astype(np.float32) * 20]
    process = helpers.build_process(CenteredClippingFactory(tau=10.0), first[0])
    out1, out2 = helpers.run_rounds(None, [first, second], process=process)

    def as_rows(values):
        return np.stack([np.concatenate([v["a"], v["b"].reshape(-1)]) for v in values])

    v1 = numpy_centered_clipping(as_rows(first), np.zeros(3))
    # By hand: rows v·(1, 1, −1) have norm v√3 > 10 for v = 6, 7, 100, so the centre moves
    # (1√3 + 2√3 + 10 + 10 + 10)/5 along (1, 1, −1)/√3: a = 0.6 + 2√3.
    np.testing.assert_allclose(v1, (0.6 + 2 * np.sqrt(3)) * np.array([1, 1, -1]), rtol=1e-12)
    v2 = numpy_centered_clipping(as_rows(second), v1)
    np.testing.assert_allclose(out1.result["a"], v1[:1], rtol=1e-5)
    np.testing.assert_allclose(out1.result["b"], [v1[1:]], rtol=1e-5)
    np.testing.assert_allclose(out1.state["rule"]["center"], v1, rtol=1e-5)
    np.testing.assert_allclose(out2.result["a"], v2[:1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out2.result["b"], [v2[1:]], rtol=1e-5, atol=1e-5)
    assert out1.measurements["clipped_clients"] == 3  # the clients at 6, 7 and 100 (·(1,1,−1))
    assert list(out1.measurements) == ["non_finite_clients", "f", "clipped_clients"]
    signature = process.next.type_signature
    assert str(signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,clipped_clients=int32>@SERVER"
    assert str(signature.result.result) == "<a=float32[1],b=float32[1,2]>@SERVER"
    assert str(process.initialize.type_signature.result) == \
        "<round=int64,rule=<center=float32[3]>>@SERVER"
    np.testing.assert_array_equal(process.initialize()["rule"]["center"], np.zeros(3))


def test_factory_aggregate_weighted_and_state():
    """`aggregate` is plain TF: checked eagerly, without building a TFF process."""
    factory = CenteredClippingFactory(weighted=True)
    state = factory.initial_state(1)
    weights = tf.constant([0.1, 0.1, 0.1, 0.1, 0.6])
    result, new_state, measurements = factory.aggregate(DISAGREE, weights, tf.range(5), f=0,
                                                        state=state, seed=SEED)
    np.testing.assert_allclose(result, [7.6], rtol=1e-6)
    np.testing.assert_allclose(new_state["center"], [7.6], rtol=1e-6)
    assert int(measurements["clipped_clients"]) == 1
    # Unweighted: the weights are ignored, p = 1/n.
    result, _, _ = CenteredClippingFactory().aggregate(DISAGREE, weights, tf.range(5), f=0,
                                                       state=state, seed=SEED)
    np.testing.assert_allclose(result, [5.2], rtol=1e-6)


def test_requirement_checked_at_build(tff_context):
    with pytest.raises(RequirementError, match=r"centered_clipping needs f < n/2.*n=4, f=2"):
        CenteredClippingFactory(byzantine_fraction=0.4, expected_clients=4)
