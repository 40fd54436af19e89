"""Krum and Multi-Krum: exact values, a NumPy reference, properties, and the TFF factories."""

import collections

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from aggregators.base import RequirementError
from aggregators.krum import KrumFactory, MultiKrumFactory, krum, krum_scores, krum_select, \
    multi_krum
from tests.aggregators import helpers

# Inputs on which rules disagree (STYLE.md): mean 23.2, median 6, trimmed mean (f=1) 5.
DISAGREE = np.array([[1.0], [2.0], [6.0], [7.0], [100.0]], np.float32)


# --- NumPy reference ----------------------------------------------------------------------

def reference_scores(x, f):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    return np.array([np.sort(np.delete(d[i], i))[:n - f - 2].sum() for i in range(n)])


def reference_select(x, f, m, ids=None):
    """Row indices of the m lowest (score, client id, row) triples."""
    ids = np.zeros(len(x)) if ids is None else ids
    scores = reference_scores(x, f)
    return sorted(range(len(x)), key=lambda i: (scores[i], ids[i], i))[:m]


# --- exact values -------------------------------------------------------------------------

def test_scores_and_tie_by_lower_client_id():
    # n=5, f=1: 2 neighbours. 1: 1+25, 2: 1+16, 6: 1+16, 7: 1+25, 100: 93²+94².
    np.testing.assert_array_equal(krum_scores(DISAGREE, f=1), [26, 17, 17, 26, 17485])
    np.testing.assert_array_equal(krum(DISAGREE, f=1), [2.0])  # 2 and 6 tie: lower id
    np.testing.assert_array_equal(krum(DISAGREE, f=1, client_ids=[4, 3, 2, 1, 0]), [6.0])


def test_multi_krum_default_and_explicit_m_with_ties():
    np.testing.assert_allclose(multi_krum(DISAGREE, f=1), [4.0])  # m = n − f = 4: 1, 2, 6, 7
    np.testing.assert_allclose(multi_krum(DISAGREE, f=1, m=3), [3.0])  # 1 and 7 tie: 1, 2, 6
    np.testing.assert_allclose(multi_krum(DISAGREE, f=1, m=3, client_ids=[4, 3, 2, 1, 0]),
                               [5.0])  # the tie now goes to 7: 2, 6, 7
    np.testing.assert_allclose(multi_krum(DISAGREE, f=1, m=1), krum(DISAGREE, f=1))
    np.testing.assert_allclose(multi_krum(DISAGREE, f=1, m=5), [23.2])  # m = n: the mean


def test_even_n():
    # n=6, f=1: 3 neighbours. Scores 1: 62, 2: 42, 6: 42, 7: 62, 100: 27089, −50: 8441.
    x = np.array([[1.0], [2.0], [6.0], [7.0], [100.0], [-50.0]], np.float32)
    np.testing.assert_array_equal(krum_scores(x, f=1), [62, 42, 42, 62, 27089, 8441])
    np.testing.assert_array_equal(krum(x, f=1), [2.0])
    np.testing.assert_allclose(multi_krum(x, f=1), [-6.8])  # m=5: 1, 2, 6, 7, −50


def test_f_zero_in_two_dimensions():
    # n=4, f=0: 2 neighbours. d(a,b)=4, d(a,c)=4, d(a,d)=18, d(b,c)=8, d(b,d)=10, d(c,d)=10.
    x = np.array([[0, 0], [2, 0], [0, 2], [3, 3]], np.float32)
    np.testing.assert_array_equal(krum_scores(x, f=0), [8, 12, 12, 20])
    np.testing.assert_array_equal(krum(x, f=0), [0, 0])
    np.testing.assert_allclose(multi_krum(x, f=0), [1.25, 1.25])  # m = 4: all
    np.testing.assert_allclose(multi_krum(x, f=0, m=2), [1.0, 0.0])  # a and b (b, c tie)
    np.testing.assert_array_equal(krum_select(x, f=0, m=4), [0, 1, 2, 3])


def test_trailing_dimensions_are_flattened():
    x = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    x[4] = 1e6
    out = krum(x, f=1).numpy()
    assert out.shape == (2, 3)
    np.testing.assert_array_equal(out, x[1])  # rows 1 and 2 tie (equal spacing): lower id


def test_requirement_and_m_validation():
    with pytest.raises(tf.errors.InvalidArgumentError, match="krum needs n >= 2f \\+ 3"):
        krum(DISAGREE, f=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="krum needs n >= 2f \\+ 3"):
        multi_krum(DISAGREE[:4], f=1)
    with pytest.raises(ValueError, match="multi_krum: m must satisfy 1 <= m <= n; got m=6, n=5"):
        multi_krum(DISAGREE, f=1, m=6)
    with pytest.raises(ValueError, match="multi_krum: m must satisfy 1 <= m <= n; got m=0"):
        multi_krum(DISAGREE, f=1, m=0)
    for bad in (2.0, "2", True):
        with pytest.raises(TypeError, match="multi_krum: m must be an integer or None; got"):
            multi_krum(DISAGREE, f=1, m=bad)


