"""Centered clipping (Karimireddy, He, Jaggi, ICML 2021).

A stateful centre v, initialised to 0 and then the previous round's aggregate;
repeat L times: v ← v + Σ_i p_i (x_i − v) · min(1, τ/||x_i − v||), with
p_i = 1/n (unweighted, the paper's rule) or the normalised example counts.
Defaults τ = 10, L = 1. No hard condition (the guarantees need a small f/n);
the factory requires f < n/2. O(L·n·d).

A client far from the centre moves it by at most p_i·τ per iteration, so with
τ = 10 and [1, 2, 6, 7, 100] from centre 0, the client at 100 contributes 2 instead
of 20: (1 + 2 + 6 + 7 + 10)/5 = 5.2.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf

from aggregators.base import RobustAggregationFactory, probabilities
from aggregators.clip import check_integer, check_positive_number, distances_to

__all__ = ["centered_clipping", "centered_clipping_iteration", "CenteredClippingFactory"]



@tf.function(reduce_retracing=True)
def centered_clipping_iteration(values: tf.Tensor, p: tf.Tensor, center: tf.Tensor, *,
                                tau, iterations):
    """On `[n, D]` rows: (new centre `[D]`, clients clipped in the last iteration `int32`)."""
    values = tf.convert_to_tensor(values)
    p = tf.cast(p, values.dtype)
    tau = tf.cast(tau, values.dtype)
    center = tf.cast(tf.reshape(center, [-1]), values.dtype)

    def step(i, v, _):
        distances = distances_to(values, v)
        # min(1, τ/d) with d = 0 → 1 (the floor only avoids 0/0; the term is 0 anyway).
        c = p * tf.minimum(tf.ones_like(distances),
                           tau / tf.maximum(distances, np.finfo(np.float32).tiny))
        clipped = tf.reduce_sum(tf.cast(distances > tau, tf.int32))
        # Σ c_i (x_i − v) = Σ c_i x_i − (Σ c_i) v: no n×D temporary.
        return i + 1, v + tf.tensordot(c, values, axes=1) - tf.reduce_sum(c) * v, clipped

    _, v, clipped = tf.while_loop(lambda i, v, c: i < iterations, step,
                                  (tf.constant(0, tf.int32), center, tf.constant(0, tf.int32)))
    return v, clipped


def _check(tau, iterations):
    if not tf.is_tensor(tau):
        check_positive_number("centered_clipping", "tau", tau)
    if not tf.is_tensor(iterations):
        check_integer("centered_clipping", "iterations", iterations, 1)


def centered_clipping(stacked: tf.Tensor, weights: Optional[tf.Tensor] = None, *, center,
                      tau: float = 10.0, iterations: int = 1) -> tf.Tensor:
    """`[n, ...] -> [...]`: L centered-clipping steps from `center` (shaped like a row)."""
    _check(tau, iterations)
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    values = tf.reshape(stacked, [n, -1])
    # Tensors, so that new parameter values do not retrace the compiled iteration.
    v, _ = centered_clipping_iteration(values, probabilities(weights, n, values.dtype), center,
                                       tau=tf.cast(tau, values.dtype),
                                       iterations=tf.cast(iterations, tf.int32))
    return tf.reshape(v, tf.shape(stacked)[1:])


class CenteredClippingFactory(RobustAggregationFactory):
    """Centered clipping as a stateful TFF aggregation factory.

    State (under the base's `rule` key): `OrderedDict(center=float32[D])`, zeros at
    initialisation, then the round's aggregate (a round whose clients are all
    non-finite keeps the centre; its result is 0 as for every rule).
    Measurements: `non_finite_clients`, `f` (see `RobustAggregationFactory`) and
    `clipped_clients` (clients farther than τ from the centre in the last
    iteration).
    """

    name = "centered_clipping"
    requirement = "f < n/2 (n >= 2f + 1)"

    def __init__(self, *, tau: float = 10.0, iterations: int = 1, **kwargs):
        self.tau = check_positive_number(self.name, "tau", tau)
        self.iterations = check_integer(self.name, "iterations", iterations, 1)
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 1

    def initial_state(self, dim: int):
        return collections.OrderedDict(center=tf.zeros([dim], tf.float32))

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        p = probabilities(weights if self.weighted else None, tf.shape(values)[0], values.dtype)
        v, clipped = centered_clipping_iteration(values, p, state["center"], tau=self.tau,
                                                 iterations=self.iterations)
        return v, collections.OrderedDict(center=v), collections.OrderedDict(
            clipped_clients=clipped)
