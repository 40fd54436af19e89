"""A little is enough (LIE; Baruch et al. 2019, attacks.md §4): the Byzantine clients send
μ + zσ of the reference set.

This module is the `--attack` entry and its checks (no TensorFlow); `attacks.lie.vector` the
z, the math and the attack bound to a run.
"""

from __future__ import annotations

from typing import Optional

from attacks.params import STATS, attack_entry
from tff_byz.registry import Param

__all__ = ["ENTRIES", "LIE_Z_VARIANTS", "LIE_PRESETS", "parse_z", "check_z"]

LIE_Z_VARIANTS = ("baruch", "blades", "fedlaw_code")

LIE_PRESETS = {
    # The FedLAW authors' code (amirhdaghestani/sparse-federated-learning, attack/attack.py
    # and server/server_base.py) as it attacks FedLAW: on pseudo-gradients g = −Δ/α with
    # +z, so on the update Δ it is μ − zσ; σ is torch.std (unbiased); the loss is μ_f + z σ_f
    # (np.std) of the same reference set. (Their FedAvg server collects deltas, attacked
    # with +z: that is plain lie:z=...,ddof=1.) Final release (ae74e1f3): honest statistics and
    # z = Φ⁻¹((n − s)/n), s = ⌊n/2⌋ + 1 + m (−1.311 at n = 200, m = 80).
    "fedlaw_code": dict(z="fedlaw_code", stats="honest"),
    # An earlier version (a24dc218): the Byzantine clients' own statistics, Baruch's z.
    "fedlaw_code_v1": dict(z="baruch", stats="byzantine"),
}


def parse_z(z: str):
    """`z=`: a variant name (`LIE_Z_VARIANTS`) or a number (ValueError otherwise)."""
    if z in LIE_Z_VARIANTS:
        return z
    return float(z)


def check_z(z: str) -> Optional[str]:
    try:
        parse_z(z)
    except ValueError:
        return "must be baruch, blades, fedlaw_code or a number"
    return None


ENTRIES = (
    attack_entry(
        "lie", "attacks.lie.vector:build_lie",
        "a little is enough (Baruch et al. 2019): μ + zσ of the reference set.", "colluding",
        z=Param(str, "baruch", "baruch|blades|fedlaw_code or a number", check=check_z),
        stats=STATS, ddof=Param(int, 0, "0 (population) or 1", choices=None,
                                 check=lambda v: None if v in (0, 1) else "must be 0 or 1"),
        preset=Param(str, None, "the FedLAW authors' code: fedlaw_code (final release: honest "
                     "statistics, z=fedlaw_code) or fedlaw_code_v1 (earlier: their own "
                     "statistics, z=baruch) as it attacks FedLAW: ddof 1, the update mu - z "
                     "sigma (it acts on pseudo-gradients), the loss mu_f + z sigma_f; their "
                     "FedAvg is attacked on deltas: lie:z=fedlaw_code,ddof=1",
                     choices=tuple(LIE_PRESETS))),
)
