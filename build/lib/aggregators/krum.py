"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017).

score(i) = Σ_{j∈N_i} ||x_i − x_j||², N_i = the n − f − 2 nearest *other* vectors.
Krum outputs the vector with the lowest score; Multi-Krum the mean of the m
lowest-score vectors (default m = n − f, 1 ≤ m ≤ n). Needs n ≥ 2f + 3, i.e. a
neighbourhood of n − f − 2 ≥ f + 1 vectors, which always holds an honest one.
Ties: lowest score first, equal scores by lower client id (rows arrive sorted by
client id, so by lower row index). O(n²·D) for the distances (Gram matrix,
`aggregators.distances`) plus O(n² log n) for the scores.

Both factories are **unweighted**: Krum's selection has no standard weighted form
(weighting the scores or the neighbour counts would be a new rule), so the
example counts are ignored and `weighted=True` is rejected rather than silently
dropped.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf

from aggregators.base import RobustAggregationFactory
from aggregators.distances import pairwise_squared_distances, rank_by_client_id

__all__ = ["krum_scores", "krum_select", "krum", "multi_krum", "mean_of_rows",
           "neighbour_scores", "lowest_scores", "KrumFactory", "MultiKrumFactory"]


def int_maximum(a, b):
    """max(a, b) with arithmetic only: works on Python ints and int tensors alike."""
    return (a + b + abs(a - b)) // 2


def neighbour_scores(distances: tf.Tensor, num_neighbours, active: Optional[tf.Tensor] = None
                     ) -> tf.Tensor:
    """`[n, n] -> [n]` float64: per row, the sum of its `num_neighbours` smallest distances
    to *other* rows (of the `active` pool when given; inactive rows score +inf).

    `num_neighbours` must not exceed the number of other active rows.
    """
    n = tf.shape(distances)[0]
    others = tf.logical_not(tf.cast(tf.eye(n), tf.bool))
    if active is not None:
        others = tf.logical_and(others, active[tf.newaxis, :])
    masked = tf.where(others, distances, tf.constant(np.inf, tf.float64))
    nearest = tf.sort(masked, axis=1)[:, :num_neighbours]
    scores = tf.reduce_sum(nearest, axis=1)
    if active is not None:
        scores = tf.where(active, scores, tf.constant(np.inf, tf.float64))
    return scores


def lowest_scores(scores: tf.Tensor, rank: tf.Tensor, m) -> tf.Tensor:
    """`[m]` int32 row indices of the m lowest scores, ordered by (score, rank)."""
    by_rank = tf.argsort(rank)  # rows in (client id, row) order
    by_score = tf.argsort(tf.gather(scores, by_rank), stable=True)
    return tf.gather(by_rank, by_score[:m])


def _assert_requirement(n, f, rule):
    tf.debugging.assert_non_negative(f, message=f"{rule} needs f >= 0")
    tf.debugging.assert_greater_equal(n, 2 * f + 3, message=f"{rule} needs n >= 2f + 3")


def krum_scores(stacked: tf.Tensor, *, f) -> tf.Tensor:
    """`[n, ...] -> [n]` float64: Krum score of each row (sum of squared distances to
    its n − f − 2 nearest other rows). Needs n ≥ 2f + 3."""
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    f = tf.cast(f, tf.int32)
    _assert_requirement(n, f, "krum")
    return neighbour_scores(pairwise_squared_distances(stacked), n - f - 2)


def _check_m(m, n=None):
    """Validates Multi-Krum's m (type always; the range against n when n is a known int)."""
    if m is None:
        return
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
        raise TypeError(f"multi_krum: m must be an integer or None; got {m!r}.")
    if m < 1:
        raise ValueError(f"multi_krum: m must satisfy 1 <= m <= n; got m={m}.")
    if n is not None and m > n:
        raise ValueError(f"multi_krum: m must satisfy 1 <= m <= n; got m={m}, n={n}.")


@tf.function(reduce_retracing=True)
def _lowest_krum_scores(rows, f, rank, m):
    # A `tf.function` so that eager callers run as one graph (shapes relaxed after a retrace).
    n = tf.shape(rows)[0]
    _assert_requirement(n, f, "krum")
    tf.debugging.assert_greater_equal(m, 1, message="multi_krum: m must satisfy 1 <= m <= n")
    tf.debugging.assert_less_equal(m, n, message="multi_krum: m must satisfy 1 <= m <= n")
    return lowest_scores(neighbour_scores(pairwise_squared_distances(rows), n - f - 2), rank, m)


