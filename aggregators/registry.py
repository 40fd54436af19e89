"""The `--aggregator` registry: names, parameters, defaults, builders."""

from __future__ import annotations

import dataclasses

import tensorflow_federated as tff

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


def _mean(context: AggregatorContext, *, weighted: bool):
    del context
    # TFF's own mean: the baseline every other rule is compared with.
    return tff.aggregators.MeanFactory() if weighted else tff.aggregators.UnweightedMeanFactory()


AGGREGATORS.register(Entry(
    name="mean", build=_mean, kind="rule",
    help="FedAvg's mean of the client deltas (TFF MeanFactory); breakdown point 0.",
    params={"weighted": Param(bool, True, "weight clients by their example counts")},
))


def build_aggregator(spec: str, context: AggregatorContext):
    """A TFF aggregation factory for `spec` (validated; raises SpecError)."""
    components = AGGREGATORS.resolve(spec)
    if len(components) != 1:
        raise SpecError(f"--aggregator={spec!r}: composition with '+' needs a pre-aggregator "
                        "before a rule; none is registered yet.")
    component = components[0]
    return component.entry.build(context, **component.params)
