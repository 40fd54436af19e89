"""How client values reach the server: the one collection module.

Every algorithm, rule and attack brings client values to the server through what is
here:

- **Records and factories.** Client work emits records `OrderedDict(delta, client_id,
  num_examples, loss)` (`tff_byz.client_work`). `build_update_aggregator` feeds them to
  any TFF aggregation factory (which sees only the `delta`, selected at the clients, so
  it composes exactly as in TFF's own algorithms) or to a `ClientRecordAggregationFactory`
  (which sees the whole record: client ids for tie-breaking, learned per-client weights,
  measurements that name clients, reported losses). Either way the process has TFF's
  weighted signature `next(state, records@CLIENTS, weights@CLIENTS)`.
  `NonFiniteCountingFactory` wraps a plain factory to count NaN/Inf clients;
  `build_measurement_merger` adds one entry to a measurements structure.
- **Stacking.** Order-statistic rules (median, Krum, ...) need all client values at once.
  Inside a federated computation each client turns its value (any structure of float
  tensors, `Flattener`) into one row `[1, D]` plus its weight, client id and whether the
  row is finite; `tff.federated_aggregate` collects the rows, which are then **sorted by
  client id**: TFF treats CLIENTS values as a multiset, so nothing may depend on arrival
  order. Rules then are pure TF functions of the stacked tensors.
- **Stacked records.** `build_record_stack` / `StackedRecordsFactory`: each client's delta
  and loss stacked together (colluding attacks forge losses from the honest ones; FedLAW's
  weight step reads them), as `OrderedDict(deltas [n, D], losses [n], client_ids [n],
  weights [n])` sorted by client id.

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
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.packing import Packing

__all__ = ["ClientRecordAggregationFactory", "NonFiniteCountingFactory", "build_update_aggregator",
           "build_measurement_merger", "build_stateless_process", "Flattener",
           "is_client_record_type", "build_stack_fn", "build_stack_reduce", "value_flattener",
           "STACKED_KEYS", "NUM_BLOCKS", "mergeable_context_active", "RecordStack",
           "build_record_stack", "StackedRecordsFactory"]


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

    def __init__(self, inner, simulate=None):
        """`simulate(values, client_ids, state) -> [D]`, if given, is the inner rule on
        stacked finite rows with equal weights (`RobustAggregationFactory.simulate`)."""
        if isinstance(inner, tff.aggregators.UnweightedAggregationFactory):
            inner = tff.aggregators.as_weighted_aggregator(inner)
        self._inner = inner
        if simulate is not None:
            self.simulate = simulate

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


STACKED_KEYS = ("values", "weights", "client_ids", "finite")
NUM_BLOCKS = 64  # up to 64 clients per round, no row is copied in the accumulator


def is_client_record_type(value_type) -> bool:
    """Whether `value_type` is a client record (has `delta` and `client_id`)."""
    if not isinstance(value_type, tff.StructType):
        return False
    names = set(n for n, _ in tff.structure.iter_elements(value_type) if n)
    return {"delta", "client_id"} <= names


class Flattener(Packing):
    """Maps a structure of float tensors (of a fixed TFF type) to one float32 `[D]` vector and
    back: `Packing`'s layout over the leaves in `tf.nest` order (dict keys sorted; TFF's own
    structure order may differ), each cast to float32 and back to its dtype."""

    def __init__(self, value_type):
        specs = tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type))
        for spec in specs:
            if not spec.dtype.is_floating or not spec.shape.is_fully_defined():
                raise TypeError(f"robust aggregation needs float tensors of known shape; got {spec}")
        super().__init__([np.zeros(spec.shape, spec.dtype.as_numpy_dtype) for spec in specs])
        self.value_type = value_type
        self.dtypes = [spec.dtype for spec in specs]
        self.size = self.dimension

    def flatten(self, value) -> tf.Tensor:
        return self.pack([tf.cast(leaf, tf.float32) for leaf in tf.nest.flatten(value)])

    def unflatten(self, vector: tf.Tensor, like_structure):
        leaves = [tf.cast(part, dtype) for part, dtype in zip(self.unpack(vector), self.dtypes)]
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
        self.delta_flattener = Flattener(delta_type)
        self.delta_like = tff.types.type_to_tf_tensor_specs(delta_type)
        flattener, stack_values = build_stack_fn(value_type, weight_type)
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


def _column_indices(flattener: Flattener, like) -> dict[str, Any]:
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
