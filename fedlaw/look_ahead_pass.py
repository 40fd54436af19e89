"""FedLAW's pass B collected without stacking: Z = Σ_j v_j Δ̃_j and the reported losses.

The weight step (fedlaw.md §4) needs from pass B only the consensus direction
Z = Σ_j ŵ_j Δ̃_j and each client's reported loss f̃_j: "z ← Σ_j w_j g̃_j, streamed:
accumulate, never store G̃". A `tff.federated_aggregate` adds each client's
flattened delta, scaled by the weight v_j the caller passes with its record (FedLAW
passes ŵ_j, or 0 for a client whose pass-A message was non-finite), into a float64
accumulator, and writes its loss at its client id into `[N]` vectors. The scaling
happens inside `accumulate`, one client at a time: a `federated_map` followed by a
`federated_sum` would first materialise every client's float64 `[D]` contribution
(4 GB at n = 200 for the CIFAR CNN) in TFF's worker. The server gets float64 `z [D]` and `[N]` vectors
`losses`, `finite` (1 where the client's delta and loss were finite) and `present`
(1 where a client took part), so no `[n, D]` matrix of pass B is ever formed:
stacking it cost a second `[n, D]` matrix, copied about four times by TFF's C++
runtime when it leaves the aggregation (BUILD_NOTES.md), which at n = 200 with the
CIFAR CNN (2 GB per matrix) ran the worker out of memory.

A client whose delta or loss is non-finite adds nothing to z (its NaN never
reaches the sum) and reports `finite = 0`. Colluding attacks wrap this factory like
any other (they stack the round's records themselves).
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.collection import Flattener
from tff_byz.collection import ClientRecordAggregationFactory, build_stateless_process

__all__ = ["LookAheadPassFactory"]


class LookAheadPassFactory(ClientRecordAggregationFactory):
    """Result `OrderedDict(z float64 [D], losses, finite, present: float64 [N])`; weights
    are the callers' v_j (float64), not example counts. No state, no measurements."""

    def __init__(self, num_clients: int):
        if int(num_clients) < 1:
            raise ValueError(f"LookAheadPassFactory: num_clients={num_clients} must be >= 1.")
        self._num_clients = int(num_clients)

    def create(self, record_type, weight_type):
        record_type = tff.to_type(record_type)
        weight_type = tff.to_type(weight_type)
        if weight_type.dtype != np.float64:
            raise TypeError("LookAheadPassFactory needs float64 client weights (v_j = ŵ_j); "
                            f"got {weight_type}.")
        flattener = Flattener(record_type["delta"])
        num_clients = self._num_clients

        @tff.tensorflow.computation
        def zero():
            return collections.OrderedDict(
                z=tf.zeros([flattener.size], tf.float64),
                losses=tf.zeros([num_clients], tf.float64),
                finite=tf.zeros([num_clients], tf.float64),
                present=tf.zeros([num_clients], tf.float64))

        accumulator_type = zero.type_signature.result
        item_type = tff.StructWithPythonType([("record", record_type), ("weight", weight_type)],
                                             collections.OrderedDict)

        @tff.tensorflow.computation(accumulator_type, item_type)
        def accumulate(total, item):
            record, weight = item["record"], item["weight"]
            client_id = record["client_id"]
            check = tf.debugging.assert_less(
                client_id, num_clients, message="LookAheadPassFactory: client id outside [0, N)")
            with tf.control_dependencies([check]):
                index = tf.reshape(client_id, [1, 1])
            flat = flattener.flatten(record["delta"])
            loss = tf.cast(record["loss"], tf.float64)
            finite = tf.logical_and(tf.reduce_all(tf.math.is_finite(flat)),
                                    tf.math.is_finite(loss))
            # tf.where, not a product: 0 · NaN would still be NaN.
            z = tf.where(finite, tf.cast(flat, tf.float64) * weight,
                         tf.zeros([flattener.size], tf.float64))

            def add_at_id(vector, value):
                return tf.tensor_scatter_nd_add(vector, index, tf.reshape(value, [1]))

            return collections.OrderedDict(
                z=total["z"] + z,
                losses=add_at_id(total["losses"],
                                 tf.where(finite, loss, tf.constant(0.0, tf.float64))),
                finite=add_at_id(total["finite"], tf.cast(finite, tf.float64)),
                present=add_at_id(total["present"], tf.constant(1.0, tf.float64)))

        @tff.tensorflow.computation(accumulator_type, accumulator_type)
        def merge(a, b):
            return tf.nest.map_structure(tf.add, a, b)

        @tff.tensorflow.computation(accumulator_type)
        def report(total):
            return total

        def aggregate(records, weights):
            items = tff.federated_zip(collections.OrderedDict(record=records, weight=weights))
            return tff.federated_aggregate(items, zero(), accumulate, merge, report)

        return build_stateless_process(record_type, weight_type, aggregate)
