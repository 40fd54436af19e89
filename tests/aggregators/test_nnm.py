"""Nearest-neighbour mixing: exact values, a NumPy reference, properties, composed in TFF."""

import collections

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from aggregators.base import RequirementError
from aggregators.compose import ComposedFactory
from aggregators.krum import KrumFactory
from aggregators.median import MedianFactory, median
from aggregators.nnm import NearestNeighborMixing, nearest_neighbor_mixing, nearest_neighbors
from tests.aggregators import helpers

# Inputs on which rules disagree (STYLE.md): mean 23.2, median 6, trimmed mean (f=1) 5.
DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)


# --- NumPy reference ----------------------------------------------------------------------

def reference_nnm(x, f, ids=None):
    """Each row: the mean of itself and its n − f − 1 nearest others (ties: lower id, row)."""
    n = len(x)
    flat = np.asarray(x, np.float64).reshape(n, -1)
    ids = np.zeros(n) if ids is None else ids
    d = ((flat[:, None] - flat[None]) ** 2).sum(-1)
    out = []
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: (d[i, j], ids[j], j))
        out.append(flat[[i] + others[:n - f - 1]].mean(0))
    return np.array(out).reshape(np.shape(x))


# --- exact values -------------------------------------------------------------------------

def test_exact_values_odd_n():
    # n − f = 4 nearest: 1, 2, 6, 7 for each honest value; 100 mixes with 7, 6, 2.
    mixed = nearest_neighbor_mixing(DISAGREE, f=1)
    np.testing.assert_allclose(mixed, [[4.0], [4.0], [4.0], [4.0], [28.75]])
    np.testing.assert_allclose(median(mixed), [4.0])  # nnm+median; the median alone: 6


def test_exact_values_even_n():
    # n = 6, f = 2: 4 nearest. 0–3 mix among themselves (1.5); 10 and 11 with 3 and 2 (6.5).
    x = np.array([[0], [1], [2], [3], [10], [11]], np.float32)
    np.testing.assert_allclose(nearest_neighbor_mixing(x, f=2),
                               [[1.5]] * 4 + [[6.5]] * 2)


def test_equally_distant_neighbours_go_to_the_lower_client_id():
    # 2 is at distance 4 from both 0 and 4; n − f = 2 keeps itself and one of them.
    x = np.array([[0.0], [2.0], [4.0]], np.float32)
    np.testing.assert_array_equal(nearest_neighbors(x, f=1), [[0, 1], [1, 0], [2, 1]])
    np.testing.assert_allclose(nearest_neighbor_mixing(x, f=1), [[1.0], [1.0], [3.0]])
    np.testing.assert_allclose(nearest_neighbor_mixing(x, f=1, client_ids=[2, 1, 0]),
                               [[1.0], [3.0], [3.0]])


def test_f_zero_gives_every_client_the_mean_and_shapes_are_kept():
    x = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    out = nearest_neighbor_mixing(x, f=0).numpy()
    assert out.shape == (4, 2, 3)
    np.testing.assert_allclose(out, np.broadcast_to(x.mean(0), x.shape), rtol=1e-6)


def test_requirement_and_min_clients():
    with pytest.raises(tf.errors.InvalidArgumentError, match="nnm needs f < n/2"):
        nearest_neighbor_mixing(DISAGREE[:4], f=2)
    nnm = NearestNeighborMixing()
    assert nnm.name == "nnm" and nnm.requirement == "f < n/2"
    assert nnm.min_clients(3, 0) == 3 and nnm.min_clients(3, 2) == 5 and nnm.min_clients(9, 2) == 9
    assert int(nnm.min_clients(tf.constant(3), tf.constant(2))) == 5
    assert ComposedFactory([nnm], KrumFactory()).min_clients(2) == 7  # krum's 2f + 3
    assert ComposedFactory([nnm], MedianFactory()).min_clients(2) == 5


def test_requirement_at_build():
    with pytest.raises(RequirementError, match=r"nnm\+median needs f < n/2; f < n/2 "
                                               r"\(n >= 2f \+ 1\); got n=4, f=2"):
        ComposedFactory([NearestNeighborMixing()], MedianFactory(f=2), expected_clients=4)
    with pytest.raises(RequirementError, match=r"nnm\+krum needs f < n/2; n >= 2f \+ 3; "
                                               r"got n=6, f=2 \(needs n >= 7\)"):
        ComposedFactory([NearestNeighborMixing()], KrumFactory(f=2), expected_clients=6)


# --- NumPy reference ----------------------------------------------------------------------

