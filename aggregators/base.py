"""Base class of the stacked robust rules: wiring into TFF, shared once.

A rule subclasses `RobustAggregationFactory` and supplies only TF math:

- `aggregate(values, weights, client_ids, *, f, state, seed)` → (vector `[D]`,
  new rule state, measurements `OrderedDict`), on the finite rows sorted by
  client id (`values [n, D]` float32, `weights [n]` normalised to sum 1 when the
  rule is weighted, else uniform);
- `min_clients(f)` (the rule's requirement as `n >= min_clients(f)`, written
  with arithmetic only so it works on ints at build time and tensors per round);
- optionally `initial_state(dim)`.

The base class handles what the spec makes common to every rule
(aggregators.md §0): client values arrive as client records (ids used) or plain
values; rows with any NaN/Inf are dropped and counted (`non_finite_clients`) and
the rule runs with n' = n − k and f' = max(f − k, 0); f = ⌈declared fraction · n⌉
unless an explicit `f` is given; the requirement is checked when the factory is
built (with the expected clients per round) and again every round; a per-round
seed `(seed, round)` for randomised steps. If every row is non-finite the
aggregate is zero (the model does not move) and the count says so.

The factory is a `tff.aggregators.WeightedAggregationFactory`, so it composes
like `MeanFactory` in TFF's own algorithms (plain values: ids are −1 and arrival
order is kept); in this project's processes it receives whole client records.
"""

from __future__ import annotations

import collections
import contextlib
import math
import re
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz import collection
from tff_byz.collection import ClientRecordAggregationFactory

__all__ = ["RobustAggregationFactory", "DeclaredByzantineCount", "declared_f",
           "federated_next", "probabilities", "RequirementError", "traced_max_rows"]

# The most rows a rule can see in the computation being traced (the factory's
# expected clients per round), or None. Sorting networks are built only up to
# this size (larger n falls back to tf.sort): a rule's graph runs inside every
# accumulate call (collection.build_stack_reduce), whose cost per call grows with
# the size of its graph.
_MAX_ROWS: list = [None]


def traced_max_rows() -> Optional[int]:
    """Upper bound on the rows of the stacked values in the rule being traced, or None."""
    return _MAX_ROWS[0]


@contextlib.contextmanager
def _max_rows(rows: Optional[int]):
    previous, _MAX_ROWS[0] = _MAX_ROWS[0], rows
    try:
        yield
    finally:
        _MAX_ROWS[0] = previous


class RequirementError(ValueError):
    """A rule's requirement on (n, f) is violated (CLI: exit 2)."""


TOO_FEW_CLIENTS = "too few finite clients:"
_TOO_FEW = re.compile(re.escape(TOO_FEW_CLIENTS) + r" (.*?): clients\] \[(\d+)\] \[finite\] "
                      r"\[(\d+)\] \[f\] \[(\d+)\] \[needs\] \[(\d+)\]")


def too_few_clients_reason(message: str) -> Optional[str]:
    """The one-line reason for a round whose robust rule had too few finite clients, from the
    error the TFF worker raised (None if `message` is another error)."""
    found = _TOO_FEW.search(message)
    if found is None:
        return None
    rule, clients, finite, f, needs = found.groups()
    return (f"{rule}: {finite} of {clients} clients sent finite values, with f = {f} it needs "
            f"at least {needs}; no aggregate exists (the others sent NaN/Inf)")


def declared_f(fraction: float, n):
    """f = ⌈fraction · n⌉ (ints or tensors); a tiny slack absorbs float error (0.3·10)."""
    if isinstance(n, (int, np.integer)):
        return int(math.ceil(fraction * n - 1e-9))
    return tf.cast(tf.math.ceil(fraction * tf.cast(n, tf.float64) - 1e-9), tf.int32)


