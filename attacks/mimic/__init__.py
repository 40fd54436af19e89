"""Mimic (Karimireddy et al. 2022) and mimic-misaligned (FedLAW appendix), attacks.md §4:
every Byzantine client sends one honest client's vector; or, locally, −u_j + η e_j with
a forged loss.

This module is the `--attack` entries and their checks (no TensorFlow); `attacks.mimic.vector`
the math and the attacks bound to a run.
"""

from __future__ import annotations

from typing import Optional

from attacks.params import attack_entry, finite
from tff_byz.registry import Param, non_negative

__all__ = ["ENTRIES"]


def _target(value) -> Optional[str]:
    if value in ("random", "max_variance"):
        return None
    try:
        return None if int(value) >= 0 else "must be random, max_variance or a client id"
    except ValueError:
        return "must be random, max_variance or a client id"


ENTRIES = (
    attack_entry(
        "mimic", "attacks.mimic.vector:build_mimic",
        "mimic (Karimireddy et al. 2022): every Byzantine client sends one honest client's "
        "vector (target random, fixed for the run; a client id; or max_variance). Under "
        "momentum_sgd a Byzantine client skips its local step.", "colluding",
        target=Param(str, "random", "random|max_variance|<client id>", check=_target)),
    attack_entry(
        "mimic_misaligned", "attacks.mimic.vector:build_mimic_misaligned",
        "FedLAW appendix: −u_j + η e_j (random unit e_j), loss μ_f − ρσ_f of the honest "
        "losses.", "local", eta=Param(float, 0.1, "η (absolute norm)", check=non_negative),
        rho=Param(float, 0.3, "ρ of the default loss forgery", check=finite)),
)
