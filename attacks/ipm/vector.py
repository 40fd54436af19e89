"""IPM's vector −ε μ and the attack bound to a run (its `--attack` entry is `attacks.ipm`)."""

from __future__ import annotations

import collections

import tensorflow as tf

from attacks.checks import plain_tf
from attacks.params import bound
from attacks.reference import colluding_component, statistics

__all__ = ["ipm_vector", "ipm_attack", "build_ipm"]


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


build_ipm = bound(ipm_attack)
