"""Pure TF math of the colluding / omniscient attacks (attacks.md §4).

No TFF imports: the aggregation-factory wrapper gathers the reference set R
(honest rows, or the Byzantine clients' own honest rows), calls these functions
inside a `tf.function` with a dynamic row count, and overwrites the Byzantine rows.

Distances go through `aggregators.distances.pairwise_squared_distances` (float64
Gram matrix, never an `[r, r, D]` tensor). The γ searches of min-max/min-sum use
that ||μ − γp − x_i||² is a quadratic in γ whose coefficients come from one
float64 distance matrix, so each search step costs O(r), not O(r·D).
"""

from __future__ import annotations

import math
import numbers
import statistics

import tensorflow as tf

from aggregators.distances import pairwise_squared_distances

__all__ = [
    "LIE_Z_VARIANTS", "PERTURBATIONS", "SUM_BOUNDS", "LOSS_MODES",
    "lie_z", "lie_z_tensor", "reference_statistics", "lie_vector", "ipm_vector",
    "perturbation", "min_max_gamma", "min_sum_gamma", "max_variance_index",
    "mimic_misaligned_vectors", "forged_loss",
]

LIE_Z_VARIANTS = ("baruch", "blades", "fedlaw_code")
PERTURBATIONS = ("std", "unit", "sign")
SUM_BOUNDS = ("min", "max")
LOSS_MODES = ("mean_minus_rho_std", "mean_plus_z_std", "value")

# The functions building TF ops branch only on Python arguments and loop with
# explicit `tf.while_loop`s, so AutoGraph has nothing to convert; skipping it cuts
# the tracing time inside a caller's `tf.function` from ~4 s to ~1 s.
_plain_tf = tf.autograph.experimental.do_not_convert


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}; got {name}={value!r}.")


def _check_positive(name, value):
    if not _is_number(value):
        raise TypeError(f"`{name}` must be a number; got {name}={value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be finite and > 0; got {name}={value!r}.")


def _check_lie_variant(variant):
    if _is_number(variant):
        if not math.isfinite(variant):
            raise ValueError(f"a fixed LIE `z` must be finite; got z={variant!r}.")
    else:
        _check_choice("variant", variant, LIE_Z_VARIANTS)


# --------------------------------------------------------------------------- lie


def _lie_fraction(n, m, variant):
    """(numerator, denominator) of the Φ⁻¹ argument; works on ints and int tensors alike."""
    if variant == "baruch":  # s = ⌊n/2 + 1⌋ − m, z = Φ⁻¹((n − s)/n)
        s = n // 2 + 1 - m
        return n - s, n
    if variant == "blades":  # s = ⌊n/2⌋ + 1 − m, z = Φ⁻¹((n − m − s)/(n − m))
        s = n // 2 + 1 - m
        return n - m - s, n - m
    s = n // 2 + 1 + m  # fedlaw_code: s = ⌊n/2⌋ + 1 + m, z = Φ⁻¹((n − s)/n)
    return n - s, n


def lie_z(n: int, m: int, variant="baruch") -> float:
    """LIE's z (§4 lie) for n clients, m of them Byzantine (Python float).

    `variant`: "baruch" z = Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − m; "blades"
    z = Φ⁻¹((n − m − s)/(n − m)), s = ⌊n/2⌋ + 1 − m; "fedlaw_code" z = Φ⁻¹((n − s)/n),
    s = ⌊n/2⌋ + 1 + m; a number: that fixed z. ValueError when the Φ⁻¹ argument is
    outside (0, 1).
    """
    _check_lie_variant(variant)
    if _is_number(variant):
        return float(variant)
    for name, value in (("n", n), ("m", m)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"`{name}` must be an int; got {name}={value!r}.")
    numerator, denominator = _lie_fraction(int(n), int(m), variant)
    if denominator <= 0 or not 0 < numerator / denominator < 1:
        raise ValueError(
            f"LIE z={variant}: the Φ⁻¹ argument {numerator}/{denominator} is outside (0, 1); "
            f"got n={n}, m={m}, variant={variant!r}.")
    return statistics.NormalDist().inv_cdf(numerator / denominator)


