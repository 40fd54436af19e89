"""The parameters every attack entry takes, and `attack_entry`, which adds them."""

from __future__ import annotations

import math
from typing import Optional

from attacks.losses import check_loss, parse_loss
from tff_byz.registry import Entry, Param, non_negative

__all__ = ["START", "LOSS", "STATS", "attack_entry", "bound", "finite", "probability"]

START = Param(int, 0, "first round index (0-based) in which the attack is active",
              check=non_negative)
LOSS = Param(str, "auto", "reported loss: auto|honest|value:x|mean_minus_rho_std:rho|"
             "mean_plus_z_std:z", check=check_loss)
STATS = Param(str, "honest", "reference set: the honest vectors (omniscient; under momentum_sgd "
              "a Byzantine client then skips its local step) or the Byzantine clients' own "
              "honest vectors (colluding)", choices=("honest", "byzantine"))


def attack_entry(name, build, help_text, kind, *, aliases=(), **params) -> Entry:
    """An `--attack` entry with `start` and `loss` added; `build(name, *, seed, dataset,
    **values)` returns its `AttackComponent`."""
    return Entry(name=name, build=build, params=dict(params, start=START, loss=LOSS),
                 help=help_text, aliases=aliases, kind=kind)


def bound(attack):
    """`attack(name, *, start, loss: LossForgery | None, **values)` as an entry's build
    (which also receives the run's seed and dataset, and `loss` as its spec text)."""
    def build(name, *, seed, dataset, loss, **values):
        del seed, dataset
        return attack(name, loss=parse_loss(loss), **values)
    return build


def finite(value) -> Optional[str]:
    return None if math.isfinite(value) else "must be finite"


def probability(value) -> Optional[str]:
    return None if 0.0 <= value <= 1.0 else "must be in [0, 1]"
