"""Bulyan (El Mhamdi, Guerraoui, Rouault, ICML 2018), and the FedLAW paper's variant.

**textbook** (default), aggregators.md §1:
1. selection: θ = n − 2f times, run Krum on the remaining pool R with
   max(|R| − f − 2, 1) neighbours and move the winner from R to the selected set
   S (ties: lower client id). The distance matrix is computed once; removed rows
   are masked out, so each step costs O(n² log n), not O(n²·D).
2. per coordinate, among the θ selected values, average the β = θ − 2f values
   closest to the coordinate-wise median (median of an even count: the mean of
   the two middle values; a value below and one above at the same distance: the
   lower one is kept, which is what a stable sort of the distances gives).
Needs **n ≥ 4f + 3** (then β ≥ 3). With f = 0 the neighbour count of the last
round (one vector left) is capped at 0, the only cap the textbook count needs.

**fedlaw** (`variant="fedlaw"`, aggregators.md §4: the FedLAW paper's baseline,
arXiv 2511.03529, as the spec describes its code): θ = n − 2b candidates by
repeated Krum with a *fixed* neighbour count k = (1 − fraction)·n − 2 capped by the
pool (min(k, |R| − 1), all the other vectors left), then a coordinate-wise
trimmed mean over the sorted candidates keeping the indices
[ℓ, max(ℓ + 1, θ − b)) with ℓ = min(b, ⌊θ/2⌋) (at least one value survives).
b is the pool parameter (default f). Interpretation, documented here because the
paper states k with the declared *fraction*: with f = ⌈fraction·n⌉ the integer
count, (1 − fraction)·n − 2 rounded down is exactly n − f − 2, which is what is
used (for the paper's n = 200 and fractions 0.1…0.4 the product is an integer
anyway); with excluded non-finite rows it is n' − f' − 2 on the round's n', f'.
Needs θ ≥ 1 and k ≥ 1, i.e. n ≥ max(2b + 1, f + 3); the textbook n ≥ 4f + 3 is
*not* required (the paper runs it at f = 0.4·n, where the textbook condition
fails).

Both variants report the client ids chosen by the selection step.

Cost: O(n²·D) for the distances (Gram matrix, `aggregators.distances`),
O(θ·n² log n) for the selection, O(D·θ log θ) for the per-coordinate step, which
runs over blocks of coordinates so that it needs O(n·block) memory besides the
input rather than several θ×D copies (n = 200, D = 2.5e6: about +0.8 GB over the
2 GB input).
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf

from aggregators.base import RobustAggregationFactory
from aggregators.distances import pairwise_squared_distances, rank_by_client_id
from aggregators.krum import int_maximum, lowest_scores, neighbour_scores

__all__ = ["bulyan", "bulyan_selection", "bulyan_with_selection", "mean_around_median",
           "repeated_krum", "BulyanFactory", "VARIANTS"]

VARIANTS = ("textbook", "fedlaw")


def _check_options(variant, b):
    if variant not in VARIANTS:
        raise ValueError(f"bulyan: variant must be one of {VARIANTS}; got {variant!r}.")
    if b is not None:
        if variant != "fedlaw":
            raise ValueError(f"bulyan: b is a parameter of variant='fedlaw' only; got b={b!r} "
                             f"with variant={variant!r}.")
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise TypeError(f"bulyan: b must be an integer or None; got {b!r}.")
        if b < 0:
            raise ValueError(f"bulyan: b must be an integer >= 0; got b={b}.")


def repeated_krum(distances: tf.Tensor, rank: tf.Tensor, *, num_selected, num_neighbours
                  ) -> tf.Tensor:
    """`[n]` bool: the rows selected by `num_selected` rounds of Krum on a shrinking pool.

    `num_neighbours(pool_size)` gives the neighbour count of a round; it is
    capped at pool_size − 1 (the other rows left in the pool).
    """
    n = tf.shape(distances)[0]

    def body(step, active):
        pool_size = n - step
        k = tf.minimum(num_neighbours(pool_size), pool_size - 1)
        winner = lowest_scores(neighbour_scores(distances, k, active), rank, 1)
        return step + 1, tf.tensor_scatter_nd_update(active, winner[:, tf.newaxis], [False])

    _, active = tf.while_loop(lambda step, _: step < num_selected, body,
                              (tf.constant(0), tf.ones([n], tf.bool)))
    return tf.logical_not(active)


# Coordinates per block of the per-coordinate step: the selected values of one block
# ([θ, 32 768] floats, ≤ 26 MB at θ = 200) are gathered, transposed and sorted at a time,
# so that step never holds more than the input plus a few blocks (instead of several
# [θ, D] copies: gathered, transposed, sorted values and sort indices).
_COORDINATE_BLOCK = 1 << 15


def _per_coordinate(rows, keep, reduce_block):
    """`[n, D] -> [D]`: `reduce_block([B, θ] kept values of B coordinates) -> [B]` applied
    block by block over the coordinates (`keep`: `[n]` bool rows to use, or None for all)."""
    dim = tf.shape(rows)[1]
    num_blocks = (dim + _COORDINATE_BLOCK - 1) // _COORDINATE_BLOCK

    def body(block, results):
        start = block * _COORDINATE_BLOCK
        values = rows[:, start:start + _COORDINATE_BLOCK]
        if keep is not None:
            values = tf.boolean_mask(values, keep)
        return block + 1, results.write(block, reduce_block(tf.transpose(values)))

    results = tf.TensorArray(rows.dtype, size=num_blocks, infer_shape=False,
                             element_shape=tf.TensorShape([None]))
    _, results = tf.while_loop(lambda block, _: block < num_blocks, body,
                               (tf.constant(0), results))
    return tf.cond(num_blocks > 0, results.concat, lambda: tf.zeros([0], rows.dtype))


def _sorted_descending(values):
    # Descending is TF's native order (top_k); ascending would negate twice.
    return tf.sort(values, axis=-1, direction="DESCENDING")


def _mean_around_median_block(values, beta):
    """`[B, θ] -> [B]`: per row, the mean of the β values closest to the row's median.

    With s sorted *ascending* and m the median, the β closest values form a
    window [a, a + β) of s, and sliding it from t to t + 1 brings it closer
    exactly when |s_t − m| > |s_{t+β} − m|, i.e. s_t + s_{t+β} < 2m, which is
    monotone in t: a is the count of t < θ − β with s_t + s_{t+β} < 2m (a tie
    keeps the lower values, as a stable sort of the distances would). The sums
    are compared in float64, where sums of two float32 values are exact. Here s
    is sorted descending (index i ↔ θ − 1 − i): the same count taken over the
    descending pairs gives a, and the window is [θ − β − a, θ − a).
    """
    theta = tf.shape(values)[1]
    excluded = theta - beta
    ordered = _sorted_descending(values)
    twice_median = (tf.cast(ordered[:, (theta - 1) // 2], tf.float64)
                    + tf.cast(ordered[:, theta // 2], tf.float64))
    pair_sums = (tf.cast(ordered[:, :excluded], tf.float64)
                 + tf.cast(ordered[:, beta:], tf.float64))
    below = tf.reduce_sum(tf.cast(pair_sums < twice_median[:, tf.newaxis], tf.int32), axis=1)
    start = (excluded - below)[:, tf.newaxis]
    positions = tf.range(theta)[tf.newaxis, :]
    window = tf.logical_and(positions >= start, positions < start + beta)
    total = tf.reduce_sum(tf.where(window, ordered, tf.constant(0, values.dtype)), axis=1)
    return total / tf.cast(beta, values.dtype)


def _trimmed_block(values, low, high):
    """`[B, θ] -> [B]`: mean of the sorted (ascending) positions [low, high) of each row."""
    theta = tf.shape(values)[1]
    return tf.reduce_mean(_sorted_descending(values)[:, theta - high:theta - low], axis=1)


def mean_around_median(selected: tf.Tensor, *, beta) -> tf.Tensor:
    """`[θ, ...] -> [...]`: per coordinate, the mean of the β values closest to the median
    (Bulyan's second step; median of an even count: the mean of the two middle values;
    equally close values below and above: the lower ones)."""
    selected = tf.convert_to_tensor(selected)
    theta = tf.shape(selected)[0]
    beta = tf.cast(beta, tf.int32)
    tf.debugging.assert_positive(beta, message="mean_around_median needs 1 <= beta")
    tf.debugging.assert_less_equal(beta, theta, message="mean_around_median needs beta <= θ")
    result = _per_coordinate(tf.reshape(selected, [theta, -1]), None,
                             lambda block: _mean_around_median_block(block, beta))
    return tf.reshape(result, tf.shape(selected)[1:])


@tf.function(reduce_retracing=True)
def _bulyan_rows(rows, f, b, rank, variant):
    """(`[D]`, selected `[n]` bool) for `[n, D]` rows. A `tf.function` so that eager callers
    run the selection loop as one graph (shapes are relaxed after the first retrace)."""
    n = tf.shape(rows)[0]
    distances = pairwise_squared_distances(rows)
    tf.debugging.assert_non_negative(f, message="bulyan needs f >= 0")
    if variant == "textbook":
        tf.debugging.assert_greater_equal(n, 4 * f + 3, message="bulyan needs n >= 4f + 3")
        theta = n - 2 * f
        selected = repeated_krum(distances, rank, num_selected=theta,
                                 num_neighbours=lambda pool: tf.maximum(pool - f - 2, 1))
        beta = theta - 2 * f
        return _per_coordinate(rows, selected,
                               lambda block: _mean_around_median_block(block, beta)), selected
    tf.debugging.assert_greater_equal(
        n, 2 * b + 1, message="bulyan (variant=fedlaw) needs n >= 2b + 1")
    tf.debugging.assert_greater_equal(n, f + 3, message="bulyan (variant=fedlaw) needs n >= f + 3")
    theta = n - 2 * b
    neighbours = n - f - 2  # ⌊(1 − fraction)·n⌋ − 2 (module doc), fixed over the rounds
    selected = repeated_krum(distances, rank, num_selected=theta,
                             num_neighbours=lambda pool: neighbours)
    low = tf.minimum(b, theta // 2)
    high = tf.maximum(low + 1, theta - b)
    return _per_coordinate(rows, selected, lambda block: _trimmed_block(block, low, high)), \
        selected


def bulyan_with_selection(stacked: tf.Tensor, *, f, variant: str = "textbook",
                          b: Optional[int] = None, client_ids: Optional[tf.Tensor] = None):
    """(`[...]` Bulyan of the rows, `[θ]` int32 row indices chosen by the selection step,
    increasing). See the module doc for both variants; ties in the Krum steps go to the
    lower client id (`client_ids`, default the row index)."""
    _check_options(variant, b)
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    f = tf.cast(f, tf.int32)
    b = f if b is None else tf.constant(b, tf.int32)
    result, selected = _bulyan_rows(tf.reshape(stacked, [n, -1]), f, b,
                                    rank_by_client_id(client_ids, n), variant)
    return (tf.reshape(result, tf.shape(stacked)[1:]),
            tf.cast(tf.reshape(tf.where(selected), [-1]), tf.int32))


def bulyan(stacked: tf.Tensor, *, f, variant: str = "textbook", b: Optional[int] = None,
           client_ids: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`[n, ...] -> [...]`: Bulyan of the rows (see `bulyan_with_selection`)."""
    return bulyan_with_selection(stacked, f=f, variant=variant, b=b, client_ids=client_ids)[0]


