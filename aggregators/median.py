"""Coordinate-wise median (Yin et al. 2018).

Per coordinate, the median of the n client values; for even n the mean of the two
middle values (`even="mean"`, default) or the lower one (`even="lower"`, as in
torch). Weighted: the smallest value whose cumulative weight reaches 1/2,
averaged with the next one when it equals 1/2 exactly. Needs f < n/2.
"""

from __future__ import annotations

import collections

import tensorflow as tf

from aggregators.base import RobustAggregationFactory

__all__ = ["median", "weighted_median", "MedianFactory"]

# Cumulative weights within this of 1/2 count as exactly 1/2 (float rounding of
# equal weights, e.g. 3 × 1/6).
_HALF_TOLERANCE = 1e-6


def median(stacked: tf.Tensor, *, even: str = "mean") -> tf.Tensor:
    """`[n, ...] -> [...]`: coordinate-wise median of the rows."""
    if even not in ("mean", "lower"):
        raise ValueError(f"median: even must be 'mean' or 'lower'; got {even!r}.")
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    ordered = tf.sort(stacked, axis=0)
    lower = ordered[(n - 1) // 2]
    if even == "lower":
        return lower
    return (lower + ordered[n // 2]) / 2


def _take(tensor, index):
    """`tensor[index[j], j...]` per coordinate: index has the trailing shape."""
    return tf.squeeze(tf.experimental.numpy.take_along_axis(tensor, index[tf.newaxis], axis=0), 0)


def weighted_median(stacked: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """`[n, ...], [n] -> [...]`: weighted coordinate-wise median (see module doc)."""
    stacked = tf.convert_to_tensor(stacked)
    weights = tf.cast(weights, tf.float64)
    weights = weights / tf.reduce_sum(weights)
    order = tf.argsort(stacked, axis=0, stable=True)
    ordered = tf.experimental.numpy.take_along_axis(stacked, order, axis=0)
    cumulative = tf.cumsum(tf.gather(weights, order), axis=0)  # per coordinate, sorted order
    index = tf.argmax(tf.cast(cumulative >= 0.5 - _HALF_TOLERANCE, tf.int32), axis=0,
                      output_type=tf.int32)
    value = _take(ordered, index)
    next_value = _take(ordered, tf.minimum(index + 1, tf.shape(stacked)[0] - 1))
    exactly_half = tf.abs(_take(cumulative, index) - 0.5) <= _HALF_TOLERANCE
    return tf.where(exactly_half, (value + next_value) / 2, value)


class MedianFactory(RobustAggregationFactory):
    """Coordinate-wise median as a TFF aggregation factory (weighted or not).

    Measurements: `non_finite_clients`, `f` (see `RobustAggregationFactory`).
    """

    name = "median"
    requirement = "f < n/2 (n >= 2f + 1)"

    def __init__(self, *, even: str = "mean", **kwargs):
        if even not in ("mean", "lower"):
            raise ValueError(f"median: even must be 'mean' or 'lower'; got {even!r}.")
        self.even = even
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 1

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        if self.weighted:
            result = weighted_median(values, weights)
        else:
            result = median(values, even=self.even)
        return result, state, collections.OrderedDict()
