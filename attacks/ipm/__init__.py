"""Inner product manipulation (IPM; Xie et al. 2019, attacks.md §4): the Byzantine clients
send −ε μ of the reference set (ε = 1: the omniscient sign flip of the honest mean).

This module is the `--attack` entry (no TensorFlow); `attacks.ipm.vector` the math and the
attack bound to a run.
"""

from __future__ import annotations

from attacks.params import STATS, attack_entry, finite
from tff_byz.registry import Param

__all__ = ["ENTRIES"]

ENTRIES = (
    attack_entry("ipm", "attacks.ipm.vector:build_ipm",
                 "inner product manipulation (Xie et al. 2019): −ε μ.", "colluding",
                 eps=Param(float, 0.1, "ε", check=finite), stats=STATS),
)