def probabilities(weights, n, dtype):
    """p_i: `weights` normalised to sum 1, or uniform 1/n when `weights` is None."""
    if weights is None:
        return tf.fill([n], 1.0 / tf.cast(tf.maximum(n, 1), dtype))
    weights = tf.cast(weights, dtype)
    return tf.math.divide_no_nan(weights, tf.reduce_sum(weights))


def federated_next(state_type, value_type, weight_type, next_impl):
    """A `next` with TFF's unweighted `(state, values)` signature when `weight_type`
    is None, else the weighted `(state, values, weights)`; both call
    `next_impl(state, values, weights_or_None)`."""
    if weight_type is None:
        @tff.federated_computation(state_type, tff.FederatedType(value_type, tff.CLIENTS))
        def next_fn(state, values):
            return next_impl(state, values, None)
    else:
        @tff.federated_computation(state_type, tff.FederatedType(value_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, values, weights):
            return next_impl(state, values, weights)
    return next_fn


class DeclaredByzantineCount:
    """The declared Byzantine count f and the (n, f) requirement, shared by every
    rule (stacked or not). Subclasses set `name`, `requirement`, `min_clients(f)`."""

    name: str = "rule"
    requirement: str = "n >= 1"

    def _set_byzantine_options(self, byzantine_fraction, f) -> None:
        if isinstance(byzantine_fraction, bool) or not isinstance(
                byzantine_fraction, (int, float, np.integer, np.floating)) \
                or not 0.0 <= float(byzantine_fraction) < 1.0:
            raise ValueError(f"{self.name}: byzantine_fraction must be in [0, 1); "
                             f"got {byzantine_fraction!r}.")
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 0):
            raise ValueError(f"{self.name}: f must be an integer >= 0; got {f!r}.")
        self.byzantine_fraction = float(byzantine_fraction)
        self.f = None if f is None else int(f)

    def min_clients(self, f):
        return 1 + 0 * f

    def f_for(self, n):
        return self.f if self.f is not None else declared_f(self.byzantine_fraction, n)

    def check_requirement(self, n: int, f: Optional[int] = None) -> None:
        f = self.f_for(n) if f is None else f
        if n < self.min_clients(f):
            raise RequirementError(
                f"{self.name} needs {self.requirement}; got n={n}, f={f} "
                f"(needs n >= {self.min_clients(f)}).")


