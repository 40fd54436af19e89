"""RFA (federated-means Weiszfeld): equals the stacked geometric median; no stacking; factory."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from aggregators.base import RequirementError
from aggregators.geometric_median import geometric_median
from aggregators.rfa import RFAFactory
from tests.aggregators import helpers

DISAGREE = [1.0, 2.0, 6.0, 7.0, 100.0]  # mean 23.2, median 6, Weiszfeld R=3: 6.16007


def nested(a, b):
    return collections.OrderedDict(a=np.asarray(a, np.float32), b=np.asarray(b, np.float32))


def flat(values):
    return np.stack([np.concatenate([v["a"].reshape(-1), v["b"].reshape(-1)]) for v in values])


def random_nested(rng, n):
    return [nested(rng.normal(size=3), rng.normal(size=(2, 2)) * 3) for _ in range(n)]


def unflat(vector):
    return vector[:3], vector[3:].reshape(2, 2)


def intrinsic_uris(computation):
    """Names of the federated intrinsics a computation calls (before compilation)."""
    uris = []

    def visit(building_block):
        if building_block.__class__.__name__ == "Intrinsic":
            uris.append(building_block.uri)
        for child in building_block.children():
            visit(child)

    visit(computation.to_building_block())
    return uris


def test_unweighted_equals_stacked_geometric_median_and_uses_no_stacking(tff_context):
    rng = np.random.default_rng(0)
    values = random_nested(rng, 7)
    process = helpers.build_process(RFAFactory(), values[0])
    output = helpers.run_once(None, values, process=process)
    expected = unflat(geometric_median(flat(values), start="mean").numpy())  # RFA's start
    np.testing.assert_allclose(output.result["a"], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(output.result["b"], expected[1], rtol=1e-5, atol=1e-6)
    assert dict(output.measurements) == dict(non_finite_clients=0, f=0)
    # The disagreeing 1-D clients (embedded in the nested structure): not the median yet.
    disagree = [nested([v, 0, 0], [[0, 0], [0, -v]]) for v in DISAGREE]
    out = helpers.run_once(None, disagree, process=process).result
    np.testing.assert_allclose(out["a"], [6.16007, 0, 0], atol=1e-4)
    np.testing.assert_allclose(out["b"], [[0, 0], [0, -6.16007]], atol=1e-4)
    # Signature and the structure of the computation: R = 3 broadcasts, only means and sums.
    signature = process.next.type_signature
    assert str(signature.result.measurements) == "<non_finite_clients=int32,f=int32>@SERVER"
    assert str(signature.result.result) == "<a=float32[3],b=float32[2,2]>@SERVER"
    assert str(process.initialize.type_signature.result) == "<>@SERVER"
    uris = intrinsic_uris(process.next)
    assert uris.count("federated_broadcast") == 3
    assert uris.count("federated_mean") == 4  # the mean, then one per Weiszfeld pass
    assert "federated_aggregate" not in uris


def test_weighted_client_records_with_non_finite_clients(tff_context):
    rng = np.random.default_rng(1)
    values = random_nested(rng, 8)
    weights = rng.uniform(1, 50, size=8).astype(np.float32)
    bad = [nested([np.nan, 0, 0], np.zeros((2, 2))), nested(np.zeros(3), [[np.inf, 0], [0, 0]])]
    factory = RFAFactory(weighted=True, iterations=5, byzantine_fraction=0.3)
    output = helpers.run_once(factory, values + bad, weights=list(weights) + [1e6, 1e6])
    assert output.measurements["non_finite_clients"] == 2
    assert output.measurements["f"] == 1  # ⌈0.3·10⌉ = 3, minus the 2 excluded
    expected = unflat(geometric_median(flat(values), weights, iterations=5, start="mean").numpy())
    np.testing.assert_allclose(output.result["a"], expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(output.result["b"], expected[1], rtol=1e-5, atol=1e-6)


def test_plain_values_unweighted_signature_and_rescale(tff_context):
    """Composes like MeanFactory on plain values; `weight_type=None` gives `next(state, values)`."""
    process = RFAFactory(rescale=True).create(tff.TensorType(np.float32, [1]))
    assert len(process.next.type_signature.parameter) == 2
    out = process.next(process.initialize(), [np.array([v], np.float32) for v in DISAGREE])
    # ||mean|| / ||v|| = 23.2 / 6.16 lies in [0.25, 4]: rescaled to the mean's norm.
    np.testing.assert_allclose(out.result, [23.2], rtol=1e-5)
    np.testing.assert_allclose(
        geometric_median(np.array(DISAGREE, np.float32)[:, None], rescale=True, start="mean"),
        [23.2], rtol=1e-5)


def test_requirement_checked_at_build_and_each_round(tff_context):
    with pytest.raises(RequirementError, match=r"rfa needs f < n/2.*n=4, f=2"):
        RFAFactory(byzantine_fraction=0.4, expected_clients=4)
    with pytest.raises(Exception, match="rfa needs"):
        helpers.run_once(RFAFactory(f=2), [np.array([1.0], np.float32)] * 4)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(nu=0.0), ValueError, r"^rfa: nu must be a finite number > 0; got 0\.0\.$"),
    (dict(iterations=0), ValueError, r"^rfa: iterations must be an integer >= 1; got 0\.$"),
    (dict(iterations=True), TypeError, r"rfa: iterations must be an integer; got True"),
    (dict(rescale=1), TypeError, r"rfa: rescale must be a bool; got 1"),
    (dict(f=-1), ValueError, r"rfa: f must be an integer >= 0; got -1"),
    (dict(byzantine_fraction=1.0), ValueError, r"rfa: byzantine_fraction must be in \[0, 1\)"),
])
def test_parameter_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        RFAFactory(**kwargs)
