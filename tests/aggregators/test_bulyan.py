"""Bulyan (textbook and FedLAW variant): exact values, a NumPy reference, properties, TFF."""

import collections

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from aggregators.base import RequirementError
from aggregators import bulyan as bulyan_module
from aggregators.bulyan import BulyanFactory, bulyan, bulyan_selection, mean_around_median
from tests.aggregators import helpers

# n = 7, f = 1 (textbook: θ = 5 selected, β = 3 averaged). Hand computation, neighbours
# max(|R| − f − 2, 1) = 4, 3, 2, 1, 1 (row: value):
#   R all:            5 wins (4 nearest: 1 + 4 + 16 + 25 = 46)
#   R {0,1,6,7,±100}: 1 and 6 tie at 62 (1 + 25 + 36): lower id, 1
#   R {0,6,7,±100}:   6 (1 + 36 = 37)
#   R {0,7,±100}:     0 and 7 tie at 49: 0
#   R {7,±100}:       7 and 100 tie at 93² (mutual nearest): lower id, 7
# Selected {0, 1, 5, 6, 7}; median 5; the 3 closest are 5, 6, 7 → 6 (the middle three: 4).
VALUES = np.array([[0.0], [1.0], [5.0], [6.0], [7.0], [100.0], [-100.0]], np.float32)
REVERSED_IDS = np.arange(7, dtype=np.int32)[::-1]


# --- NumPy reference ----------------------------------------------------------------------

