"""One contract over the whole `--aggregator` registry, plus spec parsing and errors."""

import collections

import numpy as np
import pytest

from aggregators import AGGREGATORS
from aggregators.build import AggregatorContext, build_aggregator
from algorithms import AGGREGATOR_CHOICES
from tff_byz.registry import SpecError
from tests.aggregators import helpers

CONTEXT = AggregatorContext(declared_byzantine_fraction=0.1, clients_per_round=12, seed=0)


def spec_for(name):
    """A buildable spec for every registered name (pre-aggregators go before median)."""
    entry = AGGREGATORS.entry(name)
    return f"{name}+median" if entry.kind == "pre-aggregator" else name


SCALAR = [np.float32(v) for v in np.linspace(-1.0, 2.0, 12)]
STRUCT = [collections.OrderedDict(w=np.full([2, 3], v, np.float32), b=np.array([v, -v], np.float32))
          for v in np.linspace(-1.0, 2.0, 12)]


FACTORY_NAMES = AGGREGATORS.names


def test_the_aggregator_flag_names_every_factory_and_the_three_algorithms():
    assert {AGGREGATORS.entry(n).kind for n in AGGREGATORS.names} == {"rule", "pre-aggregator"}
    assert AGGREGATOR_CHOICES.names == AGGREGATORS.names + ["fedlaw", "pdmm", "local"]
    for name in ("fedlaw", "pdmm", "local"):
        assert AGGREGATOR_CHOICES.entry(name).kind == "algorithm"
        with pytest.raises(SpecError, match=f"unknown name '{name}'"):
            build_aggregator(name, CONTEXT)  # not a factory: `algorithms` builds its process


@pytest.mark.parametrize("name", FACTORY_NAMES)
def test_every_aggregator_builds_at_its_defaults(name):
    """Each entry's builder is imported at the first build ("module:attribute"): build them all,
    alone and after a pre-aggregator (a rule is built `composed` there)."""
    assert build_aggregator(spec_for(name), CONTEXT) is not None
    if AGGREGATORS.entry(name).kind == "rule":
        assert build_aggregator(f"nnm+{name}", CONTEXT) is not None


@pytest.mark.parametrize("name", FACTORY_NAMES)
@pytest.mark.parametrize("values", [SCALAR, STRUCT], ids=["scalar", "struct"])
def test_every_aggregator_keeps_the_value_type_and_carries_state(tff_context, name, values):
    factory = build_aggregator(spec_for(name), CONTEXT)
    process = helpers.build_process(factory, values[0])
    assert str(process.next.type_signature.result.result.member) == str(
        helpers.value_type_of(values[0]))
    outputs = helpers.run_rounds(factory, [values, values[::-1]], process=process)
    for output in outputs:
        for leaf in np.asarray(output.result, dtype=object).ravel() if not isinstance(
                output.result, dict) else output.result.values():
            assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
        assert "non_finite_clients" in output.measurements


def test_defaults_and_canonical_specs():
    (median,) = AGGREGATORS.resolve("median")
    assert median.canonical == "median:even=mean,weighted=false"
    (trimmed,) = AGGREGATORS.resolve("trimmed_mean:beta=2,weighted=1")
    assert trimmed.params["beta"] == 2 and trimmed.params["weighted"] is True
    assert AGGREGATORS.resolve("mean")[0].canonical == "mean:weighted=true"


@pytest.mark.parametrize("spec, message", [
    ("bogus", "unknown name 'bogus'"),
    ("median:beta=1", "median has no parameter 'beta'; valid parameters: even, f, weighted"),
    ("trimmed_mean:beta=x", "trimmed_mean:beta='x' is not a valid int"),
    ("trimmed_mean:beta=-1", "trimmed_mean:beta=-1 is invalid: must be >= 0"),
    ("median:even=upper", "median:even='upper' is not one of mean, lower"),
    ("median:f=1,f=2", "given twice"),
    ("median+", "empty component"),
])
def test_invalid_specs(spec, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AGGREGATORS.resolve(spec)


def test_composition_order_errors():
    with pytest.raises(SpecError, match="only pre-aggregators may come before"):
        build_aggregator("median+trimmed_mean", CONTEXT)
    with pytest.raises(SpecError, match="last component must be a rule; bucketing is a "
                                        "pre-aggregator"):
        build_aggregator("bucketing", CONTEXT)


def test_requirements_fail_at_build_with_rule_n_and_f():
    with pytest.raises(ValueError, match=r"median needs f < n/2 \(n >= 2f \+ 1\); got n=4, f=2"):
        build_aggregator("median", AggregatorContext(0.5, 4))
    with pytest.raises(ValueError, match="trimmed_mean needs 2\\*beta < n; got n=6"):
        build_aggregator("trimmed_mean:beta=3", AggregatorContext(0.0, 6))
    with pytest.raises(ValueError, match="bulyan.*n=10, f=2"):
        build_aggregator("bulyan", AggregatorContext(0.2, 10))
    with pytest.raises(ValueError, match="krum.*n=6, f=2"):
        build_aggregator("krum", AggregatorContext(0.3, 6))
