"""Adaptive ("optimal") LIE and IPM: the attack's scale searched against the actual defence
each round (the Byzantine-FL libraries' Opt-ALIE / Opt-IPM; Allouah et al. 2023).

This module is the `--attack` entries (no TensorFlow); `attacks.adaptive.search` the search,
its objective and the attacks bound to a run (its docstring defines them).
"""

from __future__ import annotations

from attacks.params import STATS, attack_entry
from tff_byz.registry import Param, at_least_one, non_negative, positive

__all__ = ["ENTRIES"]


def _ratio(value):
    return None if 0.5 < value < 1.0 else "must be in (0.5, 1)"


_SEARCH = dict(
    tau0=Param(float, 0.0, "first τ of the search", check=non_negative),
    delta=Param(float, 10.0, "first step δ", check=positive),
    evals=Param(int, 20, "evaluations of the defence per round", check=at_least_one),
    ratio=Param(float, 0.8, "step contraction", check=_ratio),
)
_ADAPTIVE = (" τ is searched each round against the run's own rule, maximising the distance of "
             "its aggregate from the honest mean (line search: evals rule evaluations).")

ENTRIES = (
    attack_entry("ipm_optimal", "attacks.adaptive.search:build_ipm_optimal",
                 "adaptive IPM (Opt-IPM): −τ μ." + _ADAPTIVE, "colluding", stats=STATS,
                 **_SEARCH),
    attack_entry("lie_optimal", "attacks.adaptive.search:build_lie_optimal",
                 "adaptive LIE (Opt-ALIE): the update μ − τ σ (the libraries' μ + τ σ of "
                 "gradients)." + _ADAPTIVE, "colluding", stats=STATS,
                 ddof=Param(int, 1, "0 (population) or 1 (unbiased, the libraries')",
                            check=lambda v: None if v in (0, 1) else "must be 0 or 1"),
                 **_SEARCH),
)
