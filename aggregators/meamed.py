"""Mean around the median, Meamed (Xie, Koyejo & Gupta 2018, "Generalized Byzantine-tolerant
SGD").

Per coordinate: the median m of the n values (`aggregators.median`, mean of the two middle
values for even n), then the mean of the n − f values closest to m. Equally close values go
to the lower row, i.e. the lower client id (rows arrive sorted by client id). Needs f < n/2.
Unweighted: the rule's selection has no standard weighted form, so `weighted=True` is
refused rather than silently dropped.
"""

from __future__ import annotations

import collections

import tensorflow as tf

from aggregators.base import RobustAggregationFactory
from aggregators.median import median

__all__ = ["meamed", "MeamedFactory"]


def meamed(stacked: tf.Tensor, *, f) -> tf.Tensor:
    """`[n, ...] -> [...]`: per coordinate, the mean of the n − f values nearest the median."""
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    f = tf.cast(f, tf.int32)
    tf.debugging.assert_non_negative(f, message="meamed needs f >= 0")
    tf.debugging.assert_less(2 * f, n, message="meamed needs f < n/2")
    rows = tf.reshape(stacked, [n, -1])
    distance = tf.abs(rows - median(rows))
    # top_k puts equal values in index order: the lower row wins a tie.
    _, nearest = tf.math.top_k(-tf.transpose(distance), k=n - f)  # [D, n − f]
    chosen = tf.gather(tf.transpose(rows), nearest, batch_dims=1)
    return tf.reshape(tf.reduce_mean(chosen, axis=1), tf.shape(stacked)[1:])


class MeamedFactory(RobustAggregationFactory):
    """Meamed as a TFF aggregation factory. Measurements: `non_finite_clients`, `f`."""

    name = "meamed"
    requirement = "f < n/2 (n >= 2f + 1)"

    def __init__(self, **kwargs):
        if kwargs.get("weighted"):
            raise ValueError(f"meamed: weighted must be False (its selection of the n − f values "
                             f"nearest the median has no standard weighted form); got "
                             f"weighted={kwargs['weighted']!r}.")
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 1

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        return meamed(values, f=f), state, collections.OrderedDict()
