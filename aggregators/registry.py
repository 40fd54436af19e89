"""The `--aggregator` registry: names, parameters, defaults, builders.

Specs read `NAME[:key=value,...]`, pre-aggregators chain before a rule with `+`
(`bucketing:s=2+median`, `nnm+krum`). Every robust rule takes the declared
Byzantine fraction from `--byzantine_fraction` unless `f=` overrides it, and is
checked against the expected clients per round when built, so impossible
settings fail before a run starts.
"""

from __future__ import annotations

import dataclasses

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
from aggregators.rfa import RFAFactory
from aggregators.subsets import MAX_SUBSETS, MDAFactory, SMEAFactory
from aggregators.trimmed_mean import TrimmedMeanFactory
from tff_byz.collection import NonFiniteCountingFactory
from tff_byz.registry import (Entry, Param, Registry, SpecError, at_least_one, non_negative,
                              positive)

__all__ = ["AGGREGATORS", "AggregatorContext", "build_aggregator"]


@dataclasses.dataclass(frozen=True)
class AggregatorContext:
    """What a rule may know about the run: the *declared* Byzantine fraction and
    client count per round, never who is Byzantine."""
    declared_byzantine_fraction: float = 0.0
    clients_per_round: int = 0
    seed: int = 0


AGGREGATORS = Registry("--aggregator")





F_PARAM = Param(int, None, "declared Byzantine count (default ⌈byzantine_fraction·n⌉)",
                check=non_negative)
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


def pre_aggregator(name, build_stage, help_text, **params):
    """Registers a stage placed before a rule. `build_stage(**params)` returns a
    `PreAggregator` (chained on the stacked values) or a callable wrapping the
    factory built from everything to its right (e.g. adaptive clipping)."""

    def build(context: AggregatorContext, **values):
        del context
        return build_stage(**values)

    return AGGREGATORS.register(Entry(name=name, build=build, params=params, help=help_text,
                                      kind="pre-aggregator"))


def _mean(context: AggregatorContext, *, composed: bool = False, weighted: bool):
    if composed:
        return StackedMeanFactory(weighted=weighted, seed=context.seed)
    # TFF's own mean (the baseline), plus a count of non-finite client values.
    inner = tff.aggregators.MeanFactory() if weighted else tff.aggregators.UnweightedMeanFactory()
    return NonFiniteCountingFactory(inner, simulate=_plain_mean)


def _plain_mean(values, client_ids, state):
    del client_ids, state
    return tf.reduce_mean(values, axis=0)


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
     beta=Param(int, None, "values trimmed per side (default f)", check=non_negative))
rule("krum", KrumFactory, "Krum (Blanchard et al. 2017): the value with the smallest sum of "
     "squared distances to its n−f−2 nearest; needs n >= 2f+3; unweighted.", weighted=False)
rule("multi_krum", MultiKrumFactory, "Multi-Krum: mean of the m best Krum scores; needs n >= 2f+3; "
     "unweighted.", weighted=False,
     m=Param(int, None, "values averaged (default n − f)", check=at_least_one))
rule("bulyan", BulyanFactory, "Bulyan (El Mhamdi et al. 2018): repeated Krum selection, then a "
     "trimmed average around the median; needs n >= 4f+3; unweighted.", weighted=False,
     variant=Param(str, "textbook", "textbook, or fedlaw (the FedLAW authors' implementation)",
                   choices=("textbook", "fedlaw")),
     b=Param(int, None, "pool parameter of variant=fedlaw (default f)", check=non_negative))
rule("geometric_median", GeometricMedianFactory,
     "geometric median by smoothed Weiszfeld (RFA, Pillutla et al. 2022); needs f < n/2. "
     "R iterations are not a converged median: from start=mean a finite outlier of 1e15 "
     "(scaling, bit_flip) still moves the result by ~1e14 after 3; start=median (default) "
     "begins inside the honest range.",
     nu=Param(float, 1e-6, "smoothing ν", check=positive),
     iterations=Param(int, 3, "Weiszfeld iterations R", check=at_least_one),
     rescale=Param(bool, False, "rescale to the mean's norm (FedLAW authors' variant)"),
     start=Param(str, "median", "first iterate: the coordinate-wise median or the weighted "
                 "mean (the paper's)", choices=("median", "mean")))
rule("centered_clipping", CenteredClippingFactory,
     "centered clipping (Karimireddy et al. 2021), centred at the previous aggregate; f < n/2.",
     tau=Param(float, 10.0, "clipping radius τ", check=positive),
     iterations=Param(int, 1, "clipping iterations L", check=at_least_one))
