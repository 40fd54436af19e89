"""Aggregation with fixed per-client weights: Σ_i ŵ_i Δ_i, as a TFF factory.

FedLAW's frozen phase (fedlaw.md §4) aggregates with the weights it learned,
but the factory stands on its own: give it any weights indexed by client id and
use it wherever a `tff.aggregators` factory fits in this project's processes
(it reads each record's `client_id`). ŵ are the round's participants' weights
renormalised to sum 1 (§9); if they sum to 0 the result is zero (the model
does not move) and `zero_mass` says so. Nothing is stacked: each client scales
its own delta by its weight and TFF sums, so a round costs about what the mean
costs. A zero weight silences a client completely, NaN/Inf included.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.collection import ClientRecordAggregationFactory

__all__ = ["LearnedWeightsFactory"]


class LearnedWeightsFactory(ClientRecordAggregationFactory):
    """State `OrderedDict(weights=float64 [N])`; result Σ_P w_i Δ_i / Σ_P w_i."""

    def __init__(self, weights):
        weights = np.asarray(weights, np.float64)
        if weights.ndim != 1 or not len(weights) or not np.all(np.isfinite(weights)) \
                or np.any(weights < 0):
            raise ValueError("LearnedWeightsFactory: weights must be a non-empty vector of "
                             f"finite non-negative numbers; got {weights!r}.")
        self._weights = weights

    def create(self, record_type, weight_type):
        record_type = tff.to_type(record_type)
        num_clients = len(self._weights)
        initial = self._weights

        @tff.tensorflow.computation
        def init_tf():
            return collections.OrderedDict(weights=tf.constant(initial, tf.float64))

        state_type = init_tf.type_signature.result
        weights_type = state_type["weights"]

        @tff.tensorflow.computation(record_type, weights_type)
        def scale(record, weights):
            check = tf.debugging.assert_less(record["client_id"], num_clients,
                                             message="client id outside the learned weights")
            with tf.control_dependencies([check]):
                weight = tf.gather(weights, record["client_id"])
            scaled = tf.nest.map_structure(
                lambda d: tf.where(weight > 0.0, tf.cast(weight, d.dtype) * d, tf.zeros_like(d)),
                record["delta"])
            return collections.OrderedDict(delta=scaled, mass=weight)

        summed_type = scale.type_signature.result

        @tff.tensorflow.computation(summed_type)
        def normalise(summed):
            mass = summed["mass"]
            result = tf.nest.map_structure(
                lambda d: tf.where(mass > 0.0, d / tf.cast(mass, d.dtype), tf.zeros_like(d)),
                summed["delta"])
            return result, collections.OrderedDict(
                participant_mass=mass, zero_mass=tf.cast(mass <= 0.0, tf.int32))

        @tff.federated_computation
        def init_fn():
            return tff.federated_eval(init_tf, tff.SERVER)

        @tff.federated_computation(tff.FederatedType(state_type, tff.SERVER),
                                   tff.FederatedType(record_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, records, weights):
            del weights  # the learned weights replace example counts
            learned = tff.federated_broadcast(state.weights)
            summed = tff.federated_sum(tff.federated_map(scale, (records, learned)))
            output = tff.federated_map(normalise, summed)
            return tff.templates.MeasuredProcessOutput(state, output[0], output[1])

        return tff.templates.AggregationProcess(init_fn, next_fn)
