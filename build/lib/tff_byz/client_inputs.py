"""What each client receives, and how client work reads its examples.

TFF treats CLIENTS-placed values as a multiset, so identity must travel with
the data. A client's identity is `info = OrderedDict(client_id=int32,
byzantine=bool, attack_group=int32)`: `client_id` is the client's index in the
federated dataset (stable across rounds, used for seeds, client state, learned
weights and tie-breaking); `byzantine` and `attack_group` (−1 honest, g >= 0
the part of the Byzantine set running the g-th attack) are decided once per run
by `attacks.selection` and read only by attack transforms, never by an
aggregator.

Two ways to hand clients to a process, one interface for the client work:

- `ByValue()` (the library default): each client's value is
  `make_client_input(dataset, client_id, ...)`, a structure of two sequences
  (`examples`, unbatched `OrderedDict(x, y)`, and a one-element `info`). TFF
  serialises every dataset argument into each call, so this suits small
  experiments of one's own.
- `ByReference(store, ...)` (the pipelines): callers pass each client's int32
  id. `compose` puts a dataset computation in front of the process, which
  builds the client's value inside TFF's worker: a one-element sequence of its
  `info` (looked up from the id in tables fixed when the process is built).
  The client work maps the store's files (`tff_byz.datasets.store`) with
  `ImmutableConst` and gathers only the rows its round uses; data poisoning
  runs there too. Nothing but ids crosses into the worker per round.

Client work calls `inputs.open(value, round)` inside its `tf.function` and gets
a `ClientExamples`: `info`, `num_examples` and `gather(indices) -> (x, y)`
(rows in client-local indices, decoded to float32 and poisoned if the client's
attack says so). Both ways give bit-identical tensors for the same rows.
Builders take `inputs=` and call `inputs.compose` on the process they return:
that is the one place a dataset computation meets a process.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.datasets.store import ClientStore

__all__ = ["INFO_SPEC", "ByReference", "ByValue", "ClientExamples", "ClientInputs",
           "Poison", "client_input_spec", "make_client_input", "materialize_examples",
           "read_client_info"]

INFO_SPEC = collections.OrderedDict(
    client_id=tf.TensorSpec([], tf.int32),
    byzantine=tf.TensorSpec([], tf.bool),
    attack_group=tf.TensorSpec([], tf.int32),
)

# poison(x, y, positions, num_examples, info, round) -> (x, y): a client's rows after its
# data poisoning (positions: the rows' client-local indices). Pure TF.
Poison = Callable[..., tuple[Any, Any]]


def make_client_input(examples: tf.data.Dataset, client_id: int, byzantine: bool = False,
                      attack_group: int | None = None):
    """One client's value for a process built with `ByValue()` (one per client, in a list).

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
    """The `tf.data` element specs of a by-value client input."""
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


@dataclasses.dataclass(frozen=True)
class ClientExamples:
    """One client's training examples inside a client computation (all tensors).

    `gather(indices)` returns the rows at client-local `indices` as
    `(x float32 [k, ...], y int32 [k])`; `all()` every row in stored order.
    """
    info: collections.OrderedDict
    num_examples: Any  # int32 scalar
    gather: Callable[[Any], tuple[Any, Any]]

    def all(self):
        return self.gather(tf.range(self.num_examples))

    @classmethod
    def from_tensors(cls, x, y, info=None) -> "ClientExamples":
        """Examples held as tensors (tests, benchmarks, plain TF use)."""
        if info is None:
            info = collections.OrderedDict(client_id=tf.constant(0), byzantine=tf.constant(False),
                                           attack_group=tf.constant(-1))
        return cls(info, tf.shape(y)[0], lambda index: (tf.gather(x, index), tf.gather(y, index)))


def _poisoned(examples: ClientExamples, poison: Optional[Poison], round_num) -> ClientExamples:
    if poison is None:
        return examples

    def gather(index):
        x, y = examples.gather(index)
        return poison(x, y, tf.cast(index, tf.int32), examples.num_examples, examples.info,
                      tf.cast(round_num, tf.int64))

    return ClientExamples(examples.info, examples.num_examples, gather)


class ClientInputs:
    """How a process receives its clients (see module doc)."""

    def type_signature(self, example_spec) -> tff.Type:
        """TFF type of one client's value as client work sees it, for a model whose examples
        are `example_spec`."""
        raise NotImplementedError

    def info(self, value) -> collections.OrderedDict:
        """Inside TF: the client's `info` from its value."""
        raise NotImplementedError

    def open(self, value, round_num) -> ClientExamples:
        """Inside TF (in the client work's `tf.function`): the client's examples this round."""
        raise NotImplementedError

    def compose(self, target):
        """`target` (a `tff.Computation`, a `tff.learning.templates.LearningProcess` or a
        `StatefulClientsProcess`) taking what callers pass per client (identity here)."""
        return target


class ByValue(ClientInputs):
    """Each client's value is `make_client_input(dataset, id, ...)`; examples travel by value.

    `poison` (optional, see `Poison`) changes the rows a Byzantine client reads.
    """

    def __init__(self, poison: Optional[Poison] = None):
        self.poison = poison

    def type_signature(self, example_spec) -> tff.Type:
        element_type = tff.types.tensorflow_to_type(client_input_spec(example_spec))
        return tff.StructWithPythonType(
            [("examples", tff.SequenceType(element_type["examples"])),
             ("info", tff.SequenceType(element_type["info"]))], collections.OrderedDict)

    def info(self, value):
        return read_client_info(value["info"])

    def open(self, value, round_num) -> ClientExamples:
        x, y = materialize_examples(value["examples"])
        return _poisoned(ClientExamples.from_tensors(x, y, self.info(value)), self.poison,
                         round_num)


