"""Norm clipping before a rule: static `clip`, adaptive robust clipping `arc`, `clip:adaptive`.

- **clip** (static, aggregators.md §2): x_i ← x_i · min(1, C/||x_i||).
- **arc** (adaptive robust clipping, Allouah et al., arXiv 2405.14432):
  k = ⌊2(f/n)(n − f)⌋; the k largest-norm vectors are clipped to the (k+1)-th
  largest norm, the others are unchanged. Needs f < n/2.
- **clip:adaptive**: TFF's quantile-based adaptive clipping norm
  (`tff.aggregators.clipping_factory` with a no-noise
  `PrivateQuantileEstimationProcess`; initial norm 1.0, target quantile 0.8,
  learning rate 0.2, as in TFF's own `robust_aggregator`) around an inner factory;
  see `adaptive_clipping_factory`.

Also holds what the norm-based rules of this package share: `vector_norm`,
`row_norms`, `distances_to` (overflow-safe Euclidean norms, row by row) and the
argument checks `check_positive_number` / `check_integer` (one-line messages
naming the rule, the argument and the value).
"""

from __future__ import annotations

import collections
import math

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz import collection
from aggregators.base import federated_next
from aggregators.compose import PreAggregator
from tff_byz.collection import ClientRecordAggregationFactory

__all__ = ["norm_clip", "arc", "NormClip", "ARC", "adaptive_clipping_factory",
           "AdaptiveClippingFactory", "vector_norm", "row_norms", "distances_to",
           "check_positive_number", "check_integer"]


# --- shared helpers -------------------------------------------------------------------------