def reference_bulyan(x, f, *, variant="textbook", b=None, ids=None):
    """(result, selected row indices increasing), written literally from aggregators.md."""
    n = len(x)
    x = np.asarray(x, np.float64).reshape(n, -1)
    ids = np.zeros(n) if ids is None else ids
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    if variant == "textbook":
        theta = n - 2 * f
        neighbours = lambda pool: max(pool - f - 2, 1)  # noqa: E731
    else:
        b = f if b is None else b
        theta = n - 2 * b
        neighbours = lambda pool: n - f - 2  # noqa: E731
    pool, selected = list(range(n)), []
    for _ in range(theta):
        k = min(neighbours(len(pool)), len(pool) - 1)
        scores = {i: sum(sorted(d[i, j] for j in pool if j != i)[:k]) for i in pool}
        winner = min(pool, key=lambda i: (scores[i], ids[i], i))
        pool.remove(winner)
        selected.append(winner)
    if variant == "textbook":
        result = reference_mean_around_median(x[selected], theta - 2 * f)
    else:
        s = np.sort(x[selected], axis=0)
        low = min(b, theta // 2)
        result = s[low:max(low + 1, theta - b)].mean(0)
    return result, sorted(selected)


def reference_mean_around_median(values, beta):
    """Per coordinate: sort, take the β smallest |s − median| (stable: ties to lower values)."""
    s = np.sort(np.asarray(values, np.float64), axis=0)
    theta = len(s)
    median = (s[(theta - 1) // 2] + s[theta // 2]) / 2
    closest = np.argsort(np.abs(s - median), axis=0, kind="stable")[:beta]
    return np.take_along_axis(s, closest, axis=0).mean(0)


# --- exact values -------------------------------------------------------------------------

def test_textbook_exact_value_and_selection():
    np.testing.assert_allclose(bulyan(VALUES, f=1), [6.0])
    np.testing.assert_array_equal(bulyan_selection(VALUES, f=1), [0, 1, 2, 3, 4])


def test_textbook_ties_follow_client_ids():
    # Reversed ids: the ties go the other way (6 over 1, 7 over 0, and the last round's
    # three-way tie at 100² to −100). Selected {1, 5, 6, 7, −100}: closest to 5 are 5, 6, 7.
    np.testing.assert_array_equal(bulyan_selection(VALUES, f=1, client_ids=REVERSED_IDS),
                                  [1, 2, 3, 4, 6])
    np.testing.assert_allclose(bulyan(VALUES, f=1, client_ids=REVERSED_IDS), [6.0])


def test_textbook_even_n():
    # n = 8, f = 1: θ = 6 selected {0, 1, 3, 5, 6, 7}, median (3 + 5)/2 = 4, β = 4: 3, 5 (at 1),
    # 6 (at 2), then 1 and 7 tie at 3: the lower value → (1 + 3 + 5 + 6)/4.
    x = np.concatenate([VALUES, [[3.0]]]).astype(np.float32)
    np.testing.assert_array_equal(bulyan_selection(x, f=1), [0, 1, 2, 3, 4, 7])
    np.testing.assert_allclose(bulyan(x, f=1), [3.75])


def test_textbook_per_coordinate():
    # Selected rows 0–4. Coordinate 0: [0, 1, 2, 3, 10], median 2 → 1, 2, 3 → 2.
    # Coordinate 1: [0, 0, 1, 2, 3], median 1 → 1, then 0, 0, 2 tie at 1: 0, 0 → 1/3.
    x = np.array([[0, 0], [1, 2], [2, 1], [3, 3], [10, 0], [0, 10], [-5, -5]], np.float32)
    np.testing.assert_array_equal(bulyan_selection(x, f=1), [0, 1, 2, 3, 4])
    np.testing.assert_allclose(bulyan(x, f=1), [2.0, 1.0 / 3.0], rtol=1e-6)


def test_f_zero_is_the_mean():
    x = np.array([[1.0, 0.0], [2.0, 4.0], [6.0, -1.0]], np.float32)
    np.testing.assert_allclose(bulyan(x, f=0), [3.0, 1.0])
    np.testing.assert_allclose(bulyan(x, f=0, variant="fedlaw"), [3.0, 1.0])


def test_mean_around_median_ties():
    # β = 3 of [0, 2, 3, 6, 6] around 3: 3, 2, then 0, 6, 6 tie at 3: the lowest → 5/3.
    # β = 3 of [1..6] around 3.5: 3, 4, then 2 and 5 tie at 1.5: 2 → 3.
    np.testing.assert_allclose(mean_around_median(np.array([[0], [2], [3], [6], [6]],
                                                           np.float32), beta=3), [5 / 3])
    x = np.array([[1, 0], [2, 2], [3, 3], [4, 4], [5, 8], [6, 9]], np.float32)  # θ = 6
    np.testing.assert_allclose(mean_around_median(x, beta=3), [3.0, 3.0])
    # β = 4 of [0, 2, 3, 4, 8, 9] around 3.5: 3, 4, 2, then 0 (at 3.5) before 8 (at 4.5).
    np.testing.assert_allclose(mean_around_median(x, beta=4), [3.5, 2.25])
    np.testing.assert_allclose(mean_around_median(x, beta=6), x.mean(0))


def test_fedlaw_exact_values():
    # b = f = 1, θ = 5, fixed k = n − f − 2 = 4 (capped at |R| − 1): rounds pick 5, then 7
    # (1 + 36 + 49 + 93²), then 1, 0, 6: the same set {0, 1, 5, 6, 7} as the textbook rule,
    # but the trimmed mean keeps sorted indices [1, 4): 1, 5, 6 → 4 (textbook: 6).
    np.testing.assert_allclose(bulyan(VALUES, f=1, variant="fedlaw"), [4.0])
    np.testing.assert_array_equal(bulyan_selection(VALUES, f=1, variant="fedlaw"),
                                  [0, 1, 2, 3, 4])
    # b = 2: θ = 3 (5, 7, 1); ℓ = min(2, 1) = 1, keep [1, max(2, 1)) → the middle value 5.
    np.testing.assert_allclose(bulyan(VALUES, f=1, variant="fedlaw", b=2), [5.0])
    np.testing.assert_array_equal(bulyan_selection(VALUES, f=1, variant="fedlaw", b=2),
                                  [1, 2, 4])


def test_fedlaw_runs_where_the_textbook_rule_cannot():
    # f = 2 > (n − 3)/4. b = 2, k = 3: 5, then 1 and 6 tie at 62 (lower id: 1), then 7.
    np.testing.assert_allclose(bulyan(VALUES, f=2, variant="fedlaw"), [5.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="bulyan needs n >= 4f \\+ 3"):
        bulyan(VALUES, f=2)


def test_pure_function_requirements_and_options():
    with pytest.raises(tf.errors.InvalidArgumentError, match="bulyan needs n >= 4f \\+ 3"):
        bulyan(VALUES[:6], f=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="needs n >= 2b \\+ 1"):
        bulyan(VALUES, f=1, variant="fedlaw", b=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="needs n >= f \\+ 3"):
        bulyan(VALUES, f=5, variant="fedlaw", b=0)
    with pytest.raises(ValueError, match="bulyan: variant must be one of .*; got 'fed'"):
        bulyan(VALUES, f=1, variant="fed")


def test_factory_validation():
    with pytest.raises(ValueError, match="bulyan: variant must be one of .*; got 'paper'"):
        BulyanFactory(variant="paper")
    with pytest.raises(ValueError, match="b is a parameter of variant='fedlaw' only; got b=2"):
        BulyanFactory(b=2)
    with pytest.raises(TypeError, match="bulyan: b must be an integer or None; got 1.5"):
        BulyanFactory(variant="fedlaw", b=1.5)
    with pytest.raises(ValueError, match="bulyan: b must be an integer >= 0; got b=-1"):
        BulyanFactory(variant="fedlaw", b=-1)
    with pytest.raises(ValueError, match="bulyan: weighted must be False.*got weighted=True"):
        BulyanFactory(weighted=True)


def test_requirement_at_build():
    with pytest.raises(RequirementError,
                       match=r"bulyan needs n >= 4f \+ 3; got n=10, f=2 \(needs n >= 11\)"):
        BulyanFactory(byzantine_fraction=0.2, expected_clients=10)
    with pytest.raises(RequirementError, match=r"bulyan needs n >= 2b \+ 1 and n >= f \+ 3 "
                                               r"\(variant=fedlaw, b=3\); got n=6, f=1"):
        BulyanFactory(variant="fedlaw", b=3, f=1, expected_clients=6)
    with pytest.raises(RequirementError, match=r"\(variant=fedlaw, b=f\); got n=4, f=2 "
                                               r"\(needs n >= 5\)"):
        BulyanFactory(variant="fedlaw", f=2, expected_clients=4)
    # The paper's setting: n = 200 at f = 0.4·n fails the textbook condition only.
    BulyanFactory(variant="fedlaw", b=20, byzantine_fraction=0.4, expected_clients=200)
    with pytest.raises(RequirementError, match="got n=200, f=80"):
        BulyanFactory(byzantine_fraction=0.4, expected_clients=200)
    fedlaw = BulyanFactory(variant="fedlaw")
    assert [fedlaw.min_clients(f) for f in (0, 1, 2, 3)] == [3, 4, 5, 7]
    assert int(fedlaw.min_clients(tf.constant(3))) == 7
    assert BulyanFactory().min_clients(2) == 11


# --- NumPy reference ----------------------------------------------------------------------

def test_per_coordinate_step_over_several_blocks(monkeypatch):
    """The per-coordinate step runs over blocks of coordinates (a last partial one too)."""
    monkeypatch.setattr(bulyan_module, "_COORDINATE_BLOCK", 3)
    x = np.random.default_rng(5).normal(size=(11, 8)).astype(np.float32)  # blocks 3 + 3 + 2
    ids = np.arange(11, dtype=np.int32)
    for variant, b in (("textbook", None), ("fedlaw", 1)):
        expected, selected = reference_bulyan(x, 2, variant=variant, b=b)
        # The undecorated function: the tf.function's graphs keep the block size they were
        # traced with.
        rows_fn = bulyan_module._bulyan_rows.python_function  # pylint: disable=protected-access
        result, mask = rows_fn(
            tf.constant(x), tf.constant(2), tf.constant(2 if b is None else b), ids, variant)
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.flatnonzero(mask), selected)
    np.testing.assert_allclose(mean_around_median(x, beta=5), reference_mean_around_median(x, 5),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n, f, dim", [(3, 0, 2), (8, 1, 5), (11, 2, 3), (16, 3, 20)])
def test_matches_numpy_reference_on_random_inputs(n, f, dim):
    x = np.random.default_rng(n + 10 * f + 100 * dim).normal(size=(n, dim)).astype(np.float32)
    expected, selected = reference_bulyan(x, f)
    np.testing.assert_allclose(bulyan(x, f=f), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bulyan_selection(x, f=f), selected)
    for b in (0, f, (n - 1) // 2):
        expected, selected = reference_bulyan(x, f, variant="fedlaw", b=b)
        np.testing.assert_allclose(bulyan(x, f=f, variant="fedlaw", b=b), expected, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_array_equal(bulyan_selection(x, f=f, variant="fedlaw", b=b), selected)


@st.composite
def integer_problems(draw, variant="textbook"):
    """Integer-valued rows (exact arithmetic, so ties are exact), valid f (and b), ids."""
    n = draw(st.integers(3, 11))
    x = draw(hnp.arrays(np.float32, (n, draw(st.integers(1, 3))), elements=st.integers(-6, 6)))
    ids = np.array(draw(st.permutations(range(n))), np.int32)
    if variant == "textbook":
        return x, draw(st.integers(0, (n - 3) // 4)), None, ids
    return x, draw(st.integers(0, n - 3)), draw(st.integers(0, (n - 1) // 2)), ids


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(st.sampled_from(["textbook", "fedlaw"]).flatmap(
    lambda variant: st.tuples(st.just(variant), integer_problems(variant))))
def test_matches_reference_including_ties(case):
    variant, (x, f, b, ids) = case
    expected, selected = reference_bulyan(x, f, variant=variant, b=b, ids=ids)
    out, chosen = (fn(x, f=f, variant=variant, b=b, client_ids=ids)
                   for fn in (bulyan, bulyan_selection))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(chosen, selected)


# --- properties ---------------------------------------------------------------------------

# TensorFlow flushes float32 subnormals to zero on CPU, which no rule can undo.
FLOATS = dict(min_value=-1e3, max_value=1e3, allow_subnormal=False)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(integer_problems(), st.randoms(use_true_random=False))
def test_client_order_does_not_matter(problem, rnd):
    """Rows permuted with their client ids: the same clients are selected, same output."""
    x, f, _, ids = problem
    order = list(range(len(x)))
    rnd.shuffle(order)
    np.testing.assert_array_equal(
        np.sort(ids[bulyan_selection(x, f=f, client_ids=ids)]),
        np.sort(ids[order][bulyan_selection(x[order], f=f, client_ids=ids[order])]))
    np.testing.assert_allclose(bulyan(x, f=f, client_ids=ids),
                               bulyan(x[order], f=f, client_ids=ids[order]), rtol=1e-6)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(integer_problems(), hnp.arrays(np.float32, 3, elements=st.integers(-50, 50)))
def test_translation_equivariance(problem, shift):
    x, f, _, ids = problem
    shift = shift[:x.shape[1]]
    np.testing.assert_allclose(bulyan(x + shift, f=f, client_ids=ids),
                               bulyan(x, f=f, client_ids=ids) + shift, rtol=1e-6, atol=1e-5)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, st.integers(1, 4), elements=FLOATS), st.integers(3, 11),
                  st.sampled_from(["textbook", "fedlaw"]))
def test_identical_inputs_return_that_input(row, n, variant):
    x = np.tile(row, (n, 1))
    np.testing.assert_allclose(bulyan(x, f=(n - 3) // 4, variant=variant), row, rtol=1e-6)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=3,
                                                          max_side=11), elements=FLOATS),
                  st.sampled_from([1e30, -1e30]), st.data())
def test_up_to_f_huge_rows_stay_within_honest_range(x, huge, data):
    n = len(x)
    f = data.draw(st.integers(0, (n - 3) // 4))
    attacked = x.copy()
    attacked[:f] = huge
    honest = x[f:]
    out = bulyan(attacked, f=f).numpy()
    assert np.all(out >= honest.min(0) - 1e-3) and np.all(out <= honest.max(0) + 1e-3)


# --- the factory inside TFF ---------------------------------------------------------------

NESTED = [collections.OrderedDict(a=np.array([v], np.float32), b=np.array([[v, -v]], np.float32))
          for v in VALUES[:, 0]]


def test_factory_on_nested_values_and_signature(tff_context):
    factory = BulyanFactory(byzantine_fraction=0.1)  # f = ⌈0.7⌉ = 1
    process = helpers.build_process(factory, NESTED[0])
    output = helpers.run_once(factory, NESTED, client_ids=range(10, 17), process=process)
    np.testing.assert_allclose(output.result["a"], [6.0])
    np.testing.assert_allclose(output.result["b"], [[6.0, -6.0]])
    assert list(output.measurements) == ["non_finite_clients", "f", "selected_clients"]
    np.testing.assert_array_equal(output.measurements["selected_clients"], [10, 11, 12, 13, 14])
    signature = process.next.type_signature
    assert str(signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,selected_clients=int32[?]>@SERVER"
    assert str(signature.result.result) == "<a=float32[1],b=float32[1,2]>@SERVER"
    assert str(process.initialize.type_signature.result) == "<round=int64,rule=<>>@SERVER"
    # Ties follow client ids, not arrival order.
    output = helpers.run_once(factory, NESTED, client_ids=REVERSED_IDS, process=process)
    np.testing.assert_array_equal(output.measurements["selected_clients"], [0, 2, 3, 4, 5])
    # Checked again each round: 6 clients, f = ⌈0.6⌉ = 1 needs n >= 7.
    with pytest.raises(Exception, match="bulyan needs n >= 4f \\+ 3"):
        helpers.run_once(factory, NESTED[:6], process=process)


def test_fedlaw_factory_on_scalars(tff_context):
    factory = BulyanFactory(variant="fedlaw", f=2)
    process = helpers.build_process(factory, np.float32(0))
    assert str(process.next.type_signature.result.result) == "float32@SERVER"
    assert str(process.next.type_signature.result.measurements) == \
        "<non_finite_clients=int32,f=int32,selected_clients=int32[?]>@SERVER"
    output = helpers.run_once(factory, list(VALUES[:, 0]), process=process)
    np.testing.assert_allclose(output.result, 5.0)
    np.testing.assert_array_equal(output.measurements["selected_clients"], [1, 2, 4])
