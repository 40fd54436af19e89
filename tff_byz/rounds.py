"""What every process of this project repeats: the (seed, round) counter it keeps at the server,
and the client-work metrics of a round.

Each process keeps `OrderedDict(seed=int64, round=int64)` (`ROUND_TYPE`), broadcasts it
to its clients (client seeds and schedules come from it) and advances the round once per
`next`. `RoundCounter` holds the two TF computations; `server_round(state)` zips a
server state's `seed` and `round` fields into one @SERVER value; `build_train_metrics`
turns a round's client records into `OrderedDict(train_loss, num_examples)` (the
example-weighted mean loss and the total examples, as TFF's FedAvg reports them).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

__all__ = ["ROUND_TYPE", "RoundCounter", "round_counter", "server_round", "build_train_metrics"]

ROUND_TYPE = tff.StructWithPythonType([("seed", np.int64), ("round", np.int64)],
                                      collections.OrderedDict)


@dataclasses.dataclass(frozen=True)
class RoundCounter:
    initial: tff.Computation  # () -> OrderedDict(seed, round=0)
    advance: tff.Computation  # ROUND_TYPE -> the same seed, round + 1


def round_counter(seed: int) -> RoundCounter:
    """The counter of a run with seed `seed`."""

    @tff.tensorflow.computation
    def initial():
        return collections.OrderedDict(seed=tf.constant(seed, tf.int64),
                                       round=tf.constant(0, tf.int64))

    @tff.tensorflow.computation(ROUND_TYPE)
    def advance(round_info):
        return collections.OrderedDict(seed=round_info["seed"], round=round_info["round"] + 1)

    return RoundCounter(initial, advance)


def server_round(state):
    """Inside a federated computation: the `seed` and `round` fields of the @SERVER `state`,
    zipped into one @SERVER round info."""
    return tff.federated_zip(collections.OrderedDict(seed=state.seed, round=state.round))


def build_train_metrics(record_type) -> Callable:
    """`metrics(records@CLIENTS)` → `OrderedDict(train_loss, num_examples)@SERVER`, inside a
    federated computation; records carry a float32 `loss` and `num_examples`."""

    @tff.tensorflow.computation(record_type)
    def record_loss(record):
        return record["loss"]

    @tff.tensorflow.computation(record_type)
    def record_num_examples(record):
        return record["num_examples"]

    def metrics(records):
        num_examples = tff.federated_map(record_num_examples, records)
        return tff.federated_zip(collections.OrderedDict(
            train_loss=tff.federated_mean(tff.federated_map(record_loss, records), num_examples),
            num_examples=tff.federated_sum(num_examples)))

    return metrics
