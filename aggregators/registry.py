"""The `--aggregator` registry: names, parameters, defaults, builders.

Specs read `NAME[:key=value,...]`, pre-aggregators chain before a rule with `+`
(`bucketing:s=2+median`, `nnm+krum`). Every robust rule takes the declared
Byzantine fraction from `--byzantine_fraction` unless `f=` overrides it, and is
checked against the expected clients per round when built, so impossible
settings fail before a run starts.

This table imports no TensorFlow: each entry names its builder in `aggregators.build`
(imported at the first build), which also holds `build_aggregator`.
"""

from __future__ import annotations

import dataclasses

from tff_byz.registry import (Entry, Param, Registry, Resolved, SpecError, at_least_one,
                              non_negative, positive)

__all__ = ["AGGREGATORS", "AggregatorContext", "resolve_chain", "F_PARAM", "WEIGHTED_PARAM",
           "MAX_SUBSETS"]


@dataclasses.dataclass(frozen=True)
class AggregatorContext:
    """What a rule may know about the run: the *declared* Byzantine fraction and
    client count per round, never who is Byzantine."""
    declared_byzantine_fraction: float = 0.0
    clients_per_round: int = 0
    seed: int = 0


AGGREGATORS = Registry("--aggregator")

# mda and smea refuse more subsets C(n, f) than this unless max_subsets= says otherwise.
MAX_SUBSETS = 100_000

F_PARAM = Param(int, None, "declared Byzantine count (default ⌈byzantine_fraction·n⌉)",
                check=non_negative)
WEIGHTED_PARAM = Param(bool, False, "weight clients by their example counts")


def rule(name, help_text, *, weighted=True, **params):
    """Registers a stacked rule; its builder is `aggregators.build.<name>`, which takes the
    base options (declared fraction, seed, expected clients) plus `params`."""
    all_params = dict(params)
    all_params["f"] = F_PARAM
    if weighted:
        all_params["weighted"] = WEIGHTED_PARAM
    return AGGREGATORS.register(Entry(name=name, build=f"aggregators.build:{name}",
                                      params=all_params, help=help_text, kind="rule"))


def pre_aggregator(name, help_text, **params):
    """Registers a stage placed before a rule; its builder is `aggregators.build.<name>`."""
    return AGGREGATORS.register(Entry(name=name, build=f"aggregators.build:{name}",
                                      params=params, help=help_text, kind="pre-aggregator"))


AGGREGATORS.register(Entry(
    name="mean", build="aggregators.build:mean", kind="rule",
    help="FedAvg's mean of the client deltas (TFF MeanFactory); breakdown point 0; "
         "reports non_finite_clients.",
    params={"weighted": Param(bool, True, "weight clients by their example counts")},
))
rule("median", "coordinate-wise median (Yin et al. 2018); needs f < n/2.",
     even=Param(str, "mean", "even n: mean of the two middle values, or the lower",
                choices=("mean", "lower")))
rule("trimmed_mean",
     "coordinate-wise trimmed mean (Yin et al. 2018): drop beta per side; needs 2·beta < n.",
     beta=Param(int, None, "values trimmed per side (default f)", check=non_negative))
rule("krum", "Krum (Blanchard et al. 2017): the value with the smallest sum of "
     "squared distances to its n−f−2 nearest; needs n >= 2f+3; unweighted.", weighted=False)
rule("multi_krum", "Multi-Krum: mean of the m best Krum scores; needs n >= 2f+3; "
     "unweighted.", weighted=False,
     m=Param(int, None, "values averaged (default n − f)", check=at_least_one))
rule("bulyan", "Bulyan (El Mhamdi et al. 2018): repeated Krum selection, then a "
     "trimmed average around the median; needs n >= 4f+3; unweighted.", weighted=False,
     variant=Param(str, "textbook", "textbook, or fedlaw (the FedLAW authors' implementation)",
                   choices=("textbook", "fedlaw")),
     b=Param(int, None, "pool parameter of variant=fedlaw (default f)", check=non_negative))
rule("geometric_median",
     "geometric median by smoothed Weiszfeld (RFA, Pillutla et al. 2022); needs f < n/2. "
     "R iterations are not a converged median: from start=mean a finite outlier of 1e15 "
     "(scaling, bit_flip) still moves the result by ~1e14 after 3; start=median (default) "
     "begins inside the honest range.",
     nu=Param(float, 1e-6, "smoothing ν", check=positive),
     iterations=Param(int, 3, "Weiszfeld iterations R", check=at_least_one),
     rescale=Param(bool, False, "rescale to the mean's norm (FedLAW authors' variant)"),
     start=Param(str, "median", "first iterate: the coordinate-wise median or the weighted "
                 "mean (the paper's)", choices=("median", "mean")))
