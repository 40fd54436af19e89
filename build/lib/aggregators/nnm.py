"""Nearest-neighbour mixing, NNM (Allouah et al., AISTATS 2023): a pre-aggregator.

Each x_i is replaced by the mean of its n − f nearest vectors, itself included
(aggregators.md §2). Needs f < n/2. Ties among equally distant neighbours go to
the lower client id; a vector's own row always counts as its nearest (even when
another client sent the same vector). O(n²·D) for the distances (Gram matrix)
and for the mixing (one `[n, n] × [n, D]` product), O(n² log n) for the
neighbour lists.

The mixing matrix holds 1/(n − f) in float32, so each output is a convex
combination of inputs computed in one matrix product: it cannot overflow for
finite inputs, and identical inputs come back up to float32 rounding of
1/(n − f).
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from aggregators.compose import PreAggregator
from aggregators.distances import pairwise_squared_distances, rank_by_client_id

__all__ = ["nearest_neighbor_mixing", "nearest_neighbors", "NearestNeighborMixing"]


def nearest_neighbors(stacked: tf.Tensor, *, f, client_ids: Optional[tf.Tensor] = None
                      ) -> tf.Tensor:
    """`[n, n − f]` int32: per row, the row indices of its n − f nearest rows (itself first,
    then by distance, equal distances by client id)."""
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    f = tf.cast(f, tf.int32)
    tf.debugging.assert_non_negative(f, message="nnm needs f >= 0")
    tf.debugging.assert_less(2 * f, n, message="nnm needs f < n/2")
    distances = pairwise_squared_distances(stacked)
    # −1 on the diagonal: a row is always its own nearest neighbour.
    distances = tf.linalg.set_diag(distances, -tf.ones([n], tf.float64))
    by_rank = tf.argsort(rank_by_client_id(client_ids, n))  # columns in client-id order
    nearest = tf.argsort(tf.gather(distances, by_rank, axis=1), axis=1, stable=True)[:, :n - f]
    return tf.gather(by_rank, nearest)


def nearest_neighbor_mixing(stacked: tf.Tensor, *, f, client_ids: Optional[tf.Tensor] = None
                            ) -> tf.Tensor:
    """`[n, ...] -> [n, ...]`: each row replaced by the mean of its n − f nearest rows."""
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    rows = tf.reshape(stacked, [n, -1])
    nearest = nearest_neighbors(rows, f=f, client_ids=client_ids)
    count = tf.cast(tf.shape(nearest)[1], rows.dtype)
    mixing = tf.reduce_sum(tf.one_hot(nearest, n, dtype=rows.dtype), axis=1) / count  # [n, n]
    return tf.reshape(tf.matmul(mixing, rows), tf.shape(stacked))


class NearestNeighborMixing(PreAggregator):
    """NNM before any rule, e.g. `nnm+krum`: `ComposedFactory([NearestNeighborMixing()], rule)`.

    Uses the round's declared f (the one the rule gets). Weights and client ids
    pass through unchanged (row i is still client i's, now mixed). No
    measurements of its own.
    """

    name = "nnm"
    requirement = "f < n/2"

    def min_clients(self, inner_min, f):
        own = 2 * f + 1
        return (inner_min + own + abs(inner_min - own)) // 2  # max, on ints and tensors

    def transform(self, values, weights, client_ids, *, f, seed):
        mixed = nearest_neighbor_mixing(values, f=f, client_ids=client_ids)
        return mixed, weights, client_ids, collections.OrderedDict()
