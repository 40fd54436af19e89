"""The shared mechanism: every client's value at the server, stacked, with its client id.

Order-statistic rules (median, Krum, ...) need all client values at once. Inside
a federated computation each client turns its value (any structure of float
tensors) into one row `[1, D]` (the leaves flattened and concatenated) plus its
weight, client id and whether the row is finite; `tff.federated_aggregate`
collects the rows, which are then **sorted by client id**: TFF treats CLIENTS
values as a multiset, so nothing may depend on arrival order. Rules then are
pure TF functions of the stacked tensors.

The accumulator. `tff.federated_aggregate` calls `accumulate` once per client,
in sequence; one growing `[k, D]` accumulator would copy O(n²·D) floats (12 s
at n = 50, D = 1.2e6). It is instead a tuple of `NUM_BLOCKS` blocks filled
round-robin: the k-th row goes to block k mod NUM_BLOCKS, an empty block takes
the row itself, and unchanged blocks pass through a `tf.cond` uncopied, so up
to NUM_BLOCKS clients no row is copied at all (and ⌈n/NUM_BLOCKS⌉/2 rows per
client on average above). `assemble` stitches the blocks into the sorted
`[n, D]` matrix in one pass (`tf.dynamic_stitch`).

Where the rule runs. TFF's C++ runtime hands the final accumulator of a
`federated_aggregate` to `report` by serialising it to a proto and back: about
four copies of the n·D floats into freshly mapped pages, 0.9 s of a 3.9 s EMNIST
CNN round at n = 50, nearly all of it kernel page-fault time (found with
`perf`). `build_stack_reduce`, which the robust rules use, therefore never lets
the `[n, D]` matrix leave the aggregation: every client row carries the round's
client count n and the rule's server input (broadcast), and the accumulate call
that appends the n-th row applies the rule there, leaving only its small result
in the accumulator. TFF's multi-worker (mergeable) context cannot split a
computation whose aggregation depends on another one (the count), so there the
rule runs on the server after the aggregation (`in_accumulate=False`); the result
is the same. (A round without any client is an error in place.) `build_stack_fn`
(for server algorithms that keep the stacked matrix, such as FedLAW) returns it
as a server value; `benchmarks/aggregators.py` reports the cost of the stacking
step alone.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

__all__ = ["Flattener", "is_client_record_type", "build_stack_fn", "build_stack_reduce",
           "value_flattener", "STACKED_KEYS", "mergeable_context_active"]

STACKED_KEYS = ("values", "weights", "client_ids", "finite")
NUM_BLOCKS = 64  # up to 64 clients per round, no row is copied in the accumulator


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


def value_flattener(value_type) -> Flattener:
    """The `Flattener` of the float structure stacked for `value_type` (a record's delta)."""
    value_type = tff.to_type(value_type)
    return Flattener(value_type["delta"] if is_client_record_type(value_type) else value_type)


def mergeable_context_active() -> bool:
    """Whether TFF's current context splits computations over several workers."""
    return isinstance(tff.framework.get_context_stack().current,
                      tff.framework.MergeableCompExecutionContext)


class _Blocks:
    """The accumulator mechanics shared by `build_stack_fn` and `build_stack_reduce`."""

    def __init__(self, value_type):
        self.record = is_client_record_type(value_type)
        self.flattener = value_flattener(value_type)
        self.dim = dim = self.flattener.size
        self.stacked_type = tff.to_type(collections.OrderedDict(
            values=tff.TensorType(np.float32, [None, dim]),
            weights=tff.TensorType(np.float32, [None]),
            client_ids=tff.TensorType(np.int32, [None]),
            finite=tff.TensorType(np.bool_, [None])))
        self.blocks_type = collections.OrderedDict(
            blocks=[tff.TensorType(np.float32, [None, dim])] * NUM_BLOCKS,
            weights=tff.TensorType(np.float32, [None]),
            client_ids=tff.TensorType(np.int32, [None]),
            finite=tff.TensorType(np.bool_, [None]),
            block_of=tff.TensorType(np.int32, [None]))

    def row(self, value, weight):
        vector = self.flattener.flatten(value["delta"] if self.record else value)
        client_id = (tf.cast(value["client_id"], tf.int32) if self.record
                     else tf.constant(-1, tf.int32))
        return collections.OrderedDict(
            values=_unknown_rows(vector[tf.newaxis], [self.dim]),
            weights=_unknown_rows(tf.reshape(tf.cast(weight, tf.float32), [1]), []),
            client_ids=_unknown_rows(client_id[tf.newaxis], []),
            # Checked here, per client, rather than on the stacked [n, D] at the server.
            finite=_unknown_rows(tf.reduce_all(tf.math.is_finite(vector))[tf.newaxis], []))

    def empty_blocks(self):
        return [_unknown_rows(tf.zeros([0, self.dim]), [self.dim]) for _ in range(NUM_BLOCKS)]

    def empty(self):
        return collections.OrderedDict(
            blocks=self.empty_blocks(),
            weights=_unknown_rows(tf.zeros([0]), []),
            client_ids=_unknown_rows(tf.zeros([0], tf.int32), []),
            finite=_unknown_rows(tf.zeros([0], tf.bool), []),
            block_of=_unknown_rows(tf.zeros([0], tf.int32), []))

    def append(self, accumulator, row):
        # Round-robin: the k-th row goes to block k mod NUM_BLOCKS; an empty block
        # takes the row itself, so up to NUM_BLOCKS rows nothing is copied, and the
        # blocks that do not change pass through `tf.cond` uncopied.
        block = tf.shape(accumulator["weights"])[0] % NUM_BLOCKS

        def put(b):
            return tf.cond(tf.equal(tf.shape(b)[0], 0), lambda: row["values"],
                           lambda: tf.concat([b, row["values"]], axis=0))

        blocks = [tf.cond(tf.equal(block, j), lambda b=b: put(b), lambda b=b: b)
                  for j, b in enumerate(accumulator["blocks"])]
        appended = collections.OrderedDict(blocks=blocks)
        for key in ("weights", "client_ids", "finite"):
            appended[key] = tf.concat([accumulator[key], row[key]], axis=0)
        appended["block_of"] = tf.concat([accumulator["block_of"], block[tf.newaxis]], axis=0)
        return appended

    @staticmethod
    def merge(a, b):
        # Blocks are concatenated block by block and `block_of` alike (see `assemble`).
        merged = collections.OrderedDict(
            blocks=[tf.concat([x, y], axis=0) for x, y in zip(a["blocks"], b["blocks"])])
        for key in ("weights", "client_ids", "finite", "block_of"):
            merged[key] = tf.concat([a[key], b[key]], axis=0)
        return merged

    @staticmethod
    def assemble(accumulator):
        """Blocks → `OrderedDict(values [n, D], weights, client_ids)` sorted by client id."""
        # Stable: plain values (all id −1) keep arrival order. `block_of` lists each
        # row's block in arrival order; within a block rows sit in arrival order
        # (merge concatenates accumulators block by block and `block_of` alike).
        ids, weights = accumulator["client_ids"], accumulator["weights"]
        order = tf.argsort(ids, stable=True)  # sorted position -> arrival index
        position = tf.math.invert_permutation(order)  # arrival index -> sorted position
        block_of = accumulator["block_of"]
        indices = [tf.gather(position, tf.where(tf.equal(block_of, j))[:, 0])
                   for j in range(NUM_BLOCKS)]
        values = tf.dynamic_stitch(indices, list(accumulator["blocks"]))
        values = tf.ensure_shape(values, [None, accumulator["blocks"][0].shape[1]])
        return collections.OrderedDict(values=values, weights=tf.gather(weights, order),
                                       client_ids=tf.gather(ids, order),
                                       finite=tf.gather(accumulator["finite"], order))


def build_stack_fn(value_type, weight_type=None):
    """Returns (`flattener`, `stack`) for clients' values of `value_type`.

    `stack(values@CLIENTS[, weights@CLIENTS])` is a federated computation
    returning `OrderedDict(values=[n, D], weights=[n], client_ids=[n])@SERVER`
    sorted by client id. Plain values (not client records) get id −1 and keep
    arrival order; weights default to 1. (Rules that only need a function of the
    stacked values use `build_stack_reduce`, which is much cheaper.)
    """
    blocks = _Blocks(value_type)
    accumulator_type = tff.to_type(blocks.blocks_type)

    if weight_type is None:
        @tff.tensorflow.computation(value_type)
        def to_rows(value):
            return blocks.row(value, 1.0)
    else:
        @tff.tensorflow.computation(value_type, weight_type)
        def to_rows(value, weight):
            return blocks.row(value, weight)

    row_type = to_rows.type_signature.result

    @tff.tensorflow.computation
    def empty():
        return blocks.empty()

    @tff.tensorflow.computation(accumulator_type, row_type)
    def accumulate(accumulator, row):
        return blocks.append(accumulator, row)

    @tff.tensorflow.computation(accumulator_type, accumulator_type)
    def merge(a, b):
        return blocks.merge(a, b)

    @tff.tensorflow.computation(accumulator_type)
    def report(accumulator):
        return blocks.assemble(accumulator)

    if weight_type is None:
        @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS))
        def stack(values):
            return tff.federated_aggregate(tff.federated_map(to_rows, values), empty(),
                                           accumulate, merge, report)
    else:
        @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def stack(values, weights):
            return tff.federated_aggregate(tff.federated_map(to_rows, (values, weights)),
                                           empty(), accumulate, merge, report)

    return blocks.flattener, stack