class ByReference(ClientInputs):
    """Callers pass each client's int32 id; its rows are read from `store` inside the worker.

    `compose` puts a dataset computation in front of a process: inside the worker
    it turns each id into the client's value as client work sees it, a
    one-element sequence of its `info` (`byzantine`, `attack_group` looked up
    in tables fixed here; default all honest). The client work then reads the
    rows it uses from the store (`open`); `poison` as for `ByValue`. A worker
    must see the store at the same path (the same machine, or a shared
    filesystem); `verify` checks that it reads the same bytes.
    """

    def __init__(self, store: ClientStore, *, byzantine=None, attack_group=None,
                 poison: Optional[Poison] = None):
        self.store = store
        n = store.num_clients
        groups = np.full(n, -1, np.int32) if attack_group is None else np.asarray(attack_group,
                                                                                   np.int32)
        flags = groups >= 0 if byzantine is None else np.asarray(byzantine, bool)
        if groups.shape != (n,) or flags.shape != (n,) or np.any(flags != (groups >= 0)):
            raise ValueError(f"ByReference: byzantine and attack_group must be [{n}] and agree "
                             f"(−1 exactly for honest clients); got {flags!r}, {groups!r}.")
        self.byzantine, self.attack_group = flags, groups
        self.poison = poison
        self._dataset_computation = None

    def type_signature(self, example_spec) -> tff.Type:
        shape = tuple(example_spec["x"].shape)
        if shape != self.store.example_shape:
            raise ValueError(f"the model takes examples of shape {shape}, the client-data store "
                             f"{self.store.directory} holds {self.store.example_shape}.")
        return tff.SequenceType(tff.types.tensorflow_to_type(INFO_SPEC))

    def info(self, value):
        return value.get_single_element()

    @property
    def dataset_computation(self) -> tff.Computation:
        """`(client id) -> info*`: the client's value, built in the worker from its id."""
        if self._dataset_computation is None:
            byzantine, groups = self.byzantine, self.attack_group

            @tff.tensorflow.computation(np.int32)
            def client_value(client_id):
                return tf.data.Dataset.from_tensors(collections.OrderedDict(
                    client_id=client_id,
                    byzantine=tf.gather(tf.constant(byzantine), client_id),
                    attack_group=tf.gather(tf.constant(groups), client_id)))

            self._dataset_computation = client_value
        return self._dataset_computation

    def compose(self, target):
        if isinstance(target, tff.learning.templates.LearningProcess):
            return tff.simulation.compose_dataset_computation_with_learning_process(
                self.dataset_computation, target)
        if isinstance(target, tff.Computation):
            return tff.simulation.compose_dataset_computation_with_computation(
                self.dataset_computation, target)
        if dataclasses.is_dataclass(target):  # StatefulClientsProcess
            return dataclasses.replace(target, next=self.compose(target.next))
        raise TypeError(f"ByReference.compose: cannot compose {type(target).__name__}.")

    def _mapped(self):
        store = self.store
        x = tf.raw_ops.ImmutableConst(
            dtype=tf.as_dtype(store.x_dtype), shape=[store.num_examples, *store.example_shape],
            memory_region_name=store.x_path)
        y = tf.raw_ops.ImmutableConst(dtype=tf.int32, shape=[store.num_examples],
                                      memory_region_name=store.y_path)
        return x, y

    def open(self, value, round_num) -> ClientExamples:
        info = self.info(value)
        offsets = tf.constant(self.store.offsets, tf.int64)
        start = tf.gather(offsets, info["client_id"])
        num_examples = tf.cast(tf.gather(offsets, info["client_id"] + 1) - start, tf.int32)
        x_all, y_all = self._mapped()
        table = (None if self.store.decode_table is None
                 else tf.constant(self.store.decode_table, tf.float32))

        def gather(index):
            rows = start + tf.cast(index, tf.int64)
            # Gather before decoding: only the round's rows are read from the mapping.
            x = tf.gather(x_all, rows)
            if table is not None:
                x = tf.gather(table, tf.cast(x, tf.int32))
            return x, tf.gather(y_all, rows)

        return _poisoned(ClientExamples(info, num_examples, gather), self.poison, round_num)

    def verify(self) -> tff.Computation:
        """A computation `(probe@CLIENTS) -> fingerprints@CLIENTS` that each worker answers
        with the fingerprints of the store files it maps (compare with `store.fingerprints`)."""
        store = self.store
        files = (("x.bin", store.x_path, store.num_examples * int(np.prod(store.example_shape))
                  * np.dtype(store.x_dtype).itemsize),
                 ("y.bin", store.y_path, store.num_examples * 4))

        @tff.tensorflow.computation(np.int32)
        def fingerprints(probe):
            del probe
            return collections.OrderedDict(
                (name, tf.fingerprint(tf.reshape(tf.raw_ops.ImmutableConst(
                    dtype=tf.uint8, shape=[size], memory_region_name=path), [1, size]))[0])
                for name, path, size in files)

        @tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
        def verify(probes):
            return tff.federated_map(fingerprints, probes)

        return verify