@pytest.mark.parametrize("n, f, dim", [(1, 0, 3), (4, 1, 2), (9, 4, 5), (16, 5, 30)])
def test_matches_numpy_reference_on_random_inputs(n, f, dim):
    x = np.random.default_rng(n + 10 * f + 100 * dim).normal(size=(n, dim)).astype(np.float32)
    np.testing.assert_allclose(nearest_neighbor_mixing(x, f=f), reference_nnm(x, f), rtol=1e-5,
                               atol=1e-6)


@st.composite
def integer_problems(draw):
    """Integer-valued rows (exact arithmetic, so ties are exact), a valid f, client ids."""
    n = draw(st.integers(1, 9))
    x = draw(hnp.arrays(np.float32, (n, draw(st.integers(1, 3))), elements=st.integers(-6, 6)))
    ids = np.array(draw(st.permutations(range(n))), np.int32)
    return x, draw(st.integers(0, (n - 1) // 2)), ids


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(integer_problems())
def test_matches_reference_including_ties(problem):
    x, f, ids = problem
    np.testing.assert_allclose(nearest_neighbor_mixing(x, f=f, client_ids=ids),
                               reference_nnm(x, f, ids), rtol=1e-6, atol=1e-6)


# --- properties ---------------------------------------------------------------------------

# TensorFlow flushes float32 subnormals to zero on CPU, which no rule can undo.
FLOATS = dict(min_value=-1e3, max_value=1e3, allow_subnormal=False)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(integer_problems(), st.randoms(use_true_random=False))
def test_client_order_does_not_matter(problem, rnd):
    """Rows permuted with their client ids: each client gets the same mixed vector (up to the
    float32 rounding of the matrix product, whose summation follows the row order; the
    factories see rows sorted by client id, so there the result is exactly the same)."""
    x, f, ids = problem
    order = list(range(len(x)))
    rnd.shuffle(order)
    out = nearest_neighbor_mixing(x, f=f, client_ids=ids).numpy()
    np.testing.assert_allclose(nearest_neighbor_mixing(x[order], f=f, client_ids=ids[order]),
                               out[order], rtol=1e-6, atol=1e-6)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, st.integers(1, 4), elements=FLOATS), st.integers(1, 9))
def test_identical_inputs_return_that_input(row, n):
    x = np.tile(row, (n, 1))
    # The 1/(n − f) factor can take the smallest normal floats to subnormals (flushed to 0).
    np.testing.assert_allclose(nearest_neighbor_mixing(x, f=(n - 1) // 2), x, rtol=1e-6,
                               atol=1e-37)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1,
                                                          max_side=9), elements=FLOATS),
                  st.sampled_from([1e30, -1e30]), st.data())
def test_up_to_f_huge_rows_leave_honest_rows_mixing_among_themselves(x, huge, data):
    n = len(x)
    f = data.draw(st.integers(0, (n - 1) // 2))
    attacked = x.copy()
    attacked[:f] = huge
    honest = x[f:]
    out = nearest_neighbor_mixing(attacked, f=f).numpy()[f:]
    # n − f neighbours of an honest row are exactly the n − f honest rows.
    np.testing.assert_allclose(out, np.broadcast_to(honest.mean(0), out.shape), rtol=1e-4,
                               atol=1e-3)


# --- composed with a rule inside TFF ------------------------------------------------------

NESTED = [collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[v, -v]], np.float32))
          for v in DISAGREE[:, 0]]


def test_nnm_then_krum_on_nested_values_and_signature(tff_context):
    factory = ComposedFactory([NearestNeighborMixing()], KrumFactory(byzantine_fraction=0.2))
    assert factory.name == "nnm+krum"
    process = helpers.build_process(factory, NESTED[0])
    output = helpers.run_once(factory, NESTED, client_ids=range(10, 15), process=process)
    # Mixed: 4, 4, 4, 4, 28.75 (Krum alone: 2); the four 4s tie at score 0: lowest id.
    np.testing.assert_allclose(output.result["a"], [4.0])
    np.testing.assert_allclose(output.result["b"], [[4.0, -4.0]])
    assert dict(output.measurements) == {"non_finite_clients": 0, "f": 1, "selected_client": 10}
    signature = process.next.type_signature
    assert str(signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,selected_client=int32>@SERVER"
    assert str(signature.result.result) == "<a=float32[1],b=float32[1,2]>@SERVER"
    # Checked again each round: 4 clients, f = ⌈0.8⌉ = 1 needs n >= 5.
    with pytest.raises(Exception, match="nnm\\+krum needs"):
        helpers.run_once(factory, NESTED[:4], process=process)


def test_nnm_then_median_type_signature_on_scalars(tff_context):
    process = helpers.build_process(
        ComposedFactory([NearestNeighborMixing()], MedianFactory(f=1)), np.float32(0))
    assert str(process.next.type_signature.result.result) == "float32@SERVER"
    assert str(process.next.type_signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32>@SERVER"
