"""RFA: the geometric median from federated means only (Pillutla, Kakade, Harchaoui 2022).

The same smoothed Weiszfeld iteration as `aggregators.geometric_median`, built
from `tff.federated_broadcast` and `tff.federated_mean` passes with no stacking,
so the server only ever sees sums (compatible with secure aggregation); it costs
R extra round trips:

    pass 0:  clients send (m_i x_i, m_i)                 → v⁰ = Σ m_i x_i / Σ m_i
    pass r:  broadcast v; clients send (β_i x_i, β_i),
             β_i = m_i / max(ν, ||v − x_i||)             → v ← Σ β_i x_i / Σ β_i

with m_i the client's weight (example count) when `weighted`, else 1; the
ratios are invariant to the normalisation of m, so this equals the stacked rule
with p_i = m_i / Σ m. `rescale=True` (§4) then rescales v to the norm of v⁰, the
factor clamped to [0.25, 4].

**Non-finite clients.** With no stacking the server cannot drop a row, so each
client checks its own value: a client whose value has any NaN/Inf sends zeros
and m_i = 0 (β_i = 0 in every pass), which is exactly dropping it. The check
runs on the client, i.e. it trusts the client's own code, which the Byzantine
model does not: a secure-aggregation deployment cannot enforce it, a simulation
can. The count is a `federated_sum` (measurement `non_finite_clients`), together
with the client count that the requirement f < n/2 is checked against each round
(n' = n − k, f' = max(f − k, 0) as in §0). If every client is non-finite the
result is 0.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz import collection
from aggregators.base import DeclaredByzantineCount, federated_next
from aggregators.clip import check_integer, check_positive_number, vector_norm
from aggregators.geometric_median import rescale_to_norm_of
from tff_byz.collection import ClientRecordAggregationFactory

__all__ = ["RFAFactory"]


class RFAFactory(DeclaredByzantineCount, ClientRecordAggregationFactory):
    """RFA as a `tff.aggregators.WeightedAggregationFactory` (see module doc).

    `create(value_type, weight_type)` accepts plain values (a structure of float
    tensors) or client records (their `delta` is aggregated); `weight_type=None`
    gives the unweighted signature. The process is stateless (state `<>`);
    measurements `OrderedDict(non_finite_clients=int32, f=int32)`.
    """

    name = "rfa"
    requirement = "f < n/2 (n >= 2f + 1)"

    def __init__(self, *, nu: float = 1e-6, iterations: int = 3, rescale: bool = False,
                 byzantine_fraction: float = 0.0, f: Optional[int] = None,
                 weighted: bool = False, expected_clients: Optional[int] = None):
        self.nu = check_positive_number(self.name, "nu", nu)
        self.iterations = check_integer(self.name, "iterations", iterations, 1)
        if not isinstance(rescale, bool):
            raise TypeError(f"{self.name}: rescale must be a bool; got {rescale!r}.")
        self.rescale = rescale
        self._set_byzantine_options(byzantine_fraction, f)
        self.weighted = bool(weighted)
        if expected_clients:
            self.check_requirement(int(expected_clients))

    def min_clients(self, f):
        return 2 * f + 1

    def create(self, value_type, weight_type=None):
        value_type = tff.to_type(value_type)
        weight_type = None if weight_type is None else tff.to_type(weight_type)
        record = collection.is_client_record_type(value_type)
        result_type = value_type["delta"] if record else value_type
        flattener = collection.Flattener(result_type)
        like = tff.types.type_to_tf_tensor_specs(result_type)
        vector_type = tff.TensorType(np.float32, [flattener.size])
        nu, weighted = self.nu, self.weighted

        def prepare(value, weight):
            vector = flattener.flatten(value["delta"] if record else value)
            finite = tf.reduce_all(tf.math.is_finite(vector))
            mass = tf.cast(weight, tf.float32) if weighted else tf.constant(1.0)
            return collections.OrderedDict(
                vector=tf.where(finite, vector, tf.zeros_like(vector)),
                mass=tf.where(finite, mass, 0.0),
                counts=collections.OrderedDict(
                    clients=tf.constant(1, tf.int32),
                    non_finite=tf.cast(tf.logical_not(finite), tf.int32)))

        if weight_type is None:
            @tff.tensorflow.computation(value_type)
            def prepare_tf(value):
                return prepare(value, 1.0)
        else:
            @tff.tensorflow.computation(value_type, weight_type)
            def prepare_tf(value, weight):
                return prepare(value, weight)

        prepared_type = prepare_tf.type_signature.result

        @tff.tensorflow.computation(prepared_type)
        def first_pass(prepared):
            return collections.OrderedDict(weighted_value=prepared["mass"] * prepared["vector"],
                                           weight=prepared["mass"])

        @tff.tensorflow.computation(prepared_type, vector_type)
        def weiszfeld_pass(prepared, v):
            distance = vector_norm(prepared["vector"] - v)
            beta = prepared["mass"] / tf.maximum(tf.constant(nu, tf.float32), distance)
            return collections.OrderedDict(weighted_value=beta * prepared["vector"], weight=beta)

        means_type = first_pass.type_signature.result

        @tff.tensorflow.computation(means_type)
        def divide(means):
            # Σβx/Σβ from the two means (the 1/n cancels); 0 when every β is 0.
            return tf.math.divide_no_nan(means["weighted_value"], means["weight"])

        counts_type = prepared_type["counts"]

        @tff.tensorflow.computation(counts_type)
        def check_and_measure(counts):
            n = counts["clients"] - counts["non_finite"]
            f = tf.maximum(tf.cast(self.f_for(counts["clients"]), tf.int32) - counts["non_finite"],
                           0)
            # A tff.tensorflow.computation has no automatic control dependencies:
            # the check must feed the output to run.
            check = tf.debugging.assert_greater_equal(
                n, self.min_clients(f),
                message=f"{self.name} needs {self.requirement} "
                        "(after excluding non-finite clients)")
            with tf.control_dependencies([check]):
                return collections.OrderedDict(non_finite_clients=tf.identity(counts["non_finite"]),
                                               f=tf.identity(f))

        @tff.tensorflow.computation(vector_type, vector_type)
        def finish(v, mean):
            if self.rescale:
                v = rescale_to_norm_of(v, mean)
            return flattener.unflatten(v, like)

        @tff.federated_computation
        def init_fn():
            return tff.federated_value(collections.OrderedDict(), tff.SERVER)

        def next_impl(state, values, weights):
            prepared = tff.federated_map(
                prepare_tf, values if weights is None else (values, weights))
            measurements = tff.federated_map(check_and_measure,
                                             tff.federated_sum(prepared["counts"]))
            mean = tff.federated_map(divide, tff.federated_mean(
                tff.federated_map(first_pass, prepared)))
            v = mean
            for _ in range(self.iterations):
                v = tff.federated_map(divide, tff.federated_mean(tff.federated_map(
                    weiszfeld_pass, (prepared, tff.federated_broadcast(v)))))
            result = tff.federated_map(finish, (v, mean))
            return tff.templates.MeasuredProcessOutput(state, result, measurements)

        next_fn = federated_next(init_fn.type_signature.result, value_type, weight_type, next_impl)

        return tff.templates.AggregationProcess(init_fn, next_fn)