@_plain_tf
def lie_z_tensor(n, m, variant="baruch", dtype=tf.float32) -> tf.Tensor:
    """`lie_z` for tensor n, m (e.g. the round's client count): scalar of `dtype`.

    Same formulas through `tf.math.ndtri` (in float64); an out-of-range Φ⁻¹ argument
    fails a `tf.debugging` assertion (InvalidArgumentError) instead of returning NaN.
    A fixed-number variant returns that constant.
    """
    _check_lie_variant(variant)
    if _is_number(variant):
        return tf.constant(variant, dtype)
    n = tf.cast(n, tf.int64)
    m = tf.cast(m, tf.int64)
    numerator, denominator = _lie_fraction(n, m, variant)
    argument = tf.cast(numerator, tf.float64) / tf.cast(denominator, tf.float64)
    message = f"LIE z={variant}: the Φ⁻¹ argument is outside (0, 1) (n, m, argument follow)"
    with tf.control_dependencies([
            tf.debugging.Assert(
                tf.logical_and(tf.logical_and(denominator > 0, argument > 0.0), argument < 1.0),
                [message, n, m, argument]),
    ]):
        return tf.cast(tf.math.ndtri(argument), dtype)


# ------------------------------------------------------------ reference set R


@_plain_tf
def reference_statistics(values, mask, ddof=0):
    """(μ, σ) `[D]`: coordinate-wise mean and std over the rows of `values` where `mask` (§4).

    σ = sqrt(Σ (x − μ)² / (k − ddof)) with k masked rows: ddof 0 the population std
    (default), 1 the unbiased one. Two passes in float32 (mean, then mean squared
    deviation), so a large common offset does not cancel catastrophically.
    """
    if not isinstance(ddof, numbers.Integral) or isinstance(ddof, bool) or ddof not in (0, 1):
        raise ValueError(f"`ddof` must be 0 or 1; got ddof={ddof!r}.")
    rows = tf.boolean_mask(values, tf.convert_to_tensor(mask, tf.bool))
    count = tf.shape(rows)[0]
    with tf.control_dependencies([
            tf.debugging.assert_greater(
                count, ddof, message=f"reference_statistics needs more than ddof={ddof} rows"),
    ]):
        mu = tf.reduce_mean(rows, axis=0)
    deviation = rows - mu
    variance = tf.reduce_sum(deviation * deviation, axis=0) / tf.cast(count - ddof, rows.dtype)
    return mu, tf.sqrt(variance)


@_plain_tf
def lie_vector(mu, sigma, z):
    """LIE (§4): u = μ + zσ."""
    return mu + tf.cast(z, sigma.dtype) * sigma


@_plain_tf
def ipm_vector(mu, eps):
    """IPM (§4): u = −ε μ."""
    return -tf.cast(eps, mu.dtype) * mu


@_plain_tf
def perturbation(mu, sigma, kind):
    """Min-max/min-sum perturbation p (§4): "std" σ, "unit" μ/||μ|| (0 if μ = 0), "sign" sign μ."""
    _check_choice("kind", kind, PERTURBATIONS)
    if kind == "std":
        return tf.identity(sigma)
    if kind == "sign":
        return tf.sign(mu)
    norm = tf.sqrt(tf.reduce_sum(tf.square(tf.cast(mu, tf.float64))))
    return tf.cast(tf.math.divide_no_nan(tf.cast(mu, tf.float64), norm), mu.dtype)


# ------------------------------------------------------------ min-max / min-sum


def _distance_coefficients(reference, mu, p):
    """float64 (D_R [r, r], a [r], b [r], c) with ||μ − γp − x_i||² = a_i + b_i γ + c γ².

    One distance matrix over the rows [R; μ; p; 0] (no float32 arithmetic on them
    first, which would round μ − p): a_i = ||μ − x_i||², c = ||p||² = D(p, 0) and
    b_i = −2⟨p, μ − x_i⟩ = D(x_i, 0) − D(x_i, p) − D(μ, 0) + D(μ, p), by polarisation
    2⟨p, v⟩ = D(p, 0) + D(v, 0) − D(v, p).
    """
    r = tf.shape(reference)[0]
    stacked = tf.concat([reference, mu[tf.newaxis], p[tf.newaxis], tf.zeros_like(mu)[tf.newaxis]],
                        axis=0)
    distances = pairwise_squared_distances(stacked)
    to_mu, to_p, to_zero = distances[:, r], distances[:, r + 1], distances[:, r + 2]
    b = to_zero[:r] - to_p[:r] - to_zero[r] + to_p[r]
    return distances[:r, :r], to_mu[:r], b, to_zero[r + 1]


