"""Tests for tff_byz/datasets/client_data.py (ArrayClientData)."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.datasets import client_data


def arrays(n, value):
    return np.full((n, 2, 2, 1), value, np.float32), np.arange(n, dtype=np.int32)


def test_datasets_match_arrays():
    data = client_data.ArrayClientData({"b": arrays(3, 1.0), "a": arrays(2, 2.0)})
    assert isinstance(data, tff.simulation.datasets.ClientData)
    assert data.client_ids == ["b", "a"]  # insertion order
    assert data.element_type_structure == collections.OrderedDict(
        x=tf.TensorSpec([2, 2, 1], tf.float32), y=tf.TensorSpec([], tf.int32))
    elements = list(data.create_tf_dataset_for_client("a").as_numpy_iterator())
    assert len(elements) == 2 and list(elements[0]) == ["x", "y"]
    np.testing.assert_array_equal(elements[1]["x"], np.full((2, 2, 1), 2.0))
    assert elements[1]["y"] == 1
    x, y = data.arrays("b")
    assert x.shape == (3, 2, 2, 1) and y.tolist() == [0, 1, 2]


def test_serializable_fn_and_preprocess_paths():
    data = client_data.ArrayClientData({"b": arrays(3, 1.0), "a": arrays(2, 2.0)})
    assert sum(1 for _ in data.serializable_dataset_fn("b")) == 3
    assert sum(1 for _ in data.create_tf_dataset_from_all_clients()) == 5
    batched = data.preprocess(lambda ds: ds.batch(10))
    (batch,) = list(batched.create_tf_dataset_for_client("b").as_numpy_iterator())
    assert batch["x"].shape == (3, 2, 2, 1)


def test_errors():
    with pytest.raises(ValueError, match="at least one client"):
        client_data.ArrayClientData({})
    with pytest.raises(ValueError, match="client 'a' has no examples"):
        client_data.ArrayClientData({"a": arrays(0, 1.0)})
    with pytest.raises(TypeError, match="client ids must be str; got 3"):
        client_data.ArrayClientData({3: arrays(1, 1.0)})
    with pytest.raises(ValueError, match=r"client 'a': need float32 x \[n, ...\] and int32 y \[n\]"):
        client_data.ArrayClientData({"a": (np.zeros((2, 1), np.float64), np.zeros(2, np.int32))})
    data = client_data.ArrayClientData({"a": arrays(1, 1.0)})
    with pytest.raises(ValueError, match=r"ID \[zz\] is not a client"):
        data.create_tf_dataset_for_client("zz")
