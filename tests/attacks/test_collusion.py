"""Math of the colluding/omniscient attacks (attacks.md §4) on hand-computed examples: LIE,
IPM, min-max / min-sum, mimic, the reference set's statistics and the forged loss."""

import math

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

from attacks import min_max
from attacks.ipm.vector import ipm_vector
from attacks.lie.vector import lie_vector, lie_z, lie_z_tensor
from attacks.losses import forged_loss
from attacks.mimic.vector import max_variance_index, mimic_misaligned_vectors
from attacks.min_max.vector import min_max_gamma, min_sum_gamma, perturbation
from attacks.reference import reference_statistics

TOL = 1e-5
# γ is returned in float32 rounded toward 0: allow one float32 ulp (at γ < 32) on top of 2·tol.
GAMMA_SLACK = 2 * TOL + 4e-6

# The 3×2 reference set of the hand-computed min-max / min-sum examples.
R3 = np.array([[0, 0], [0, 3], [3, 0]], np.float32)


# ----------------------------------------------------------------------------- lie z


@pytest.mark.parametrize("m, expected", [(20, 0.240), (40, 0.510), (60, 0.824), (80, 1.254)])
def test_lie_z_baruch_table(m, expected):
    assert lie_z(200, m) == pytest.approx(expected, abs=5e-4)
    assert lie_z(200, m, "baruch") == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("variant, expected", [
    ("baruch", 1.254),        # s = 101 − 80 = 21, Φ⁻¹(179/200)
    ("blades", 0.935),        # s = 100 + 1 − 80 = 21, Φ⁻¹(99/120)
    ("fedlaw_code", -1.311),  # s = 100 + 1 + 80 = 181, Φ⁻¹(19/200)
    (1.5, 1.5),
    (2, 2.0),                 # an int is accepted where a float is expected
])
def test_lie_z_variants_at_m80(variant, expected):
    assert lie_z(200, 80, variant) == pytest.approx(expected, abs=5e-4)
    assert float(lie_z_tensor(200, 80, variant)) == pytest.approx(lie_z(200, 80, variant),
                                                                   abs=1e-6)


@pytest.mark.parametrize("n, m, variant", [
    (10, 6, "baruch"),       # s = 0: argument 10/10 = 1
    (10, 5, "fedlaw_code"),  # s = 11: argument −1/10
    (10, 10, "blades"),      # n − m = 0
])
def test_lie_z_argument_outside_unit_interval(n, m, variant):
    with pytest.raises(ValueError, match=rf"outside \(0, 1\).*n={n}, m={m}, variant='{variant}'"):
        lie_z(n, m, variant)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        lie_z_tensor(tf.constant(n), tf.constant(m), variant)


def test_lie_z_validation():
    with pytest.raises(ValueError, match="variant='nope'"):
        lie_z(200, 20, "nope")
    with pytest.raises(ValueError, match="must be finite"):
        lie_z(200, 20, math.inf)
    with pytest.raises(TypeError, match="n=200.5"):
        lie_z(200.5, 20)
    with pytest.raises(ValueError, match="variant='nope'"):
        lie_z_tensor(200, 20, "nope")


# ------------------------------------------------------------- statistics and vectors


@pytest.mark.parametrize("ddof, sigma", [
    # x: 1, 2, 4 (mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 42/9);
    # y: 10, 20, 60 (mean 30, squared deviations 400 + 100 + 900 = 1400).
    (0, [math.sqrt(42 / 9 / 3), math.sqrt(1400 / 3)]),
    (1, [math.sqrt(42 / 9 / 2), math.sqrt(1400 / 2)]),
])
def test_reference_statistics(ddof, sigma):
    values = np.array([[1, 10], [100, -100], [2, 20], [4, 60]], np.float32)
    mask = [True, False, True, True]  # the masked-out row must not count
    mu, sd = reference_statistics(values, mask, ddof=ddof)
    np.testing.assert_allclose(mu, [7 / 3, 30], rtol=1e-6)
    np.testing.assert_allclose(sd, sigma, rtol=1e-6)


def test_reference_statistics_two_pass_survives_a_large_offset():
    values = np.array([[1e4 + 1], [1e4 + 2], [1e4 + 3]], np.float32)  # one-pass E[x²]−E[x]² fails
    _, sd = reference_statistics(values, [True] * 3)
    np.testing.assert_allclose(sd, [math.sqrt(2 / 3)], rtol=1e-6)


def test_reference_statistics_validation():
    values = np.ones([2, 3], np.float32)
    with pytest.raises(ValueError, match="ddof=2"):
        reference_statistics(values, [True, True], ddof=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="ddof=1"):
        reference_statistics(values, [True, False], ddof=1)


