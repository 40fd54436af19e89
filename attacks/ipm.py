"""Inner product manipulation (IPM; Xie et al. 2019, attacks.md §4): the Byzantine clients
send −ε μ of the reference set (ε = 1: the omniscient sign flip of the honest mean)."""

from __future__ import annotations

import collections

import tensorflow as tf

from attacks.checks import plain_tf
from attacks.params import STATS, attack_entry, bound, finite
from attacks.reference import colluding_component, statistics
from tff_byz.registry import Param

__all__ = ["ENTRIES", "ipm_vector", "ipm_attack"]


@plain_tf
def ipm_vector(mu, eps):
    """IPM (§4): u = −ε μ."""
    return -tf.cast(eps, mu.dtype) * mu


def ipm_attack(name: str, *, eps: float, stats: str, start: int, loss):
    def vector_fn(values, honest, own, client_ids, seed, memory):
        del client_ids, seed
        mu, _ = statistics(values, honest, own, stats, 0)
        return ipm_vector(mu, eps), memory, collections.OrderedDict()

    return colluding_component(name, vector_fn, start=start, loss=loss,
                               reads_own=stats == "byzantine")


ENTRIES = (
    attack_entry("ipm", bound(ipm_attack),
                 "inner product manipulation (Xie et al. 2019): −ε μ.", "colluding",
                 eps=Param(float, 0.1, "ε", check=finite), stats=STATS),
)
