"""A `tff.simulation.datasets.ClientData` over in-memory NumPy arrays.

`tff.simulation.datasets.TestClientData` deep-copies all client data on
construction and its `serializable_dataset_fn` bakes every client's data into
one TF graph, which doubles memory for MNIST/CIFAR pools and is slow.
`ArrayClientData` keeps the arrays (read-only, no copy) and builds each
client's `tf.data.Dataset` from that client's arrays alone. Only
`serializable_dataset_fn` (needed by `dataset_computation` and
`create_tf_dataset_from_all_clients`) falls back to a `TestClientData`, built
lazily on first use, so that path behaves exactly like TFF's.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

__all__ = ["ArrayClientData", "StoreClientData"]


class ArrayClientData(tff.simulation.datasets.ClientData):
    """Client datasets with elements `OrderedDict(x=float32 [H, W, C], y=int32 [])`.

    Client ids keep the insertion order of `client_arrays`.
    """

    def __init__(self, client_arrays: Mapping[str, tuple[np.ndarray, np.ndarray]]):
        """Args:
          client_arrays: client id -> (x float32 [n, H, W, C], y int32 [n]),
            n >= 1 for every client. Arrays are used as given (not copied).
        """
        if not client_arrays:
            raise ValueError("`client_arrays` must hold at least one client.")
        self._slices = collections.OrderedDict()
        for client_id, (x, y) in client_arrays.items():
            if not isinstance(client_id, str):
                raise TypeError(f"client ids must be str; got {client_id!r}.")
            if x.dtype != np.float32 or y.dtype != np.int32 or x.shape[:1] != y.shape:
                raise ValueError(
                    f"client {client_id!r}: need float32 x [n, ...] and int32 y [n]; got "
                    f"x {x.dtype} {x.shape}, y {y.dtype} {y.shape}.")
            if y.size == 0:
                raise ValueError(f"client {client_id!r} has no examples.")
            self._slices[client_id] = collections.OrderedDict(x=x, y=y)
        first = next(iter(self._slices.values()))
        self._element_spec = collections.OrderedDict(
            x=tf.TensorSpec(first["x"].shape[1:], tf.float32),
            y=tf.TensorSpec([], tf.int32))
        self._client_ids = list(self._slices)
        self._test_client_data = None

    @property
    def client_ids(self) -> list[str]:
        return list(self._client_ids)

    def arrays(self, client_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The (x, y) NumPy arrays of `client_id` (read-only views)."""
        slices = self._slices[client_id]
        return slices["x"], slices["y"]

    def create_tf_dataset_for_client(self, client_id: str) -> tf.data.Dataset:
        if client_id not in self._slices:
            raise ValueError(
                f"ID [{client_id}] is not a client in this ClientData. See "
                "property `client_ids` for the list of valid ids.")
        return tf.data.Dataset.from_tensor_slices(self._slices[client_id])

    @property
    def serializable_dataset_fn(self):
        if self._test_client_data is None:
            self._test_client_data = tff.simulation.datasets.TestClientData(dict(self._slices))
        return self._test_client_data.serializable_dataset_fn

    @property
    def element_type_structure(self):
        return self._element_spec


class StoreClientData(tff.simulation.datasets.ClientData):
    """Client datasets read from a client-data store (`tff_byz.datasets.store`).

    Nothing is held in memory: `arrays(client_id)` decodes the client's rows
    from the store's memory map on demand, to the same float32 values as the
    in-memory arrays the store was written from. The pipelines swap their
    `ArrayClientData` for this once the store is checked, so the Python process
    does not keep a float32 copy of the training pool (188 MB for MNIST, 614 MB
    for CIFAR-10) beside the worker reading the store.
    """

    def __init__(self, store, client_ids):
        if len(client_ids) != store.num_clients:
            raise ValueError(f"{len(client_ids)} client ids for a store of {store.num_clients} "
                             "clients.")
        self._store = store
        self._client_ids = list(client_ids)
        self._index = {cid: i for i, cid in enumerate(self._client_ids)}
        self._element_spec = collections.OrderedDict(
            x=tf.TensorSpec(store.example_shape, tf.float32), y=tf.TensorSpec([], tf.int32))
        self._test_client_data = None

    @property
    def client_ids(self) -> list[str]:
        return list(self._client_ids)

    def arrays(self, client_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The (x float32, y int32) of `client_id`, decoded from the store."""
        if client_id not in self._index:
            raise ValueError(f"ID [{client_id}] is not a client in this ClientData.")
        return self._store.client_rows(self._index[client_id])

    def create_tf_dataset_for_client(self, client_id: str) -> tf.data.Dataset:
        x, y = self.arrays(client_id)
        return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))

    @property
    def serializable_dataset_fn(self):
        if self._test_client_data is None:
            self._test_client_data = tff.simulation.datasets.TestClientData(
                {cid: collections.OrderedDict(zip(("x", "y"), self.arrays(cid)))
                 for cid in self._client_ids})
        return self._test_client_data.serializable_dataset_fn

    @property
    def element_type_structure(self):
        return self._element_spec
