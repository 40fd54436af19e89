"""Coordinate-wise trimmed mean (Yin et al. 2018).

Per coordinate, sort, drop the β largest and β smallest values and average the
remaining n − 2β. Default β = f (the declared Byzantine count). Needs 2β < n;
robust when f ≤ β. Weighted: drop weight mass β/n from each tail (partial weight
at the boundary) and take the weighted mean of the rest; with equal weights and
integer β this is the unweighted rule.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf

from aggregators.base import RequirementError, RobustAggregationFactory
from aggregators.median import sorting_network_reduce

__all__ = ["trimmed_mean", "weighted_trimmed_mean", "TrimmedMeanFactory"]


def trimmed_mean(stacked: tf.Tensor, *, beta) -> tf.Tensor:
    """`[n, ...] -> [...]`: mean of the n − 2β middle values per coordinate."""
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    beta = tf.cast(beta, tf.int32)
    check = tf.debugging.assert_less(2 * beta, n, message="trimmed_mean needs 2*beta < n")
    with tf.control_dependencies([check] if check is not None else []):
        beta = tf.identity(beta)

    def fallback(stacked):
        ordered = tf.sort(stacked, axis=0)
        return tf.reduce_mean(ordered[beta:n - beta], axis=0)

    # The network sorts like tf.sort (high pads after the n values), so the same
    # values are averaged in the same order.
    def finish(wires, n, m):
        del m
        return tf.reduce_mean(wires[beta:n - beta], axis=0)

    return sorting_network_reduce(stacked, finish, fallback=fallback)


def weighted_trimmed_mean(stacked: tf.Tensor, weights: tf.Tensor, *, beta) -> tf.Tensor:
    """`[n, ...], [n] -> [...]`: trims weight mass β/n from each tail (see module doc)."""
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    weights = tf.cast(weights, tf.float64)
    weights = weights / tf.reduce_sum(weights)
    trim = tf.cast(beta, tf.float64) / tf.cast(n, tf.float64)
    order = tf.argsort(stacked, axis=0, stable=True)
    ordered = tf.cast(tf.experimental.numpy.take_along_axis(stacked, order, axis=0), tf.float64)
    upper = tf.cumsum(tf.gather(weights, order), axis=0)
    lower = upper - tf.gather(weights, order)
    kept = tf.maximum(tf.minimum(upper, 1.0 - trim) - tf.maximum(lower, trim), 0.0)
    result = tf.reduce_sum(kept * ordered, axis=0) / tf.reduce_sum(kept, axis=0)
    return tf.cast(result, stacked.dtype)


class TrimmedMeanFactory(RobustAggregationFactory):
    """Coordinate-wise trimmed mean as a TFF aggregation factory.

    `beta=None` trims f per side (f from the declared fraction each round).
    One of `beta`, `f` or `byzantine_fraction` must be given: with none the rule
    would trim nothing and be the mean, silently (e.g. inside TFF's own
    `clipping_factory`). Measurements: `non_finite_clients`, `f`, `beta`.
    """

    name = "trimmed_mean"
    requirement = "2*beta < n"

    def __init__(self, *, beta: Optional[int] = None, **kwargs):
        if beta is not None and (isinstance(beta, bool) or not isinstance(beta, (int, np.integer))
                                 or beta < 0):
            raise ValueError(f"trimmed_mean: beta must be an integer >= 0; got {beta!r}.")
        if beta is None and kwargs.get("f") is None and "byzantine_fraction" not in kwargs:
            raise ValueError("trimmed_mean: say how many values to trim: beta= (per side), f= "
                             "(declared Byzantine clients) or byzantine_fraction= (declared "
                             "fraction); with none it would trim nothing and equal the mean.")
        self.beta = None if beta is None else int(beta)
        super().__init__(**kwargs)

    def check_requirement(self, n: int, f: Optional[int] = None) -> None:
        if self.beta is None:
            super().check_requirement(n, f)
        elif n < 2 * self.beta + 1:
            raise RequirementError(f"{self.name} needs {self.requirement}; got n={n}, "
                                   f"beta={self.beta} (needs n >= {2 * self.beta + 1}).")

    def _beta(self, f):
        return f if self.beta is None else self.beta + 0 * f

    def min_clients(self, f):
        return 2 * self._beta(f) + 1

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        beta = self._beta(f)
        if self.weighted:
            result = weighted_trimmed_mean(values, weights, beta=beta)
        else:
            result = trimmed_mean(values, beta=beta)
        return result, state, collections.OrderedDict(beta=tf.cast(beta, tf.int32))