def krum_select(stacked: tf.Tensor, *, f, m=1, client_ids: Optional[tf.Tensor] = None
                ) -> tf.Tensor:
    """`[m]` int32: indices of the m rows with the lowest Krum scores, best first.

    Equal scores are ordered by client id (`client_ids`, default the row index).
    """
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    return _lowest_krum_scores(tf.reshape(stacked, [n, -1]), tf.cast(f, tf.int32),
                               rank_by_client_id(client_ids, n), tf.cast(m, tf.int32))


def krum(stacked: tf.Tensor, *, f, client_ids: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`[n, ...] -> [...]`: the row with the lowest Krum score (ties: lower client id)."""
    stacked = tf.convert_to_tensor(stacked)
    return tf.gather(stacked, krum_select(stacked, f=f, m=1, client_ids=client_ids)[0])


def mean_of_rows(stacked: tf.Tensor, chosen: tf.Tensor) -> tf.Tensor:
    """`[n, ...], [m] -> [...]`: the mean of the chosen rows, as one weighted sum over the
    rows (weights 1/m or 0) instead of gathering an `[m, D]` copy."""
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    counts = tf.math.bincount(chosen, minlength=n, maxlength=n, dtype=stacked.dtype)
    weights = counts / tf.cast(tf.size(chosen), stacked.dtype)
    mean = tf.linalg.matvec(tf.reshape(stacked, [n, -1]), weights, transpose_a=True)
    return tf.reshape(mean, tf.shape(stacked)[1:])


def multi_krum(stacked: tf.Tensor, *, f, m: Optional[int] = None,
               client_ids: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`[n, ...] -> [...]`: mean of the m lowest-score rows (default m = n − f)."""
    stacked = tf.convert_to_tensor(stacked)
    _check_m(m, stacked.shape[0])
    n = tf.shape(stacked)[0]
    m = n - tf.cast(f, tf.int32) if m is None else m
    return mean_of_rows(stacked, krum_select(stacked, f=f, m=m, client_ids=client_ids))


def _reject_weighted(rule: str, kwargs) -> None:
    if kwargs.get("weighted"):
        raise ValueError(f"{rule}: weighted must be False (Krum's selection has no standard "
                         f"weighted form); got weighted={kwargs['weighted']!r}.")


class KrumFactory(RobustAggregationFactory):
    """Krum as a TFF aggregation factory (unweighted: example counts are ignored).

    `f` is the declared Byzantine count (`f=` or ⌈byzantine_fraction·n⌉ per round).
    Measurements: `non_finite_clients`, `f`, `selected_client` (int32 client id
    of the selected vector; −1 for plain values without client records).
    """

    name = "krum"
    requirement = "n >= 2f + 3"

    def __init__(self, **kwargs):
        _reject_weighted(self.name, kwargs)
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 3

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        index = krum_select(values, f=f, m=1, client_ids=client_ids)[0]
        return tf.gather(values, index), state, collections.OrderedDict(
            selected_client=tf.gather(client_ids, index))


class MultiKrumFactory(RobustAggregationFactory):
    """Multi-Krum as a TFF aggregation factory (unweighted: example counts are ignored).

    `m=None` averages n − f vectors (n and f of the round); an explicit m also
    needs n ≥ m. Measurements: `non_finite_clients`, `f`, `selected_clients`
    (int32 `[m]`, the chosen client ids in increasing order), `num_selected`.
    """

    name = "multi_krum"

    def __init__(self, *, m: Optional[int] = None, **kwargs):
        _check_m(m)
        _reject_weighted(self.name, kwargs)
        self.m = None if m is None else int(m)
        self.requirement = "n >= 2f + 3" if m is None else f"n >= 2f + 3 and n >= m (m={m})"
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 3 if self.m is None else int_maximum(2 * f + 3, self.m + 0 * f)

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        n = tf.shape(values)[0]
        m = n - f if self.m is None else tf.constant(self.m, tf.int32)
        chosen = krum_select(values, f=f, m=m, client_ids=client_ids)
        return mean_of_rows(values, chosen), state, collections.OrderedDict(
            selected_clients=tf.sort(tf.gather(client_ids, chosen)), num_selected=m)