def _search_gamma(ok, gamma0, tol, dtype):
    """The spec's γ search (§4) as a while loop; returns γ_ok rounded toward 0 into `dtype`.

    γ ← γ0; step ← γ0; γ_ok ← 0; while |γ_ok − γ| > tol: if ok(γ): γ_ok ← γ,
    γ ← γ + step/2, else γ ← γ − step/2; step ← step/2. Here ok is a convex
    quadratic ≤ bound, true at 0, so the ok set is an interval [0, γ*] and γ* lies in
    [γ_ok, γ_ok + 2·tol] (up to 2γ0 when everything is ok). Rounding toward 0 keeps
    the returned γ inside the ok set.
    """
    _check_positive("gamma0", gamma0)
    _check_positive("tol", tol)

    def body(gamma, step, gamma_ok):
        good = ok(gamma)
        gamma_ok = tf.where(good, gamma, gamma_ok)
        gamma = tf.where(good, gamma + step / 2, gamma - step / 2)
        return gamma, step / 2, gamma_ok

    start = tf.constant(float(gamma0), tf.float64)
    _, _, gamma_ok = tf.while_loop(
        lambda gamma, step, gamma_ok: tf.abs(gamma_ok - gamma) > tol, body,
        (start, start, tf.constant(0.0, tf.float64)))
    rounded = tf.cast(gamma_ok, dtype)
    return tf.where(tf.cast(rounded, tf.float64) > gamma_ok,
                    tf.math.nextafter(rounded, tf.zeros_like(rounded)), rounded)


@_plain_tf
def min_max_gamma(reference, mu, p, gamma0=10.0, tol=1e-5):
    """Min-max γ (§4): largest searched γ with max_i ||μ − γp − x_i||² ≤ max_{i,j} ||x_i − x_j||².

    `reference` `[r, D]` are the rows of R; returns a scalar of μ's dtype.
    """
    reference = tf.convert_to_tensor(reference)
    pairwise, a, b, c = _distance_coefficients(reference, mu, p)
    bound = tf.reduce_max(pairwise)
    return _search_gamma(lambda g: tf.reduce_max(a + b * g + c * g * g) <= bound,
                         gamma0, tol, mu.dtype)


@_plain_tf
def min_sum_gamma(reference, mu, p, gamma0=10.0, tol=1e-5, bound="min"):
    """Min-sum γ (§4): largest searched γ with Σ_i ||μ − γp − x_i||² ≤ B.

    B = min_i Σ_j ||x_i − x_j||² (`bound="min"`, the authors' code, default) or
    max_i (`bound="max"`, the paper's text). Returns a scalar of μ's dtype.
    """
    _check_choice("bound", bound, SUM_BOUNDS)
    reference = tf.convert_to_tensor(reference)
    pairwise, a, b, c = _distance_coefficients(reference, mu, p)
    row_sums = tf.reduce_sum(pairwise, axis=1)
    limit = tf.reduce_min(row_sums) if bound == "min" else tf.reduce_max(row_sums)
    count = tf.cast(tf.shape(a)[0], tf.float64)
    sum_a, sum_b = tf.reduce_sum(a), tf.reduce_sum(b)
    return _search_gamma(lambda g: sum_a + sum_b * g + count * c * g * g <= limit,
                         gamma0, tol, mu.dtype)


# ------------------------------------------------------------------- mimic


