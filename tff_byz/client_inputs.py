"""What each client receives: its examples plus who it is.

TFF treats CLIENTS-placed values as a multiset, so identity must travel inside
the data. Every client's input is a structure of two sequences (the only kind of
client data `tff.learning.templates.ClientWorkProcess` accepts):

- `examples`: the client's training examples, unbatched `OrderedDict(x, y)`;
  client work shuffles and batches them itself with seeded, stateless ops;
- `info`: exactly one element
  `OrderedDict(client_id=int32, byzantine=bool, attack_group=int32)`.
  `client_id` is the client's index in the federated dataset (stable across
  rounds, used for seeds, client state, learned weights and tie-breaking);
  `byzantine` and `attack_group` (−1 honest, g >= 0 the part of the Byzantine
  set running the g-th attack) are decided once per run by
  `attacks.selection` and read only by attack transforms of the client work,
  never by an aggregator.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

__all__ = ["INFO_SPEC", "make_client_input", "read_client_info", "client_input_spec",
           "materialize_examples"]

INFO_SPEC = collections.OrderedDict(
    client_id=tf.TensorSpec([], tf.int32),
    byzantine=tf.TensorSpec([], tf.bool),
    attack_group=tf.TensorSpec([], tf.int32),
)


def make_client_input(examples: tf.data.Dataset, client_id: int, byzantine: bool = False,
                      attack_group: int | None = None):
    """The per-client value passed (in a list, one per client) to `process.next`.

    `attack_group` defaults to 0 for a Byzantine client, −1 for an honest one.
    """
    if attack_group is None:
        attack_group = 0 if byzantine else -1
    if bool(byzantine) != (attack_group >= 0):
        raise ValueError(f"client {client_id}: byzantine={byzantine} contradicts "
                         f"attack_group={attack_group} (−1 means honest).")
    info = tf.data.Dataset.from_tensors(collections.OrderedDict(
        client_id=np.int32(client_id), byzantine=np.bool_(byzantine),
        attack_group=np.int32(attack_group)))
    return collections.OrderedDict(examples=examples, info=info)


def client_input_spec(example_spec) -> collections.OrderedDict:
    """The `tf.data` element specs of a client input, for building TFF types."""
    return collections.OrderedDict(examples=example_spec, info=INFO_SPEC)


def read_client_info(info: tf.data.Dataset) -> collections.OrderedDict:
    """Inside TF: the single `info` element as tensors."""
    return info.get_single_element()


def materialize_examples(examples: tf.data.Dataset):
    """Inside TF: all of a client's examples as `(x, y)` tensors (also for 0 examples)."""
    spec = examples.element_spec
    empty = tuple(tf.zeros([0, *spec[key].shape], spec[key].dtype) for key in ("x", "y"))
    # One batch holding every example; `reduce` keeps the empty case well defined.
    return examples.map(lambda e: (e["x"], e["y"])).batch(2**31 - 1).reduce(
        empty, lambda _, batch: batch)
