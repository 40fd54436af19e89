"""Pairwise squared distances via the float64 Gram matrix, and client-id ranks."""

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest

from aggregators import distances
from aggregators.distances import pairwise_squared_distances, rank_by_client_id


def brute_force(x):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def test_exact_values_on_a_small_matrix():
    x = np.array([[0, 0], [3, 4], [1, 1], [-1, 2]], np.float32)
    expected = [[0, 25, 2, 5], [25, 0, 13, 20], [2, 13, 0, 5], [5, 20, 5, 0]]
    np.testing.assert_array_equal(pairwise_squared_distances(x), expected)


@pytest.mark.parametrize("n, dim", [(1, 3), (2, 1), (5, 7), (12, 40)])
def test_matches_numpy_brute_force(n, dim):
    x = np.random.default_rng(n * 100 + dim).normal(size=(n, dim)).astype(np.float32)
    out = pairwise_squared_distances(x).numpy()
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, brute_force(x), rtol=1e-12, atol=1e-12)


def test_several_column_blocks(monkeypatch):
    """The float64 Gram matrix is accumulated over column blocks (a last partial one too)."""
    monkeypatch.setattr(distances, "_GRAM_BLOCK_COLUMNS", 4)
    x = np.random.default_rng(1).normal(size=(6, 11)).astype(np.float32)  # blocks 4 + 4 + 3
    np.testing.assert_allclose(pairwise_squared_distances(x), brute_force(x), rtol=1e-12,
                               atol=1e-12)


def test_flattens_trailing_dimensions():
    x = np.random.default_rng(2).normal(size=(4, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(pairwise_squared_distances(x), brute_force(x), rtol=1e-12,
                               atol=1e-12)


def test_float64_accumulation_resolves_close_large_vectors():
    """Rows of norm ~1e4 that differ by 1e-2 in one coordinate: float32 Gram would give noise."""
    base = np.full((1, 1000), 317.0, np.float32)
    x = np.concatenate([base, base + np.eye(1, 1000, 5, dtype=np.float32) * 0.0078125])
    out = pairwise_squared_distances(x).numpy()
    np.testing.assert_allclose(out[0, 1], 0.0078125 ** 2, rtol=1e-6)


def test_symmetric_non_negative_and_exact_zero_diagonal():
    x = np.random.default_rng(3).normal(loc=1e3, size=(7, 50)).astype(np.float32)
    x[3] = x[1]  # duplicated row: distance rounds around 0 and is clamped
    out = pairwise_squared_distances(x).numpy()
    np.testing.assert_array_equal(out, out.T)
    np.testing.assert_array_equal(np.diag(out), 0.0)
    assert (out >= 0).all()
    assert out[1, 3] == pytest.approx(0.0, abs=1e-6)


def test_huge_rows_stay_finite_and_do_not_disturb_the_others():
    x = np.array([[1, 2], [1e30, -1e30], [2, 2]], np.float32)
    out = pairwise_squared_distances(x).numpy()
    assert np.isfinite(out).all()
    assert out[0, 2] == 1.0
    np.testing.assert_allclose(out[0, 1], 2e60, rtol=1e-6)


integer_rows = hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1,
                                                      max_side=8),
                          elements=hypothesis.strategies.integers(-1000, 1000))


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(integer_rows, hypothesis.strategies.randoms(use_true_random=False))
def test_integer_inputs_exact_and_permutation_equivariant(x, rnd):
    order = list(range(len(x)))
    rnd.shuffle(order)
    out = pairwise_squared_distances(x).numpy()
    np.testing.assert_array_equal(out, brute_force(x))  # integer arithmetic is exact
    np.testing.assert_array_equal(pairwise_squared_distances(x[order]), out[order][:, order])


def test_rank_by_client_id():
    np.testing.assert_array_equal(rank_by_client_id(None, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(rank_by_client_id(np.array([7, 2, 9, 0], np.int32), 4),
                                  [2, 1, 3, 0])
    # Equal ids (plain values: all −1) keep the row order.
    np.testing.assert_array_equal(rank_by_client_id(np.full(3, -1, np.int32), 3), [0, 1, 2])
