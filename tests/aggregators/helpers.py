"""Run an aggregation factory inside a real TFF federated computation on client records."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.collection import build_update_aggregator
from tff_byz.client_work import client_record_type


def records(values, client_ids=None, losses=None):
    """Client records for `values` (list of per-client structures of arrays)."""
    client_ids = range(len(values)) if client_ids is None else client_ids
    losses = [0.0] * len(values) if losses is None else losses
    return [collections.OrderedDict(delta=v, client_id=np.int32(i), num_examples=np.float32(1),
                                    loss=np.float32(l))
            for v, i, l in zip(values, client_ids, losses)]


def value_type_of(value):
    return tff.types.tensorflow_to_type(
        tf.nest.map_structure(lambda a: tf.TensorSpec(np.shape(a), np.asarray(a).dtype), value))


def build_process(factory, example_value):
    """The record-level aggregation process for values shaped like `example_value`."""
    delta_type = value_type_of(example_value)
    return build_update_aggregator(factory, client_record_type(delta_type))


def run_rounds(factory, rounds_of_values, *, weights=None, client_ids=None, process=None):
    """Runs `len(rounds_of_values)` rounds; returns the list of MeasuredProcessOutputs."""
    process = process or build_process(factory, rounds_of_values[0][0])
    state = process.initialize()
    outputs = []
    for values in rounds_of_values:
        w = [np.float32(1)] * len(values) if weights is None else [np.float32(x) for x in weights]
        output = process.next(state, records(values, client_ids), w)
        state = output.state
        outputs.append(output)
    return outputs


def run_once(factory, values, **kwargs):
    return run_rounds(factory, [values], **kwargs)[0]