def bulyan_selection(stacked: tf.Tensor, *, f, variant: str = "textbook",
                     b: Optional[int] = None, client_ids: Optional[tf.Tensor] = None
                     ) -> tf.Tensor:
    """`[θ]` int32: the row indices chosen by the selection step, increasing."""
    return bulyan_with_selection(stacked, f=f, variant=variant, b=b, client_ids=client_ids)[1]


class BulyanFactory(RobustAggregationFactory):
    """Bulyan as a TFF aggregation factory (unweighted: example counts are ignored).

    `variant="textbook"` (default) needs n ≥ 4f + 3; `variant="fedlaw"` with pool
    parameter `b` (default f, the round's declared count) needs n ≥ 2b + 1 and
    n ≥ f + 3. An explicit b stays fixed when non-finite rows are excluded (like
    trimmed_mean's explicit beta); f is reduced as for every rule.
    Measurements: `non_finite_clients`, `f`, `selected_clients` (int32 `[θ]`,
    client ids chosen by the selection step, increasing; −1 for plain values).
    Like Krum, the selection has no standard weighted form, so `weighted=True`
    is rejected.
    """

    name = "bulyan"

    def __init__(self, *, variant: str = "textbook", b: Optional[int] = None, **kwargs):
        _check_options(variant, b)
        if kwargs.get("weighted"):
            raise ValueError(f"bulyan: weighted must be False (Krum's selection has no standard "
                             f"weighted form); got weighted={kwargs['weighted']!r}.")
        self.variant = variant
        self.b = None if b is None else int(b)
        if variant == "textbook":
            self.requirement = "n >= 4f + 3"
        else:
            self.requirement = (f"n >= 2b + 1 and n >= f + 3 (variant=fedlaw, "
                                f"b={'f' if b is None else b})")
        super().__init__(**kwargs)

    def min_clients(self, f):
        if self.variant == "textbook":
            return 4 * f + 3
        b = f if self.b is None else self.b + 0 * f
        return int_maximum(2 * b + 1, f + 3)

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        result, selected = bulyan_with_selection(values, f=f, variant=self.variant, b=self.b,
                                                 client_ids=client_ids)
        return result, state, collections.OrderedDict(
            selected_clients=tf.sort(tf.gather(client_ids, selected)))
