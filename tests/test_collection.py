"""tff_byz.collection: stacking keeps every row, sorted by client id; the flattener round-trips."""

import collections

import numpy as np
import tensorflow as tf
import pytest
import tensorflow_federated as tff

from tff_byz import collection
from tff_byz.client_work import client_record_type
from tests.aggregators import helpers


@pytest.mark.parametrize("n", [1, collection.NUM_BLOCKS, 3 * collection.NUM_BLOCKS + 5])
@pytest.mark.parametrize("shuffled", [True, False])
def test_rows_weights_and_ids_arrive_sorted_by_client_id(tff_context, n, shuffled):
    delta_type = tff.to_type(collections.OrderedDict(
        a=tff.TensorType(np.float32, [2]), b=tff.TensorType(np.float32, [1, 3])))
    _, stack = collection.build_stack_fn(client_record_type(delta_type), tff.TensorType(np.float32))
    ids = np.random.default_rng(n).permutation(n) if shuffled else np.arange(n)
    values = [collections.OrderedDict(a=np.array([i, -i], np.float32),
                                      b=np.array([[i, 2 * i, 3 * i]], np.float32)) for i in ids]
    out = stack(helpers.records(values, ids), [np.float32(i + 0.5) for i in ids])
    np.testing.assert_array_equal(out["client_ids"], np.arange(n))
    np.testing.assert_array_equal(out["weights"], np.arange(n) + 0.5)
    k = np.arange(n, dtype=np.float32)
    np.testing.assert_array_equal(out["values"], np.stack([k, -k, k, 2 * k, 3 * k], axis=1))


def test_many_rows_with_small_blocks(tff_context, monkeypatch):
    """More clients than blocks (each block holds several rows), shuffled ids."""
    monkeypatch.setattr(collection, "NUM_BLOCKS", 4)
    _, stack = collection.build_stack_fn(client_record_type(tff.TensorType(np.float32, [3])),
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
    _, stack = collection.build_stack_fn(tff.TensorType(np.float32, [1]))
    out = stack([np.array([v], np.float32) for v in (3.0, 1.0, 2.0)])
    np.testing.assert_array_equal(out["values"][:, 0], [3.0, 1.0, 2.0])
    np.testing.assert_array_equal(out["client_ids"], [-1, -1, -1])
    np.testing.assert_array_equal(out["weights"], [1.0, 1.0, 1.0])


def test_flattener_round_trip_and_rejects_ints():
    value_type = tff.to_type(collections.OrderedDict(
        a=tff.TensorType(np.float32, [2, 2]), b=tff.TensorType(np.float32, [3])))
    flattener = collection.Flattener(value_type)
    assert flattener.size == 7
    with pytest.raises(TypeError, match="float tensors"):
        collection.Flattener(tff.TensorType(np.int32, [2]))


def test_flattener_follows_tf_nest_order_for_unsorted_keys():
    value_type = tff.to_type(collections.OrderedDict(
        w=tff.TensorType(np.float32, [2, 3]), b=tff.TensorType(np.float32, [2])))
    flattener = collection.Flattener(value_type)
    value = collections.OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3),
                                    b=np.array([10.0, 11.0], np.float32))
    vector = flattener.flatten(value)
    back = flattener.unflatten(vector, value)
    np.testing.assert_array_equal(back["w"], value["w"])
    np.testing.assert_array_equal(back["b"], value["b"])


def _stack_reduce_case(in_accumulate, n=11, dim=3):
    """A stack_reduce whose rule returns the sorted stack itself plus the server input."""
    record_type = client_record_type(tff.TensorType(np.float32, [dim]))

    def reduce_fn(stacked, aux):
        return collections.OrderedDict(
            first_rows=tf.concat([stacked["values"], tf.zeros([n, dim])], axis=0)[:n],
            ids=tf.concat([stacked["client_ids"], -tf.ones([n], tf.int32)], axis=0)[:n],
            finite=tf.reduce_sum(tf.cast(stacked["finite"], tf.int32)),
            aux=aux + 1)

    _, stack_reduce = collection.build_stack_reduce(
        record_type, tff.TensorType(np.float32), reduce_fn, tff.TensorType(np.int64),
        in_accumulate=in_accumulate)
    return stack_reduce


@pytest.mark.parametrize("in_accumulate", [True, False])
def test_stack_reduce_applies_the_rule_to_the_sorted_stack(tff_context, in_accumulate,
                                                          monkeypatch):
    """In the last accumulate call or on the server: the same sorted rows, finite flags
    computed per client, and the server input reaching the rule."""
    monkeypatch.setattr(collection, "NUM_BLOCKS", 4)  # several rows per block
    stack_reduce = _stack_reduce_case(in_accumulate)
    ids = np.random.default_rng(3).permutation(11)
    values = [np.array([i, np.inf if i == 4 else -i, 2 * i], np.float32) for i in ids]
    out = stack_reduce(helpers.records(values, ids), [np.float32(1)] * 11, np.int64(41))
    k = np.arange(11, dtype=np.float32)
    expected = np.stack([k, -k, 2 * k], axis=1)
    expected[4, 1] = np.inf
    np.testing.assert_array_equal(out["first_rows"], expected)
    np.testing.assert_array_equal(out["ids"], np.arange(11))
    assert out["finite"] == 10 and out["aux"] == 42


def test_stack_reduce_without_clients(tff_context):
    """No accumulate call: on the server the rule runs on the empty stack; in place it
    cannot, and the round fails with a message saying why."""
    out = _stack_reduce_case(False, n=2)([], [], np.int64(0))
    np.testing.assert_array_equal(out["ids"], [-1, -1])
    assert out["finite"] == 0 and out["aux"] == 1
    with pytest.raises(Exception, match="no client values this round"):
        _stack_reduce_case(True, n=2)([], [], np.int64(0))


def test_merged_accumulators_keep_every_row_in_order(monkeypatch):
    """`merge` (TFF's multi-worker path) joins two partial accumulators block by block;
    `assemble` still returns every row once, sorted by id."""
    monkeypatch.setattr(collection, "NUM_BLOCKS", 4)
    blocks = collection._Blocks(client_record_type(tff.TensorType(np.float32, [2])))

    def fill(ids):
        accumulator = blocks.empty()
        for i in ids:
            value = collections.OrderedDict(delta=tf.fill([2], float(i)), client_id=i)
            accumulator = blocks.append(accumulator, blocks.row(value, 1.0))
        return accumulator

    ids = [int(i) for i in np.random.default_rng(5).permutation(23)]
    out = blocks.assemble(blocks.merge(fill(ids[:13]), fill(ids[13:])))
    np.testing.assert_array_equal(out["client_ids"], np.arange(23))
    np.testing.assert_array_equal(out["values"][:, 0], np.arange(23))