rule("centered_clipping",
     "centered clipping (Karimireddy et al. 2021), centred at the previous aggregate; f < n/2.",
     tau=Param(float, 10.0, "clipping radius τ", check=positive),
     iterations=Param(int, 1, "clipping iterations L", check=at_least_one))
rule("huber", "Huber-loss aggregation (Zhao et al. 2024); f < n/2.",
     tau=Param(float, 0.2, "Huber threshold τ (absolute, on deltas)", check=positive),
     max_iterations=Param(int, 50, "iteration cap", check=at_least_one))
rule("meamed", "mean around the median (Xie et al. 2018): per coordinate, the "
     "mean of the n−f values nearest the median; needs f < n/2; unweighted.", weighted=False)
rule("monna", "MoNNA (Farhadkhani et al. 2023): the mean of the n−f vectors "
     "nearest a trusted client's (which must be honest: pick it with --byzantine_selection="
     "ids:...); needs f < n/2; unweighted.", weighted=False,
     trusted=Param(int, 0, "the trusted client's id (absent: the lowest id present)",
                   check=non_negative))
rule("caf", "covariance-bound agnostic filter (Allouah et al. 2025): spectral "
     "down-weighting along the top covariance direction until Σc ≤ n−2f, the mean of least top "
     "eigenvalue; needs f < n/2; unweighted.", weighted=False)
_SUBSET_LIMIT = Param(int, MAX_SUBSETS, "refuse n and f with more than this many subsets "
                      "C(n, f)", check=at_least_one)
rule("mda", "minimum-diameter averaging (El Mhamdi et al. 2018): the mean of the "
     "n−f vectors of smallest diameter; exact over C(n, f) subsets; needs f < n/2; "
     "unweighted.", weighted=False, max_subsets=_SUBSET_LIMIT)
rule("smea", "smallest maximum-eigenvalue averaging (Allouah et al. 2023): the "
     "mean of the n−f vectors whose covariance has the smallest top eigenvalue; exact over "
     "C(n, f) subsets; needs f < n/2; unweighted.", weighted=False, max_subsets=_SUBSET_LIMIT)


AGGREGATORS.register(Entry(
    name="rfa", build="aggregators.build:rfa", kind="rule",
    help="RFA geometric median from repeated federated means only (secure-aggregation "
         "friendly, no stacking; R extra round trips); f < n/2.",
    params={"nu": Param(float, 1e-6, "smoothing ν", check=positive),
            "iterations": Param(int, 3, "Weiszfeld iterations R", check=at_least_one),
            "rescale": Param(bool, False, "rescale to the mean's norm"),
            "f": F_PARAM, "weighted": WEIGHTED_PARAM}))


pre_aggregator("bucketing",
               "random buckets of s averaged per round (Karimireddy et al. 2022); the rule then "
               "sees ⌈n/s⌉ values.",
               s=Param(int, 2, "bucket size", check=at_least_one),
               variant=Param(str, "mean", "mean: bucket means; split: rule inside s groups "
                             "(FedLAW authors' variant)", choices=("mean", "split")))
pre_aggregator("nnm",
               "nearest-neighbour mixing (Allouah et al. 2023): each value → mean of its n−f "
               "nearest; needs f < n/2.")
pre_aggregator("clip", "norm clipping to c, or TFF's adaptive quantile clipping.",
               c=Param(float, 1.0, "static clipping norm C", check=positive),
               adaptive=Param(bool, False, "TFF quantile-based adaptive norm (initial 1.0, target "
                              "quantile 0.8, learning rate 0.2) instead of c"))
pre_aggregator("arc", "adaptive robust clipping (Allouah et al. 2024): clip the "
               "⌊2(f/n)(n−f)⌋ largest norms; needs f < n/2.")


def resolve_chain(spec: str) -> list[Resolved]:
    """The components of `spec`, checked to be pre-aggregators followed by one rule
    (`aggregators.build.build_aggregator` builds them); SpecError naming `spec` otherwise."""
    components = AGGREGATORS.resolve(spec)
    *pres, last = components
    if last.entry.kind != "rule":
        raise SpecError(f"--aggregator={spec!r}: the last component must be a rule; "
                        f"{last.name} is a {last.entry.kind}.")
    for component in pres:
        if component.entry.kind != "pre-aggregator":
            raise SpecError(f"--aggregator={spec!r}: only pre-aggregators may come before '+'; "
                            f"{component.name} is a {component.entry.kind}.")
    return components
