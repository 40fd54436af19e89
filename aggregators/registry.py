"""The `--aggregator` registry: names, parameters, defaults, builders.

Specs read `NAME[:key=value,...]`, pre-aggregators chain before a rule with `+`
(`bucketing:s=2+median`, `nnm+krum`). Every robust rule takes the declared
Byzantine fraction from `--byzantine_fraction` unless `f=` overrides it, and is
checked against the expected clients per round when built, so impossible
settings fail before a run starts.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow_federated as tff

from aggregators.compose import ComposedFactory, PreAggregator
from aggregators.mean import StackedMeanFactory
from aggregators.median import MedianFactory
from aggregators.trimmed_mean import TrimmedMeanFactory
from tff_byz.aggregation import NonFiniteCountingFactory
from tff_byz.registry import Entry, Param, Registry, SpecError

__all__ = ["AGGREGATORS", "AggregatorContext", "build_aggregator"]


@dataclasses.dataclass(frozen=True)
class AggregatorContext:
    """What a rule may know about the run: the *declared* Byzantine fraction and
    client count per round, never who is Byzantine."""
    declared_byzantine_fraction: float = 0.0
    clients_per_round: int = 0
    seed: int = 0


AGGREGATORS = Registry("--aggregator")


def _non_negative(value) -> Optional[str]:
    return None if value >= 0 else "must be >= 0"


def _positive(value) -> Optional[str]:
    return None if value > 0 else "must be > 0"


def _at_least_one(value) -> Optional[str]:
    return None if value >= 1 else "must be >= 1"


F_PARAM = Param(int, None, "declared Byzantine count (default ⌈byzantine_fraction·n⌉)",
                check=_non_negative)
WEIGHTED_PARAM = Param(bool, False, "weight clients by their example counts")


def rule(name, factory_class, help_text, *, weighted=True, **params):
    """Registers a stacked rule whose factory takes the base options plus `params`."""

    def build(context: AggregatorContext, *, composed: bool = False, **values):
        return factory_class(
            byzantine_fraction=context.declared_byzantine_fraction, seed=context.seed,
            expected_clients=None if composed else context.clients_per_round or None, **values)

    all_params = dict(params)
    all_params["f"] = F_PARAM
    if weighted:
        all_params["weighted"] = WEIGHTED_PARAM
    return AGGREGATORS.register(Entry(name=name, build=build, params=all_params, help=help_text,
                                      kind="rule"))


def pre_aggregator(name, pre_class, help_text, **params):
    def build(context: AggregatorContext, **values):
        del context
        return pre_class(**values)

    return AGGREGATORS.register(Entry(name=name, build=build, params=params, help=help_text,
                                      kind="pre-aggregator"))


def _mean(context: AggregatorContext, *, composed: bool = False, weighted: bool):
    if composed:
        return StackedMeanFactory(weighted=weighted, seed=context.seed)
    # TFF's own mean (the baseline), plus a count of non-finite client values.
    inner = tff.aggregators.MeanFactory() if weighted else tff.aggregators.UnweightedMeanFactory()
    return NonFiniteCountingFactory(inner)


AGGREGATORS.register(Entry(
    name="mean", build=_mean, kind="rule",
    help="FedAvg's mean of the client deltas (TFF MeanFactory); breakdown point 0; "
         "reports non_finite_clients.",
    params={"weighted": Param(bool, True, "weight clients by their example counts")},
))
rule("median", MedianFactory, "coordinate-wise median (Yin et al. 2018); needs f < n/2.",
     even=Param(str, "mean", "even n: mean of the two middle values, or the lower",
                choices=("mean", "lower")))
rule("trimmed_mean", TrimmedMeanFactory,
     "coordinate-wise trimmed mean (Yin et al. 2018): drop beta per side; needs 2·beta < n.",
     beta=Param(int, None, "values trimmed per side (default f)", check=_non_negative))


def build_aggregator(spec: str, context: AggregatorContext):
    """A TFF aggregation factory for `spec` (validated; raises SpecError/ValueError)."""
    components = AGGREGATORS.resolve(spec)
    *pres, last = components
    if last.entry.kind != "rule":
        raise SpecError(f"--aggregator={spec!r}: the last component must be a rule; "
                        f"{last.name} is a {last.entry.kind}.")
    for component in pres:
        if component.entry.kind != "pre-aggregator":
            raise SpecError(f"--aggregator={spec!r}: only pre-aggregators may come before '+'; "
                            f"{component.name} is a {component.entry.kind}.")
    if not pres:
        return last.entry.build(context, **last.params)
    inner = last.entry.build(context, composed=True, **last.params)
    stages = [component.entry.build(context, **component.params) for component in pres]
    assert all(isinstance(stage, PreAggregator) for stage in stages)
    return ComposedFactory(stages, inner, expected_clients=context.clients_per_round or None)
