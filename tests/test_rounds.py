"""tff_byz.rounds: the (seed, round) counter and the client-work metrics every process shares."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_byz import rounds

RECORD = tff.StructWithPythonType([("loss", np.float32), ("num_examples", np.float32)],
                                  collections.OrderedDict)


def test_the_counter_starts_at_round_0_and_advances_by_one(tff_context):
    counter = rounds.round_counter(17)
    first = counter.initial()
    assert (int(first["seed"]), int(first["round"])) == (17, 0)
    later = counter.advance(counter.advance(first))
    assert (int(later["seed"]), int(later["round"])) == (17, 2)
    assert counter.advance.type_signature.parameter == rounds.ROUND_TYPE


def test_server_round_zips_a_server_states_seed_and_round(tff_context):
    state_type = tff.FederatedType(tff.StructWithPythonType(
        [("model", np.float32), ("seed", np.int64), ("round", np.int64)], collections.OrderedDict),
        tff.SERVER)

    @tff.federated_computation(state_type)
    def round_of(state):
        return rounds.server_round(state)

    info = round_of(collections.OrderedDict(model=np.float32(1), seed=np.int64(5),
                                            round=np.int64(9)))
    assert (int(info["seed"]), int(info["round"])) == (5, 9)


def test_train_metrics_are_the_example_weighted_loss_and_the_total(tff_context):
    metrics = rounds.build_train_metrics(RECORD)

    @tff.federated_computation(tff.FederatedType(RECORD, tff.CLIENTS))
    def of(records):
        return metrics(records)

    records = [collections.OrderedDict(loss=np.float32(l), num_examples=np.float32(n))
               for l, n in ((1.0, 10), (4.0, 30), (0.5, 0))]
    out = of(records)
    assert out["train_loss"] == pytest.approx((1.0 * 10 + 4.0 * 30) / 40)  # 3.25
    assert out["num_examples"] == 40
