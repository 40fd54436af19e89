"""State that belongs to a client, kept outside TFF and keyed by client id.

Some algorithms give every client a persistent state: momentum-SGD (each
client's momentum, `tff_byz.momentum`), PDMM (w_i, v_i, u_i). TFF computations
are stateless at the clients, so such a process takes the participants' states
as a CLIENTS-placed argument and returns their new states as a CLIENTS-placed
result (`StatefulClientsProcess`); between rounds they live in a
`ClientStateStore`:

    store = ClientStateStore(process.client_state_template, num_clients,
                             id_key="client_id")
    output = process.next(state, client_inputs, store.get(client_ids))
    store.put(client_ids, output["client_states"])  # checks every state's client_id

The store holds one array per leaf of the state structure, with a leading
dimension `num_clients` (in memory, or in `np.lib.format.open_memmap` files for
many clients, e.g. thousands of EMNIST writers with a model-sized state each),
plus a `seen` mask: a client that never stored a state gets `initial`. Nothing
is written for unseen clients, so a memmap store of zeros stays a sparse file
until clients actually store states. `state_dict()`/`load_state_dict()` turn
the whole store into a structure of numpy arrays for
`tff.program.FileProgramStateManager`.

Order of CLIENTS-placed values: TFF treats them as a multiset. One native (C++)
worker returns a CLIENTS-placed result in the order of the CLIENTS-placed
arguments (checked in `tests/test_momentum.py`), but several workers return
their parts in turn. Processes therefore write each client's id into its
returned state, and `put` stores each state under the id it carries
(`id_key`), checking that the ids are exactly the round's clients.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff
import tree

from tff_byz import context as context_lib

__all__ = ["ClientStateStore", "StatefulClientsProcess", "StatefulRounds", "zeros_from_type"]

_BACKENDS = ("memory", "memmap")


@dataclasses.dataclass(frozen=True)
class StatefulClientsProcess:
    """An iterative process whose clients carry state from round to round.

    - `initialize()` → server state @SERVER.
    - `next(state@SERVER, client_inputs@CLIENTS, client_states@CLIENTS)` →
      `OrderedDict(state=@SERVER, metrics=@SERVER, client_states=@CLIENTS)`:
      one client state in, one out, per participating client (same order, see
      the module doc). Non-participants are simply not passed and keep their
      stored state.
    - `get_model_weights(state)` → `tff.learning.models.ModelWeights` (unplaced
      state in, as for `tff.learning.templates.LearningProcess`).
    - `client_state_template`: one client's state as a numpy structure (zeros
      of the right shapes and dtypes), for `ClientStateStore`. By convention it
      is an `OrderedDict` with an int32 `client_id` leaf that the client
      overwrites with its own id, so `ClientStateStore(..., id_key="client_id")`
      can check the mapping.
    - `initial_client_state`: the state of a client that has not taken part
      yet (`ClientStateStore(initial=...)`); None means zeros.
    """

    initialize: tff.Computation
    next: tff.Computation
    get_model_weights: tff.Computation
    client_state_template: Any
    initial_client_state: Any = None


def zeros_from_type(type_spec) -> Any:
    """A numpy structure of zeros for an (unplaced) TFF tensor/struct type.

    Struct types with a Python container (`OrderedDict`, `list`, `tuple`, attrs
    classes such as `ModelWeights`) keep it; unnamed structs become lists.
    """
    type_spec = tff.to_type(type_spec)
    if isinstance(type_spec, tff.TensorType):
        if type_spec.shape is None or any(dim is None for dim in type_spec.shape):
            raise ValueError(f"client state leaves need fully defined shapes; got {type_spec}.")
        return np.zeros(tuple(type_spec.shape), type_spec.dtype)
    if isinstance(type_spec, tff.StructType):
        items = tff.structure.to_elements(type_spec)
        values = [zeros_from_type(value) for _, value in items]
        container = getattr(type_spec, "python_container", None)
        names = [name for name, _ in items]
        if container is None:
            if all(names):
                return collections.OrderedDict(zip(names, values))
            return values
        if container in (list, tuple):
            return container(values)
        if issubclass(container, Mapping):
            return container(zip(names, values))
        return container(**dict(zip(names, values)))
    raise TypeError(f"client state must be tensors and structs of tensors; got type {type_spec}.")


def _leaf_name(path) -> str:
    return "/".join(str(part) for part in path) if path else "<root>"


def _describe(array: np.ndarray) -> str:
    return f"shape {tuple(array.shape)} {array.dtype}"


class ClientStateStore:
    """Per-client state structures, one array per leaf with leading dim `num_clients`.

    Args:
      template: one client's state as a structure (`OrderedDict`/`dict`/list/
        tuple nest) of numpy arrays; gives the shapes and dtypes (values ignored).
      num_clients: number of clients; ids are `0 … num_clients − 1`.
      initial: the state of a client that has never stored one (same structure
        as `template`); default zeros.
      backend: `"memory"` (numpy arrays) or `"memmap"` (`.npy` files in
        `directory`, created afresh; resume through `load_state_dict`).
      directory: where the memmap files go (created if missing); only with
        `backend="memmap"`.
      id_key: optional top-level key of an integer scalar leaf holding the
        client's id. `get` fills it with the requested id; `put` requires it to
        equal the id the state is stored under (this catches a reordering of
        CLIENTS-placed values).
    """

    def __init__(self, template, num_clients: int, *, initial=None, backend: str = "memory",
                 directory: Optional[str | os.PathLike] = None, id_key: Optional[str] = None):
        if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
            raise TypeError(f"num_clients must be an integer; got {num_clients!r}.")
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1; got {num_clients}.")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}; got {backend!r}.")
        if backend == "memmap" and directory is None:
            raise ValueError(
                "backend='memmap' needs a directory for its files; got directory=None.")
        if backend == "memory" and directory is not None:
            raise ValueError(
                f"directory is only used with backend='memmap'; got directory={str(directory)!r} "
                "with backend='memory'.")
        self._num_clients = int(num_clients)
        self._backend = backend
        self._directory = None if directory is None else os.fspath(directory)

        paths_and_leaves = tree.flatten_with_path(template)
        if not paths_and_leaves:
            raise ValueError("template must contain at least one array.")
        self._template = tree.map_structure(np.asarray, template)
        self._names = [_leaf_name(path) for path, _ in paths_and_leaves]
        self._leaves = [np.zeros_like(np.asarray(leaf)) for _, leaf in paths_and_leaves]
        if initial is None:
            self._initial = [leaf.copy() for leaf in self._leaves]
        else:
            self._initial = self._check_one(initial, "initial state")

        self._id_index = None
        if id_key is not None:
            if not isinstance(template, Mapping) or id_key not in template:
                raise ValueError(f"id_key {id_key!r} is not a top-level key of the template.")
            self._id_index = self._names.index(_leaf_name((id_key,)))
            id_leaf = self._leaves[self._id_index]
            if id_leaf.shape != () or not np.issubdtype(id_leaf.dtype, np.integer):
                raise ValueError(f"id_key {id_key!r} must name an integer scalar leaf; "
                                 f"got {_describe(id_leaf)}.")
        self._id_key = id_key

        if backend == "memory":
            self._arrays = [np.zeros((self._num_clients, *leaf.shape), leaf.dtype)
                            for leaf in self._leaves]
            self._seen = np.zeros([self._num_clients], np.bool_)
        else:
            os.makedirs(self._directory, exist_ok=True)
            self._arrays = [
                np.lib.format.open_memmap(
                    self._file_name(index, name), mode="w+", dtype=leaf.dtype,
                    shape=(self._num_clients, *leaf.shape))
                for index, (name, leaf) in enumerate(zip(self._names, self._leaves))]
            self._seen = np.lib.format.open_memmap(
                os.path.join(self._directory, "seen.npy"), mode="w+", dtype=np.bool_,
                shape=(self._num_clients,))

    def _file_name(self, index: int, name: str) -> str:
        # The index keeps names unique whatever characters the keys contain.
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        return os.path.join(self._directory, f"leaf_{index:03d}_{safe}.npy")

    # --- properties -------------------------------------------------------

    @property
    def num_clients(self) -> int:
        return self._num_clients

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def template(self):
        return tree.map_structure(np.copy, self._template)

    @property
    def leaf_names(self) -> list[str]:
        """Leaf paths, `/`-joined (e.g. `momentum/0`), in storage order."""
        return list(self._names)

    @property
    def bytes_per_client(self) -> int:
        """Bytes of one client's state (the 1-byte `seen` flag not counted)."""
        return int(sum(leaf.nbytes for leaf in self._leaves))

    @property
    def seen(self) -> np.ndarray:
        """A copy of the bool mask of clients that have stored a state."""
        return np.array(self._seen, copy=True)

    # --- validation -------------------------------------------------------

    def _check_ids(self, client_ids, *, unique: bool) -> np.ndarray:
        if isinstance(client_ids, (str, bytes)) or not isinstance(
                client_ids, (Sequence, np.ndarray)):
            raise TypeError(f"client_ids must be a sequence of integers; got {client_ids!r}.")
        ids = np.asarray(client_ids)
        if ids.size == 0:
            return np.zeros([0], np.int64)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"client_ids must be a sequence of integers; got {client_ids!r}.")
        for client_id in ids:
            if not 0 <= client_id < self._num_clients:
                raise ValueError(
                    f"unknown client id {int(client_id)}: the store holds clients "
                    f"0..{self._num_clients - 1}.")
        if unique:
            values, counts = np.unique(ids, return_counts=True)
            if np.any(counts > 1):
                raise ValueError(
                    f"client id {int(values[counts > 1][0])} appears more than once in put(); "
                    "which of its states to keep would be ambiguous.")
        return ids.astype(np.int64)

    def _check_one(self, state, what: str) -> list[np.ndarray]:
        """Flattens one client's state, checking structure, shapes and dtypes."""
        try:
            tree.assert_same_structure(self._template, state, check_types=False)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{what}: structure does not match the template "
                f"{tree.map_structure(lambda _: '.', self._template)}: "
                f"{str(error).splitlines()[0]}") from None
        leaves = [np.asarray(leaf) for leaf in tree.flatten(state)]
        for name, expected, leaf in zip(self._names, self._leaves, leaves):
            if leaf.shape != expected.shape or leaf.dtype != expected.dtype:
                raise ValueError(f"{what}, leaf {name!r}: expected {_describe(expected)}; "
                                 f"got {_describe(leaf)}.")
        return leaves

    # --- access -----------------------------------------------------------

    def get(self, client_ids) -> list:
        """The states of `client_ids` (copies; `initial` for clients never stored).

        With `id_key`, each state's id leaf is set to its client id.
        """
        ids = self._check_ids(client_ids, unique=False)
        unseen = ~np.asarray(self._seen[ids], np.bool_)
        columns = []
        for array, initial in zip(self._arrays, self._initial):
            rows = np.array(array[ids], copy=True)
            rows[unseen] = initial
            columns.append(rows)
        if self._id_index is not None:
            columns[self._id_index] = ids.astype(self._leaves[self._id_index].dtype)
        return [tree.unflatten_as(self._template, [column[row] for column in columns])
                for row in range(len(ids))]

    def put(self, client_ids, states) -> None:
        """Stores one state per client id (all validated before anything is written).

        With `id_key`, each state is stored under the id it carries; those ids must be
        exactly `client_ids`, in any order.
        """
        ids = self._check_ids(client_ids, unique=True)
        states = list(states)
        if len(states) != len(ids):
            raise ValueError(
                f"put() got {len(ids)} client ids but {len(states)} states.")
        flat = [self._check_one(state, f"client {int(client_id)}")
                for client_id, state in zip(ids, states)]
        if self._id_index is not None:
            # Each state carries its client's id: place it by that id, whatever order the
            # CLIENTS-placed values came back in (several workers return their parts in turn).
            carried = [int(leaves[self._id_index]) for leaves in flat]
            if sorted(carried) != sorted(int(i) for i in ids):
                missing = sorted(set(int(i) for i in ids) - set(carried))
                extra = sorted(set(carried) - set(int(i) for i in ids))
                raise ValueError(
                    f"put(): the states carry {self._id_key}s {sorted(carried)}, not the "
                    f"client ids {sorted(int(i) for i in ids)} (missing {missing}, "
                    f"unexpected {extra}).")
            ids = np.asarray(carried, np.int64)
        if not len(ids):
            return
        for index, array in enumerate(self._arrays):
            array[ids] = np.stack([leaves[index] for leaves in flat])
        self._seen[ids] = True

    def flush(self) -> None:
        """Writes memmap pages to disk (no-op for the memory backend)."""
        if self._backend == "memmap":
            for array in self._arrays:
                array.flush()
            self._seen.flush()

    # --- program state ----------------------------------------------------

    def state_dict(self) -> collections.OrderedDict:
        """`OrderedDict(seen=bool[num_clients], states=<template nest of [num_clients, ...]>)`.

        Numpy arrays, ready for `tff.program.FileProgramStateManager.save`.
        Copies for the memory backend; for memmap, read-only views of the
        (flushed) files, so a large store is not copied into memory here.
        """
        if self._backend == "memmap":
            self.flush()

            def view(array):
                result = np.asarray(array).view()
                result.flags.writeable = False
                return result
        else:
            def view(array):
                return np.array(array, copy=True)
        return collections.OrderedDict(
            seen=view(self._seen),
            states=tree.unflatten_as(self._template, [view(a) for a in self._arrays]))

    def load_state_dict(self, state_dict) -> None:
        """Replaces the whole store by a `state_dict()` (validated before writing)."""
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"seen", "states"}:
            keys = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict)
            raise ValueError(f"state dict must have exactly the keys seen, states; got {keys}.")
        seen = np.asarray(state_dict["seen"])
        if seen.shape != (self._num_clients,) or seen.dtype != np.bool_:
            raise ValueError(
                f"state dict, 'seen': expected shape ({self._num_clients},) bool; got "
                f"{_describe(seen)}.")
        states = state_dict["states"]
        try:
            tree.assert_same_structure(self._template, states, check_types=False)
        except (ValueError, TypeError) as error:
            raise ValueError(
                "state dict, 'states': structure does not match the template: "
                f"{str(error).splitlines()[0]}") from None
        arrays = [np.asarray(leaf) for leaf in tree.flatten(states)]
        for name, leaf, array in zip(self._names, self._leaves, arrays):
            shape = (self._num_clients, *leaf.shape)
            if array.shape != shape or array.dtype != leaf.dtype:
                raise ValueError(
                    f"state dict, leaf {name!r}: expected shape {shape} {leaf.dtype}; got "
                    f"{_describe(array)}.")
        for target, array in zip(self._arrays, arrays):
            target[...] = array
        self._seen[...] = seen
        self.flush()

    def __repr__(self) -> str:
        return (f"ClientStateStore(num_clients={self._num_clients}, backend={self._backend!r}, "
                f"leaves={len(self._leaves)}, bytes_per_client={self.bytes_per_client}, "
                f"seen={int(np.sum(self._seen))})")


