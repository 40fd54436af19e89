"""Connects client records to aggregation factories.

Client work emits records `OrderedDict(delta, client_id, num_examples, loss)`
(see `tff_byz.client_work`). Two kinds of factory consume them:

- any TFF aggregation factory (`tff.aggregators.MeanFactory`, the robust rules
  used as plain factories, ...) aggregates only the `delta`: the adapter selects
  it at the clients and calls the factory on it, so the factory composes exactly
  as in TFF's own algorithms;
- a `ClientRecordAggregationFactory` receives the whole record, so it can use
  client ids (tie-breaking, learned per-client weights, measurements that name
  clients) and reported losses.

Either way the resulting process has TFF's weighted signature
`next(state, records@CLIENTS, weights@CLIENTS)` and returns the aggregated delta.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

__all__ = ["ClientRecordAggregationFactory", "NonFiniteCountingFactory", "build_update_aggregator",
           "build_measurement_merger", "build_stateless_process"]


def build_measurement_merger(measurements_type, name: str, extra_type, *, first: bool = False):
    """A tf_computation `(measurements, extra) -> OrderedDict(<measurements' fields>, name=extra)`
    (`first=True` puts `name` before the other fields): adds one measurement to a process's."""

    @tff.tensorflow.computation(measurements_type, extra_type)
    def merge(measurements, extra):
        merged = collections.OrderedDict([(name, extra)] if first else [])
        for key, value in tff.structure.iter_elements(tff.structure.from_container(measurements)):
            merged[key] = value
        if not first:
            merged[name] = extra
        return merged

    return merge


class ClientRecordAggregationFactory(tff.aggregators.WeightedAggregationFactory):
    """A weighted factory whose `create(record_type, weight_type)` sees whole client records.

    `record_type` is the client record struct; the returned process's `next`
    takes `(state, records@CLIENTS, weights@CLIENTS)` and returns the aggregate
    of the records' `delta` at SERVER.
    """


def build_stateless_process(record_type, weight_type, aggregate
                            ) -> tff.templates.AggregationProcess:
    """An aggregation process with no state and no measurements whose result is
    `aggregate(records@CLIENTS, weights@CLIENTS)` (a federated function returning a
    SERVER value): the shape of a `ClientRecordAggregationFactory` that only collects."""

    @tff.federated_computation
    def init_fn():
        return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(record_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, records, weights):
        return tff.templates.MeasuredProcessOutput(
            state, aggregate(records, weights), tff.federated_value((), tff.SERVER))

    return tff.templates.AggregationProcess(init_fn, next_fn)


def build_update_aggregator(factory, record_type, weight_type=np.float32
                            ) -> tff.templates.AggregationProcess:
    """The aggregation process for client records, for any kind of factory."""
    if isinstance(factory, ClientRecordAggregationFactory):
        return factory.create(record_type, tff.to_type(weight_type))
    if isinstance(factory, tff.aggregators.UnweightedAggregationFactory):
        factory = tff.aggregators.as_weighted_aggregator(factory)
    if not isinstance(factory, tff.aggregators.WeightedAggregationFactory):
        raise TypeError(
            "aggregator must be a tff.aggregators.WeightedAggregationFactory or "
            f"UnweightedAggregationFactory; got {type(factory).__name__}.")
    delta_type = record_type["delta"]
    process = factory.create(delta_type, tff.to_type(weight_type))

    @tff.tensorflow.computation(record_type)
    def select_delta(record):
        return record["delta"]

    @tff.federated_computation(
        process.state_type,
        tff.FederatedType(record_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, records, weights):
        return process.next(state, tff.federated_map(select_delta, records), weights)

    return tff.templates.AggregationProcess(process.initialize, next_fn)


class NonFiniteCountingFactory(tff.aggregators.WeightedAggregationFactory):
    """Wraps any TFF factory and adds measurement `non_finite_clients`.

    The count of clients whose value holds any NaN/Inf, next to the inner
    factory's own measurements. Nothing is dropped: with TFF's mean the
    aggregate becomes non-finite, and the training loop stops saying so.
    """

    def __init__(self, inner):
        if isinstance(inner, tff.aggregators.UnweightedAggregationFactory):
            inner = tff.aggregators.as_weighted_aggregator(inner)
        self._inner = inner

    def create(self, value_type, weight_type):
        process = self._inner.create(value_type, weight_type)

        @tff.tensorflow.computation(value_type)
        def is_non_finite(value):
            finite = [tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(value)]
            return tf.cast(tf.logical_not(tf.reduce_all(finite)), tf.int32)

        inner_measurements = process.next.type_signature.result.measurements.member

        merge = build_measurement_merger(inner_measurements, "non_finite_clients", np.int32,
                                         first=True)

        @tff.federated_computation(
            process.state_type, tff.FederatedType(value_type, tff.CLIENTS),
            tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, values, weights):
            count = tff.federated_sum(tff.federated_map(is_non_finite, values))
            output = process.next(state, values, weights)
            return tff.templates.MeasuredProcessOutput(
                output.state, output.result, tff.federated_map(merge, (output.measurements, count)))

        return tff.templates.AggregationProcess(process.initialize, next_fn)