def test_lie_and_ipm_vectors():
    mu = tf.constant([1.0, -2.0])
    sigma = tf.constant([0.5, 2.0])
    np.testing.assert_allclose(lie_vector(mu, sigma, 1.5), [1.75, 1.0])
    np.testing.assert_allclose(lie_vector(mu, sigma, tf.constant(-1.0)), [0.5, -4.0])
    np.testing.assert_allclose(ipm_vector(mu, 0.1), [-0.1, 0.2], rtol=1e-6)
    np.testing.assert_allclose(ipm_vector(mu, 1), [-1.0, 2.0])


@pytest.mark.parametrize("kind, expected", [
    ("std", [1, 2, 3]), ("unit", [0.6, -0.8, 0]), ("sign", [1, -1, 0])])
def test_perturbation_kinds(kind, expected):
    mu = tf.constant([3.0, -4.0, 0.0])
    sigma = tf.constant([1.0, 2.0, 3.0])
    np.testing.assert_allclose(perturbation(mu, sigma, kind), expected, rtol=1e-6)


def test_perturbation_unit_of_zero_is_zero_and_unknown_kind_fails():
    np.testing.assert_array_equal(perturbation(tf.zeros([3]), tf.ones([3]), "unit"), [0, 0, 0])
    with pytest.raises(ValueError, match="kind='l2'"):
        perturbation(tf.zeros([3]), tf.ones([3]), "l2")


# --------------------------------------------------------------------- min-max / min-sum


def test_min_max_gamma_by_hand():
    # R = {(0,0), (0,3), (3,0)}: μ = (1, 1); each coordinate takes 0, 0, 3, so the population
    # variance is (1 + 1 + 4)/3 = 2 and σ = (√2, √2). With t = γ√2, u = μ − γσ = (1 − t, 1 − t).
    # Bound: max_{i,j} ||x_i − x_j||² = ||(0,3) − (3,0)||² = 18.
    # ||u − (0,0)||² = 2(1 − t)²;
    # ||u − (0,3)||² = ||u − (3,0)||² = (1 − t)² + (t + 2)² = 2t² + 2t + 5, the larger for t ≥ −1/2.
    # So 2t² + 2t + 5 ≤ 18 ⇔ 2t² + 2t − 13 ≤ 0
    # ⇔ t ≤ (−2 + √(4 + 104))/4 = (3√3 − 1)/2 ≈ 2.098076, i.e. γ* = (3√3 − 1)/(2√2) ≈ 1.483563.
    mu, sigma = reference_statistics(R3, [True] * 3)
    np.testing.assert_allclose(sigma, [math.sqrt(2)] * 2, rtol=1e-6)
    gamma = float(min_max_gamma(R3, mu, perturbation(mu, sigma, "std")))
    gamma_star = (3 * math.sqrt(3) - 1) / (2 * math.sqrt(2))
    assert gamma_star - GAMMA_SLACK <= gamma <= gamma_star


@pytest.mark.parametrize("bound, gamma_star", [
    # Same R, μ, σ, t as above. Σ_i ||u − x_i||² = 2(1 − t)² + 2[(1 − t)² + (t + 2)²] = 6t² + 12.
    # Row sums Σ_j ||x_i − x_j||²: (0,0): 0 + 9 + 9 = 18; (0,3) and (3,0): 9 + 18 = 27.
    ("min", 1 / math.sqrt(2)),             # 6t² + 12 ≤ 18 ⇔ t ≤ 1
    ("max", math.sqrt(2.5) / math.sqrt(2)),  # 6t² + 12 ≤ 27 ⇔ t ≤ √2.5
])
def test_min_sum_gamma_by_hand(bound, gamma_star):
    mu, sigma = reference_statistics(R3, [True] * 3)
    gamma = float(min_sum_gamma(R3, mu, perturbation(mu, sigma, "std"), bound=bound))
    assert gamma_star - GAMMA_SLACK <= gamma <= gamma_star


def test_min_sum_default_bound_is_min():
    mu, sigma = reference_statistics(R3, [True] * 3)
    p = perturbation(mu, sigma, "std")
    assert float(min_sum_gamma(R3, mu, p)) == float(min_sum_gamma(R3, mu, p, bound="min"))


def test_gamma_search_saturates_below_two_gamma0_when_everything_is_ok():
    # p = 0 (all rows equal): every γ is ok; the search climbs to 2γ0 − 2·step (step ≈ 9.5e-6).
    reference = np.ones([3, 2], np.float32)
    mu, sigma = reference_statistics(reference, [True] * 3)
    gamma = float(min_max_gamma(reference, mu, sigma, gamma0=10.0))
    assert 20 - 3 * TOL < gamma < 20


