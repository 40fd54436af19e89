"""Local update attacks (spec `attacks.md` §3): each Byzantine client transforms its own
update after (or, for `sign_flip:mode=ascent` and `random_params`, during) honest training.

This module is the `--attack` entries and their checks (no TensorFlow);
`attacks.perturbations.updates` the math on one tensor and the attacks bound to a run.
"""

from __future__ import annotations

from typing import Optional

from attacks.params import attack_entry, finite, probability
from tff_byz.registry import Param, non_negative, positive

__all__ = ["ENTRIES"]

_IGNORES_UPDATE = " (momentum_sgd: a Byzantine client skips its local step)"


def _check_bits(value) -> Optional[str]:
    parts = value.split("|") if value else []
    valid = ("all", "sign", "exponent", "mantissa")
    return None if parts and all(p in valid for p in parts) else \
        "must be all, sign, exponent, mantissa or a |-combination such as sign|exponent"


ENTRIES = (
    attack_entry(
        "sign_flip", "attacks.perturbations.updates:build_sign_flip",
        "u → −λu after honest training (mode=final), or gradient ascent during local training "
        "(mode=ascent, Blades' sign flip).", "local",
        aliases=("inverse_gradient",),
        scale=Param(float, 1.0, "λ (final mode)", check=positive),
        mode=Param(str, "final", "final or ascent", choices=("final", "ascent"))),
    attack_entry("scaling", "attacks.perturbations.updates:build_scaling",
                 "boosting: u → λu.", "local", scale=Param(float, 10.0, "λ", check=finite)),
    attack_entry(
        "gaussian", "attacks.perturbations.updates:build_gaussian",
        "u → N(μ, σ²I) (mode=replace) or u + N(0, σ²I) (mode=add). Replace mode ignores u"
        + _IGNORES_UPDATE + ".", "local",
        sigma=Param(float, 1.0, "σ", check=non_negative),
        mu=Param(float, 0.0, "μ (replace mode)", check=finite),
        mode=Param(str, "replace", "replace or add", choices=("replace", "add"))),
    attack_entry(
        "bit_flip", "attacks.perturbations.updates:build_bit_flip",
        "flip each bit of the float32 representation with probability p (bits=sign,p=1 is "
        "sign_flip; exponent flips make huge/Inf/NaN values).", "local",
        p=Param(float, 1e-3, "flip probability per bit", check=probability),
        bits=Param(str, "all", "all|sign|exponent|mantissa, or a |-combination",
                   check=_check_bits)),
    attack_entry("zero", "attacks.perturbations.updates:build_zero",
                 "u → 0" + _IGNORES_UPDATE + ".", "local"),
    attack_entry("constant", "attacks.perturbations.updates:build_constant",
                 "u → c·1" + _IGNORES_UPDATE + ".", "local",
                 c=Param(float, 1.0, "c", check=finite)),
    attack_entry("inf", "attacks.perturbations.updates:build_inf",
                 "u → +∞·1" + _IGNORES_UPDATE + ".", "local"),
    attack_entry("nan", "attacks.perturbations.updates:build_nan",
                 "u → NaN·1" + _IGNORES_UPDATE + ".", "local"),
    attack_entry(
        "random_params", "attacks.perturbations.updates:build_random_params",
        "global-parameter attack: train from θ + ε, ε ~ N(ν1·mean θ, (ν2·std θ)²); report "
        "ψ − θ.", "local", nu1=Param(float, -5.0, "ν1", check=finite),
        nu2=Param(float, 1.5, "ν2", check=non_negative)),
    attack_entry("weight_lying", "attacks.perturbations.updates:build_weight_lying",
                 "report `count` training examples (affects weighted rules only).", "local",
                 count=Param(float, 1e6, "reported example count", check=positive)),
)
