"""LearnedWeightsFactory in TFF on hand-made records: Σ_P w_i Δ_i / Σ_P w_i."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from fedlaw.learned_weights import LearnedWeightsFactory
from tff_byz.collection import build_update_aggregator

RECORD = tff.to_type(collections.OrderedDict(
    delta=[tff.TensorType(np.float32, [2])], client_id=np.int32, num_examples=np.float32,
    loss=np.float32))


def records(deltas, ids):
    return [collections.OrderedDict(delta=[np.asarray(d, np.float32)], client_id=np.int32(i),
                                    num_examples=np.float32(1), loss=np.float32(0))
            for d, i in zip(deltas, ids)]


def aggregate(weights, deltas, ids):
    process = build_update_aggregator(LearnedWeightsFactory(weights), RECORD)
    output = process.next(process.initialize(), records(deltas, ids), [np.float32(1)] * len(ids))
    return np.asarray(output.result[0]), output.measurements


def test_weighted_sum_over_participants(tff_context):
    weights = [0.1, 0.2, 0.3, 0.4]
    result, measurements = aggregate(weights, [[1, 0], [0, 1], [2, 2]], [0, 1, 3])
    expected = (0.1 * np.array([1, 0]) + 0.2 * np.array([0, 1]) + 0.4 * np.array([2, 2])) / 0.7
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    assert measurements["participant_mass"] == pytest.approx(0.7)
    assert measurements["zero_mass"] == 0


def test_zero_weight_silences_nan_and_zero_mass_does_not_move(tff_context):
    result, _ = aggregate([0.5, 0.0, 0.5], [[1, 1], [np.nan, np.inf], [3, 1]], [0, 1, 2])
    np.testing.assert_allclose(result, [2, 1])
    result, measurements = aggregate([0.0, 0.0, 1.0], [[1, 1], [2, 2]], [0, 1])
    np.testing.assert_array_equal(result, [0, 0])
    assert measurements["zero_mass"] == 1


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        LearnedWeightsFactory([0.5, -0.1])