class StatefulRounds:
    """Runs a `StatefulClientsProcess` round after round against a `ClientStateStore`.

    When the same clients take part again (full participation, the usual
    setting of momentum SGD and PDMM) and the context has one worker, the
    round's returned client states stay on the TFF worker and feed the next
    round directly: model-sized states for every client no longer cross into
    Python and back each round (on MNIST LeNet, 14 clients, that traffic was
    most of the round). `sync()` brings the store up to date; call it before
    reading the store (checkpoints, metrics). Otherwise (other clients, several
    workers, no `tff_byz.context`) each round goes through the store.
    """

    def __init__(self, process: StatefulClientsProcess, store: "ClientStateStore"):
        self.process, self.store = process, store
        self._resident = None  # (client ids, Resident of their states) not yet in the store

    def next(self, state, client_values, client_ids):
        """One round; returns (state, metrics)."""
        client_ids = np.asarray(client_ids)
        context = context_lib.current()
        carried = (self._resident is not None and context is not None and context.can_keep_values
                   and np.array_equal(self._resident[0], client_ids) and self._resident[1].valid)
        if not carried:
            self.sync()
        if context is None or not context.can_keep_values:
            output = self.process.next(state, client_values, self.store.get(client_ids))
            self.store.put(client_ids, output["client_states"])
            return output["state"], output["metrics"]
        states = self._resident[1] if carried else self.store.get(client_ids)
        output = context.call_keeping(self.process.next, (state, client_values, states),
                                      keep=("client_states",), num_clients=len(client_ids))
        self._resident = (client_ids, output["client_states"])
        return output["state"], output["metrics"]

    def sync(self) -> None:
        """Writes the states left on the worker into the store (checks their client ids)."""
        if self._resident is not None:
            client_ids, resident = self._resident
            self._resident = None
            self.store.put(client_ids, resident.fetch())

    def discard(self) -> None:
        """Forgets the states left on the worker (after the store was loaded from elsewhere)."""
        self._resident = None
