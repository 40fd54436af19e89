"""LookAheadPassFactory in TFF on hand-made records: Z = Σ_j v_j Δ̃_j and losses by id."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from fedlaw.look_ahead_pass import LookAheadPassFactory
from tff_byz.collection import build_update_aggregator

RECORD = tff.to_type(collections.OrderedDict(
    delta=[tff.TensorType(np.float32, [2]), tff.TensorType(np.float32, [1])],
    client_id=np.int32, num_examples=np.float32, loss=np.float32))


def collect(num_clients, deltas, losses, ids, weights):
    process = build_update_aggregator(LookAheadPassFactory(num_clients), RECORD, np.float64)
    records = [collections.OrderedDict(
        delta=[np.asarray(d[:2], np.float32), np.asarray(d[2:], np.float32)],
        client_id=np.int32(i), num_examples=np.float32(1), loss=np.float32(f))
        for d, f, i in zip(deltas, losses, ids)]
    return process.next(process.initialize(), records, [np.float64(v) for v in weights]).result


def test_sums_weighted_deltas_and_places_losses_by_id(tff_context):
    result = collect(5, [[1, 2, 3], [0, 1, 0], [2, 0, -1]], [0.5, 1.5, 2.5], [3, 0, 1],
                     [0.25, 0.5, 0.25])
    np.testing.assert_allclose(result["z"], [0.75, 1.0, 0.5], rtol=1e-12)
    assert result["z"].dtype == np.float64
    np.testing.assert_allclose(result["losses"], [1.5, 2.5, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(result["finite"], [1, 1, 0, 1, 0])
    np.testing.assert_array_equal(result["present"], [1, 1, 0, 1, 0])


def test_non_finite_client_adds_nothing_and_is_marked(tff_context):
    result = collect(3, [[1, 1, 1], [np.nan, 0, np.inf], [2, 2, 2]], [1.0, 1.0, np.nan],
                     [0, 1, 2], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(result["z"], [0.5, 0.5, 0.5])  # only client 0 is finite
    np.testing.assert_array_equal(result["finite"], [1, 0, 0])
    np.testing.assert_array_equal(result["losses"], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(result["present"], [1, 1, 1])


def test_needs_float64_weights_and_ids_in_range(tff_context):
    with pytest.raises(TypeError, match="float64"):
        build_update_aggregator(LookAheadPassFactory(3), RECORD, np.float32)
    with pytest.raises(Exception, match="client id outside"):
        collect(2, [[1, 1, 1]], [1.0], [2], [1.0])
    with pytest.raises(ValueError, match="num_clients=0"):
        LookAheadPassFactory(0)