rule("huber", HuberFactory, "Huber-loss aggregation (Zhao et al. 2024); f < n/2.",
     tau=Param(float, 0.2, "Huber threshold τ (absolute, on deltas)", check=positive),
     max_iterations=Param(int, 50, "iteration cap", check=at_least_one))
rule("meamed", MeamedFactory, "mean around the median (Xie et al. 2018): per coordinate, the "
     "mean of the n−f values nearest the median; needs f < n/2; unweighted.", weighted=False)
rule("monna", MoNNAFactory, "MoNNA (Farhadkhani et al. 2023): the mean of the n−f vectors "
     "nearest a trusted client's (which must be honest: pick it with --byzantine_selection="
     "ids:...); needs f < n/2; unweighted.", weighted=False,
     trusted=Param(int, 0, "the trusted client's id (absent: the lowest id present)",
                   check=non_negative))
rule("caf", CAFFactory, "covariance-bound agnostic filter (Allouah et al. 2025): spectral "
     "down-weighting along the top covariance direction until Σc ≤ n−2f, the mean of least top "
     "eigenvalue; needs f < n/2; unweighted.", weighted=False)
_SUBSET_LIMIT = Param(int, MAX_SUBSETS, "refuse n and f with more than this many subsets "
                      "C(n, f)", check=at_least_one)
rule("mda", MDAFactory, "minimum-diameter averaging (El Mhamdi et al. 2018): the mean of the "
     "n−f vectors of smallest diameter; exact over C(n, f) subsets; needs f < n/2; "
     "unweighted.", weighted=False, max_subsets=_SUBSET_LIMIT)
rule("smea", SMEAFactory, "smallest maximum-eigenvalue averaging (Allouah et al. 2023): the "
     "mean of the n−f vectors whose covariance has the smallest top eigenvalue; exact over "
     "C(n, f) subsets; needs f < n/2; unweighted.", weighted=False, max_subsets=_SUBSET_LIMIT)


def _rfa(context: AggregatorContext, *, composed: bool = False, **values):
    if composed:
        # After a stacking pre-aggregator (e.g. FedLAW's `bucketing+rfa` baseline) the values
        # are stacked anyway: the same Weiszfeld iteration on them is the same rule.
        return GeometricMedianFactory(byzantine_fraction=context.declared_byzantine_fraction,
                                      seed=context.seed, **values)
    return RFAFactory(byzantine_fraction=context.declared_byzantine_fraction,
                      expected_clients=context.clients_per_round or None, **values)


AGGREGATORS.register(Entry(
    name="rfa", build=_rfa, kind="rule",
    help="RFA geometric median from repeated federated means only (secure-aggregation "
         "friendly, no stacking; R extra round trips); f < n/2.",
    params={"nu": Param(float, 1e-6, "smoothing ν", check=positive),
            "iterations": Param(int, 3, "Weiszfeld iterations R", check=at_least_one),
            "rescale": Param(bool, False, "rescale to the mean's norm"),
            "f": F_PARAM, "weighted": WEIGHTED_PARAM}))


def _bucketing(*, s: int, variant: str):
    if variant == "split":
        return lambda rule_factory, expected: SplitBucketingFactory(
            rule_factory, s=s, expected_clients=expected)
    return Bucketing(s=s)


def _clip(*, c: float, adaptive: bool):
    if adaptive:
        return lambda inner, expected: adaptive_clipping_factory(inner)
    return NormClip(c=c)


pre_aggregator("bucketing", _bucketing,
               "random buckets of s averaged per round (Karimireddy et al. 2022); the rule then "
               "sees ⌈n/s⌉ values.",
               s=Param(int, 2, "bucket size", check=at_least_one),
               variant=Param(str, "mean", "mean: bucket means; split: rule inside s groups "
                             "(FedLAW authors' variant)", choices=("mean", "split")))
pre_aggregator("nnm", NearestNeighborMixing,
               "nearest-neighbour mixing (Allouah et al. 2023): each value → mean of its n−f "
               "nearest; needs f < n/2.")
pre_aggregator("clip", _clip, "norm clipping to c, or TFF's adaptive quantile clipping.",
               c=Param(float, 1.0, "static clipping norm C", check=positive),
               adaptive=Param(bool, False, "TFF quantile-based adaptive norm (initial 1.0, target "
                              "quantile 0.8, learning rate 0.2) instead of c"))
pre_aggregator("arc", ARC, "adaptive robust clipping (Allouah et al. 2024): clip the "
               "⌊2(f/n)(n−f)⌋ largest norms; needs f < n/2.")


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
