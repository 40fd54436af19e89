"""Who is Byzantine: chosen once per run from the seed (attacks.md §1).

- `random`: m = round(f·n) client indices uniformly without replacement;
- `label_groups` (FedLAW paper): round(f·L) of the L label groups of a q split,
  every client of a chosen group is Byzantine (f = 0.4, n = 200: 4 groups, 80
  clients); the actual fraction is whatever those groups hold;
- `ids:3,17,...`: explicit client indices.

Several attacks share the Byzantine set on disjoint parts (the FedLAW paper's
"double" attack): `split_groups` shuffles B with the seed and cuts it into
contiguous parts, the first ones one larger (⌈m/2⌉ first for two halves). Each
client then carries an attack group: −1 honest, g ≥ 0 Byzantine in part g.
Defences never see any of this; they are told the *declared* fraction only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

__all__ = ["SELECTIONS", "ByzantineSelection", "SelectionError", "parse_selection",
           "select_byzantine", "split_groups"]

SELECTIONS = ("random", "label_groups", "ids:<i,j,...>")
_SELECTION_TAG = 0xB12A  # keeps this stream apart from other uses of the run seed
_SPLIT_TAG = 0x5B17


class SelectionError(ValueError):
    """A bad `--byzantine_selection` (CLI: exit 2)."""


@dataclasses.dataclass(frozen=True)
class ByzantineSelection:
    """The run's Byzantine clients and their attack groups."""
    groups: np.ndarray  # int32 [num_clients]: −1 honest, g >= 0 the attack group

    @property
    def byzantine(self) -> np.ndarray:
        return self.groups >= 0

    @property
    def ids(self) -> list[int]:
        return np.flatnonzero(self.byzantine).tolist()

    @property
    def actual_fraction(self) -> float:
        return float(np.mean(self.byzantine)) if len(self.groups) else 0.0


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5 + 1e-9))


def parse_selection(text: str) -> tuple[str, Optional[list[int]]]:
    """`random` | `label_groups` | `ids:3,17` → (kind, ids or None)."""
    kind, sep, rest = str(text).strip().partition(":")
    if kind in ("random", "label_groups") and not sep:
        return kind, None
    if kind == "ids" and sep:
        try:
            ids = [int(item) for item in rest.split(",") if item.strip()]
        except ValueError:
            raise SelectionError(f"--byzantine_selection={text!r}: ids must be integers, "
                                 "e.g. ids:3,17.") from None
        if not ids:
            raise SelectionError(f"--byzantine_selection={text!r}: no ids given, e.g. ids:3,17.")
        if len(set(ids)) != len(ids):
            raise SelectionError(f"--byzantine_selection={text!r}: an id is repeated.")
        return kind, ids
    raise SelectionError(f"--byzantine_selection: invalid value {text!r}; valid choices: "
                         f"{', '.join(SELECTIONS)}.")


def select_byzantine(num_clients: int, fraction: float, selection: str, seed: int,
                     client_groups: Optional[np.ndarray] = None) -> np.ndarray:
    """Boolean mask `[num_clients]` of the Byzantine clients."""
    kind, ids = parse_selection(selection)
    mask = np.zeros(num_clients, dtype=bool)
    rng = np.random.default_rng([seed, _SELECTION_TAG])
    if kind == "ids":
        bad = [i for i in ids if not 0 <= i < num_clients]
        if bad:
            raise SelectionError(f"--byzantine_selection: client ids {bad} out of range "
                                 f"[0, {num_clients}).")
        mask[ids] = True
    elif kind == "random":
        count = _round_half_up(fraction * num_clients)
        mask[rng.choice(num_clients, size=count, replace=False)] = True
    else:
        if client_groups is None:
            raise SelectionError("--byzantine_selection=label_groups needs a label-group split "
                                 "(--partition=q); this partition has no label groups.")
        labels = np.unique(client_groups)
        count = _round_half_up(fraction * len(labels))
        chosen = rng.choice(labels, size=count, replace=False)
        mask[np.isin(client_groups, chosen)] = True
    return mask


def split_groups(byzantine: np.ndarray, num_groups: int, seed: int) -> ByzantineSelection:
    """Attack groups: a seeded shuffle of B cut into `num_groups` parts (larger first)."""
    groups = np.full(len(byzantine), -1, dtype=np.int32)
    members = np.flatnonzero(byzantine)
    if num_groups <= 1:
        groups[members] = 0
        return ByzantineSelection(groups)
    shuffled = np.random.default_rng([seed, _SPLIT_TAG]).permutation(members)
    for group, part in enumerate(np.array_split(shuffled, num_groups)):
        groups[part] = group
    return ByzantineSelection(groups)
