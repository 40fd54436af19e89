"""Covariance-bound agnostic filter, CAF (Allouah, Guerraoui & Stephan, ICML 2025, "Towards
trustworthy federated learning with untrusted participants").

A spectral filter on weights c ∈ [0, 1]ⁿ, starting at c = 1:

    while Σ c > n − 2f:
        μ_c = Σ c_i x_i / Σ c                       (weighted mean)
        Σ_c = Σ c_i (x_i − μ_c)(x_i − μ_c)ᵀ / Σ c   (weighted covariance)
        (λ, v) = the top eigenpair of Σ_c
        keep μ_c if λ is the smallest seen so far (the first one on ties)
        τ_i = ⟨x_i − μ_c, v⟩²
        c_i ← c_i (1 − τ_i / max_{j: c_j > 0} τ_j)
    return the kept μ_c (the plain mean when the loop never runs, f = 0)

Each pass zeroes at least the weight of the active vector farthest along v, so the loop
ends within n passes; it also ends when λ = 0 (the weighted vectors coincide). The top
eigenpair is exact (not a power-iteration estimate, as in some libraries, whose random start
makes the rule non-deterministic): with K the n × n centred Gram matrix and W = diag(c)/Σc,
the non-zero eigenvalues of Σ_c are those of W^½ K W^½, and the projections are
⟨x_i − μ_c, v⟩ = (K W^½ a)_i / √λ for its unit eigenvector a. All of it runs in float64
on the Gram matrix (`aggregators.distances.gram64`), so no D × D matrix is formed. Needs
f < n/2. Unweighted.
"""

from __future__ import annotations

import collections

import tensorflow as tf

from aggregators.base import RobustAggregationFactory
from aggregators.distances import gram64

__all__ = ["caf_weights", "caf_mean", "caf", "CAFFactory"]


def _centred_gram(gram, p):
    """K = (I − 1pᵀ) G (I − p1ᵀ): the Gram matrix of x_i − Σ_j p_j x_j."""
    gp = tf.linalg.matvec(gram, p)
    return (gram - gp[:, tf.newaxis] - gp[tf.newaxis, :]
            + tf.tensordot(p, gp, axes=1))


def caf_weights(gram, *, f):
    """(p `[n]`, passes): the normalised weights c/Σc of the mean CAF returns, from the
    float64 Gram matrix X Xᵀ of the n vectors (module doc)."""
    gram = tf.convert_to_tensor(gram, tf.float64)
    n = tf.shape(gram)[0]
    f = tf.cast(f, tf.float64)
    threshold = tf.cast(n, tf.float64) - 2.0 * f
    ones = tf.ones([n], tf.float64)

    def cond(step, c, best_p, best_lambda, done):
        return tf.logical_and(tf.logical_not(done),
                              tf.logical_and(tf.reduce_sum(c) > threshold, step <= n))

    def body(step, c, best_p, best_lambda, done):
        total = tf.reduce_sum(c)
        p = c / total
        centred = _centred_gram(gram, p)
        root = tf.sqrt(p)
        eigenvalues, eigenvectors = tf.linalg.eigh(root[:, tf.newaxis] * centred
                                                   * root[tf.newaxis, :])
        top = tf.maximum(eigenvalues[-1], 0.0)
        better = top < best_lambda
        best_p = tf.where(better, p, best_p)
        best_lambda = tf.where(better, top, best_lambda)
        projections = tf.linalg.matvec(centred, root * eigenvectors[:, -1]) / tf.sqrt(
            tf.maximum(top, 1e-300))
        tau = tf.square(projections)
        active = c > 0.0
        tau_max = tf.reduce_max(tf.where(active, tau, tf.zeros_like(tau)))
        flat = tf.logical_not(tau_max > 0.0)
        new_c = tf.where(flat, c, tf.maximum(c * (1.0 - tau / tf.maximum(tau_max, 1e-300)), 0.0))
        new_c = tf.where(active, new_c, tf.zeros_like(c))
        return step + 1, new_c, best_p, best_lambda, tf.logical_or(flat, top <= 0.0)

    passes, _, best_p, _, _ = tf.while_loop(
        cond, body, (tf.constant(0), ones, ones / tf.cast(n, tf.float64),
                     tf.constant(float("inf"), tf.float64), tf.constant(False)))
    return best_p, passes


def caf_mean(rows, *, f):
    """(the CAF mean `[D]` of `rows` `[n, D]`, its weights c/Σc `[n]`, the passes run)."""
    p, passes = caf_weights(gram64(rows), f=f)
    return tf.linalg.matvec(rows, tf.cast(p, rows.dtype), transpose_a=True), p, passes


def caf(stacked, *, f) -> tf.Tensor:
    """`[n, ...] -> [...]`: the CAF estimate of the honest mean (module doc)."""
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    f = tf.cast(f, tf.int32)
    tf.debugging.assert_non_negative(f, message="caf needs f >= 0")
    tf.debugging.assert_less(2 * f, n, message="caf needs f < n/2")
    mean, _, _ = caf_mean(tf.reshape(stacked, [n, -1]), f=f)
    return tf.reshape(mean, tf.shape(stacked)[1:])


class CAFFactory(RobustAggregationFactory):
    """CAF as a TFF aggregation factory. Measurements: `non_finite_clients`, `f`, `passes`
    (filter passes run) and `kept_weight` (Σ c/max c of the returned mean, in clients)."""

    name = "caf"
    requirement = "f < n/2 (n >= 2f + 1)"

    def __init__(self, **kwargs):
        if kwargs.get("weighted"):
            raise ValueError(f"caf: weighted must be False (its filter starts from equal "
                             f"weights); got weighted={kwargs['weighted']!r}.")
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 1

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        result, p, passes = caf_mean(values, f=f)
        kept = tf.reduce_sum(p) / tf.maximum(tf.reduce_max(p), 1e-300)
        return result, state, collections.OrderedDict(
            passes=passes, kept_weight=tf.cast(kept, tf.float32))