@_plain_tf
def max_variance_index(values, honest_mask, iterations=50):
    """Mimic's `target=max_variance` (§4): row index argmax_{i∈H} ⟨e, x_i − μ⟩, int32 scalar.

    e is the top principal direction of the honest rows, by `iterations` steps of
    power iteration v ← CᵀC v / ||CᵀC v|| (C the centred honest rows) started from the
    first non-zero centred honest row; its sign is therefore the one with ⟨e, v₀⟩ > 0.
    Run in the h-dimensional row space: with v = Cᵀa, CᵀC v = Cᵀ(K a), K = CCᵀ the
    float64 centred Gram matrix (from the pairwise distances), and the scores
    C v = K a. Ties go to the lowest row index.
    """
    if not isinstance(iterations, numbers.Integral) or isinstance(iterations, bool):
        raise TypeError(f"`iterations` must be an int; got iterations={iterations!r}.")
    if iterations < 1:
        raise ValueError(f"`iterations` must be >= 1; got iterations={iterations!r}.")
    honest_mask = tf.convert_to_tensor(honest_mask, tf.bool)
    rows = tf.where(honest_mask)[:, 0]
    distances = pairwise_squared_distances(tf.gather(values, rows))
    # K = −½ J D J (double centring) is the Gram matrix of the centred rows.
    row_means = tf.reduce_mean(distances, axis=1)
    gram = -0.5 * (distances - row_means[:, tf.newaxis] - row_means[tf.newaxis, :]
                   + tf.reduce_mean(distances))
    positions = tf.range(tf.shape(gram)[0], dtype=tf.int32)
    # a₀ = one-hot of the first honest row whose centred row is non-zero (v₀ = C[first]).
    # If all honest rows are equal there is none: a₀ = 0, all scores 0, the first row wins.
    nonzero = tf.linalg.diag_part(gram) > 0.0
    first = tf.reduce_min(tf.where(nonzero, positions, tf.int32.max))
    coefficients = tf.one_hot(first, tf.shape(gram)[0], dtype=tf.float64)

    def step(i, a):
        a = tf.linalg.matvec(gram, a)
        return i + 1, tf.math.divide_no_nan(a, tf.norm(a))

    _, coefficients = tf.while_loop(lambda i, _: i < iterations, step,
                                    (tf.constant(0), coefficients))
    scores = tf.linalg.matvec(gram, coefficients)
    best = tf.reduce_max(scores)
    winner = tf.reduce_min(tf.where(tf.equal(scores, best), positions, tf.int32.max))
    return tf.cast(tf.gather(rows, winner), tf.int32)


@_plain_tf
def mimic_misaligned_vectors(own, seeds, eta=0.1):
    """Mimic-misaligned (§4): row j of `own` `[k, D]` becomes −own_j + η e_j.

    e_j = z/||z||, z ~ `tf.random.stateless_normal([D], seed=seeds[j])`: one seed per
    row, `seeds` `[k, 2]` int32/int64, so each client's vector depends on its own
    (run seed, round, client id) seed and not on its row position.
    """
    if not _is_number(eta):
        raise TypeError(f"`eta` must be a number; got eta={eta!r}.")
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"`eta` must be finite and >= 0; got eta={eta!r}.")
    own = tf.convert_to_tensor(own)
    seeds = tf.convert_to_tensor(seeds)
    dim = tf.shape(own)[1]

    def direction(seed):
        z = tf.cast(tf.random.stateless_normal([dim], seed=seed, dtype=tf.float32), tf.float64)
        return tf.cast(z / tf.norm(z), own.dtype)

    directions = tf.map_fn(direction, seeds, fn_output_signature=tf.TensorSpec([None], own.dtype))
    return -own + tf.cast(eta, own.dtype) * directions


# ------------------------------------------------------------ loss forgery


@_plain_tf
def forged_loss(honest_losses, mode, value=0.0):
    """Forged reported loss (§4), from the honest reported losses' mean μ_f and population std σ_f.

    "mean_minus_rho_std": μ_f − value·σ_f; "mean_plus_z_std": μ_f + value·σ_f;
    "value": the constant `value`.
    """
    _check_choice("mode", mode, LOSS_MODES)
    if not _is_number(value):
        raise TypeError(f"`value` must be a number; got value={value!r}.")
    losses = tf.convert_to_tensor(honest_losses)
    if mode == "value":
        return tf.constant(value, losses.dtype)
    mean = tf.reduce_mean(losses)
    std = tf.sqrt(tf.reduce_mean(tf.square(losses - mean)))
    sign = -1.0 if mode == "mean_minus_rho_std" else 1.0
    return mean + tf.constant(sign * value, losses.dtype) * std
