"""Min-max and min-sum's perturbation and γ searches, and the attacks bound to a run (their
`--attack` entries are `attacks.min_max`).

Distances go through `aggregators.distances.pairwise_squared_distances` (float64 Gram
matrix, never an `[r, r, D]` tensor). The γ searches use that ||μ − γp − x_i||² is a
quadratic in γ whose coefficients come from one float64 distance matrix, so each search
step costs O(r), not O(r·D).
"""

from __future__ import annotations

import collections

import tensorflow as tf

from aggregators.distances import pairwise_squared_distances
from attacks.checks import check_choice, check_positive, plain_tf
from attacks.min_max import PERTURBATIONS, SUM_BOUNDS
from attacks.params import bound
from attacks.reference import colluding_component, reference, reference_statistics

__all__ = ["perturbation", "min_max_gamma", "min_sum_gamma", "min_max_attack", "min_sum_attack",
           "build_min_max", "build_min_sum"]


@plain_tf
def perturbation(mu, sigma, kind):
    """Min-max/min-sum perturbation p (§4): "std" σ, "unit" μ/||μ|| (0 if μ = 0), "sign" sign μ."""
    check_choice("kind", kind, PERTURBATIONS)
    if kind == "std":
        return tf.identity(sigma)
    if kind == "sign":
        return tf.sign(mu)
    norm = tf.sqrt(tf.reduce_sum(tf.square(tf.cast(mu, tf.float64))))
    return tf.cast(tf.math.divide_no_nan(tf.cast(mu, tf.float64), norm), mu.dtype)


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
    check_positive("gamma0", gamma0)
    check_positive("tol", tol)

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


@plain_tf
def min_max_gamma(reference, mu, p, gamma0=10.0, tol=1e-5):
    """Min-max γ (§4): largest searched γ with max_i ||μ − γp − x_i||² ≤ max_{i,j} ||x_i − x_j||².

    `reference` `[r, D]` are the rows of R; returns a scalar of μ's dtype.
    """
    reference = tf.convert_to_tensor(reference)
    pairwise, a, b, c = _distance_coefficients(reference, mu, p)
    bound = tf.reduce_max(pairwise)
    return _search_gamma(lambda g: tf.reduce_max(a + b * g + c * g * g) <= bound,
                         gamma0, tol, mu.dtype)


@plain_tf
def min_sum_gamma(reference, mu, p, gamma0=10.0, tol=1e-5, bound="min"):
    """Min-sum γ (§4): largest searched γ with Σ_i ||μ − γp − x_i||² ≤ B.

    B = min_i Σ_j ||x_i − x_j||² (`bound="min"`, the authors' code, default) or
    max_i (`bound="max"`, the paper's text). Returns a scalar of μ's dtype.
    """
    check_choice("bound", bound, SUM_BOUNDS)
    reference = tf.convert_to_tensor(reference)
    pairwise, a, b, c = _distance_coefficients(reference, mu, p)
    row_sums = tf.reduce_sum(pairwise, axis=1)
    limit = tf.reduce_min(row_sums) if bound == "min" else tf.reduce_max(row_sums)
    count = tf.cast(tf.shape(a)[0], tf.float64)
    sum_a, sum_b = tf.reduce_sum(a), tf.reduce_sum(b)
    return _search_gamma(lambda g: sum_a + sum_b * g + count * c * g * g <= limit,
                         gamma0, tol, mu.dtype)


def _min_search(kind: str):
    def build(name: str, *, p: str, gamma0: float, stats: str, bound: str = "min", start: int,
              loss):
        def vector_fn(values, honest, own, client_ids, seed, memory):
            del client_ids, seed
            mask = reference(honest, own, stats)
            mu, sigma = reference_statistics(values, mask, 0)
            direction = perturbation(mu, sigma, p)
            rows = tf.boolean_mask(values, mask)
            if kind == "min_max":
                gamma = min_max_gamma(rows, mu, direction, gamma0=gamma0)
            else:
                gamma = min_sum_gamma(rows, mu, direction, gamma0=gamma0, bound=bound)
            gamma = tf.cast(gamma, tf.float32)
            return mu - gamma * direction, memory, collections.OrderedDict(gamma=gamma)

        return colluding_component(name, vector_fn, start=start, loss=loss,
                                   reads_own=stats == "byzantine")

    return build


min_max_attack = _min_search("min_max")
min_sum_attack = _min_search("min_sum")
build_min_max = bound(min_max_attack)
build_min_sum = bound(min_sum_attack)
