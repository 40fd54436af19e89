"""Exact subset rules: minimum-diameter averaging (MDA) and smallest maximum-eigenvalue
averaging (SMEA).

Both search every subset S of n − f of the n vectors and return the mean of the best one:

- **MDA** (El Mhamdi, Guerraoui & Rouault 2018; the minimum-volume idea of Rousseeuw 1985):
  the subset with the smallest diameter max_{i,j∈S} ‖x_i − x_j‖;
- **SMEA** (Allouah et al. 2023, "Fixing by mixing"): the subset whose empirical covariance
  (1/|S|) Σ_{i∈S} (x_i − μ_S)(x_i − μ_S)ᵀ has the smallest largest eigenvalue.

Equal scores go to the first subset in lexicographic order of its rows (the order of
`itertools.combinations`), i.e. of client ids, since rows arrive sorted by client id.

Both are exact and exponential: C(n, f) subsets (C(16, 6) = 8,008; C(25, 7) = 480,700).
The factories refuse a setting whose expected n and f give more than `max_subsets`
(default `MAX_SUBSETS`) when they are built, and every round checks it again. Everything
runs on the n × n float64 Gram matrix (`aggregators.distances`): SMEA's eigenvalues are those
of the centred Gram matrix of S divided by |S|, so no D × D matrix is formed. Subsets are
scored `CHUNK` at a time, so memory stays O(CHUNK · (n − f)²). Unweighted.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import tensorflow as tf

from aggregators.base import RequirementError, RobustAggregationFactory
from aggregators.distances import gram64
from aggregators.registry import MAX_SUBSETS

__all__ = ["subsets", "subset_count", "diameters", "max_eigenvalues", "best_subset_mean",
           "mda", "smea", "MDAFactory", "SMEAFactory", "MAX_SUBSETS"]

CHUNK = 4096


def subset_count(n: int, f: int) -> int:
    """C(n, f): how many subsets of n − f rows MDA and SMEA score."""
    return math.comb(n, f)


def subsets(n, k) -> tf.Tensor:
    """`[C(n, k), k]` int32: every k-subset of range(n), each sorted, in lexicographic order."""
    n = tf.cast(n, tf.int32)
    k = tf.cast(k, tf.int32)

    def body(i, masks):
        count = tf.reduce_sum(tf.cast(masks, tf.int32), axis=1)
        grown = tf.concat([
            tf.concat([masks, tf.ones([tf.shape(masks)[0], 1], tf.bool)], axis=1),
            tf.concat([masks, tf.zeros([tf.shape(masks)[0], 1], tf.bool)], axis=1)], axis=0)
        counts = tf.concat([count + 1, count], axis=0)
        # Keep the partial subsets that can still end with exactly k members.
        keep = tf.logical_and(counts <= k, counts + (n - i - 1) >= k)
        return i + 1, tf.boolean_mask(grown, keep)

    _, masks = tf.while_loop(
        lambda i, _: i < n, body, (tf.constant(0), tf.zeros([1, 0], tf.bool)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None])))
    # Lexicographic order of the members = descending order of Σ_{i∈S} 2^(n−1−i).
    bits = tf.bitwise.left_shift(tf.constant(1, tf.int64),
                                 tf.cast(n - 1 - tf.range(n), tf.int64))
    keys = tf.reduce_sum(tf.where(masks, bits[tf.newaxis, :], tf.constant(0, tf.int64)), axis=1)
    masks = tf.gather(masks, tf.argsort(keys, direction="DESCENDING"))
    members = tf.where(masks)[:, 1]  # row-major: each subset's members in increasing order
    return tf.reshape(tf.cast(members, tf.int32), [-1, k])


def _sub_matrices(matrix, members):
    """`[n, n], [M, k] -> [M, k, k]`: matrix[S, S] for every subset S."""
    rows = tf.gather(matrix, members)  # [M, k, n]
    return tf.gather(rows, members, axis=2, batch_dims=1)


def diameters(distances, members):
    """`[M]`: max squared distance within each subset (`distances` `[n, n]` squared)."""
    return tf.reduce_max(_sub_matrices(distances, members), axis=[1, 2])


def max_eigenvalues(gram, members):
    """`[M]`: largest eigenvalue of each subset's covariance (1/k) Σ (x_i − μ)(x_i − μ)ᵀ, from
    the Gram matrix: the eigenvalues of J G_SS J / k (J the k × k centring matrix)."""
    k = tf.shape(members)[1]
    sub = _sub_matrices(gram, members)
    centring = tf.eye(k, dtype=gram.dtype) - 1.0 / tf.cast(k, gram.dtype)
    centred = tf.matmul(tf.matmul(centring, sub), centring) / tf.cast(k, gram.dtype)
    return tf.reduce_max(tf.linalg.eigvalsh(centred), axis=1)


def best_subset_mean(stacked, *, f, score_fn, max_subsets=MAX_SUBSETS):
    """(mean of the lowest-scoring (n − f)-subset `[...]`, its members `[n − f]`, its score).

    `score_fn(gram, members) -> [M]` float64 scores; `gram` is X Xᵀ in float64.
    """
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    f = tf.cast(f, tf.int32)
    tf.debugging.assert_non_negative(f, message="needs f >= 0")
    tf.debugging.assert_less(2 * f, n, message="needs f < n/2")
    count = tf.exp(tf.math.lgamma(tf.cast(n + 1, tf.float64))
                   - tf.math.lgamma(tf.cast(f + 1, tf.float64))
                   - tf.math.lgamma(tf.cast(n - f + 1, tf.float64)))
    check = tf.debugging.assert_less_equal(
        count, tf.constant(max_subsets + 0.5, tf.float64),
        message=f"more than max_subsets={max_subsets} subsets (C(n, f))")
    rows = tf.reshape(stacked, [n, -1])
    with tf.control_dependencies([check]):
        gram = gram64(rows)
    members = subsets(n, n - f)
    total = tf.shape(members)[0]
    chunks = (total + CHUNK - 1) // CHUNK

    def body(c, scores):
        chunk = members[c * CHUNK:(c + 1) * CHUNK]
        return c + 1, scores.write(c, score_fn(gram, chunk))

    _, scores = tf.while_loop(lambda c, _: c < chunks, body,
                              (tf.constant(0), tf.TensorArray(
                                  tf.float64, size=chunks, infer_shape=False,
                                  element_shape=tf.TensorShape([None]))))
    scores = scores.concat()
    best = tf.argmin(scores, output_type=tf.int32)  # the first of equal minima
    chosen = members[best]
    mean = tf.reduce_mean(tf.gather(rows, chosen), axis=0)
    return tf.reshape(mean, tf.shape(stacked)[1:]), chosen, scores[best]


def _distance_scores(gram, members):
    norms = tf.linalg.diag_part(gram)
    distances = tf.maximum(norms[:, tf.newaxis] + norms[tf.newaxis, :] - 2.0 * gram, 0.0)
    return diameters(distances, members)


def mda(stacked, *, f, max_subsets=MAX_SUBSETS) -> tf.Tensor:
    """`[n, ...] -> [...]`: the mean of the n − f rows with the smallest diameter."""
    return best_subset_mean(stacked, f=f, score_fn=_distance_scores, max_subsets=max_subsets)[0]


def smea(stacked, *, f, max_subsets=MAX_SUBSETS) -> tf.Tensor:
    """`[n, ...] -> [...]`: the mean of the n − f rows whose covariance has the smallest
    largest eigenvalue."""
    return best_subset_mean(stacked, f=f, score_fn=max_eigenvalues, max_subsets=max_subsets)[0]


class _SubsetFactory(RobustAggregationFactory):
    requirement = "f < n/2 and C(n, f) <= max_subsets"
    _score = None

    def __init__(self, *, max_subsets: int = MAX_SUBSETS, **kwargs):
        if isinstance(max_subsets, bool) or not isinstance(max_subsets, (int, np.integer)) \
                or max_subsets < 1:
            raise ValueError(f"{self.name}: max_subsets must be an integer >= 1; got "
                             f"{max_subsets!r}.")
        if kwargs.get("weighted"):
            raise ValueError(f"{self.name}: weighted must be False (its subset search has no "
                             f"standard weighted form); got weighted={kwargs['weighted']!r}.")
        self.max_subsets = int(max_subsets)
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 1

    def check_requirement(self, n: int, f=None) -> None:
        super().check_requirement(n, f)
        f = self.f_for(n) if f is None else f
        if subset_count(n, f) > self.max_subsets:
            raise RequirementError(
                f"{self.name} scores C(n, f) = {subset_count(n, f):,} subsets for n={n}, f={f}; "
                f"the limit is max_subsets={self.max_subsets:,} (it is exact and exponential "
                f"in f).")

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        result, _, score = best_subset_mean(values, f=f, score_fn=type(self)._score,
                                            max_subsets=self.max_subsets)
        return result, state, collections.OrderedDict(score=tf.cast(score, tf.float32))


class MDAFactory(_SubsetFactory):
    """MDA as a TFF aggregation factory. Measurements: `non_finite_clients`, `f`, `score`
    (the chosen subset's squared diameter)."""
    name = "mda"
    _score = staticmethod(_distance_scores)


class SMEAFactory(_SubsetFactory):
    """SMEA as a TFF aggregation factory. Measurements: `non_finite_clients`, `f`, `score`
    (the chosen subset's largest covariance eigenvalue)."""
    name = "smea"
    _score = staticmethod(max_eigenvalues)
