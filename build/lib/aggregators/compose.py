"""Pre-aggregators and their composition with a rule: `bucketing:s=2+median`.

A pre-aggregator maps the stacked client values `[n, D]` to `[n', D]` before a
rule sees them (bucketing: bucket means; NNM: neighbour mixing; clip: norm
clipping). It supplies

- `transform(values, weights, client_ids, *, f, seed)` → (values', weights',
  client_ids', measurements `OrderedDict`); pure TF;
- `min_clients(inner_min)`: the smallest n for which the inner requirement
  `n' >= inner_min` holds (and its own, e.g. NNM's f < n/2).

`ComposedFactory(pre_aggregators, rule)` is itself a `RobustAggregationFactory`:
the declared f is computed once on the round's n and passed unchanged to every
stage (aggregators.md §2: bucketing's inner rule is checked with (⌈n/s⌉, f)).
Stages apply left to right; measurements of a stage are prefixed by its name.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from aggregators.base import RobustAggregationFactory

__all__ = ["PreAggregator", "ComposedFactory"]


class PreAggregator:
    """Interface of a pre-aggregator (see module doc)."""

    name: str = "pre"
    requirement: str = ""

    def min_clients(self, inner_min, f):  # pylint: disable=unused-argument
        return inner_min

    def transform(self, values, weights, client_ids, *, f, seed):
        raise NotImplementedError


class ComposedFactory(RobustAggregationFactory):
    """`pre_1 + ... + pre_k + rule` as one factory (same options as the rule)."""

    def __init__(self, pre_aggregators: Sequence[PreAggregator], rule: RobustAggregationFactory,
                 *, expected_clients=None):
        self.pre_aggregators = list(pre_aggregators)
        self.rule = rule
        self.name = "+".join([p.name for p in self.pre_aggregators] + [rule.name])
        self.requirement = "; ".join(
            r for r in [p.requirement for p in self.pre_aggregators] + [rule.requirement] if r)
        super().__init__(byzantine_fraction=rule.byzantine_fraction, f=rule.f,
                         weighted=rule.weighted, seed=rule.seed,
                         expected_clients=expected_clients)

    def min_clients(self, f):
        needed = self.rule.min_clients(f)
        for pre in reversed(self.pre_aggregators):
            needed = pre.min_clients(needed, f)
        return needed

    def initial_state(self, dim):
        return self.rule.initial_state(dim)

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        measurements = collections.OrderedDict()
        for pre in self.pre_aggregators:
            values, weights, client_ids, pre_measurements = pre.transform(
                values, weights, client_ids, f=f, seed=seed)
            for key, value in pre_measurements.items():
                measurements[f"{pre.name}/{key}"] = value
        result, state, rule_measurements = self.rule.aggregate(
            values, weights, client_ids, f=f, state=state, seed=seed)
        measurements.update(rule_measurements)
        return result, state, measurements