def test_factory_validation():
    with pytest.raises(ValueError, match="multi_krum: m must satisfy 1 <= m <= n; got m=0"):
        MultiKrumFactory(m=0)
    with pytest.raises(TypeError, match="multi_krum: m must be an integer or None; got 1.5"):
        MultiKrumFactory(m=1.5)
    with pytest.raises(ValueError, match="krum: weighted must be False.*got weighted=True"):
        KrumFactory(weighted=True)
    with pytest.raises(ValueError, match="multi_krum: weighted must be False"):
        MultiKrumFactory(weighted=True)


def test_requirement_at_build():
    with pytest.raises(RequirementError,
                       match=r"krum needs n >= 2f \+ 3; got n=4, f=1 \(needs n >= 5\)"):
        KrumFactory(byzantine_fraction=0.25, expected_clients=4)
    with pytest.raises(RequirementError, match=r"multi_krum needs n >= 2f \+ 3; got n=6, f=2"):
        MultiKrumFactory(f=2, expected_clients=6)
    with pytest.raises(RequirementError,
                       match=r"multi_krum needs n >= 2f \+ 3 and n >= m \(m=8\); got n=7, f=1"):
        MultiKrumFactory(f=1, m=8, expected_clients=7)
    KrumFactory(f=1, expected_clients=5)
    MultiKrumFactory(f=1, m=5, expected_clients=5)
    factory = MultiKrumFactory(m=4)
    assert factory.min_clients(0) == 4 and factory.min_clients(1) == 5
    assert int(factory.min_clients(tf.constant(2))) == 7


# --- NumPy reference on random inputs ----------------------------------------------------

@pytest.mark.parametrize("n, f, dim", [(3, 0, 4), (7, 2, 5), (10, 3, 1), (16, 4, 30)])
def test_matches_numpy_reference_on_random_inputs(n, f, dim):
    x = np.random.default_rng(n + 10 * f + 100 * dim).normal(size=(n, dim)).astype(np.float32)
    np.testing.assert_allclose(krum_scores(x, f=f), reference_scores(x, f), rtol=1e-9)
    np.testing.assert_array_equal(krum(x, f=f), x[reference_select(x, f, 1)[0]])
    for m in (1, n - f, n):
        np.testing.assert_allclose(multi_krum(x, f=f, m=m), x[reference_select(x, f, m)].mean(0),
                                   rtol=1e-5, atol=1e-6)


@st.composite
def integer_problems(draw, max_n=9):
    """Integer-valued rows (exact arithmetic, so ties are exact), a valid f, client ids."""
    n = draw(st.integers(3, max_n))
    dim = draw(st.integers(1, 3))
    x = draw(hnp.arrays(np.float32, (n, dim), elements=st.integers(-6, 6)))
    f = draw(st.integers(0, (n - 3) // 2))
    ids = np.array(draw(st.permutations(range(n))), np.int32)
    return x, f, ids


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(integer_problems(), st.data())
def test_matches_reference_including_ties(problem, data):
    x, f, ids = problem
    n = len(x)
    m = data.draw(st.integers(1, n))
    np.testing.assert_array_equal(krum_scores(x, f=f), reference_scores(x, f))
    np.testing.assert_array_equal(krum_select(x, f=f, m=m, client_ids=ids),
                                  reference_select(x, f, m, ids))


# --- properties ---------------------------------------------------------------------------

# TensorFlow flushes float32 subnormals to zero on CPU, which no rule can undo.
FLOATS = dict(min_value=-1e3, max_value=1e3, allow_subnormal=False)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(integer_problems(), st.randoms(use_true_random=False))
def test_client_order_does_not_matter(problem, rnd):
    """Rows permuted together with their client ids: the same clients are chosen, in the same
    order (so Krum and Multi-Krum return the same vector)."""
    x, f, ids = problem
    order = list(range(len(x)))
    rnd.shuffle(order)
    chosen = krum_select(x, f=f, m=len(x) - f, client_ids=ids).numpy()
    chosen_permuted = krum_select(x[order], f=f, m=len(x) - f, client_ids=ids[order]).numpy()
    np.testing.assert_array_equal(ids[chosen], ids[order][chosen_permuted])


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(integer_problems(), hnp.arrays(np.float32, 3, elements=st.integers(-50, 50)))
def test_translation_equivariance(problem, shift):
    """x_i + c: the same rows are chosen in the same order (exact on integers), so Krum's and
    Multi-Krum's outputs move by c."""
    x, f, ids = problem
    shift = shift[:x.shape[1]]
    np.testing.assert_array_equal(krum_select(x + shift, f=f, m=len(x) - f, client_ids=ids),
                                  krum_select(x, f=f, m=len(x) - f, client_ids=ids))


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, st.integers(1, 4), elements=FLOATS), st.integers(3, 8))
def test_identical_inputs_return_that_input(row, n):
    x = np.tile(row, (n, 1))
    f = (n - 3) // 2
    np.testing.assert_array_equal(krum(x, f=f), row)
    # The 1/m weights can take the smallest normal floats to subnormals (flushed to 0).
    np.testing.assert_allclose(multi_krum(x, f=f), row, rtol=1e-6, atol=1e-37)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=3,
                                                          max_side=9),
                             elements=FLOATS),
                  st.sampled_from([1e30, -1e30]), st.data())
