"""Geometric median by smoothed Weiszfeld (RFA, Pillutla, Kakade, Harchaoui 2022).

v⁰ = the coordinate-wise median (`start="median"`, default) or Σ p_i x_i, the
weighted mean (`start="mean"`, the paper's); repeat R times:
β_i = p_i / max(ν, ||v − x_i||), v ← Σ β_i x_i / Σ β_i. Defaults ν = 1e−6, R = 3
(aggregators.md §1). Breakdown point 1/2: needs f < n/2. O(R·n·d).

This is the stacked form (all client values at the server); `aggregators/rfa.py`
runs the same iteration as R rounds of federated means, compatible with secure
aggregation. `rescale=True` (the FedLAW baseline's `rfa:rescale=true`, §4)
rescales the result to the norm of the weighted mean, the factor clamped to
[0.25, 4].

Limits. R = 3 iterations are not a converged geometric median. Each iteration
shrinks the pull of far outliers by about f/(n − f), so from the mean a finite
outlier of 1e15 (a scaling attack, or `bit_flip` hitting an exponent) still
leaves the iterate ~1e14 away after 3 iterations: the model explodes. The
median start is within the honest values' range in every coordinate, so far
outliers get weight ≈ p_i/||v − x_i|| ≈ 0 from the first iteration; it costs one
coordinate-wise median (`aggregators.median`) per round.
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from aggregators.base import RobustAggregationFactory, probabilities
from aggregators.clip import check_integer, check_positive_number, distances_to, vector_norm
from aggregators.median import median

__all__ = ["geometric_median", "weiszfeld", "rescale_to_norm_of", "GeometricMedianFactory"]

# The factor of `rescale=True` is clamped to this range (FedLAW's setting, §4).
RESCALE_MIN, RESCALE_MAX = 0.25, 4.0



STARTS = ("median", "mean")


@tf.function(reduce_retracing=True)
def weiszfeld(values: tf.Tensor, p: tf.Tensor, *, nu, iterations, start=None):
    """Smoothed Weiszfeld on `[n, D]` rows with probabilities `p [n]`, from `start` `[D]`
    (None: the weighted mean).

    Returns (v `[D]`, the weighted mean `[D]`, objective Σ p_i ||v − x_i|| at the
    returned v). With no rows (or all p zero) v is 0.
    """
    values = tf.convert_to_tensor(values)
    p = tf.cast(p, values.dtype)
    nu = tf.cast(nu, values.dtype)
    mean = tf.tensordot(p, values, axes=1)
    first = mean if start is None else tf.where(tf.shape(values)[0] > 0, start,
                                                tf.zeros_like(mean))

    def step(i, v):
        beta = p / tf.maximum(nu, distances_to(values, v))
        # divide_no_nan: only Σβ = 0 exactly (no rows) gives 0; tiny Σβ still divides.
        return i + 1, tf.math.divide_no_nan(tf.tensordot(beta, values, axes=1), tf.reduce_sum(beta))

    _, v = tf.while_loop(lambda i, _: i < iterations, step,
                         (tf.constant(0, tf.int32), first))
    objective = tf.reduce_sum(p * distances_to(values, v))
    return v, mean, objective


def rescale_to_norm_of(v: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
    """v · clamp(||reference|| / ||v||, 0.25, 4) (v = 0 stays 0)."""
    factor = vector_norm(reference) / tf.maximum(vector_norm(v), tf.constant(1e-30, v.dtype))
    return v * tf.clip_by_value(factor, RESCALE_MIN, RESCALE_MAX)


def _check(nu, iterations, start):
    if not tf.is_tensor(nu):
        check_positive_number("geometric_median", "nu", nu)
    if not tf.is_tensor(iterations):
        check_integer("geometric_median", "iterations", iterations, 1)
    if start not in STARTS:
        raise ValueError(f"geometric_median: start must be one of {', '.join(STARTS)}; "
                         f"got start={start!r}.")


def _start_point(values, start):
    """The first iterate: the coordinate-wise median of the rows, or None (the mean)."""
    return median(values) if start == "median" else None


def geometric_median(stacked: tf.Tensor, weights: Optional[tf.Tensor] = None, *,
                     nu: float = 1e-6, iterations: int = 3, rescale: bool = False,
                     start: str = "median") -> tf.Tensor:
    """`[n, ...] -> [...]`: smoothed Weiszfeld geometric median (see module doc)."""
    _check(nu, iterations, start)
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    values = tf.reshape(stacked, [n, -1])
    # Tensors, so that new parameter values do not retrace the compiled iteration.
    v, mean, _ = weiszfeld(values, probabilities(weights, n, values.dtype),
                           nu=tf.cast(nu, values.dtype), iterations=tf.cast(iterations, tf.int32),
                           start=_start_point(values, start))
    if rescale:
        v = rescale_to_norm_of(v, mean)
    return tf.reshape(v, tf.shape(stacked)[1:])


class GeometricMedianFactory(RobustAggregationFactory):
    """Geometric median (smoothed Weiszfeld) as a TFF aggregation factory.

    `weighted=True` uses the clients' example counts as p_i, otherwise p_i = 1/n
    over the rows the rule sees (after any pre-aggregator). `start`: the first
    iterate, the coordinate-wise median (default) or the weighted mean (the
    paper's; see the module doc for its limits). Stateless.
    Measurements: `non_finite_clients`, `f` (see `RobustAggregationFactory`) and
    `weiszfeld_objective` = Σ p_i ||v − x_i|| at the returned v (before any
    rescaling; one extra O(nd) pass), which a researcher compares across rounds
    or against the mean's to see how far the iteration moved.
    """

    name = "geometric_median"
    requirement = "f < n/2 (n >= 2f + 1)"

    def __init__(self, *, nu: float = 1e-6, iterations: int = 3, rescale: bool = False,
                 start: str = "median", **kwargs):
        self.nu = check_positive_number(self.name, "nu", nu)
        self.iterations = check_integer(self.name, "iterations", iterations, 1)
        _check(nu, iterations, start)
        self.start = start
        if not isinstance(rescale, bool):
            raise TypeError(f"{self.name}: rescale must be a bool; got {rescale!r}.")
        self.rescale = rescale
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 1

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        p = probabilities(weights if self.weighted else None, tf.shape(values)[0], values.dtype)
        v, mean, objective = weiszfeld(values, p, nu=self.nu, iterations=self.iterations,
                                       start=_start_point(values, self.start))
        if self.rescale:
            v = rescale_to_norm_of(v, mean)
        return v, state, collections.OrderedDict(weiszfeld_objective=objective)
