"""Colluding attacks as an aggregation-factory wrapper, executed in TFF on hand-made records.

Five clients; 1 and 3 are Byzantine (group 0). The wrapper must replace exactly
their rows by the attack vector computed from the honest rows, forge their
losses when asked, and hand the inner factory records without the group flag.
"""

import collections
import statistics

import numpy as np
import pytest
import tensorflow_federated as tff

from attacks import build_attack_plan
from attacks.local import GROUP_KEY
from tff_byz.collection import ClientRecordAggregationFactory

DELTAS = np.array([[1.0, 2.0, 0.0, -1.0],
                   [9.0, 9.0, 9.0, 9.0],
                   [3.0, 0.0, 1.0, 1.0],
                   [-7.0, 5.0, 2.0, 0.0],
                   [2.0, 4.0, 2.0, 3.0]], np.float32)
LOSSES = np.array([1.0, 50.0, 2.0, 60.0, 3.0], np.float32)
GROUPS = np.array([-1, 0, -1, 0, -1], np.int32)
HONEST = DELTAS[GROUPS < 0]


class RecordingFactory(ClientRecordAggregationFactory):
    """Mean of the deltas; measures the sum of reported losses and the record fields."""

    def create(self, record_type, weight_type):
        self.seen_fields = [name for name, _ in tff.structure.iter_elements(record_type)]

        @tff.federated_computation
        def init():
            return tff.federated_value((), tff.SERVER)

        @tff.federated_computation(init.type_signature.result,
                                   tff.FederatedType(record_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, records, weights):
            del weights
            return tff.templates.MeasuredProcessOutput(
                state, tff.federated_mean(records.delta),
                tff.federated_zip(collections.OrderedDict(loss_sum=tff.federated_sum(records.loss))))

        return tff.templates.AggregationProcess(init, next_fn)


def records(order=range(5), groups=GROUPS):
    # The delta is a structure of two leaves ([2] and [2]) to exercise flattening.
    return [collections.OrderedDict(
        delta=[DELTAS[i, :2], DELTAS[i, 2:]], client_id=np.int32(i), num_examples=np.float32(10),
        loss=LOSSES[i], byzantine_group=groups[i]) for i in order]


def record_type():
    return tff.to_type(collections.OrderedDict(
        delta=[tff.TensorType(np.float32, [2]), tff.TensorType(np.float32, [2])],
        client_id=np.int32, num_examples=np.float32, loss=np.float32,
        byzantine_group=np.int32))


def run(spec, rounds=1, order=range(5), groups=GROUPS):
    plan = build_attack_plan(spec, seed=0)
    inner = RecordingFactory()
    process = plan.aggregator(inner, seed=0).create(record_type(), tff.TensorType(np.float32))
    assert GROUP_KEY not in inner.seen_fields  # the defence never learns who is Byzantine
    state = process.initialize()
    outputs = []
    for _ in range(rounds):
        output = process.next(state, records(order, groups), [np.float32(10)] * 5)
        state = output.state
        outputs.append(output)
    return outputs


def aggregate(output):
    return np.concatenate([np.asarray(x) for x in output.result])


def expected_mean(byzantine_vector):
    return (HONEST.sum(0) + 2 * byzantine_vector) / 5


def test_lie_fixed_z(tff_context):
    output = run("lie:z=1.5,loss=honest")[0]
    mu, sigma = HONEST.mean(0), HONEST.std(0)
    np.testing.assert_allclose(aggregate(output), expected_mean(mu + 1.5 * sigma), rtol=1e-6)
    assert output.measurements["attack"]["lie"]["active"] == 1
    assert output.measurements["loss_sum"] == pytest.approx(LOSSES.sum())  # honest losses kept


def test_lie_baruch_z_and_its_loss_forgery(tff_context):
    output = run("lie")[0]
    z = baruch_z()
    assert output.measurements["attack"]["lie"]["z"] == pytest.approx(z, rel=1e-5)
    np.testing.assert_allclose(aggregate(output),
                               expected_mean(HONEST.mean(0) + z * HONEST.std(0)), rtol=1e-5)
    honest_losses = LOSSES[GROUPS < 0]
    forged = honest_losses.mean() + z * honest_losses.std()
    assert output.measurements["loss_sum"] == pytest.approx(honest_losses.sum() + 2 * forged,
                                                            rel=1e-5)


def test_lie_with_byzantine_statistics_and_ddof(tff_context):
    output = run("lie:z=1,stats=byzantine,ddof=1,loss=honest")[0]
    own = DELTAS[GROUPS == 0]
    np.testing.assert_allclose(aggregate(output),
                               expected_mean(own.mean(0) + own.std(0, ddof=1)), rtol=1e-6)


def baruch_z(n=5, m=2):
    return statistics.NormalDist().inv_cdf((n - (n // 2 + 1 - m)) / n)


def test_lie_forges_the_loss_from_its_own_reference_set(tff_context):
    output = run("lie:z=1,stats=byzantine")[0]
    # Their own losses are 50 and 60: the forged loss is 55 + 1·5 = 60 (honest ones give 2.8).
    assert output.measurements["loss_sum"] == pytest.approx(
        LOSSES[GROUPS < 0].sum() + 2 * 60.0, rel=1e-6)


def test_lie_fedlaw_code_v1_preset(tff_context):
    """The FedLAW authors' earlier LIE: their own statistics (unbiased std), Baruch's z,
    μ − zσ on the update (+z on their pseudo-gradients), μ_f + zσ_f (population std) on
    the loss."""
    output = run("lie:preset=fedlaw_code_v1")[0]
    z = baruch_z()
    own = DELTAS[GROUPS == 0]
    np.testing.assert_allclose(aggregate(output),
                               expected_mean(own.mean(0) - z * own.std(0, ddof=1)), rtol=1e-5)
    assert output.measurements["loss_sum"] == pytest.approx(
        LOSSES[GROUPS < 0].sum() + 2 * (55.0 + z * 5.0), rel=1e-5)


def test_lie_fedlaw_code_preset(tff_context):
    """Their final LIE: honest statistics, z = Φ⁻¹((n − s)/n) with s = ⌊n/2⌋ + 1 + m, the
    update μ − zσ (unbiased std), the loss μ_f + zσ_f. One Byzantine client of five:
    s = 4, z = Φ⁻¹(0.2) = −0.8416."""
    groups = np.array([-1, 0, -1, -1, -1], np.int32)
    output = run("lie:preset=fedlaw_code", groups=groups)[0]
    z = statistics.NormalDist().inv_cdf(0.2)
    honest, losses = DELTAS[groups < 0], LOSSES[groups < 0]
    assert output.measurements["attack"]["lie"]["z"] == pytest.approx(z, rel=1e-5)
    np.testing.assert_allclose(aggregate(output),
                               (honest.sum(0) + honest.mean(0) - z * honest.std(0, ddof=1)) / 5,
                               rtol=1e-5)
    assert output.measurements["loss_sum"] == pytest.approx(
        losses.sum() + losses.mean() + z * losses.std(), rel=1e-5)


def test_lie_preset_rejects_its_own_settings():
    with pytest.raises(ValueError, match="preset=fedlaw_code sets z, stats and ddof"):
        build_attack_plan("lie:preset=fedlaw_code,stats=byzantine", seed=0)


def test_ipm(tff_context):
    output = run("ipm:eps=2")[0]
    np.testing.assert_allclose(aggregate(output), expected_mean(-2 * HONEST.mean(0)), rtol=1e-6)


def test_min_max_satisfies_its_bound(tff_context):
    output = run("min_max")[0]
    gamma = float(output.measurements["attack"]["min_max"]["gamma"])
    u = HONEST.mean(0) - gamma * HONEST.std(0)
    np.testing.assert_allclose(aggregate(output), expected_mean(u), rtol=1e-5, atol=1e-5)
    diameter = max(np.sum((a - b) ** 2) for a in HONEST for b in HONEST)
    assert max(np.sum((u - x) ** 2) for x in HONEST) <= diameter * (1 + 1e-5)
    beyond = HONEST.mean(0) - (gamma + 1e-3) * HONEST.std(0)
    assert max(np.sum((beyond - x) ** 2) for x in HONEST) > diameter


def test_min_sum_satisfies_its_bound(tff_context):
    output = run("min_sum")[0]
    gamma = float(output.measurements["attack"]["min_sum"]["gamma"])
    u = HONEST.mean(0) - gamma * HONEST.std(0)
    bound = min(sum(np.sum((a - b) ** 2) for b in HONEST) for a in HONEST)
    assert sum(np.sum((u - x) ** 2) for x in HONEST) <= bound * (1 + 1e-5)
    np.testing.assert_allclose(aggregate(output), expected_mean(u), rtol=1e-5, atol=1e-5)


def test_mimic_fixed_target_and_max_variance(tff_context):
    output = run("mimic:target=4")[0]
    np.testing.assert_allclose(aggregate(output), expected_mean(DELTAS[4]), rtol=1e-6)
    assert output.measurements["attack"]["mimic"]["target"] == 4
    outputs = run("mimic:target=max_variance", rounds=2)
    target = int(outputs[0].measurements["attack"]["mimic"]["target"])
    assert target in (0, 2, 4)
    assert int(outputs[1].measurements["attack"]["mimic"]["target"]) == target  # fixed for the run


def test_mimic_random_target_is_an_honest_client_fixed_for_the_run(tff_context):
    outputs = run("mimic", rounds=3)
    targets = {int(o.measurements["attack"]["mimic"]["target"]) for o in outputs}
    assert len(targets) == 1 and targets <= {0, 2, 4}


def test_client_order_does_not_matter(tff_context):
    a = aggregate(run("lie:z=1.5")[0])
    b = aggregate(run("lie:z=1.5", order=[4, 2, 0, 3, 1])[0])
    np.testing.assert_array_equal(a, b)


def test_schedule_and_loss_only_forgery(tff_context):
    outputs = run("sign_flip:start=1,loss=mean_minus_rho_std:1", rounds=2)
    honest_losses = LOSSES[GROUPS < 0]
    forged = honest_losses.mean() - honest_losses.std()
    # The update part of sign_flip is a client-work transform; here only the loss is forged.
    assert outputs[0].measurements["loss_sum"] == pytest.approx(LOSSES.sum())
    assert outputs[1].measurements["loss_sum"] == pytest.approx(honest_losses.sum() + 2 * forged,
                                                                rel=1e-5)
    np.testing.assert_allclose(aggregate(outputs[1]), DELTAS.mean(0).reshape(-1), rtol=1e-6)