def _zeros_like_type(type_spec):
    """Zeros of a TFF type; unknown dimensions (e.g. Krum's selected ids `[None]`) get size 0."""
    def zeros(spec):
        shape = [0 if d is None else d for d in spec.shape.as_list()]
        return _unknown_rows(tf.zeros(shape, spec.dtype), shape[1:]) if (
            spec.shape.rank and spec.shape[0] is None and all(
                d is not None for d in spec.shape[1:])) else tf.zeros(shape, spec.dtype)
    return tf.nest.map_structure(zeros, tff.types.type_to_tf_tensor_specs(type_spec))


def build_stack_reduce(value_type, weight_type, reduce_fn, aux_type, *,
                       in_accumulate: bool | None = None):
    """`stack_reduce(values@CLIENTS[, weights@CLIENTS], aux@SERVER)` → `reduce_fn(stacked, aux)@SERVER`.

    `reduce_fn(stacked, aux)` is TF code: `stacked` as `build_stack_fn` returns it
    (sorted by client id), `aux` a value of `aux_type` (e.g. the rule's state);
    its result must have fully defined shapes. With `in_accumulate` (default: unless
    TFF's multi-worker context is active) the rule runs inside the accumulate call
    that appends the last row, so the `[n, D]` matrix is never serialised (see the
    module docstring); the result is the same either way, except that a round
    without clients is an error in place (the rule has no rows to run on there).
    """
    value_type = tff.to_type(value_type)
    aux_type = tff.to_type(aux_type)
    weight_type = None if weight_type is None else tff.to_type(weight_type)
    if in_accumulate is None:
        in_accumulate = not mergeable_context_active()
    blocks = _Blocks(value_type)

    @tff.tensorflow.computation(blocks.stacked_type, aux_type)
    def reduce_probe(stacked, aux):
        return reduce_fn(stacked, aux)

    output_type = reduce_probe.type_signature.result
    accumulator_type = tff.to_type(collections.OrderedDict(
        **blocks.blocks_type, done=tff.TensorType(np.bool_), output=output_type))
    info_type = tff.to_type(collections.OrderedDict(total=np.int32, aux=aux_type))

    def row_with_info(value, weight, info):
        row = blocks.row(value, weight)
        if in_accumulate:
            row.update(total=info["total"], aux=info["aux"])
        return row

    if weight_type is None and in_accumulate:
        @tff.tensorflow.computation(value_type, info_type)
        def to_rows(value, info):
            return row_with_info(value, 1.0, info)
    elif weight_type is None:
        @tff.tensorflow.computation(value_type)
        def to_rows(value):
            return row_with_info(value, 1.0, None)
    elif in_accumulate:
        @tff.tensorflow.computation(value_type, weight_type, info_type)
        def to_rows(value, weight, info):
            return row_with_info(value, weight, info)
    else:
        @tff.tensorflow.computation(value_type, weight_type)
        def to_rows(value, weight):
            return row_with_info(value, weight, None)

    row_type = to_rows.type_signature.result

    @tff.tensorflow.computation
    def empty():
        accumulator = blocks.empty()
        accumulator.update(done=tf.constant(False), output=_zeros_like_type(output_type))
        return accumulator

    @tff.tensorflow.computation(accumulator_type, row_type)
    def accumulate(accumulator, row):
        appended = blocks.append(accumulator, row)
        if not in_accumulate:
            appended.update(done=accumulator["done"], output=accumulator["output"])
            return appended

        def finish():  # the round's last row: apply the rule here, keep only its result
            output = reduce_fn(blocks.assemble(appended), row["aux"])
            return blocks.empty_blocks(), tf.constant(True), output

        def carry():
            return appended["blocks"], accumulator["done"], accumulator["output"]

        last = tf.equal(tf.shape(appended["client_ids"])[0], row["total"])
        new_blocks, done, output = tf.cond(last, finish, carry)
        appended.update(blocks=new_blocks, done=done, output=output)
        return appended

    @tff.tensorflow.computation(accumulator_type, accumulator_type)
    def merge(a, b):
        merged = blocks.merge(a, b)
        merged.update(done=tf.constant(False), output=a["output"])
        return merged

    @tff.tensorflow.computation(accumulator_type)
    def report(accumulator):
        return accumulator

    @tff.tensorflow.computation(accumulator_type, aux_type)
    def finish_on_server(accumulator, aux):
        if in_accumulate:
            # Done by the last accumulate call. (Not a second copy of the rule for rounds
            # without clients: TFF compiles every graph with grappler, and the copy cost
            # ~0.5 s per process.)
            check = tf.debugging.assert_equal(
                accumulator["done"], True,
                message="robust aggregation: no client values this round")
            with tf.control_dependencies([check]):
                return tf.nest.map_structure(tf.identity, accumulator["output"])
        return reduce_fn(blocks.assemble(accumulator), aux)

    def body(values, weights, aux):
        arguments = [values] + ([] if weights is None else [weights])
        if in_accumulate:
            total = tff.federated_sum(tff.federated_value(np.int32(1), tff.CLIENTS))
            arguments.append(tff.federated_broadcast(
                tff.federated_zip(collections.OrderedDict(total=total, aux=aux))))
        rows = tff.federated_map(to_rows, tuple(arguments) if len(arguments) > 1 else values)
        accumulator = tff.federated_aggregate(rows, empty(), accumulate, merge, report)
        return tff.federated_map(finish_on_server, (accumulator, aux))

    server_aux = tff.FederatedType(aux_type, tff.SERVER)
    if weight_type is None:
        @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS), server_aux)
        def stack_reduce(values, aux):
            return body(values, None, aux)
    else:
        @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS), server_aux)
        def stack_reduce(values, weights, aux):
            return body(values, weights, aux)

    return blocks.flattener, stack_reduce
