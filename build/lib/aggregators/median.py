"""Coordinate-wise median (Yin et al. 2018).

Per coordinate, the median of the n client values; for even n the mean of the two
middle values (`even="mean"`, default) or the lower one (`even="lower"`, as in
torch). Weighted: the smallest value whose cumulative weight reaches 1/2,
averaged with the next one when it equals 1/2 exactly. Needs f < n/2.
"""

from __future__ import annotations

import collections
import functools
from typing import Optional

import numpy as np
import tensorflow as tf

from aggregators.base import RobustAggregationFactory, traced_max_rows

__all__ = ["median", "weighted_median", "MedianFactory", "sorting_network_reduce"]

# Cumulative weights within this of 1/2 count as exactly 1/2 (float rounding of
# equal weights, e.g. 3 × 1/6).
_HALF_TOLERANCE = 1e-6

# --- Sorting networks ---------------------------------------------------------
# `tf.sort(axis=0)` on [50, 1.2e6] takes ~2 s: TF sorts each 50-value column with
# an indirect comparison sort (its TopK kernel). A comparator network instead
# applies elementwise min/max to whole rows (branch-free, vectorised over
# columns), column chunk by column chunk so a chunk's rows stay in cache. n is
# only known per round, so the rows are padded with ∓inf up to a network size m
# (a power of two) and one branch per m is chosen at run time; a network sorts
# exactly like `tf.sort`, so the selected values (and their sums) are identical.
NETWORK_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)  # larger n falls back to tf.sort
NETWORK_MIN_COLUMNS = 4096  # below this many columns tf.sort is fast enough
NETWORK_CHUNK_FLOATS = 64 * 16384  # per column chunk (m rows × 2^20/m columns: 4 MB)
NETWORK_PARALLEL_CHUNKS = 2


