"""FedLAW math (fedlaw/math.py): projection, weight step, schedules, §9, ablations, detection."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from fedlaw import math as fm


@pytest.fixture
def tff_like_graph_mode():
    """TFF traces with tensor equality off: `tensor == tensor` is then Python identity."""
    tf.compat.v1.disable_tensor_equality()
    try:
        yield
    finally:
        tf.compat.v1.enable_tensor_equality()


# --- NumPy references -------------------------------------------------------------------


def bisection_projections(h, masks, t, iterations=80):
    """Rows of `masks [M, n]`: projection of h restricted to each support onto the capped
    simplex (bisection on τ, zeros outside the support)."""
    h = np.asarray(h, np.float64)
    lo = np.where(masks, h, np.inf).min(axis=1) - t
    hi = np.where(masks, h, -np.inf).max(axis=1)

    def total(tau):
        return np.where(masks, np.clip(h - tau[:, None], 0.0, t), 0.0).sum(axis=1)

    for _ in range(iterations):
        mid = (lo + hi) / 2
        above = total(mid) > 1.0
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.where(masks, np.clip(h - ((lo + hi) / 2)[:, None], 0.0, t), 0.0)


def brute_force_distance(h, s, t):
    """min ||w − h||² over every support S with |S| ≤ s and |S|·t ≥ 1 (the definition of Proj_Δ)."""
    n = len(h)
    supports = [c for size in range(1, s + 1) if size * t >= 1 - 1e-12
                for c in itertools.combinations(range(n), size)]
    masks = np.zeros((len(supports), n), bool)
    for row, support in enumerate(supports):
        masks[row, list(support)] = True
    candidates = bisection_projections(h, masks, t)
    return ((candidates - h) ** 2).sum(axis=1).min()


def assert_in_weight_set(w, s, t):
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert (w >= 0).all() and (w <= t + 1e-15).all()
    assert np.count_nonzero(w) <= s


def assert_kkt(w, h, t):
    """On the support, w_i = clip(h_i − τ, 0, t) for a single τ (interval of valid τ non-empty)."""
    support = w > 0
    free = support & (w < t - 1e-12)
    at_cap = support & ~free
    # i in the support at 0 is impossible (w > 0); unsupported entries need no condition.
    lows = list(h[free] - w[free])
    highs = list(h[free] - w[free]) + list(h[at_cap] - t)
    if lows:
        assert max(lows) - min(lows) < 1e-9
        assert max(lows) <= min(highs) + 1e-9


def top_s_support(h, s):
    order = np.argsort(-np.asarray(h), kind="stable")  # ties → lower index
    mask = np.zeros(len(h), bool)
    mask[order[:s]] = True
    return mask


def project(h, s, t):
    return fm.project_sparse_capped_simplex(np.asarray(h, np.float64), s, t).numpy()


# Traced once for the many brute-force cases (eager TF op dispatch dominates otherwise);
# `test_sparse_projection_in_graph_mode_with_unknown_shapes` checks it equals eager.
_traced_projection = tf.function(fm.project_sparse_capped_simplex, input_signature=[
    tf.TensorSpec([None], tf.float64), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float64)])


# --- Projection (§5) ----------------------------------------------------------------------


def random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    s = int(rng.integers(1, n + 1))
    kind = rng.random()
    if kind < 0.2:
        t = 1.0 / s  # s·t = 1: a single feasible point per support
    elif kind < 0.3:
        t = 1.0
    else:
        t = float(rng.uniform(1.0 / s, 1.0))
    if rng.random() < 0.2:
        h = rng.integers(-2, 3, size=n) / 4.0  # ties
    else:
        h = rng.normal(scale=rng.choice([0.01, 0.3, 3.0]), size=n)
    return h, s, t


def test_projection_matches_brute_force_over_all_supports():
    """Theorem 1: top-s + capped-simplex projection attains the minimum over all supports."""
    for seed in range(200):
        h, s, t = random_case(seed)
        w = _traced_projection(h, s, t).numpy()
        assert_in_weight_set(w, s, t)
        assert_kkt(w, h, t)
        assert not (w[~top_s_support(h, s)] > 0).any(), (seed, h, s, t, w)
        distance = ((w - h) ** 2).sum()
        assert distance == pytest.approx(brute_force_distance(h, s, t), abs=1e-10), (seed, h, s, t)


def test_capped_simplex_projection_matches_bisection():
    rng = np.random.default_rng(7)
    for _ in range(30):
        k = int(rng.integers(1, 60))
        t = float(rng.uniform(1.0 / k, 1.0))
        y = rng.normal(scale=rng.choice([0.01, 1.0, 100.0]), size=k)
        x = fm.capped_simplex_projection(y, t).numpy()
        expected = bisection_projections(y, np.ones((1, k), bool), t)[0]
        np.testing.assert_allclose(x, expected, atol=1e-12)
        assert x.sum() == pytest.approx(1.0, abs=1e-12)
        assert_kkt(x, y, t)


def test_capped_simplex_projection_exact_values():
    np.testing.assert_allclose(fm.capped_simplex_projection([1.0, 2.0, 3.0], 0.6), [0, 0.4, 0.6],
                               atol=1e-15)
    # Unconstrained by the cap: the plain simplex projection, τ = 0.25.
    np.testing.assert_allclose(fm.capped_simplex_projection([1.0, 0.5], 1.0), [0.75, 0.25],
                               atol=1e-15)


def test_keeps_largest_signed_values_not_magnitudes():
    np.testing.assert_allclose(project([-5.0, 1.0, 0.5], 2, 1.0), [0.0, 0.75, 0.25], atol=1e-15)


def test_ties_go_to_the_lower_index():
    np.testing.assert_array_equal(project([1.0, 1.0, 1.0, 1.0], 2, 1.0), [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(project([0.0, 2.0, 2.0, 2.0, 1.0], 2, 0.6), [0, 0.5, 0.5, 0, 0],
                               atol=1e-15)
    h = np.random.default_rng(2).integers(0, 3, size=200) / 4.0  # many ties at paper size
    w = project(h, 120, 1 / 110)
    np.testing.assert_array_equal(w > 0, top_s_support(h, 120))


def test_s_times_t_equal_one_gives_the_cap_on_the_top_s():
    h = np.random.default_rng(3).normal(size=200)
    w = project(h, 110, 1 / 110)  # 110 · (1/110) rounds to within 1e-16 of 1
    support = top_s_support(h, 110)
    np.testing.assert_array_equal(w[support], 1 / 110)
    np.testing.assert_array_equal(w[~support], 0.0)
    np.testing.assert_array_equal(project([0.3, -1.0, 0.2, 5.0], 2, 0.5), [0.5, 0, 0, 0.5])


def test_paper_setting_n200():
    """n = 200, s = 120, t = 1/110 (f = 0.4): a feasible point with many weights at the cap."""
    h = np.random.default_rng(4).normal(scale=0.01, size=200)
    w = project(h, 120, 1 / 110)
    assert_in_weight_set(w, 120, 1 / 110)
    assert_kkt(w, h, 1 / 110)


@pytest.mark.parametrize("constant", [3.7, -1e3, 1e6])
def test_invariant_to_adding_a_constant(constant):
    rng = np.random.default_rng(5)
    for _ in range(10):
        h = rng.normal(scale=0.1, size=12)
        np.testing.assert_allclose(project(h + constant, 7, 0.2), project(h, 7, 0.2),
                                   atol=1e-9 * max(1.0, abs(constant)))


def test_minus_inf_entries_get_zero_weight():
    h = np.array([-np.inf, 0.3, -np.inf, 0.1, 0.2])
    w = project(h, 5, 0.5)  # 3 finite entries ≥ ⌈1/0.5⌉ = 2
    np.testing.assert_array_equal(w[[0, 2]], 0.0)
    np.testing.assert_allclose(w[[1, 3, 4]], project([0.3, 0.1, 0.2], 3, 0.5), atol=1e-15)
    # Exactly ⌈1/t⌉ finite entries: they carry everything.
    np.testing.assert_allclose(project([-np.inf, 0.3, -np.inf, 0.1], 4, 0.5), [0, 0.5, 0, 0.5],
                               atol=1e-15)
    # NaN counts as −inf.
    np.testing.assert_allclose(project([np.nan, 0.3, 0.1], 3, 0.5), [0, 0.5, 0.5], atol=1e-15)


def test_too_few_finite_entries_still_gives_a_feasible_point():
    w = project([-np.inf, 0.3, -np.inf], 3, 0.5)
    assert np.isfinite(w).all()
    assert_in_weight_set(w, 3, 0.5)
    assert w[1] == 0.5


def test_plus_inf_entry_gets_the_cap():
    # The finite rest shares 1 − t = 0.5: τ = 1/30.
    np.testing.assert_allclose(project([0.1, np.inf, 0.3, 0.2], 4, 0.5),
                               [1 / 15, 0.5, 4 / 15, 1 / 6], atol=1e-15)


def test_s_larger_than_n_is_clamped():
    np.testing.assert_allclose(project([0.3, 0.1], 5, 1.0), [0.6, 0.4], atol=1e-15)


def test_sparse_projection_in_graph_mode_with_unknown_shapes(tff_like_graph_mode):
    traced = tf.function(fm.project_sparse_capped_simplex, input_signature=[
        tf.TensorSpec([None], tf.float64), tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.float64)])
    for seed in range(6):
        h, s, t = random_case(seed)
        np.testing.assert_array_equal(traced(h, s, t), project(h, s, t))
    h = np.array([-np.inf, 0.3, -np.inf, 0.1, 0.2])
    np.testing.assert_array_equal(traced(h, 3, 0.5), project(h, 3, 0.5))


def test_capped_projection_in_graph_mode_with_unknown_shapes(tff_like_graph_mode):
    traced = tf.function(fm.capped_simplex_projection, input_signature=[
        tf.TensorSpec([None], tf.float64), tf.TensorSpec([], tf.float64)])
    y = np.random.default_rng(6).normal(size=9)
    np.testing.assert_array_equal(traced(y, 0.3), fm.capped_simplex_projection(y, 0.3))
    np.testing.assert_array_equal(traced(y[:4], 0.25), [0.25] * 4)


def test_check_feasible_message():
    with pytest.raises(ValueError) as error:
        fm.check_feasible(95, 0.01)
    assert str(error.value) == (
        "FedLAW: empty weight set: s*t = 0.95 < 1 (s=95, t=0.01); raise cap or s")
    fm.check_feasible(110, 1 / 110)  # s·t = 1 up to rounding
    fm.check_feasible(120, 1 / 110)
    fm.check_feasible(3, 1 / 3)


# --- Weight step (§2, §4) -------------------------------------------------------------------


def quadratic_problem(n=4, d=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 3, d))
    b = rng.normal(size=(n, 3))

    def losses(theta):
        return 0.5 * ((np.einsum("ijk,k->ij", a, theta) - b) ** 2).sum(axis=1)

    def gradients(theta):  # [n, d]
        return np.einsum("ijk,ij->ik", a, np.einsum("ijk,k->ij", a, theta) - b)

    return losses, gradients, rng.normal(size=d), rng.dirichlet(np.ones(n))


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-7), (np.float32, 1e-5)])
def test_weight_step_is_a_gradient_step_on_phi(dtype, rtol):
    """h = w − β∇Φ_k(w) with ∇Φ_k(w) = f̃ − α Gᵀ G̃ w, checked by finite differences of Φ_k."""
    losses, gradients, theta, w = quadratic_problem()
    alpha, beta = 0.1, 0.05
    g = gradients(theta)

    def phi(weights):
        return weights @ losses(theta - alpha * g.T @ weights)

    eps = 1e-6
    numeric = np.array([(phi(w + eps * e) - phi(w - eps * e)) / (2 * eps)
                        for e in np.eye(len(w))])
    theta_tilde = theta - alpha * g.T @ w
    g_tilde, f_tilde = gradients(theta_tilde), losses(theta_tilde)
    np.testing.assert_allclose(numeric, f_tilde - alpha * g @ (g_tilde.T @ w), rtol=1e-7)

    h = fm.weight_step((-alpha * g).astype(dtype), (-alpha * g_tilde).astype(dtype), w, f_tilde,
                       alpha=alpha, beta=beta).numpy()
    assert h.dtype == np.float64
    np.testing.assert_allclose(h, w - beta * numeric, rtol=rtol)


def test_weight_step_over_several_column_blocks(monkeypatch):
    monkeypatch.setattr(fm, "_BLOCK_COLUMNS", 3)
    rng = np.random.default_rng(8)
    delta_a = rng.normal(size=(5, 2, 5)).astype(np.float32)  # D = 10: blocks 3 + 3 + 3 + 1
    delta_b = rng.normal(size=(5, 2, 5)).astype(np.float32)
    w, losses = rng.dirichlet(np.ones(5)), rng.normal(size=5)
    z = np.einsum("i,id->d", w, delta_b.reshape(5, -1).astype(np.float64))
    expected = w + 0.5 / 0.01 * delta_a.reshape(5, -1).astype(np.float64) @ z - 0.5 * losses
    h = fm.weight_step(delta_a, delta_b, w, losses, alpha=0.01, beta=0.5)
    np.testing.assert_allclose(h, expected, rtol=1e-12)


def test_alignment_step_from_a_summed_consensus(monkeypatch):
    """h from Z = Σ_j w_j Δ̃_j summed elsewhere (pass B streamed) equals the weight step
    from the stacked pass-B deltas, over several column blocks."""
    monkeypatch.setattr(fm, "_BLOCK_COLUMNS", 4)
    rng = np.random.default_rng(18)
    delta_a = rng.normal(size=(6, 11)).astype(np.float32)
    delta_b = rng.normal(size=(6, 11)).astype(np.float32)
    w, losses = rng.dirichlet(np.ones(6)), rng.normal(size=6)
    z = w @ delta_b.astype(np.float64)
    h = fm.alignment_step(delta_a, z, w, losses, alpha=0.05, beta=0.2)
    np.testing.assert_allclose(h, w + 0.2 / 0.05 * delta_a.astype(np.float64) @ z - 0.2 * losses,
                               rtol=1e-12)
    np.testing.assert_allclose(
        h, fm.weight_step(delta_a, delta_b, w, losses, alpha=0.05, beta=0.2), rtol=1e-12)
    z64 = fm.weighted_delta(delta_b, w, dtype=tf.float64)
    assert z64.dtype == tf.float64
    np.testing.assert_allclose(z64, z, rtol=1e-12)


def test_weight_step_loss_only_ablation():
    w, losses = np.array([0.5, 0.25, 0.25]), np.array([2.0, 1.0, 4.0], np.float32)
    h = fm.weight_step(None, None, w, losses, alpha=0.01, beta=0.1, mode="bsum")
    np.testing.assert_allclose(h, [0.3, 0.15, -0.15], atol=1e-15)
    with pytest.raises(ValueError, match="mode='sum'"):
        fm.weight_step(None, None, w, losses, alpha=0.01, beta=0.1, mode="sum")


def test_weight_step_in_graph_mode_with_unknown_shapes(tff_like_graph_mode):
    spec = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None], tf.float64), tf.TensorSpec([None], tf.float32)]
    traced = tf.function(lambda a, b, w, f: fm.weight_step(a, b, w, f, alpha=0.01, beta=1e-3),
                         input_signature=spec)
    rng = np.random.default_rng(9)
    a, b = (rng.normal(size=(6, 11)).astype(np.float32) for _ in range(2))
    w, f = rng.dirichlet(np.ones(6)), rng.random(6).astype(np.float32)
    np.testing.assert_array_equal(traced(a, b, w, f),
                                  fm.weight_step(a, b, w, f, alpha=0.01, beta=1e-3))


def test_weighted_delta_matches_numpy(monkeypatch):
    rng = np.random.default_rng(10)
    delta = rng.normal(size=(4, 2, 5)).astype(np.float32)
    w = rng.dirichlet(np.ones(4))
    expected = np.einsum("i,ijk->jk", w, delta.astype(np.float64))
    out = fm.weighted_delta(delta, w)
    assert out.dtype == tf.float32 and out.shape == (2, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    monkeypatch.setattr(fm, "_BLOCK_COLUMNS", 4)  # 4 + 4 + 2 columns
    np.testing.assert_allclose(fm.weighted_delta(delta, w), expected, rtol=1e-6)
    np.testing.assert_allclose(fm.weighted_delta(delta.astype(np.float64), w), expected,
                               rtol=1e-14)


def test_weighted_delta_in_graph_mode_with_unknown_shapes(tff_like_graph_mode):
    traced = tf.function(fm.weighted_delta, input_signature=[
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.float64)])
    delta = np.random.default_rng(11).normal(size=(3, 7)).astype(np.float32)
    np.testing.assert_array_equal(traced(delta, [0.2, 0.3, 0.5]),
                                  fm.weighted_delta(delta, [0.2, 0.3, 0.5]))


# --- Schedules and defaults (§6) ------------------------------------------------------------


def test_sparsity_schedule_paper_default():
    """n = 200, T = 200, f = 0.4: s_start = round(0.04T) = 8, s_end = round(0.5T) = 100."""
    def schedule(k):
        return fm.sparsity(k, 200, 0.4, 8, 100)

    assert [schedule(k) for k in (0, 5, 8)] == [200] * 3
    assert [schedule(k) for k in (100, 150, 199)] == [120] * 3
    assert schedule(9) == 200  # ⌈200 − 80·1/92⌉ = ⌈199.13⌉
    assert schedule(50) == 164  # ⌈200 − 80·42/92⌉ = ⌈163.48⌉
    assert schedule(54) == 160  # 200 − 80·46/92 exactly
    assert schedule(99) == 121  # ⌈200 − 80·91/92⌉ = ⌈120.87⌉
    values = [schedule(k) for k in range(200)]
    assert values == sorted(values, reverse=True)


def test_fixed_sparsity():
    assert [fm.sparsity(k, 200, 0.4, 0, 0) for k in (0, 1, 199)] == [120] * 3
    assert fm.s_final(200, 0.4) == 120
    assert fm.s_final(200, 0.1) == 180
    assert fm.s_final(10, 0.3) == 7  # 0.3 · 10 = 3.0000000000000004 in floats
    assert fm.s_final(10, 0.0) == 10


def test_sparsity_errors():
    with pytest.raises(ValueError, match="s_start=9, s_end=8"):
        fm.sparsity(0, 200, 0.4, 9, 8)
    with pytest.raises(ValueError, match="f=1.0"):
        fm.s_final(10, 1.0)
    with pytest.raises(ValueError, match=r"s_final=0 \(n=3, f=0.9\)"):
        fm.s_final(3, 0.9)


def test_sparsity_tensor_matches_python(tff_like_graph_mode):
    traced = tf.function(fm.sparsity_tensor, input_signature=[
        tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    for s_start, s_end in [(8, 100), (0, 0), (3, 4)]:
        for k in sorted({*range(0, 200, 7), 2, 3, 4, 5, 8, 9, 99, 100, 101, 199}):
            expected = fm.sparsity(k, 200, 0.4, s_start, s_end)
            assert int(traced(k, 200, 120, s_start, s_end)) == expected
    assert int(fm.sparsity_tensor(tf.constant(50, tf.int64), 200, 120, 8, 100)) == 164


def test_default_cap():
    assert fm.default_cap(200, 120) == 1 / 110
    assert fm.default_cap(200, 180) == 1 / 170
    assert fm.default_cap(20, 2) == 1.0  # offset ⌈0.05·20⌉ = 1
    with pytest.raises(ValueError) as error:
        fm.default_cap(20, 1)
    message = str(error.value)
    assert "\n" not in message
    assert "n=20" in message and "s_final=1" in message and "offset=1" in message


# --- Partial participation (§9) -------------------------------------------------------------


def test_participant_weights():
    w_hat, mass = fm.participant_weights(np.array([0.1, 0.2, 0.3, 0.4]), [1, 3])
    np.testing.assert_allclose(w_hat, [1 / 3, 2 / 3], rtol=1e-15)
    assert float(mass) == pytest.approx(0.6, abs=1e-15)
    w_hat, mass = fm.participant_weights(np.array([0.5, 0.0, 0.5, 0.0]), [1, 3])
    np.testing.assert_array_equal(w_hat, [0.5, 0.5])
    assert float(mass) == 0.0


def test_write_back():
    w = fm.write_back(np.array([0.1, 0.2, 0.3, 0.4]), [1, 3], [0.75, 0.25], 0.6)
    np.testing.assert_allclose(w, [0.1, 0.45, 0.3, 0.15], atol=1e-15)
    # Σ_P w = 0: M = m/N = 1/2, then renormalised from 1.5 to 1.
    w = fm.write_back(np.array([0.5, 0.0, 0.5, 0.0]), [1, 3], [0.25, 0.75], 0.0)
    np.testing.assert_allclose(w, [1 / 3, 1 / 12, 1 / 3, 1 / 4], atol=1e-15)


def test_participation_in_graph_mode_with_unknown_shapes(tff_like_graph_mode):
    weights = tf.function(fm.participant_weights, input_signature=[
        tf.TensorSpec([None], tf.float64), tf.TensorSpec([None], tf.int32)])
    back = tf.function(fm.write_back, input_signature=[
        tf.TensorSpec([None], tf.float64), tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.float64), tf.TensorSpec([], tf.float64)])
    for w_all in (np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.0, 0.5, 0.0])):
        w_hat, mass = weights(w_all, [1, 3])
        eager_hat, eager_mass = fm.participant_weights(w_all, [1, 3])
        np.testing.assert_array_equal(w_hat, eager_hat)
        assert float(mass) == float(eager_mass)
        np.testing.assert_array_equal(back(w_all, [1, 3], [0.25, 0.75], mass),
                                      fm.write_back(w_all, [1, 3], [0.25, 0.75], mass))


def test_participant_sparsity():
    assert fm.participant_sparsity(120, 1 / 110, 200, 200) == (120, 1 / 110)
    s_p, t_p = fm.participant_sparsity(120, 1 / 110, 50, 200)
    assert s_p == 30 and t_p == pytest.approx(4 / 110, rel=1e-15)
    assert fm.participant_sparsity(121, 1 / 110, 50, 200)[0] == 31  # ⌈30.25⌉
    assert fm.participant_sparsity(90, 0.3, 10, 100) == (9, 1.0)
    for args in [(120, 1 / 110, 200, 200), (121, 1 / 110, 50, 200), (90, 0.3, 10, 100)]:
        s_p, t_p = fm.participant_sparsity(tf.constant(args[0]), args[1], tf.constant(args[2]),
                                           args[3])
        assert s_p.dtype == tf.int32 and t_p.dtype == tf.float64
        assert (int(s_p), float(t_p)) == pytest.approx(fm.participant_sparsity(*args), rel=1e-15)
        assert int(s_p) * float(t_p) >= min(1.0, args[0] * args[1]) - 1e-12  # feasible


# --- Ablations (§6) ---------------------------------------------------------------------------


def test_clip_by_median_norm():
    delta = np.array([[3, 4], [0, 1], [6, 8], [0, 0]], np.float32)  # norms 5, 1, 10, 0
    clipped, radius, count = fm.clip_by_median_norm(delta)  # median (1 + 5)/2 = 3
    assert float(radius) == 3.0 and int(count) == 2
    np.testing.assert_allclose(clipped, [[1.8, 2.4], [0, 1], [1.8, 2.4], [0, 0]], rtol=1e-6)
    assert clipped.dtype == tf.float32
    clipped, radius, count = fm.clip_by_median_norm(delta, kappa=2.0)
    assert float(radius) == 6.0 and int(count) == 1
    np.testing.assert_allclose(clipped, [[3, 4], [0, 1], [3.6, 4.8], [0, 0]], rtol=1e-6)


def test_clip_by_median_norm_odd_rows_and_blocks(monkeypatch):
    monkeypatch.setattr(fm, "_BLOCK_COLUMNS", 2)
    delta = np.zeros((3, 1, 3), np.float32)
    delta[:, 0, 0] = [1.0, -7.0, 2.0]  # norms 1, 7, 2 → median 2
    clipped, radius, count = fm.clip_by_median_norm(delta)
    assert float(radius) == 2.0 and int(count) == 1
    np.testing.assert_allclose(clipped[:, 0, 0], [1.0, -2.0, 2.0], rtol=1e-6)
    assert clipped.shape == (3, 1, 3)


def test_mad_loss_filter_flags_only_low_losses():
    # med 1.0, |dev| = [0, .1, .1, 0, 1, 4] → MAD 0.1, cut 1 − 3·1.4826·0.1 = 0.555
    losses = [1.0, 1.1, 0.9, 1.0, 0.0, 5.0]
    keep, flagged, skipped = fm.mad_loss_filter(losses, 2)
    np.testing.assert_array_equal(keep, [True, True, True, True, False, True])
    assert int(flagged) == 1 and not bool(skipped)
    keep, flagged, skipped = fm.mad_loss_filter(losses, 6)  # only 5 would remain
    np.testing.assert_array_equal(keep, [True] * 6)
    assert int(flagged) == 1 and bool(skipped)
    keep, flagged, skipped = fm.mad_loss_filter([1.0, 1.0, 1.0, 1.0, 0.0], 1)  # MAD = 0
    np.testing.assert_array_equal(keep, [True] * 5)
    assert int(flagged) == 0 and not bool(skipped)


def test_mad_loss_filter_over_valid_clients_only():
    """Excluded (non-finite, zeroed) clients neither shift med/MAD nor count as remaining."""
    losses = [1.0, 1.1, 0.9, 1.0, 0.0, 5.0, 0.0, 0.0, 0.0]
    valid = [True] * 6 + [False] * 3
    keep, flagged, skipped = fm.mad_loss_filter(losses, 2, valid=valid)
    # Same statistics as the six valid clients alone (med 1.0, MAD 0.1): only client 4.
    np.testing.assert_array_equal(keep, [True] * 4 + [False] + [True] * 4)
    assert int(flagged) == 1 and not bool(skipped)
    # Over all nine, the three zeros would drag med to 0.9 and MAD to 0.9: nobody flagged.
    _, flagged_all, _ = fm.mad_loss_filter(losses, 2)
    assert int(flagged_all) == 0
    # 6 valid, 1 flagged: 5 remain, fewer than 6 → skipped, although 8 entries would remain.
    keep, flagged, skipped = fm.mad_loss_filter(losses, 6, valid=valid)
    np.testing.assert_array_equal(keep, [True] * 9)
    assert int(flagged) == 1 and bool(skipped)
    keep, flagged, skipped = fm.mad_loss_filter([0.0, 0.0], 1, valid=[False, False])
    np.testing.assert_array_equal(keep, [True, True])
    assert int(flagged) == 0 and not bool(skipped)


def test_clip_median_over_valid_rows_only():
    delta = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    clipped, radius, count = fm.clip_by_median_norm(delta, valid=[True, True, True, False, False])
    assert float(radius) == 2.0  # median of the norms 5, 1, 2 (not of 5, 1, 2, 0, 0)
    np.testing.assert_allclose(clipped[0], [1.2, 1.6])
    np.testing.assert_array_equal(clipped[1:], delta[1:])
    assert int(count) == 1


def test_ablations_in_graph_mode_with_unknown_shapes(tff_like_graph_mode):
    clip = tf.function(fm.clip_by_median_norm,
                       input_signature=[tf.TensorSpec([None, None], tf.float32)])
    delta = np.random.default_rng(12).normal(size=(5, 9)).astype(np.float32)
    for traced, eager in zip(clip(delta), fm.clip_by_median_norm(delta)):
        np.testing.assert_array_equal(traced, eager)
    mad = tf.function(fm.mad_loss_filter, input_signature=[tf.TensorSpec([None], tf.float32),
                                                           tf.TensorSpec([], tf.int32)])
    losses = np.array([1.0, 1.1, 0.9, 1.0, 0.0, 5.0], np.float32)
    for min_keep in (2, 6):
        for traced, eager in zip(mad(losses, min_keep), fm.mad_loss_filter(losses, min_keep)):
            np.testing.assert_array_equal(traced, eager)


# --- Detection (§7) ---------------------------------------------------------------------------


def test_detection_metrics():
    weights = [0.0, 0.5, 5e-5, 0.25, 0.25, 1e-4]  # flagged: 0, 2, 5 (≤ 1e-4 inclusive)
    expected = {"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "accuracy": 0.5,
                "tp": 1, "fp": 2, "fn": 1, "tn": 2}
    by_ids = fm.detection_metrics(weights, [0, 1])
    by_mask = fm.detection_metrics(weights, np.array([1, 1, 0, 0, 0, 0], bool))
    for metrics in (by_ids, by_mask):
        assert metrics == pytest.approx(expected, rel=1e-12)


def test_detection_metrics_nan_cases():
    nothing_flagged = fm.detection_metrics([0.2] * 5, [0])
    assert math.isnan(nothing_flagged["precision"]) and math.isnan(nothing_flagged["f1"])
    assert nothing_flagged["recall"] == 0.0 and nothing_flagged["accuracy"] == 0.8
    no_byzantine = fm.detection_metrics([0.0, 0.5, 0.5], [])
    assert math.isnan(no_byzantine["recall"]) and math.isnan(no_byzantine["f1"])
    assert no_byzantine["precision"] == 0.0 and no_byzantine["accuracy"] == pytest.approx(2 / 3)
    missed = fm.detection_metrics([0.0, 0.5, 0.5], [1])  # P = R = 0
    assert missed["f1"] == 0.0
