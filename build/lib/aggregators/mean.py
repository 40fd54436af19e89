"""The mean as a stacked rule, for compositions such as `bucketing:s=2+mean`.

On its own, `--aggregator=mean` is TFF's `MeanFactory` (the baseline; see
`aggregators/registry.py`). Like it, this mean keeps non-finite rows: its output
becomes non-finite and the training loop stops with a clear message; the count
is reported as `non_finite_clients`.
"""

from __future__ import annotations

import collections

import tensorflow as tf

from aggregators.base import RobustAggregationFactory

__all__ = ["mean", "StackedMeanFactory"]


def mean(stacked: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """`[n, ...], [n] -> [...]`: Σ p_i x_i with p = weights / Σ weights."""
    stacked = tf.convert_to_tensor(stacked)
    weights = tf.cast(weights, stacked.dtype)
    weights = weights / tf.reduce_sum(weights)
    return tf.tensordot(weights, stacked, axes=1)


class StackedMeanFactory(RobustAggregationFactory):
    """Mean of the stacked values (weighted by example counts or uniform)."""

    name = "mean"
    requirement = "n >= 1"
    drops_non_finite = False

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        return mean(values, weights), state, collections.OrderedDict()
