"""Min-max and min-sum (Shejwalkar & Houmansadr 2021, attacks.md §4): μ − γp of the
reference set, with the largest γ that keeps the sent vector's distances to R within R's own.

This module is the `--attack` entries (no TensorFlow); `attacks.min_max.vector` the math and
the attacks bound to a run.
"""

from __future__ import annotations

from attacks.params import STATS, attack_entry
from tff_byz.registry import Param, positive

__all__ = ["ENTRIES", "PERTURBATIONS", "SUM_BOUNDS"]

PERTURBATIONS = ("std", "unit", "sign")
SUM_BOUNDS = ("min", "max")

_SEARCH = dict(p=Param(str, "std", "perturbation: std (σ), unit (μ/‖μ‖) or sign (sign μ)",
                       choices=PERTURBATIONS),
               gamma0=Param(float, 10.0, "initial γ of the search", check=positive),
               stats=STATS)

ENTRIES = (
    attack_entry(
        "min_max", "attacks.min_max.vector:build_min_max",
        "min-max (Shejwalkar & Houmansadr 2021): μ − γp, the largest γ whose max distance to "
        "the reference set stays within its diameter.", "colluding", **_SEARCH),
    attack_entry(
        "min_sum", "attacks.min_max.vector:build_min_sum",
        "min-sum (Shejwalkar & Houmansadr 2021): μ − γp, the largest γ whose sum of squared "
        "distances stays within the reference set's smallest (bound=min) or largest sum.",
        "colluding", bound=Param(str, "min", "min (authors' code) or max (paper text)",
                                 choices=SUM_BOUNDS), **_SEARCH),
)