def check_positive_number(rule: str, name: str, value) -> float:
    """A finite number > 0 (an int is accepted); TypeError/ValueError naming rule, name, value."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{rule}: {name} must be a number; got {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{rule}: {name} must be a finite number > 0; got {value!r}.")
    return float(value)


def check_integer(rule: str, name: str, value, minimum: int) -> int:
    """An integer >= minimum (bools and floats are rejected, never rounded)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{rule}: {name} must be an integer; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{rule}: {name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def vector_norm(vector: tf.Tensor) -> tf.Tensor:
    """Euclidean norm of a 1-D tensor, without float32 overflow.

    The plain sqrt(Σx²) overflows for entries above ~1e19 (an attacker's 1e30 row
    would get norm inf, and a centre pulled towards it makes *every* distance inf).
    Only when the sum of squares is not finite is the vector rescaled by its
    largest entry (an extra pass that ordinary rounds never pay).
    """
    vector = tf.convert_to_tensor(vector)
    squared = tf.reduce_sum(tf.math.square(vector))

    def rescaled():
        scale = tf.reduce_max(tf.abs(vector))
        safe = tf.where((scale > 0) & tf.math.is_finite(scale), scale, tf.ones_like(scale))
        return tf.where(tf.math.is_inf(scale), scale,
                        safe * tf.sqrt(tf.reduce_sum(tf.square(vector / safe))))

    return tf.cond(tf.math.is_finite(squared), lambda: tf.sqrt(squared), rescaled)


def _distance(row, center):
    """||row − center|| with one fused pass; `vector_norm` only if the squares overflow."""
    squared = tf.reduce_sum(tf.math.squared_difference(row, center))
    return tf.cond(tf.math.is_finite(squared), lambda: tf.sqrt(squared),
                   lambda: vector_norm(row - center))


def _map_rows(fn, values):
    """`[fn(values[i]) for i]` as a graph loop over rows: one row (not n×D) at a time.

    Measured at n = 200, D = 2.5e6 on CPU: 0.8 s per pass against 1.1 s for the
    broadcast `values - center` (which also needs two n×D temporaries) and 2.0 s
    for `tf.map_fn` (which first copies the whole input into a TensorArray).
    """
    n = tf.shape(values)[0]
    out = tf.TensorArray(values.dtype, size=n, element_shape=[])
    _, out = tf.while_loop(lambda i, _: i < n,
                           lambda i, out: (i + 1, out.write(i, fn(tf.gather(values, i)))),
                           (tf.constant(0), out))
    return out.stack()


# Compiled even when called eagerly: an eager loop over rows runs in Python.
@tf.function(reduce_retracing=True)
def row_norms(values: tf.Tensor) -> tf.Tensor:
    """`[n, D] -> [n]`: the Euclidean norm of each row, overflow-safe like `vector_norm`."""
    values = tf.convert_to_tensor(values)
    zero = tf.zeros([], values.dtype)
    return _map_rows(lambda row: _distance(row, zero), values)


@tf.function(reduce_retracing=True)
def distances_to(values: tf.Tensor, center: tf.Tensor) -> tf.Tensor:
    """`[n, D], [D] -> [n]`: ||x_i − center|| row by row, overflow-safe like `vector_norm`."""
    values = tf.convert_to_tensor(values)
    center = tf.cast(center, values.dtype)
    return _map_rows(lambda row: _distance(row, center), values)


def _as_rows(stacked):
    stacked = tf.convert_to_tensor(stacked)
    return tf.reshape(stacked, [tf.shape(stacked)[0], -1])


def _scale_rows(values, norms, threshold):
    """x_i · min(1, threshold/||x_i||), given the row norms.

    Written as x_i / max(1, ||x_i||/threshold): the factor threshold/||x_i|| itself
    can be subnormal (2/3e38), which the CPU flushes to 0. Rows at or below the
    threshold are divided by exactly 1 (unchanged, except subnormal entries, which
    TF's CPU kernels flush to 0 in any arithmetic).
    """
    divisor = tf.where(norms > threshold, norms / threshold, tf.ones_like(norms))
    return values / divisor[:, tf.newaxis]


# --- static clipping ------------------------------------------------------------------------

def norm_clip(stacked: tf.Tensor, *, c) -> tf.Tensor:
    """`[n, ...] -> [n, ...]`: each row scaled by min(1, c/||row||)."""
    if not tf.is_tensor(c):
        check_positive_number("clip", "c", c)
    stacked = tf.convert_to_tensor(stacked)
    rows = _as_rows(stacked)
    clipped = _scale_rows(rows, row_norms(rows), tf.cast(c, stacked.dtype))
    return tf.reshape(clipped, tf.shape(stacked))


class NormClip(PreAggregator):
    """Static norm clipping `clip:c=C` before a rule.

    Weights and client ids pass through. Measurement `clipped_clients` (rows whose
    norm exceeded C).
    """

    name = "clip"
    requirement = ""

    def __init__(self, c: float = 1.0):
        self.c = check_positive_number("clip", "c", c)

    def min_clients(self, inner_min, f):  # pylint: disable=unused-argument
        return inner_min

    def transform(self, values, weights, client_ids, *, f, seed):
        norms = row_norms(values)
        clipped = _scale_rows(values, norms, tf.constant(self.c, values.dtype))
        clipped_clients = tf.reduce_sum(tf.cast(norms > self.c, tf.int32))
        return clipped, weights, client_ids, collections.OrderedDict(
            clipped_clients=clipped_clients)


# --- adaptive robust clipping (ARC) ---------------------------------------------------------

def _arc_rows(values, f):
    """(clipped rows, norms, clipping norm, k) for ARC on `[n, D]`."""
    n = tf.shape(values)[0]
    f = tf.cast(f, tf.int32)
    tf.debugging.assert_less(2 * f, n + tf.cast(tf.equal(n, 0), tf.int32),
                             message="arc needs f < n/2")
    # k = ⌊2(f/n)(n − f)⌋ in exact integer arithmetic (no float rounding at integers).
    k = (2 * f * (n - f)) // tf.maximum(n, 1)
    norms = row_norms(values)
    descending = tf.concat([tf.sort(norms, direction="DESCENDING"), tf.zeros([1], norms.dtype)], 0)
    threshold = descending[k]  # the (k+1)-th largest norm (k < n whenever f < n/2)
    return _scale_rows(values, norms, threshold), norms, threshold, k


def arc(stacked: tf.Tensor, *, f) -> tf.Tensor:
    """`[n, ...] -> [n, ...]`: the k = ⌊2(f/n)(n−f)⌋ largest rows clipped to the next norm."""
    if not tf.is_tensor(f):
        check_integer("arc", "f", f, 0)
    stacked = tf.convert_to_tensor(stacked)
    clipped, _, _, _ = _arc_rows(_as_rows(stacked), f)
    return tf.reshape(clipped, tf.shape(stacked))


def _max(a, b):
    """max for Python ints (build-time checks) and tensors (per round)."""
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        return max(int(a), int(b))
    return tf.maximum(tf.cast(a, tf.int32), tf.cast(b, tf.int32))


class ARC(PreAggregator):
    """Adaptive robust clipping before a rule (uses the round's f; needs f < n/2).

    Measurements: `clipped_clients` (rows whose norm exceeded the clipping norm;
    k minus ties at the threshold) and `clipping_norm` (the (k+1)-th largest norm).
    """

    name = "arc"
    requirement = "f < n/2 (n >= 2f + 1)"

    def min_clients(self, inner_min, f):
        return _max(inner_min, 2 * f + 1)

    def transform(self, values, weights, client_ids, *, f, seed):
        clipped, norms, threshold, _ = _arc_rows(values, f)
        measurements = collections.OrderedDict(
            clipped_clients=tf.reduce_sum(tf.cast(norms > threshold, tf.int32)),
            clipping_norm=tf.cast(threshold, tf.float32))
        return clipped, weights, client_ids, measurements


# --- clip:adaptive --------------------------------------------------------------------------

# TFF's own robust aggregator (`learning/model_update_aggregator.py`, `_default_clipping`).
_ADAPTIVE_INITIAL_NORM = 1.0
_ADAPTIVE_TARGET_QUANTILE = 0.8
_ADAPTIVE_LEARNING_RATE = 0.2


def _quantile_process(initial_norm, target_quantile, learning_rate):
    return tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
        initial_estimate=initial_norm, target_quantile=target_quantile, learning_rate=learning_rate)