def test_up_to_f_huge_rows_krum_selects_an_honest_row(x, huge, data):
    n = len(x)
    f = data.draw(st.integers(0, (n - 3) // 2))
    attacked = x.copy()
    attacked[:f] = huge
    honest = x[f:]
    out = krum(attacked, f=f).numpy()
    assert any(np.array_equal(out, row) for row in honest)
    out = multi_krum(attacked, f=f).numpy()  # m = n − f: exactly the honest rows
    assert np.all(out >= honest.min(0) - 1e-3) and np.all(out <= honest.max(0) + 1e-3)


# --- the factories inside TFF -------------------------------------------------------------

NESTED = [collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[v, -v]], np.float32))
          for v in (1.0, 2.0, 6.0, 7.0, 100.0)]


def test_krum_factory_on_nested_values_and_signature(tff_context):
    factory = KrumFactory(byzantine_fraction=0.2)
    process = helpers.build_process(factory, NESTED[0])
    output = helpers.run_once(factory, NESTED, process=process)
    np.testing.assert_array_equal(output.result["a"], [2.0])
    np.testing.assert_array_equal(output.result["b"], [[2.0, -2.0]])
    assert dict(output.measurements) == {"non_finite_clients": 0, "f": 1, "selected_client": 1}
    signature = process.next.type_signature
    assert str(signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,selected_client=int32>@SERVER"
    assert str(signature.result.result) == "<a=float32[1],b=float32[1,2]>@SERVER"
    assert str(process.initialize.type_signature.result) == "<round=int64,rule=<>>@SERVER"
    # Ties go to the lower client id whatever the arrival order: 2 (id 3) and 6 (id 2) tie.
    output = helpers.run_once(factory, NESTED, client_ids=[4, 3, 2, 1, 0], process=process)
    np.testing.assert_array_equal(output.result["a"], [6.0])
    assert output.measurements["selected_client"] == 2
    # Checked again each round: 4 clients, f = ⌈0.2·4⌉ = 1 needs n >= 5.
    with pytest.raises(Exception, match="krum needs n >= 2f \\+ 3"):
        helpers.run_once(factory, NESTED[:4], process=process)


def test_multi_krum_factory_on_nested_values_and_signature(tff_context):
    factory = MultiKrumFactory(byzantine_fraction=0.2)
    process = helpers.build_process(factory, NESTED[0])
    output = helpers.run_once(factory, NESTED, client_ids=[10, 11, 12, 13, 14], process=process)
    np.testing.assert_allclose(output.result["a"], [4.0])  # m = n − f = 4: 1, 2, 6, 7
    np.testing.assert_allclose(output.result["b"], [[4.0, -4.0]])
    assert list(output.measurements) == ["non_finite_clients", "f", "selected_clients",
                                         "num_selected"]
    np.testing.assert_array_equal(output.measurements["selected_clients"], [10, 11, 12, 13])
    assert output.measurements["num_selected"] == 4
    assert str(process.next.type_signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,selected_clients=int32[?],num_selected=int32>@SERVER"
    # A NaN row is dropped: n' = 6, f' = ⌈0.2·7⌉ − 1 = 1, m = 5 (see test_even_n).
    values = [collections.OrderedDict(a=np.array([v], np.float32),
                                      b=np.array([[v, -v]], np.float32))
              for v in (1.0, np.nan, 2.0, 6.0, 7.0, 100.0, -50.0)]
    output = helpers.run_once(factory, values, process=process)
    assert output.measurements["non_finite_clients"] == 1
    assert output.measurements["f"] == 1 and output.measurements["num_selected"] == 5
    np.testing.assert_array_equal(output.measurements["selected_clients"], [0, 2, 3, 4, 6])
    np.testing.assert_allclose(output.result["b"], [[-6.8, 6.8]], rtol=1e-6)


def test_type_signatures_on_scalars(tff_context):
    process = helpers.build_process(KrumFactory(f=1), np.float32(0))
    assert str(process.next.type_signature.result.result) == "float32@SERVER"
    assert str(process.next.type_signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,selected_client=int32>@SERVER"
    process = helpers.build_process(MultiKrumFactory(f=1, m=3), np.float32(0))
    assert str(process.next.type_signature.result.result) == "float32@SERVER"
    assert str(process.next.type_signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,selected_clients=int32[?],num_selected=int32>@SERVER"
