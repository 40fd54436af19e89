"""Client records stacked at the server *with their reported losses*.

`aggregators.stacking` stacks one float structure per client. Colluding attacks
(which forge losses from the honest ones) and FedLAW (whose weight step uses the
losses) need each client's delta and loss together: `build_record_stack` packs
the record's `delta` and `loss` into one stacked row and splits it back.
`StackedRecordsFactory` exposes the stacked round as an aggregation factory
whose result is `OrderedDict(deltas [n, D], losses [n], client_ids [n],
weights [n])` sorted by client id.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from aggregators import stacking
from tff_byz.aggregation import ClientRecordAggregationFactory, build_stateless_process

__all__ = ["RecordStack", "build_record_stack", "StackedRecordsFactory"]


class RecordStack:
    """`stack(records@CLIENTS, weights@CLIENTS)` and `split(rows)` for one record type."""

    def __init__(self, record_type, weight_type=None):
        record_type = tff.to_type(record_type)
        weight_type = tff.to_type(np.float32 if weight_type is None else weight_type)
        delta_type = record_type["delta"]
        value_type = tff.StructWithPythonType(
            [("delta", tff.StructWithPythonType(
                [("update", delta_type), ("loss", tff.TensorType(np.float32, [1]))],
                collections.OrderedDict)),
             ("client_id", np.int32)], collections.OrderedDict)
        self.delta_flattener = stacking.Flattener(delta_type)
        self.delta_like = tff.types.type_to_tf_tensor_specs(delta_type)
        flattener, stack_values = stacking.build_stack_fn(value_type, weight_type)
        self._columns = _column_indices(flattener, tff.types.type_to_tf_tensor_specs(
            value_type["delta"]))

        @tff.tensorflow.computation(record_type)
        def to_value(record):
            return collections.OrderedDict(
                delta=collections.OrderedDict(update=record["delta"],
                                              loss=tf.reshape(tf.cast(record["loss"], tf.float32),
                                                              [1])),
                client_id=record["client_id"])

        @tff.federated_computation(tff.FederatedType(record_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def stack(records, weights):
            return stack_values(tff.federated_map(to_value, records), weights)

        self.stack = stack
        self.stacked_type = stack.type_signature.result.member

    def split(self, rows) -> tuple[tf.Tensor, tf.Tensor]:
        """Stacked rows `[n, D + 1]` → (deltas `[n, D]` in `delta_flattener` order, losses `[n]`)."""
        update = self._columns["update"]
        if self._columns["update_contiguous"]:
            deltas = rows[:, update[0]:update[-1] + 1]
        else:
            deltas = tf.gather(rows, update, axis=1)
        return deltas, rows[:, self._columns["loss"]]


def _column_indices(flattener: stacking.Flattener, like) -> dict[str, Any]:
    offsets = np.cumsum([0] + flattener.sizes)
    leaves = [np.arange(offsets[i], offsets[i + 1], dtype=np.int32)
              for i in range(len(flattener.sizes))]
    packed = tf.nest.pack_sequence_as(like, leaves)
    update = np.concatenate([np.asarray(x) for x in tf.nest.flatten(packed["update"])])
    return {"update": update, "loss": int(np.asarray(packed["loss"])[0]),
            "update_contiguous": bool(np.all(np.diff(update) == 1))}


def build_record_stack(record_type, weight_type=None) -> RecordStack:
    return RecordStack(record_type, weight_type)


class StackedRecordsFactory(ClientRecordAggregationFactory):
    """The round's records at the server, stacked and sorted by client id (no aggregation).

    Result `OrderedDict(deltas, losses, client_ids, weights)`; no state, no
    measurements. A building block for server algorithms that need every
    client's update and loss (FedLAW); wrap it with `attacks.colluding` to let
    colluding attackers act on it.
    """

    def create(self, record_type, weight_type):
        records = build_record_stack(record_type, weight_type)

        @tff.tensorflow.computation(records.stacked_type)
        def unpack(stacked):
            deltas, losses = records.split(stacked["values"])
            return collections.OrderedDict(deltas=deltas, losses=losses,
                                           client_ids=stacked["client_ids"],
                                           weights=stacked["weights"])

        return build_stateless_process(
            record_type, weight_type,
            lambda values, weights: tff.federated_map(unpack, records.stack(values, weights)))