def adaptive_clipping_factory(inner_factory, *, initial_norm: float = _ADAPTIVE_INITIAL_NORM,
                              target_quantile: float = _ADAPTIVE_TARGET_QUANTILE,
                              learning_rate: float = _ADAPTIVE_LEARNING_RATE):
    """`clip:adaptive`: clip to an adaptive estimate of the `target_quantile` of client norms.

    For a plain TFF factory (e.g. `MeanFactory`) this is exactly
    `tff.aggregators.clipping_factory(no-noise quantile process, inner_factory)`
    (weightedness taken from the inner factory). For a
    `ClientRecordAggregationFactory` (the robust rules) it is
    `AdaptiveClippingFactory`, the same process but clipping only the record's
    `delta`, so the inner rule still sees client ids. State and measurement names
    are TFF's in both cases: state `clipping_norm`, `inner_agg`; measurements
    `clipping` (the inner rule's), `clipping_norm`, `clipped_count`.
    """
    initial_norm, target_quantile, learning_rate = _check_adaptive(
        initial_norm, target_quantile, learning_rate)
    if isinstance(inner_factory, ClientRecordAggregationFactory):
        return AdaptiveClippingFactory(inner_factory, initial_norm=initial_norm,
                                       target_quantile=target_quantile,
                                       learning_rate=learning_rate)
    if not isinstance(inner_factory, (tff.aggregators.WeightedAggregationFactory,
                                      tff.aggregators.UnweightedAggregationFactory)):
        raise TypeError("clip:adaptive: inner_factory must be a TFF aggregation factory; "
                        f"got {type(inner_factory).__name__}.")
    return tff.aggregators.clipping_factory(
        _quantile_process(initial_norm, target_quantile, learning_rate), inner_factory)


def _check_adaptive(initial_norm, target_quantile, learning_rate):
    initial_norm = check_positive_number("clip:adaptive", "initial_norm", initial_norm)
    learning_rate = check_positive_number("clip:adaptive", "learning_rate", learning_rate)
    if isinstance(target_quantile, bool) or not isinstance(
            target_quantile, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"clip:adaptive: target_quantile must be a number; got {target_quantile!r}.")
    if not 0.0 <= float(target_quantile) <= 1.0:
        raise ValueError(
            f"clip:adaptive: target_quantile must be in [0, 1]; got {target_quantile!r}.")
    return initial_norm, float(target_quantile), learning_rate


def _global_norm(leaves):
    """L2 norm over all leaves (float32), overflow-safe like `row_norms`."""
    leaves = [tf.cast(leaf, tf.float32) for leaf in leaves]
    squared = tf.add_n([tf.reduce_sum(tf.square(leaf)) for leaf in leaves])

    def rescaled():
        scale = tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(leaf)) for leaf in leaves]))
        safe = tf.where((scale > 0) & tf.math.is_finite(scale), scale, 1.0)
        norm = safe * tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(leaf / safe)) for leaf in leaves]))
        return tf.where(tf.math.is_inf(scale), scale, norm)

    return tf.cond(tf.math.is_finite(squared), lambda: tf.sqrt(squared), rescaled)