@functools.lru_cache(maxsize=None)
def batcher_pairs(m: int) -> tuple:
    """Comparators (i < j) of Batcher's odd-even merge sort of m = 2^k wires."""
    pairs = []
    p = 1
    while p < m:
        k = p
        while k >= 1:
            for j in range(k % p, m - k, 2 * k):
                for i in range(min(k, m - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


_SWAP, _COMPARE = 0, 1


@functools.lru_cache(maxsize=None)
def network_program(m: int, data_wires: int, outputs: Optional[tuple]) -> tuple:
    """Batcher's m-wire network specialised to `data_wires` data values followed by
    m − data_wires +inf pads, pruned to the wires `outputs` (None: the data wires).

    A comparator with a +inf wire needs no operation: it is a no-op or a swap of
    wires (done when the graph is built), so with no pads at all every comparator
    is real. Returns ops `(kind, i, j, want_min, want_max)`: `_SWAP`, or `_COMPARE`
    with the outputs still needed afterwards (min → wire i, max → wire j)."""
    data = [w < data_wires for w in range(m)]
    ops = []
    for i, j in batcher_pairs(m):
        if not data[j]:  # max(x, inf) = inf stays on j, min on i: nothing moves
            continue
        if not data[i]:  # inf on i, data on j: they swap
            data[i], data[j] = True, False
            ops.append((_SWAP, i, j))
        else:
            ops.append((_COMPARE, i, j))
    need = set(range(data_wires) if outputs is None else outputs)
    kept = []
    for kind, i, j in reversed(ops):
        if kind == _SWAP:
            moved = {j} if i in need else set()
            moved |= {i} if j in need else set()
            need = (need - {i, j}) | moved
            kept.append((kind, i, j, True, True))
        elif i in need or j in need:
            kept.append((kind, i, j, i in need, j in need))
            need |= {i, j}
    return tuple(reversed(kept))


def _needed_pairs(m: int, outputs: Optional[tuple]) -> tuple:
    """The comparators of `batcher_pairs(m)` that influence the wires `outputs`."""
    return tuple((i, j) for _, i, j, _, _ in network_program(m, m, outputs))


def _pad_values(dtype):
    if dtype.is_floating:
        return np.array(-np.inf, dtype.as_numpy_dtype), np.array(np.inf, dtype.as_numpy_dtype)
    return dtype.min, dtype.max


@functools.lru_cache(maxsize=None)
def _network_fn(m: int, outputs: Optional[tuple], dtype: tf.DType, data_rows: Optional[int] = None):
    """`[rows, w] -> [len(outputs), w]` (all wires when outputs is None): the network's
    sorted wires. `data_rows=None`: m rows (pads included by the caller); else exactly
    `data_rows` rows, the pads resolved statically (`network_program`). A `tf.function`
    cached per process, so the ~2 op per comparator graph is traced once, not in every
    computation that uses it."""
    rows_in = m if data_rows is None else data_rows
    program = network_program(m, rows_in, outputs)
    wires = tuple(range(rows_in)) if outputs is None else outputs

    @tf.function(input_signature=[tf.TensorSpec([rows_in, None], dtype)], autograph=False)
    def network(padded):
        rows = tf.unstack(padded, num=rows_in) + [None] * (m - rows_in)  # None: +inf
        for kind, i, j, want_min, want_max in program:
            if kind == _SWAP:
                rows[i], rows[j] = rows[j], rows[i]
                continue
            low = tf.raw_ops.Minimum(x=rows[i], y=rows[j]) if want_min else None
            high = tf.raw_ops.Maximum(x=rows[i], y=rows[j]) if want_max else None
            rows[i], rows[j] = low, high
        return tf.stack([rows[w] for w in wires])

    return network


def sorting_network_reduce(stacked: tf.Tensor, finish, *, outputs=None, pad_low=None,
                           fallback, exact_outputs=None):
    """Per column, sorts the n rows of `stacked [n, D]` with a comparator network and
    returns `finish(wires, n, m) -> [w]` on each column chunk, concatenated to `[D]`.

    The n values are padded to m wires: `pad_low(n, m)` low pad values (−inf;
    default none) first, high ones (+inf) last, so after the network wire
    `pad_low + i` holds the i-th smallest value. `wires` is `[len(outputs), w]`:
    the wires listed by `outputs(m)` (the rest of the network is pruned; None: all
    m). Uses `fallback(stacked)` when n is 0 or above the networks built
    (`network_sizes`: up to the traced factory's expected clients when known), when
    the columns are few or not statically known, and in eager mode.

    When the traced factory's clients per round n₀ is known, one more branch takes
    exactly n₀ rows without padding (the pads' comparators resolved when the graph is
    built: ~25 % fewer operations); `exact_outputs(n₀)` lists the wires `finish` needs
    there (wire i holds the i-th smallest; None: all n₀), and `finish(wires, n₀, n₀)`.
    """
    stacked = tf.convert_to_tensor(stacked)
    columns = stacked.shape[1] if stacked.shape.rank == 2 else None
    if tf.executing_eagerly() or columns is None or columns < NETWORK_MIN_COLUMNS:
        return fallback(stacked)
    n = tf.shape(stacked)[0]
    low, high = _pad_values(stacked.dtype)

    def branch(m):
        network = _network_fn(m, None if outputs is None else tuple(outputs(m)), stacked.dtype)
        lead = tf.zeros([], tf.int32) if pad_low is None else tf.cast(pad_low(n, m), tf.int32)
        trail = m - n - lead

        def chunk_result(chunk):
            width = tf.shape(chunk)[1]
            padded = tf.concat([tf.fill([lead, width], low), chunk,
                                tf.fill([trail, width], high)], axis=0)
            return finish(network(tf.ensure_shape(padded, [m, None])), n, m)

        return chunked(m, chunk_result)

    def exact_branch(rows):
        m = next(size for size in NETWORK_SIZES if size >= rows)
        wires = None if exact_outputs is None else tuple(exact_outputs(rows))
        network = _network_fn(m, wires, stacked.dtype, rows)

        def chunk_result(chunk):
            # `rows − n` (0 when this branch is taken) +inf rows appended: an op of a branch
            # that is not taken may still run when it reads only the branch's inputs
            # (grappler, TF 2.14: a bare unstack of `chunk` failed for other n), so its
            # input must depend on n like the padded branches' inputs do.
            padded = tf.concat([chunk, tf.fill([rows - n, tf.shape(chunk)[1]], high)], axis=0)
            return finish(network(tf.ensure_shape(padded, [rows, None])), rows, rows)

        return chunked(m, chunk_result)

    def chunked(m, chunk_result):
        chunk_columns = max(NETWORK_MIN_COLUMNS, NETWORK_CHUNK_FLOATS // m)
        chunks = -(-columns // chunk_columns)
        if chunks == 1:
            return tf.ensure_shape(chunk_result(stacked), [columns])
        results = tf.TensorArray(stacked.dtype, size=chunks, infer_shape=False,
                                 element_shape=[None])

        def body(k, results):
            start = k * chunk_columns
            return k + 1, results.write(k, chunk_result(stacked[:, start:start + chunk_columns]))

        _, results = tf.while_loop(lambda k, _: k < chunks, body, (0, results),
                                   parallel_iterations=NETWORK_PARALLEL_CHUNKS)
        return tf.ensure_shape(results.concat(), [columns])

    sizes = network_sizes(traced_max_rows())
    index = tf.reduce_sum(tf.cast(tf.constant(sizes) < n, tf.int32))
    index = tf.where(n > 0, index, len(sizes))
    branches = [functools.partial(branch, m) for m in sizes]
    branches.append(lambda: tf.ensure_shape(fallback(stacked), [columns]))
    exact = traced_max_rows()
    if exact is not None and 2 <= exact <= max(NETWORK_SIZES):
        index = tf.where(tf.equal(n, exact), len(branches), index)
        branches.append(functools.partial(exact_branch, exact))
    return tf.switch_case(index, branches)


def network_sizes(max_rows: Optional[int] = None) -> list:
    """The network sizes built: all of `NETWORK_SIZES`, or up to the first ≥ `max_rows`."""
    if max_rows is None:
        return list(NETWORK_SIZES)
    sizes = [m for m in NETWORK_SIZES if m < max_rows]
    sizes += [m for m in NETWORK_SIZES if m >= max_rows][:1]
    return sizes


def _sorted_median(stacked, even):
    n = tf.shape(stacked)[0]
    ordered = tf.sort(stacked, axis=0)
    lower = ordered[(n - 1) // 2]
    if even == "lower":
        return lower
    return (lower + ordered[n // 2]) / 2


def median(stacked: tf.Tensor, *, even: str = "mean") -> tf.Tensor:
    """`[n, ...] -> [...]`: coordinate-wise median of the rows."""
    if even not in ("mean", "lower"):
        raise ValueError(f"median: even must be 'mean' or 'lower'; got {even!r}.")
    stacked = tf.convert_to_tensor(stacked)

    # Padding puts the lower middle value on wire m/2 − 1 for every n ≤ m, so
    # only the comparators feeding wires m/2 − 1 and m/2 are kept.
    def finish(wires, n, m):
        del m
        lower = wires[0]
        if even == "lower":
            return lower
        upper = tf.where(tf.equal(n % 2, 0), wires[1], lower)  # ordered[n // 2]
        return (lower + upper) / 2

    return sorting_network_reduce(
        stacked, finish, outputs=lambda m: (m // 2 - 1, m // 2),
        pad_low=lambda n, m: m // 2 - 1 - (n - 1) // 2,
        fallback=functools.partial(_sorted_median, even=even),
        exact_outputs=lambda n: ((n - 1) // 2, n // 2))


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
