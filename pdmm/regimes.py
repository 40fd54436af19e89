"""Where PDMM's robustness comes from: the weight decay a linear attack puts on its fixed point.

With a linear attack y ↦ κ y on the uplink message and Byzantine clients that keep their
honest state, PDMM's fixed point is the stationary point of

    Σ_{i∈H} f_i + κ Σ_{i∈B} f_i + ((1 − κ) N_B c / 2) ‖w‖²,

so with IID clients (every f_i alike, β the Byzantine fraction) it is plain training with the
weight decay

    λ_P = (1 − κ) β c / (1 − β + κ β).

Sign flip (κ = −1) at β = 0.3, c = 0.4 gives λ_P = 0.6. θ does not move the fixed point.
When 1 − β + κβ ≤ 0 the Byzantine term outweighs the honest one and no minimiser exists:
λ_P is +∞. `linear_factor` says which attacks are linear in the message and with what κ:
`sign_flip` (−λ, final mode), `scaling` (λ), `zero` (0) and, in the mean, `bit_flip:bits=sign`
(1 − 2p).
"""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["weight_decay", "linear_factor"]


def weight_decay(kappa: float, byzantine_fraction: float, c: float) -> float:
    """λ_P = (1 − κ) β c / (1 − β + κ β); +∞ when the denominator is not positive."""
    denominator = 1.0 - byzantine_fraction + kappa * byzantine_fraction
    if denominator <= 0.0:
        return math.inf
    return (1.0 - kappa) * byzantine_fraction * c / denominator


def linear_factor(name: str, params: dict) -> Optional[float]:
    """κ of an attack that multiplies the message by a constant (in the mean), else None."""
    if name == "sign_flip" and params.get("mode", "final") == "final":
        return -float(params.get("scale", 1.0))
    if name == "scaling":
        return float(params.get("scale", 10.0))
    if name == "zero":
        return 0.0
    if name == "bit_flip" and params.get("bits") == "sign":
        return 1.0 - 2.0 * float(params.get("p", 1e-3))
    return None