class AdaptiveClippingFactory(ClientRecordAggregationFactory):
    """Adaptive norm clipping of client records' deltas before a record-aware inner factory.

    Mirrors `tff.aggregators.clipping_factory` with an adaptive norm: each round the
    server broadcasts the quantile process's current norm C, each client scales its
    delta by min(1, C/||delta||) (the other record fields are kept), the inner
    process aggregates the clipped records, and the quantile process is updated
    with the clients' unclipped norms. Plain (non-record) values are clipped as a
    whole, so the factory also works like TFF's.

    `next(state, records@CLIENTS, weights@CLIENTS)`; state
    `OrderedDict(clipping_norm=<quantile state>, inner_agg=<inner state>)`;
    measurements `OrderedDict(clipping=<inner measurements>, clipping_norm=float32,
    clipped_count=int32)`.
    """

    def __init__(self, inner_factory: ClientRecordAggregationFactory, *,
                 initial_norm: float = _ADAPTIVE_INITIAL_NORM,
                 target_quantile: float = _ADAPTIVE_TARGET_QUANTILE,
                 learning_rate: float = _ADAPTIVE_LEARNING_RATE):
        if not isinstance(inner_factory, ClientRecordAggregationFactory):
            raise TypeError("clip:adaptive: AdaptiveClippingFactory needs a "
                            f"ClientRecordAggregationFactory; got {type(inner_factory).__name__} "
                            "(use adaptive_clipping_factory).")
        self.inner_factory = inner_factory
        self.initial_norm, self.target_quantile, self.learning_rate = _check_adaptive(
            initial_norm, target_quantile, learning_rate)

    def create(self, value_type, weight_type=None):
        value_type = tff.to_type(value_type)
        weight_type = None if weight_type is None else tff.to_type(weight_type)
        record = collection.is_client_record_type(value_type)
        field_names = ([name for name, _ in tff.structure.iter_elements(value_type)]
                       if record else [])
        collection.Flattener(value_type["delta"] if record else value_type)  # float leaves only
        norm_process = _quantile_process(self.initial_norm, self.target_quantile,
                                         self.learning_rate)
        if weight_type is None:
            inner = self.inner_factory.create(value_type)
        else:
            inner = self.inner_factory.create(value_type, weight_type)

        @tff.tensorflow.computation(value_type, np.float32)
        def clip_fn(value, clipping_norm):
            target = value["delta"] if record else value
            leaves = tf.nest.flatten(target)
            norm = _global_norm(leaves)
            # As TFF's clipping: divide by norm/C (C/norm can be subnormal and flush to 0).
            divisor = tf.where(norm > clipping_norm, norm / clipping_norm, 1.0)
            clipped = tf.nest.pack_sequence_as(
                target, [leaf / tf.cast(divisor, leaf.dtype) for leaf in leaves])
            if record:
                clipped = collections.OrderedDict(
                    (key, clipped if key == "delta" else value[key]) for key in field_names)
            return clipped, norm, tf.cast(norm > clipping_norm, tf.int32)

        @tff.federated_computation
        def init_fn():
            return tff.federated_zip(collections.OrderedDict(
                clipping_norm=norm_process.initialize(), inner_agg=inner.initialize()))

        def next_impl(state, values, weights):
            clipping_norm = norm_process.report(state["clipping_norm"])
            clipped, norms, was_clipped = tff.federated_map(
                clip_fn, (values, tff.federated_broadcast(clipping_norm)))
            if weights is None:
                output = inner.next(state["inner_agg"], clipped)
            else:
                output = inner.next(state["inner_agg"], clipped, weights)
            new_state = collections.OrderedDict(
                clipping_norm=norm_process.next(state["clipping_norm"], norms),
                inner_agg=output.state)
            measurements = collections.OrderedDict(
                clipping=output.measurements, clipping_norm=clipping_norm,
                clipped_count=tff.federated_sum(was_clipped))
            return tff.templates.MeasuredProcessOutput(
                tff.federated_zip(new_state), output.result, tff.federated_zip(measurements))

        next_fn = federated_next(init_fn.type_signature.result, value_type, weight_type, next_impl)

        return tff.templates.AggregationProcess(init_fn, next_fn)
