"""Builds an `--aggregator` spec into a TFF aggregation factory: each `aggregators.registry`
entry's builder (named there as `aggregators.build:<name>`, imported at the first build) and
`build_aggregator`, which chains pre-aggregators before the rule.

A rule's builder takes `(context, *, composed=False, **params)`: `composed` when a stacking
pre-aggregator comes before it. A pre-aggregator's builder takes `(context, **params)` and
returns a `PreAggregator` (chained on the stacked values) or a callable wrapping the factory
built from everything to its right (e.g. adaptive clipping).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff

from aggregators.base import RobustAggregationFactory
from aggregators.bucketing import Bucketing, SplitBucketingFactory
from aggregators.bulyan import BulyanFactory
from aggregators.caf import CAFFactory
from aggregators.centered_clipping import CenteredClippingFactory
from aggregators.clip import ARC, NormClip, adaptive_clipping_factory
from aggregators.compose import ComposedFactory, PreAggregator
from aggregators.geometric_median import GeometricMedianFactory
from aggregators.huber import HuberFactory
from aggregators.krum import KrumFactory, MultiKrumFactory
from aggregators.meamed import MeamedFactory
from aggregators.mean import StackedMeanFactory
from aggregators.median import MedianFactory
from aggregators.monna import MoNNAFactory
from aggregators.nnm import NearestNeighborMixing
from aggregators.registry import AggregatorContext, resolve_chain
from aggregators.rfa import RFAFactory
from aggregators.subsets import MDAFactory, SMEAFactory
from aggregators.trimmed_mean import TrimmedMeanFactory
from tff_byz.collection import NonFiniteCountingFactory
from tff_byz.registry import SpecError

__all__ = ["build_aggregator", "AggregatorContext"]


def _rule(factory_class):
    """The builder of a stacked rule whose factory takes the base options plus its params."""

    def build(context: AggregatorContext, *, composed: bool = False, **values):
        return factory_class(
            byzantine_fraction=context.declared_byzantine_fraction, seed=context.seed,
            expected_clients=None if composed else context.clients_per_round or None, **values)

    return build


def _stage(build_stage):
    """The builder of a pre-aggregator: `build_stage(**params)` (the run's context unused)."""

    def build(context: AggregatorContext, **values):
        del context
        return build_stage(**values)

    return build


def mean(context: AggregatorContext, *, composed: bool = False, weighted: bool):
    if composed:
        return StackedMeanFactory(weighted=weighted, seed=context.seed)
    # TFF's own mean (the baseline), plus a count of non-finite client values.
    inner = tff.aggregators.MeanFactory() if weighted else tff.aggregators.UnweightedMeanFactory()
    return NonFiniteCountingFactory(inner, simulate=_plain_mean)


def _plain_mean(values, client_ids, state):
    del client_ids, state
    return tf.reduce_mean(values, axis=0)


median = _rule(MedianFactory)
trimmed_mean = _rule(TrimmedMeanFactory)
krum = _rule(KrumFactory)
multi_krum = _rule(MultiKrumFactory)
bulyan = _rule(BulyanFactory)
geometric_median = _rule(GeometricMedianFactory)
centered_clipping = _rule(CenteredClippingFactory)
huber = _rule(HuberFactory)
meamed = _rule(MeamedFactory)
monna = _rule(MoNNAFactory)
caf = _rule(CAFFactory)
mda = _rule(MDAFactory)
smea = _rule(SMEAFactory)


def rfa(context: AggregatorContext, *, composed: bool = False, **values):
    if composed:
        # After a stacking pre-aggregator (e.g. FedLAW's `bucketing+rfa` baseline) the values
        # are stacked anyway: the same Weiszfeld iteration on them is the same rule.
        return GeometricMedianFactory(byzantine_fraction=context.declared_byzantine_fraction,
                                      seed=context.seed, **values)
    return RFAFactory(byzantine_fraction=context.declared_byzantine_fraction,
                      expected_clients=context.clients_per_round or None, **values)


def _bucketing(*, s: int, variant: str):
    if variant == "split":
        return lambda rule_factory, expected: SplitBucketingFactory(
            rule_factory, s=s, expected_clients=expected)
    return Bucketing(s=s)


def _clip(*, c: float, adaptive: bool):
    if adaptive:
        return lambda inner, expected: adaptive_clipping_factory(inner)
    return NormClip(c=c)


bucketing = _stage(_bucketing)
nnm = _stage(NearestNeighborMixing)
clip = _stage(_clip)
arc = _stage(ARC)


def build_aggregator(spec: str, context: AggregatorContext):
    """A TFF aggregation factory for `spec` (validated; raises SpecError/ValueError)."""
    components = resolve_chain(spec)
    *pres, last = components
    if not pres:
        return last.entry.build(context, **last.params)
    expected = context.clients_per_round or None
    factory = last.entry.build(context, composed=True, **last.params)
    stages = [component.entry.build(context, **component.params) for component in pres]
    # Chain the stacked pre-aggregators that sit directly before the rule, then
    # apply wrappers (functions of the factory to their right) from the right.
    chained: list[PreAggregator] = []
    for stage in reversed(stages):
        if isinstance(stage, PreAggregator):
            chained.insert(0, stage)
            continue
        if chained:
            factory = ComposedFactory(chained, factory, expected_clients=expected)
            chained = []
        factory = stage(factory, expected)
    if chained:
        if not isinstance(factory, RobustAggregationFactory):
            raise SpecError(f"--aggregator={spec!r}: {chained[-1].name} needs stacked values, but "
                            f"what follows it ({type(factory).__name__}) does not stack them.")
        factory = ComposedFactory(chained, factory, expected_clients=expected)
    return factory
