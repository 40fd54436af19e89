"""Huber-loss aggregation (Zhao, Yu, Wan, AAAI 2024, arXiv 2308.12581).

Minimises Σ_i p_i φ_τ(||v − x_i||) with the multidimensional Huber loss
φ_τ(r) = r²/2 for r ≤ τ, τr − τ²/2 otherwise: quadratic (mean-like) near v,
linear (geometric-median-like) far from it. Weiszfeld-type iteration from the
weighted mean: w_i = p_i · min(1, τ/||v − x_i||), v ← Σ w_i x_i / Σ w_i, until the
relative change ||v_new − v|| ≤ tolerance · ||v_new|| or `max_iterations`
updates. Default τ = 0.2 (absolute, on model deltas). The iteration does not
use f; robust for f < n/2, which the factory requires. O(I·n·d), I ≤ 50.

In 1-D, clients [1, 2, 6, 7, 100]: τ = 0.2 gives 6 (the median: every other point
pulls with the same force τ), τ = 10 gives 6.5 (four points inside the quadratic
zone, 100 pulling with force 10), τ ≥ 77 gives the mean 23.2.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf

from aggregators.base import RobustAggregationFactory, probabilities
from aggregators.clip import check_integer, check_positive_number, distances_to, vector_norm

__all__ = ["huber_aggregate", "huber_iteration", "HuberFactory"]



@tf.function(reduce_retracing=True)
def huber_iteration(values: tf.Tensor, p: tf.Tensor, *, tau, max_iterations, tolerance):
    """On `[n, D]` rows with probabilities `p [n]`: (v `[D]`, updates run `int32`)."""
    values = tf.convert_to_tensor(values)
    p = tf.cast(p, values.dtype)
    tau = tf.cast(tau, values.dtype)
    tolerance = tf.cast(tolerance, values.dtype)
    mean = tf.tensordot(p, values, axes=1)

    def step(i, v, _):
        distances = distances_to(values, v)
        # min(1, τ/d) with d = 0 → 1 (the floor only avoids 0/0).
        w = p * tf.minimum(tf.ones_like(distances),
                           tau / tf.maximum(distances, np.finfo(np.float32).tiny))
        new = tf.math.divide_no_nan(tf.tensordot(w, values, axes=1), tf.reduce_sum(w))
        return i + 1, new, vector_norm(new - v) <= tolerance * vector_norm(new)

    iterations, v, _ = tf.while_loop(
        lambda i, v, converged: (i < max_iterations) & tf.logical_not(converged), step,
        (tf.constant(0, tf.int32), mean, tf.constant(False)))
    return v, iterations


def _check(tau, max_iterations, tolerance):
    if not tf.is_tensor(tau):
        check_positive_number("huber", "tau", tau)
    if not tf.is_tensor(max_iterations):
        check_integer("huber", "max_iterations", max_iterations, 1)
    if not tf.is_tensor(tolerance):
        check_positive_number("huber", "tolerance", tolerance)


def huber_aggregate(stacked: tf.Tensor, weights: Optional[tf.Tensor] = None, *,
                    tau: float = 0.2, max_iterations: int = 50,
                    tolerance: float = 1e-6) -> tf.Tensor:
    """`[n, ...] -> [...]`: the Huber-loss minimiser (see module doc)."""
    _check(tau, max_iterations, tolerance)
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    values = tf.reshape(stacked, [n, -1])
    # Tensors, so that new parameter values do not retrace the compiled iteration.
    v, _ = huber_iteration(values, probabilities(weights, n, values.dtype),
                           tau=tf.cast(tau, values.dtype),
                           max_iterations=tf.cast(max_iterations, tf.int32),
                           tolerance=tf.cast(tolerance, values.dtype))
    return tf.reshape(v, tf.shape(stacked)[1:])


class HuberFactory(RobustAggregationFactory):
    """Huber-loss aggregation as a TFF aggregation factory (weighted or not).

    Stateless. Measurements: `non_finite_clients`, `f` (see
    `RobustAggregationFactory`) and `iterations_run` (updates until the relative
    change fell below `tolerance`; equal to `max_iterations` when it did not
    converge).
    """

    name = "huber"
    requirement = "f < n/2 (n >= 2f + 1)"

    def __init__(self, *, tau: float = 0.2, max_iterations: int = 50,
                 tolerance: float = 1e-6, **kwargs):
        self.tau = check_positive_number(self.name, "tau", tau)
        self.max_iterations = check_integer(self.name, "max_iterations", max_iterations, 1)
        self.tolerance = check_positive_number(self.name, "tolerance", tolerance)
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 1

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        p = probabilities(weights if self.weighted else None, tf.shape(values)[0], values.dtype)
        v, iterations = huber_iteration(values, p, tau=self.tau,
                                        max_iterations=self.max_iterations,
                                        tolerance=self.tolerance)
        return v, state, collections.OrderedDict(iterations_run=iterations)
