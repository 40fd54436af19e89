"""Meamed and MoNNA: exact values, NumPy references, and the TFF factories."""

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from aggregators.base import RequirementError
from aggregators.meamed import MeamedFactory, meamed
from aggregators.monna import MoNNAFactory, monna, trusted_row
from tests.aggregators import helpers

# Inputs on which rules disagree (STYLE.md): mean 23.2, median 6, trimmed mean (f=1) 5.
DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)


# --- NumPy references ---------------------------------------------------------------------

def reference_meamed(x, f):
    """Per coordinate: the mean of the n − f values nearest the median (ties: lower row)."""
    x = np.asarray(x, np.float64)
    flat = x.reshape(len(x), -1)
    med = np.median(flat, axis=0)
    out = []
    for j in range(flat.shape[1]):
        order = sorted(range(len(x)), key=lambda i: (abs(flat[i, j] - med[j]), i))
        out.append(flat[order[:len(x) - f], j].mean())
    return np.array(out).reshape(x.shape[1:])


def reference_monna(x, f, row):
    """The mean of the n − f rows nearest row `row` (itself first; ties: lower row)."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    d = ((flat - flat[row]) ** 2).sum(1)
    order = sorted(range(len(x)), key=lambda i: (i != row, d[i], i))
    return flat[order[:len(x) - f]].mean(0).reshape(np.shape(x)[1:])


# --- exact values -------------------------------------------------------------------------

def test_meamed_exact_values():
    # Median 6; |x − 6| = 5, 4, 0, 1, 94: the 4 nearest are 6, 7, 2, 1.
    np.testing.assert_allclose(meamed(DISAGREE, f=1), [4.0])
    # n = 4 (even): column 0 median (1 + 3)/2 = 2, nearest 3: 1, 3, 0 → 4/3; column 1
    # median 1.5, distances 8.5, 1.5, 0.5, 0.5 → 1, 2, 0 → 1.
    x = np.array([[0, 10], [1, 0], [3, 1], [10, 2]], np.float32)
    np.testing.assert_allclose(meamed(x, f=1), [4 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(meamed(x, f=0), x.mean(0), rtol=1e-6)


def test_meamed_equally_close_values_go_to_the_lower_row():
    # Median 2; 0 and 4 are both 2 away: the lower row (0) is kept.
    np.testing.assert_allclose(meamed(np.array([[0.0], [2.0], [4.0]], np.float32), f=1), [1.0])


def test_monna_exact_values():
    x = np.array([[0.0], [1.0], [5.0], [6.0], [7.0]], np.float32)
    # n − f = 3 nearest to 0: 0, 1, 5; to 7: 7, 6, 5.
    np.testing.assert_allclose(monna(x, f=2, row=0), [2.0])
    np.testing.assert_allclose(monna(x, f=2, row=4), [6.0])
    # Around 5: squared distances 25, 16, 0, 1, 4: the 3 nearest are 5, 6, 7.
    np.testing.assert_allclose(monna(x, f=2, row=2), [6.0])


def test_trusted_row_and_its_stand_in():
    row, present = trusted_row(tf.constant([3, 5, 8]), 5)
    assert int(row) == 1 and bool(present)
    row, present = trusted_row(tf.constant([3, 5, 8]), 0)
    assert int(row) == 0 and not bool(present)  # the lowest id present stands in


def test_requirements():
    with pytest.raises(tf.errors.InvalidArgumentError, match="meamed needs f < n/2"):
        meamed(DISAGREE[:4], f=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="nnm needs f < n/2"):
        monna(DISAGREE[:4], f=2, row=0)
    with pytest.raises(RequirementError, match=r"meamed needs f < n/2 \(n >= 2f \+ 1\); got "
                                               r"n=4, f=2 \(needs n >= 5\)"):
        MeamedFactory(f=2, expected_clients=4)
    with pytest.raises(RequirementError, match=r"monna needs f < n/2"):
        MoNNAFactory(f=2, expected_clients=4)
    with pytest.raises(ValueError, match="meamed: weighted must be False.*got weighted=True"):
        MeamedFactory(weighted=True)
    with pytest.raises(ValueError, match="monna: trusted must be a client id >= 0; got -1"):
        MoNNAFactory(trusted=-1)


# --- NumPy references on random inputs -------------------------------------------------------

@st.composite
def problems(draw, max_n=9):
    """Integer-valued rows (exact ties) and a valid f."""
    n = draw(st.integers(1, max_n))
    dim = draw(st.integers(1, 3))
    x = draw(hnp.arrays(np.float32, (n, dim), elements=st.integers(-6, 6)))
    return x, draw(st.integers(0, (n - 1) // 2)), draw(st.integers(0, n - 1))


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(problems())
def test_match_numpy_references(problem):
    x, f, row = problem
    np.testing.assert_allclose(meamed(x, f=f), reference_meamed(x, f), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(monna(x, f=f, row=row), reference_monna(x, f, row),
                               rtol=1e-6, atol=1e-6)


# --- the factories in TFF ---------------------------------------------------------------------

def test_factories_in_tff(tff_context):
    del tff_context
    values = [np.float32(v) for v in (1.0, 2.0, 6.0, 7.0, 100.0)]
    output = helpers.run_once(MeamedFactory(f=1), values)
    np.testing.assert_allclose(output.result, 4.0)
    assert output.measurements["f"] == 1
    # Client ids 10..14: the trusted client 14 sent 100; its 4 nearest are 100, 7, 6, 2.
    ids = [10, 11, 12, 13, 14]
    output = helpers.run_once(MoNNAFactory(f=1, trusted=14), values, client_ids=ids)
    np.testing.assert_allclose(output.result, 28.75)
    assert output.measurements["trusted_present"] == 1
    output = helpers.run_once(MoNNAFactory(f=1, trusted=3), values, client_ids=ids)
    np.testing.assert_allclose(output.result, 4.0)  # client 10 (value 1) stands in
    assert output.measurements["trusted_present"] == 0
