"""CAF, MDA and SMEA: exact values, NumPy references, the subset limit, the TFF factories."""

import itertools
import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from aggregators.build import AggregatorContext, build_aggregator
from aggregators.base import RequirementError
from aggregators.caf import CAFFactory, caf
from aggregators.subsets import MDAFactory, SMEAFactory, mda, smea, subsets
from tests.aggregators import helpers

DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)
# MDA and SMEA disagree here (n = 5, f = 2): {8, 9, 5} has the smallest diameter (4),
# {3, 1, 5} the smallest variance (8/3 against 26/9).
SPLIT = np.array([[8.0], [9.0], [3.0], [1.0], [5.0]], np.float32)


# --- NumPy references ---------------------------------------------------------------------

def reference_best_subset(x, f, score):
    """The mean of the first (lexicographic) (n − f)-subset of lowest `score(rows)`."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    combos = list(itertools.combinations(range(len(x)), len(x) - f))
    scores = [score(flat[list(c)]) for c in combos]
    best = combos[int(np.argmin(scores))]
    return flat[list(best)].mean(0).reshape(np.shape(x)[1:]), best


def diameter(rows):
    return max(np.sum((a - b) ** 2) for a in rows for b in rows)


def top_eigenvalue(rows):
    centred = rows - rows.mean(0)
    return np.linalg.eigvalsh(centred.T @ centred / len(rows)).max()


def reference_caf(x, f):
    """The filter written with the D × D covariance (aggregators/caf.py's module doc)."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(flat)
    c = np.ones(n)
    best, best_lambda = flat.mean(0), math.inf
    for _ in range(n + 1):
        if c.sum() <= n - 2 * f:
            break
        mu = c @ flat / c.sum()
        centred = flat - mu
        eigenvalues, eigenvectors = np.linalg.eigh((c[:, None] * centred).T @ centred / c.sum())
        if eigenvalues[-1] < best_lambda:
            best, best_lambda = mu, eigenvalues[-1]
        if eigenvalues[-1] <= 0:
            break
        tau = (centred @ eigenvectors[:, -1]) ** 2
        tau_max = tau[c > 0].max()
        if tau_max <= 0:
            break
        c = np.where(c > 0, np.maximum(c * (1 - tau / tau_max), 0), 0)
    return best.reshape(np.shape(x)[1:])


# --- exact values -------------------------------------------------------------------------

def test_subsets_come_in_combinations_order():
    for n, k in [(5, 3), (6, 6), (4, 1), (7, 4)]:
        np.testing.assert_array_equal(subsets(n, k),
                                      list(itertools.combinations(range(n), k)))


def test_mda_and_smea_exact_values():
    np.testing.assert_allclose(mda(DISAGREE, f=1), [4.0])  # 1, 2, 6, 7
    np.testing.assert_allclose(smea(DISAGREE, f=1), [4.0])
    np.testing.assert_allclose(mda(SPLIT, f=2), [22 / 3], rtol=1e-6)
    np.testing.assert_allclose(smea(SPLIT, f=2), [3.0], rtol=1e-6)
    np.testing.assert_allclose(mda(SPLIT, f=0), [5.2], rtol=1e-6)  # all: the mean


def test_equal_scores_go_to_the_first_subset():
    # {0, 2} and {2, 4} both have diameter 2 and variance 1: the first, {0, 2}, wins.
    x = np.array([[0.0], [2.0], [4.0]], np.float32)
    np.testing.assert_allclose(mda(x, f=1), [1.0])
    np.testing.assert_allclose(smea(x, f=1), [1.0])


def test_caf_exact_values():
    # x = 0, 1, 3, f = 1 (stop once Σc ≤ 1). Pass 1: μ = 4/3, λ = 14/9, τ = 16/9, 1/9, 25/9:
    # c = 9/25, 24/25, 0. Pass 2: μ = 8/11 with λ ≈ 0.198 < 14/9 (kept); τ_max over the active
    # clients is (8/11)²: c = 0, 0.825, 0, Σc ≤ 1: stop.
    np.testing.assert_allclose(caf(np.array([[0.0], [1.0], [3.0]], np.float32), f=1),
                               [8 / 11], rtol=1e-6)
    # x = 0, 0, 3: pass 1 leaves c = 3/4, 3/4, 0; pass 2 has λ = 0: the mean of the zeros.
    np.testing.assert_allclose(caf(np.array([[0.0], [0.0], [3.0]], np.float32), f=1), [0.0],
                               atol=1e-7)
    # f = 0: no pass, the plain mean.
    np.testing.assert_allclose(caf(DISAGREE, f=0), [23.2], rtol=1e-6)


def test_caf_drops_a_far_outlier_in_two_dimensions():
    x = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [50, 50]], np.float32)
    np.testing.assert_allclose(caf(x, f=1), reference_caf(x, 1), rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(caf(x, f=1).numpy()) < 1.0)


