"""The id-preserving stacking mechanism: every row arrives, sorted by client id."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from aggregators import stacking
from tff_byz.client_work import client_record_type
from tests.aggregators import helpers


@pytest.mark.parametrize("n", [1, stacking.BLOCK_ROWS, 3 * stacking.BLOCK_ROWS + 5])
@pytest.mark.parametrize("shuffled", [True, False])
def test_rows_weights_and_ids_arrive_sorted_by_client_id(tff_context, n, shuffled):
    delta_type = tff.to_type(collections.OrderedDict(
        a=tff.TensorType(np.float32, [2]), b=tff.TensorType(np.float32, [1, 3])))
    _, stack = stacking.build_stack_fn(client_record_type(delta_type), tff.TensorType(np.float32))
    ids = np.random.default_rng(n).permutation(n) if shuffled else np.arange(n)
    values = [collections.OrderedDict(a=np.array([i, -i], np.float32),
                                      b=np.array([[i, 2 * i, 3 * i]], np.float32)) for i in ids]
    out = stack(helpers.records(values, ids), [np.float32(i + 0.5) for i in ids])
    np.testing.assert_array_equal(out["client_ids"], np.arange(n))
    np.testing.assert_array_equal(out["weights"], np.arange(n) + 0.5)
    k = np.arange(n, dtype=np.float32)
    np.testing.assert_array_equal(out["values"], np.stack([k, -k, k, 2 * k, 3 * k], axis=1))


def test_block_rows_stay_below_the_mmap_threshold():
    assert stacking.block_rows(5) == stacking.BLOCK_ROWS
    assert stacking.block_rows(1_199_882) == 5  # EMNIST CNN: 23 MiB blocks, not 37 MiB
    assert stacking.block_rows(10 ** 8) == 1
    for dim in (10 ** 5, 1_199_882, 3 * 10 ** 6):
        assert 4 * dim * stacking.block_rows(dim) <= stacking.MAX_BLOCK_BYTES or \
            stacking.block_rows(dim) == 1


def test_many_rows_with_small_blocks(tff_context, monkeypatch):
    """Blocks of 2 rows, more clients than blocks (the last block grows), shuffled ids."""
    monkeypatch.setattr(stacking, "MAX_BLOCK_BYTES", 2 * 4 * 3)
    monkeypatch.setattr(stacking, "NUM_BLOCKS", 4)
    _, stack = stacking.build_stack_fn(client_record_type(tff.TensorType(np.float32, [3])),
                                       tff.TensorType(np.float32))
    n = 13
    ids = np.random.default_rng(7).permutation(n)
    values = [np.array([i, i + 1, -i], np.float32) for i in ids]
    out = stack(helpers.records(values, ids), [np.float32(i) for i in ids])
    np.testing.assert_array_equal(out["client_ids"], np.arange(n))
    np.testing.assert_array_equal(out["weights"], np.arange(n))
    k = np.arange(n, dtype=np.float32)
    np.testing.assert_array_equal(out["values"], np.stack([k, k + 1, -k], axis=1))


def test_plain_values_keep_arrival_order_with_id_minus_one(tff_context):
    _, stack = stacking.build_stack_fn(tff.TensorType(np.float32, [1]))
    out = stack([np.array([v], np.float32) for v in (3.0, 1.0, 2.0)])
    np.testing.assert_array_equal(out["values"][:, 0], [3.0, 1.0, 2.0])
    np.testing.assert_array_equal(out["client_ids"], [-1, -1, -1])
    np.testing.assert_array_equal(out["weights"], [1.0, 1.0, 1.0])


def test_flattener_round_trip_and_rejects_ints():
    value_type = tff.to_type(collections.OrderedDict(
        a=tff.TensorType(np.float32, [2, 2]), b=tff.TensorType(np.float32, [3])))
    flattener = stacking.Flattener(value_type)
    assert flattener.size == 7
    with pytest.raises(TypeError, match="float tensors"):
        stacking.Flattener(tff.TensorType(np.int32, [2]))


def test_flattener_follows_tf_nest_order_for_unsorted_keys():
    value_type = tff.to_type(collections.OrderedDict(
        w=tff.TensorType(np.float32, [2, 3]), b=tff.TensorType(np.float32, [2])))
    flattener = stacking.Flattener(value_type)
    value = collections.OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3),
                                    b=np.array([10.0, 11.0], np.float32))
    vector = flattener.flatten(value)
    back = flattener.unflatten(vector, value)
    np.testing.assert_array_equal(back["w"], value["w"])
    np.testing.assert_array_equal(back["b"], value["b"])
