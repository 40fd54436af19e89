"""Pairwise squared distances through the Gram matrix, and client-id tie-breaking.

Shared by the distance-based rules (Krum, Multi-Krum, Bulyan, NNM;
aggregators.md §0): D_ij = ||x_i||² + ||x_j||² − 2⟨x_i, x_j⟩, computed in
float64, clamped at 0 and exactly 0 on the diagonal. Cost O(n²·D) time and
O(n²) memory besides the input: the float64 copy of the values is made one block
of columns at a time, so an `[n, D]` float32 input never gets an `[n, D]` (let
alone `[n, n, D]`) float64 companion.

Why float64: the Gram form subtracts large numbers (||x||² + ||y||²) to get a
small one (||x − y||²); in float32 two updates that differ by 1e-4 of their norm
would get a pure-noise distance. A product of two float32 values is exact in
float64, so only the accumulation rounds (relative error ~ D·1e-16).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

__all__ = ["gram64", "pairwise_squared_distances", "rank_by_client_id"]

# Columns per float64 block of the Gram matrix: with n = 200 rows one block is
# 200 · 65 536 · 8 B ≈ 100 MB, small next to the float32 input at D = 2.5e6 (2 GB),
# and large enough that each block is an efficient matrix product.
_GRAM_BLOCK_COLUMNS = 1 << 16


def gram64(stacked: tf.Tensor) -> tf.Tensor:
    """`[n, D] -> [n, n]` float64 Gram matrix X Xᵀ, accumulated block by block over columns."""
    n = tf.shape(stacked)[0]
    dim = tf.shape(stacked)[1]
    num_blocks = (dim + _GRAM_BLOCK_COLUMNS - 1) // _GRAM_BLOCK_COLUMNS

    def body(block, gram):
        start = block * _GRAM_BLOCK_COLUMNS
        columns = tf.cast(stacked[:, start:start + _GRAM_BLOCK_COLUMNS], tf.float64)
        return block + 1, gram + tf.matmul(columns, columns, transpose_b=True)

    _, gram = tf.while_loop(lambda block, _: block < num_blocks, body,
                            (tf.constant(0), tf.zeros([n, n], tf.float64)))
    return gram


def pairwise_squared_distances(stacked: tf.Tensor) -> tf.Tensor:
    """`[n, ...] -> [n, n]` float64: squared Euclidean distances between the (flattened) rows.

    Symmetric, non-negative, exactly zero on the diagonal. Rows must be finite
    (the robust rules drop non-finite rows first).
    """
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    stacked = tf.reshape(stacked, [n, -1])
    gram = gram64(stacked)
    norms = tf.linalg.diag_part(gram)
    distances = norms[:, tf.newaxis] + norms[tf.newaxis, :] - 2.0 * gram
    # G_ij and G_ji may round differently; averaging makes D exactly symmetric,
    # so the distance-based rules treat i→j and j→i alike.
    distances = (distances + tf.transpose(distances)) / 2.0
    distances = tf.maximum(distances, 0.0)
    return tf.linalg.set_diag(distances, tf.zeros([n], tf.float64))


def rank_by_client_id(client_ids: Optional[tf.Tensor], n) -> tf.Tensor:
    """`[n]` int32: each row's position when rows are ordered by (client id, row index).

    Ties between rows (equal Krum scores, equally distant neighbours) are broken
    by this rank, i.e. by client id, so results do not depend on client order.
    With `client_ids=None` (or all ids equal, e.g. −1 for plain values) the rank
    is the row index. The factories receive rows already sorted by client id,
    where both coincide.
    """
    if client_ids is None:
        return tf.range(n, dtype=tf.int32)
    order = tf.argsort(tf.cast(client_ids, tf.int32), stable=True)
    return tf.math.invert_permutation(order)