# --- the subset limit ---------------------------------------------------------------------

def test_the_subset_limit_is_refused_when_built_and_each_round():
    assert math.comb(16, 6) == 8008
    MDAFactory(f=6, expected_clients=16)
    with pytest.raises(RequirementError, match=r"^mda scores C\(n, f\) = 480,700 subsets for "
                                               r"n=25, f=7; the limit is max_subsets=100,000 "
                                               r"\(it is exact and exponential in f\)\.$"):
        MDAFactory(f=7, expected_clients=25)
    with pytest.raises(RequirementError, match=r"smea scores C\(n, f\) = 8,008 subsets .* "
                                               r"max_subsets=8,000"):
        SMEAFactory(f=6, expected_clients=16, max_subsets=8000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than max_subsets=9"):
        mda(DISAGREE, f=2, max_subsets=9)  # C(5, 2) = 10
    with pytest.raises(RequirementError, match="mda scores C"):
        build_aggregator("mda:max_subsets=10", AggregatorContext(
            declared_byzantine_fraction=0.375, clients_per_round=16))


def test_validation():
    with pytest.raises(ValueError, match="mda: max_subsets must be an integer >= 1; got 0"):
        MDAFactory(max_subsets=0)
    with pytest.raises(ValueError, match="smea: weighted must be False"):
        SMEAFactory(weighted=True)
    with pytest.raises(ValueError, match="caf: weighted must be False"):
        CAFFactory(weighted=True)
    with pytest.raises(RequirementError, match=r"caf needs f < n/2"):
        CAFFactory(f=2, expected_clients=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="caf needs f < n/2"):
        caf(DISAGREE[:4], f=2)


# --- NumPy references on random inputs -------------------------------------------------------

@st.composite
def problems(draw, max_n=8):
    n = draw(st.integers(1, max_n))
    dim = draw(st.integers(1, 3))
    x = draw(hnp.arrays(np.float32, (n, dim), elements=st.integers(-6, 6)))
    return x, draw(st.integers(0, (n - 1) // 2))


@hypothesis.settings(max_examples=50, deadline=None)
@hypothesis.given(problems())
def test_mda_and_smea_match_numpy_references(problem):
    x, f = problem
    np.testing.assert_allclose(mda(x, f=f), reference_best_subset(x, f, diameter)[0],
                               rtol=1e-6, atol=1e-6)
    expected, best = reference_best_subset(x, f, top_eigenvalue)
    scores = {c: top_eigenvalue(np.asarray(x, np.float64)[list(c)])
              for c in itertools.combinations(range(len(x)), len(x) - f)}
    # Eigenvalues of tied subsets agree only to rounding: compare when the best is clear.
    runner_up = sorted(set(round(s, 9) for s in scores.values()))
    if len(runner_up) < 2 or runner_up[1] - runner_up[0] > 1e-6:
        np.testing.assert_allclose(smea(x, f=f), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n, f, dim", [(5, 1, 3), (9, 3, 10), (12, 5, 40)])
def test_caf_matches_its_numpy_reference(n, f, dim):
    rng = np.random.default_rng(n + f)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:f] += 8.0 * rng.normal(size=dim).astype(np.float32)  # a colluding cluster
    np.testing.assert_allclose(caf(x, f=f), reference_caf(x, f), rtol=1e-4, atol=1e-5)


# --- the factories in TFF ---------------------------------------------------------------------

def test_factories_in_tff(tff_context):
    del tff_context
    values = [np.float32(v) for v in SPLIT[:, 0]]
    output = helpers.run_once(MDAFactory(f=2), values)
    np.testing.assert_allclose(output.result, 22 / 3, rtol=1e-6)
    np.testing.assert_allclose(output.measurements["score"], 16.0)  # squared diameter 9 − 5
    output = helpers.run_once(SMEAFactory(f=2), values)
    np.testing.assert_allclose(output.result, 3.0, rtol=1e-6)
    np.testing.assert_allclose(output.measurements["score"], 8 / 3, rtol=1e-6)
    output = helpers.run_once(CAFFactory(f=1), [np.float32(v) for v in (0.0, 1.0, 3.0)])
    np.testing.assert_allclose(output.result, 8 / 11, rtol=1e-6)
    assert output.measurements["passes"] == 2