def test_gamma_search_validation():
    mu, sigma = reference_statistics(R3, [True] * 3)
    with pytest.raises(ValueError, match="gamma0=0"):
        min_max_gamma(R3, mu, sigma, gamma0=0)
    with pytest.raises(ValueError, match="tol=-1"):
        min_sum_gamma(R3, mu, sigma, tol=-1)
    with pytest.raises(ValueError, match="bound='mean'"):
        min_sum_gamma(R3, mu, sigma, bound="mean")


def _squared_distances_to(u, reference):
    return ((reference.astype(np.float64) - u) ** 2).sum(axis=1)


def _u(mu, p, gamma):
    return np.asarray(mu, np.float64) - gamma * np.asarray(p, np.float64)


_ROWS = tf.TensorSpec([None, None], tf.float32)
_VECTOR = tf.TensorSpec([None], tf.float32)
# Traced once with unknown shapes: each example then runs in milliseconds, not an eager loop.
_min_max_graph = tf.function(min_max_gamma, input_signature=[_ROWS, _VECTOR, _VECTOR])
_min_sum_graphs = {
    bound: tf.function(lambda reference, mu, p, bound=bound: min_sum_gamma(reference, mu, p,
                                                                           bound=bound),
                       input_signature=[_ROWS, _VECTOR, _VECTOR])
    for bound in min_max.SUM_BOUNDS}

references = st.integers(2, 6).flatmap(lambda r: st.integers(1, 4).flatmap(
    lambda d: hnp.arrays(np.float32, (r, d), elements=st.integers(-40, 40).map(lambda k: k / 4))))


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(reference=references, kind=st.sampled_from(min_max.PERTURBATIONS))
def test_min_max_gamma_is_the_largest_ok_value(reference, kind):
    mu, sigma = reference_statistics(reference, [True] * len(reference))
    p = perturbation(mu, sigma, kind)
    gamma = float(_min_max_graph(reference, mu, p))
    x = reference.astype(np.float64)
    bound = max(_squared_distances_to(row, x).max() for row in x)

    def excess(g):
        return _squared_distances_to(_u(mu, p, g), x).max() - bound

    assert 0 <= gamma < 20
    assert excess(gamma) <= 1e-9 * (1 + bound)
    if gamma < 20 - 4 * TOL:
        assert excess(gamma + GAMMA_SLACK) > 0


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(reference=references, kind=st.sampled_from(min_max.PERTURBATIONS),
                  bound_kind=st.sampled_from(min_max.SUM_BOUNDS))
def test_min_sum_gamma_is_the_largest_ok_value(reference, kind, bound_kind):
    mu, sigma = reference_statistics(reference, [True] * len(reference))
    p = perturbation(mu, sigma, kind)
    gamma = float(_min_sum_graphs[bound_kind](reference, mu, p))
    x = reference.astype(np.float64)
    row_sums = [_squared_distances_to(row, x).sum() for row in x]
    bound = min(row_sums) if bound_kind == "min" else max(row_sums)

    def excess(g):
        return _squared_distances_to(_u(mu, p, g), x).sum() - bound

    assert 0 <= gamma < 20
    assert excess(gamma) <= 1e-9 * (1 + bound)
    if gamma < 20 - 4 * TOL:
        assert excess(gamma + GAMMA_SLACK) > 0


# ------------------------------------------------------------------------------ mimic


def test_max_variance_index_picks_the_extreme_row_along_the_spread():
    # Honest rows spread along x (−1, −3, 5, 0), barely along y; the top direction is ±x.
    # Power iteration starts from the first centred honest row (−1, 0) − μ, with x < 0, so
    # e ≈ −x and the target is the most negative x: value row 2 (x = −3). Row 0 is Byzantine.
    values = np.array([[100, 100], [-1, 0], [-3, 0.1], [5, 0], [0, 0.2]], np.float32)
    mask = [False, True, True, True, True]
    assert int(max_variance_index(values, mask)) == 2
    # First honest row on the positive side: e ≈ +x and the target is x = 5.
    values[1] = [2, 0]
    assert int(max_variance_index(values, mask)) == 3


def test_max_variance_index_ties_and_degenerate_starts():
    # μ = 7/4, first centred row 3 − 7/4 > 0 → e = +x; rows 1 and 3 tie at 5 → lowest index.
    values = np.array([[3], [5], [-6], [5]], np.float32)
    assert int(max_variance_index(values, [True] * 4)) == 1
    # First row equals μ = 2 (zero centred row): start from the next one (0 − 2 < 0) → e = −x.
    values = np.array([[2], [0], [5], [1]], np.float32)
    assert int(max_variance_index(values, [True] * 4)) == 1
    # All honest rows equal: every score is 0, the first honest row wins.
    values = np.array([[9], [1], [1], [1]], np.float32)
    assert int(max_variance_index(values, [False, True, True, True])) == 1
    with pytest.raises(ValueError, match="iterations=0"):
        max_variance_index(values, [True] * 4, iterations=0)


