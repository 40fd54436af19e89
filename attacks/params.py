"""The parameters every attack entry takes, and `attack_entry`, which adds them; what `loss=`
means (`LossForgery`). No TensorFlow: the `--attack` entries are checked with the flags."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from tff_byz.registry import Entry, Param, non_negative

__all__ = ["START", "LOSS", "STATS", "LOSS_MODES", "LossForgery", "parse_loss", "check_loss",
           "attack_entry", "bound", "finite", "probability"]

LOSS_MODES = ("auto", "honest", "value:<x>", "mean_minus_rho_std:<rho>", "mean_plus_z_std:<z>")


@dataclasses.dataclass(frozen=True)
class LossForgery:
    """What loss a Byzantine client reports (used by FedLAW's weight step)."""
    mode: str  # "honest" | "value" | "mean_minus_rho_std" | "mean_plus_z_std"
    amount: float = 0.0

    @property
    def needs_server(self) -> bool:
        return self.mode in ("mean_minus_rho_std", "mean_plus_z_std")


def parse_loss(text: str) -> Optional[LossForgery]:
    """`auto` → None (the attack's own default), else a `LossForgery`; ValueError if bad."""
    mode, sep, amount = text.partition(":")
    if mode == "auto" and not sep:
        return None
    if mode == "honest" and not sep:
        return LossForgery("honest")
    if mode in ("value", "mean_minus_rho_std", "mean_plus_z_std") and sep:
        number = float(amount)
        if not math.isfinite(number):
            raise ValueError(f"loss amount must be finite; got {amount!r}")
        return LossForgery(mode, number)
    raise ValueError(f"valid forms: {', '.join(LOSS_MODES)}")


def check_loss(text: str) -> Optional[str]:
    try:
        parse_loss(text)
    except ValueError as error:
        return str(error)
    return None


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
