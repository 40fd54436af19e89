"""The shared mechanism: every client's value at the server, stacked, with its client id.

Order-statistic rules (median, Krum, ...) need all client values at once. Inside
a federated computation each client turns its value (any structure of float
tensors) into one row `[1, D]` (the leaves flattened and concatenated) plus its
weight and client id; `tff.federated_aggregate` concatenates the rows into
`[n, D]` at the server, where they are **sorted by client id**: TFF treats
CLIENTS values as a multiset, so nothing may depend on arrival order. Rules then
are pure TF functions of the stacked tensors.

Cost: a single growing accumulator would copy O(n²·D) floats (each client's
concatenation copies every earlier row; measured 12 s at n = 50, D = 1.2e6).
The accumulator is instead a tuple of `NUM_BLOCKS` blocks: client k is appended
to block ⌊k / rows⌋ (the last block takes any overflow), and blocks that do not
change pass through a `tf.cond` without copying, so the total copy is
O(n·rows·D) plus one final concatenation (`benchmarks/aggregators.py` reports
this step alone). rows = `block_rows(D)` ≤ `BLOCK_ROWS` keeps a block under
`MAX_BLOCK_BYTES`: glibc serves allocations of 32 MiB and more with fresh
`mmap`s, whose first-touch page faults made copying into 8-row blocks of
D = 1.2e6 (37 MiB) 3× slower per byte than into ≤ 24 MiB blocks, which are
recycled from the heap. When the rows already arrive in client-id order (the
usual case) `report` skips the reordering gather.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

__all__ = ["Flattener", "is_client_record_type", "build_stack_fn", "block_rows", "STACKED_KEYS"]

STACKED_KEYS = ("values", "weights", "client_ids")
BLOCK_ROWS = 8  # at most; fewer for large D (block_rows)
MAX_BLOCK_BYTES = 24 << 20
NUM_BLOCKS = 64  # 64·block_rows(D) clients before the last block grows row by row


def block_rows(dim: int) -> int:
    """Rows per accumulator block for `[dim]` float32 rows: ≤ BLOCK_ROWS, ≤ MAX_BLOCK_BYTES."""
    return int(max(1, min(BLOCK_ROWS, MAX_BLOCK_BYTES // (4 * max(dim, 1)))))


def is_client_record_type(value_type) -> bool:
    """Whether `value_type` is a client record (has `delta` and `client_id`)."""
    if not isinstance(value_type, tff.StructType):
        return False
    names = set(n for n, _ in tff.structure.iter_elements(value_type) if n)
    return {"delta", "client_id"} <= names


class Flattener:
    """Maps a structure of float tensors (of a fixed TFF type) to one `[D]` vector and back."""

    def __init__(self, value_type):
        # Leaves in `tf.nest` order (dict keys sorted), the order `flatten` and
        # `unflatten` use; TFF's own structure order may differ.
        specs = tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type))
        self.value_type = value_type
        for spec in specs:
            if not spec.dtype.is_floating or not spec.shape.is_fully_defined():
                raise TypeError(f"robust aggregation needs float tensors of known shape; got {spec}")
        self.shapes = [tuple(spec.shape) for spec in specs]
        self.dtypes = [spec.dtype for spec in specs]
        self.sizes = [int(math.prod(shape)) for shape in self.shapes]
        self.size = int(sum(self.sizes))

    def flatten(self, value) -> tf.Tensor:
        leaves = tf.nest.flatten(value)
        return tf.concat([tf.reshape(tf.cast(leaf, tf.float32), [-1]) for leaf in leaves], axis=0)

    def unflatten(self, vector: tf.Tensor, like_structure):
        parts = tf.split(vector, self.sizes) if len(self.sizes) > 1 else [vector]
        leaves = [tf.cast(tf.reshape(part, shape), dtype)
                  for part, shape, dtype in zip(parts, self.shapes, self.dtypes)]
        return tf.nest.pack_sequence_as(like_structure, leaves)


def _unknown_rows(tensor, trailing):
    # A `[None, ...]` static shape, as the accumulator type must admit any n.
    return tf.compat.v1.placeholder_with_default(tensor, [None, *trailing])


def build_stack_fn(value_type, weight_type=None):
    """Returns (`to_rows`, `stack`) for clients' values of `value_type`.

    `to_rows` is a tf_computation (value[, weight]) → one-row stacked struct;
    `stack(values@CLIENTS[, weights@CLIENTS])` is a federated computation
    returning `OrderedDict(values=[n, D], weights=[n], client_ids=[n])@SERVER`
    sorted by client id. Plain values (not client records) get id −1 and keep
    arrival order; weights default to 1.
    """
    record = is_client_record_type(value_type)
    flattener = Flattener(value_type["delta"] if record else value_type)
    dim = flattener.size
    rows_per_block = block_rows(dim)
    row_type = tff.to_type(collections.OrderedDict(
        values=tff.TensorType(np.float32, [None, dim]),
        weights=tff.TensorType(np.float32, [None]),
        client_ids=tff.TensorType(np.int32, [None])))

    def rows(value, weight):
        vector = flattener.flatten(value["delta"] if record else value)
        client_id = tf.cast(value["client_id"], tf.int32) if record else tf.constant(-1, tf.int32)
        return collections.OrderedDict(
            values=_unknown_rows(vector[tf.newaxis], [dim]),
            weights=_unknown_rows(tf.reshape(tf.cast(weight, tf.float32), [1]), []),
            client_ids=_unknown_rows(client_id[tf.newaxis], []))

    if weight_type is None:
        @tff.tensorflow.computation(value_type)
        def to_rows(value):
            return rows(value, 1.0)
    else:
        @tff.tensorflow.computation(value_type, weight_type)
        def to_rows(value, weight):
            return rows(value, weight)

    accumulator_type = tff.to_type(collections.OrderedDict(
        blocks=[tff.TensorType(np.float32, [None, dim])] * NUM_BLOCKS,
        weights=tff.TensorType(np.float32, [None]),
        client_ids=tff.TensorType(np.int32, [None])))

    @tff.tensorflow.computation
    def empty():
        return collections.OrderedDict(
            blocks=[_unknown_rows(tf.zeros([0, dim]), [dim]) for _ in range(NUM_BLOCKS)],
            weights=_unknown_rows(tf.zeros([0]), []),
            client_ids=_unknown_rows(tf.zeros([0], tf.int32), []))

    @tff.tensorflow.computation(accumulator_type, row_type)
    def accumulate(accumulator, row):
        block = tf.minimum(tf.shape(accumulator["weights"])[0] // rows_per_block, NUM_BLOCKS - 1)
        blocks = [tf.cond(tf.equal(block, j),
                          lambda b=b: tf.concat([b, row["values"]], axis=0),
                          lambda b=b: b)
                  for j, b in enumerate(accumulator["blocks"])]
        return collections.OrderedDict(
            blocks=blocks,
            weights=tf.concat([accumulator["weights"], row["weights"]], axis=0),
            client_ids=tf.concat([accumulator["client_ids"], row["client_ids"]], axis=0))

    @tff.tensorflow.computation(accumulator_type, accumulator_type)
    def merge(a, b):
        # Rows may sit in any block: order is restored by client id in `report`.
        return collections.OrderedDict(
            blocks=[tf.concat([x, y], axis=0) for x, y in zip(a["blocks"], b["blocks"])],
            weights=tf.concat([a["weights"], b["weights"]], axis=0),
            client_ids=tf.concat([a["client_ids"], b["client_ids"]], axis=0))

    @tff.tensorflow.computation(accumulator_type)
    def report(accumulator):
        values = tf.concat(accumulator["blocks"], axis=0)
        # Stable: plain values (all id −1) keep arrival order. Blocks hold rows in
        # arrival order, matching `weights` and `client_ids` (merge is not used by
        # a single worker; with several, all three are concatenated alike).
        ids, weights = accumulator["client_ids"], accumulator["weights"]

        def reorder():
            order = tf.argsort(ids, stable=True)
            return tf.gather(values, order), tf.gather(weights, order), tf.gather(ids, order)

        # Already in order (a stable sort would not move anything): no [n, D] copy.
        in_order = tf.reduce_all(ids[1:] >= ids[:-1])
        values, weights, ids = tf.cond(in_order, lambda: (values, weights, ids), reorder)
        return collections.OrderedDict(values=values, weights=weights, client_ids=ids)

    if weight_type is None:
        @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS))
        def stack(values):
            return tff.federated_aggregate(tff.federated_map(to_rows, values), empty(), accumulate,
                                           merge, report)
    else:
        @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def stack(values, weights):
            return tff.federated_aggregate(tff.federated_map(to_rows, (values, weights)), empty(),
                                           accumulate, merge, report)

    return flattener, stack