def test_max_variance_index_matches_numpy_principal_direction():
    rng = np.random.default_rng(0)
    values = (rng.normal(size=(9, 6)) * [5, 1, 1, 1, 1, 1]).astype(np.float32)
    mask = np.array([True] * 7 + [False] * 2)
    honest = values[mask].astype(np.float64)
    centred = honest - honest.mean(axis=0)
    e = np.linalg.svd(centred)[2][0]
    e *= np.sign(e @ centred[0])  # the sign power iteration reaches from the first centred row
    assert int(max_variance_index(values, mask)) == int(np.argmax(centred @ e))


def test_mimic_misaligned_vectors():
    own = np.array([[1, 2, 3, 4], [-1, 0, 0, 1], [0, 0, 0, 0]], np.float32)
    seeds = np.array([[1, 2], [3, 4], [5, 6]], np.int64)
    v = mimic_misaligned_vectors(own, seeds, eta=0.1).numpy()
    np.testing.assert_allclose(np.linalg.norm(v + own, axis=1), [0.1] * 3, rtol=1e-6)
    np.testing.assert_array_equal(v, mimic_misaligned_vectors(own, seeds, eta=0.1))
    # Each row's direction depends only on its own seed, not on its position or the others.
    other = mimic_misaligned_vectors(own[[1, 0, 2]], seeds[[1, 0, 2]] + [[0, 0], [0, 0], [0, 1]])
    np.testing.assert_array_equal(other[0], v[1])
    np.testing.assert_array_equal(other[1], v[0])
    assert not np.allclose(other[2], v[2])
    np.testing.assert_array_equal(mimic_misaligned_vectors(own, seeds, eta=0), -own)
    with pytest.raises(ValueError, match="eta=-1"):
        mimic_misaligned_vectors(own, seeds, eta=-1)


@pytest.mark.parametrize("mode, value, expected", [
    # losses 1, 2, 3, 6: mean 3, population variance (4 + 1 + 0 + 9)/4 = 3.5.
    ("mean_minus_rho_std", 0.3, 3 - 0.3 * math.sqrt(3.5)),
    ("mean_plus_z_std", 1.254, 3 + 1.254 * math.sqrt(3.5)),
    ("mean_minus_rho_std", 0, 3.0),
    ("value", 0.5, 0.5),
])
def test_forged_loss(mode, value, expected):
    losses = tf.constant([1.0, 2.0, 3.0, 6.0])
    assert float(forged_loss(losses, mode, value)) == pytest.approx(expected, rel=1e-6)


def test_forged_loss_unknown_mode():
    with pytest.raises(ValueError, match="mode='median'"):
        forged_loss(tf.constant([1.0]), "median")


# ------------------------------------------------- graph mode with an unknown row count


def test_graph_mode_with_dynamic_rows_equals_eager():
    rows = tf.TensorSpec([None, None], tf.float32)
    vector = tf.TensorSpec([None], tf.float32)
    mask_spec = tf.TensorSpec([None], tf.bool)
    values = np.array([[1, 10], [100, -100], [2, 20], [4, 60]], np.float32)
    mask = np.array([True, False, True, True])

    @tf.function(input_signature=[rows, mask_spec, tf.TensorSpec([], tf.int32)])
    def graph(values, mask, m):
        n = tf.shape(values)[0]
        mu, sigma = reference_statistics(values, mask, ddof=1)
        reference = tf.boolean_mask(values, mask)
        p = perturbation(mu, sigma, "unit")
        return (mu, sigma, lie_z_tensor(n, m, "baruch"), min_max_gamma(reference, mu, p),
                min_sum_gamma(reference, mu, p, bound="max"), max_variance_index(values, mask))

    mu, sigma = reference_statistics(values, mask, ddof=1)
    p = perturbation(mu, sigma, "unit")
    eager = (mu, sigma, lie_z_tensor(4, 1, "baruch"), min_max_gamma(values[mask], mu, p),
             min_sum_gamma(values[mask], mu, p, bound="max"), max_variance_index(values, mask))
    for got, want in zip(graph(values, mask, tf.constant(1)), eager):
        np.testing.assert_allclose(got, want, rtol=1e-6)

    @tf.function(input_signature=[rows, tf.TensorSpec([None, 2], tf.int64), vector])
    def graph_local(own, seeds, losses):
        return mimic_misaligned_vectors(own, seeds), forged_loss(losses, "mean_minus_rho_std", 0.3)

    own = values[:2]
    seeds = np.array([[7, 1], [7, 2]], np.int64)
    losses = np.array([1, 2, 3, 6], np.float32)
    got_vectors, got_loss = graph_local(own, seeds, losses)
    np.testing.assert_array_equal(got_vectors, mimic_misaligned_vectors(own, seeds))
    assert float(got_loss) == pytest.approx(float(forged_loss(losses, "mean_minus_rho_std", 0.3)))