class RobustAggregationFactory(DeclaredByzantineCount, ClientRecordAggregationFactory):
    """Shared TFF wiring of a stacked rule; see the module docstring."""

    name: str = "robust"
    requirement: str = "n >= 1"  # human-readable form of min_clients
    # The spec's plain mean keeps non-finite rows (its output becomes non-finite
    # and the run stops); every robust rule drops them.
    drops_non_finite: bool = True

    def __init__(self, *, byzantine_fraction: float = 0.0, f: Optional[int] = None,
                 weighted: bool = False, seed: int = 0, expected_clients: Optional[int] = None):
        self._set_byzantine_options(byzantine_fraction, f)
        self.weighted = bool(weighted)
        self.seed = int(seed)
        self.expected_clients = int(expected_clients) if expected_clients else None
        if expected_clients:
            self.check_requirement(int(expected_clients))

    # --- to be provided by rules (and `min_clients` from DeclaredByzantineCount) ---
    def initial_state(self, dim: int):  # pylint: disable=unused-argument
        return collections.OrderedDict()

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        raise NotImplementedError

    # --- shared --------------------------------------------------------------
    def simulate(self, values, client_ids, state):
        """The rule's aggregate `[D]` of finite rows `values` `[n, D]` (sorted by client id),
        with equal weights, from the process state `state` (`OrderedDict(round, rule)`): what
        an adaptive attack searches against (`attacks.adaptive`). Measurements and the new
        state are dropped."""
        n = tf.shape(values)[0]
        f = tf.cast(self.f_for(n), tf.int32)
        weights = tf.ones([n], values.dtype) / tf.cast(tf.maximum(n, 1), values.dtype)
        seed = tf.stack([tf.constant(self.seed, tf.int64), state["round"]])
        vector, _, _ = self.aggregate(values, weights, client_ids, f=f, state=state["rule"],
                                      seed=seed)
        return vector

    def create(self, value_type, weight_type=None):
        value_type = tff.to_type(value_type)
        weight_type = None if weight_type is None else tff.to_type(weight_type)
        flattener = collection.value_flattener(value_type)
        result_type = value_type["delta"] if collection.is_client_record_type(value_type) else value_type
        like = tff.types.type_to_tf_tensor_specs(result_type)

        @tff.tensorflow.computation
        def init_tf():
            return collections.OrderedDict(round=tf.constant(0, tf.int64),
                                           rule=self.initial_state(flattener.size))

        state_type = init_tf.type_signature.result
        # The rule runs where the stacked values are (collection.build_stack_reduce), which
        # calls it in up to three graphs: one tf.function, traced once, serves them all.
        server_step = self._server_step_fn(flattener, like)
        with _max_rows(self.expected_clients):
            _, stack_reduce = collection.build_stack_reduce(
                value_type, weight_type, lambda stacked, state: server_step(state, stacked),
                state_type)

        @tff.federated_computation
        def init_fn():
            return tff.federated_eval(init_tf, tff.SERVER)

        def next_impl(state, values, weights):
            out = (stack_reduce(values, state) if weights is None
                   else stack_reduce(values, weights, state))
            return tff.templates.MeasuredProcessOutput(out.state, out.result, out.measurements)

        next_fn = federated_next(init_fn.type_signature.result, value_type, weight_type, next_impl)
        return tff.templates.AggregationProcess(init_fn, next_fn)

    def _server_step_fn(self, flattener, like):
        """The rule's server step `(state, stacked) -> OrderedDict(state, result, measurements)`."""
        @tf.function
        def step(state, stacked):
            values, weights, ids, finite = (stacked[k] for k in collection.STACKED_KEYS)
            n_total = tf.shape(values)[0]
            non_finite = n_total - tf.reduce_sum(tf.cast(finite, tf.int32))
            if not self.drops_non_finite:
                finite = tf.ones_like(finite)
            # Without non-finite rows to drop, no [n, D] copy.
            values, weights, ids = tf.cond(
                tf.reduce_all(finite), lambda: (values, weights, ids),
                lambda: tuple(tf.boolean_mask(t, finite) for t in (values, weights, ids)))
            n = tf.shape(values)[0]
            excluded = n_total - n
            f = tf.maximum(tf.cast(self.f_for(n_total), tf.int32) - excluded, 0)
            required = tf.cast(self.min_clients(f), tf.int32)
            # Checked before the rule runs (its math may fail first on too few rows); the
            # training loop turns this message into a one-line reason (`too_few_clients_reason`).
            check = tf.debugging.Assert(n >= required, [
                f"{TOO_FEW_CLIENTS} {self.name} needs {self.requirement}: clients", n_total,
                "finite", n, "f", f, "needs", required])
            with tf.control_dependencies([check]):
                values = tf.identity(values)
            if self.weighted:
                weights = weights / tf.maximum(tf.reduce_sum(weights), 1e-30)
            else:
                weights = tf.ones_like(weights) / tf.cast(tf.maximum(n, 1), tf.float32)
            seed = tf.stack([tf.constant(self.seed, tf.int64), state["round"]])
            vector, rule_state, measurements = self.aggregate(
                values, weights, ids, f=f, state=state["rule"], seed=seed)
            vector = tf.where(n > 0, vector, tf.zeros_like(vector))
            all_measurements = collections.OrderedDict(non_finite_clients=non_finite, f=f)
            all_measurements.update(measurements)
            return collections.OrderedDict(
                state=collections.OrderedDict(round=state["round"] + 1, rule=rule_state),
                result=flattener.unflatten(vector, like),
                measurements=all_measurements)

        return step
