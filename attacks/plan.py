"""An attack spec resolved into what each part of the run needs.

`--attack=a+b` runs attack `a` on the first part of the Byzantine set and `b`
on the second (`attacks.selection.split_groups`); `double` is the FedLAW paper's
preset of two such parts. Each component may act on three places (attacks.md
§0): the Byzantine clients' training data (`poison`), their own client work
(`local`, a `attacks.local.LocalAttack`), and the server-side simulation of
collusion (`collusion`, a `attacks.colluding.Collusion`, which also forges
reported losses from honest statistics). `AttackPlan` wires all of them into a
run: the client work, the aggregator wrapper and the poisoned client data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from attacks.colluding import Collusion, CollusionFactory, ScheduledCollusion
from attacks.local import (LocalAttack, ScheduledAttack, StepAttacks, build_attacked_client_work,
                           local_training as wrap_local_training)
from tff_byz.client_work import client_seed, honest_training

__all__ = ["AttackComponent", "AttackPlan", "Backdoor"]

_POISON_TAG = 0xDA7A  # separates the poisoning draws from every other seeded stream


@dataclasses.dataclass(frozen=True)
class Backdoor:
    """How triggered test images are made and scored (attack success rate)."""
    stamp: Callable[[np.ndarray], np.ndarray]  # test images → triggered copies
    target: Optional[int]  # fixed target label, or None for random targets


@dataclasses.dataclass(frozen=True)
class AttackComponent:
    name: str  # canonical spec of the component, e.g. "lie:z=baruch,stats=honest"
    start: int = 0
    local: Optional[LocalAttack] = None
    collusion: Optional[Collusion] = None
    # poison(x, y, positions, num_examples, seed, num_classes) -> (x, y): a Byzantine client's
    # rows (at client-local `positions`) after data poisoning; pure TF, per example.
    poison: Optional[Callable[..., Any]] = None
    backdoor: Optional[Backdoor] = None
    # check(n, m) raises ValueError when the attack is undefined for n clients, m Byzantine.
    check: Optional[Callable[[int, int], None]] = None


@dataclasses.dataclass(frozen=True)
class AttackPlan:
    components: tuple[AttackComponent, ...] = ()

    @property
    def num_groups(self) -> int:
        return max(len(self.components), 1)

    @property
    def is_noop(self) -> bool:
        return all(c.local is None and c.collusion is None and c.poison is None
                   for c in self.components)

    @property
    def local_attacks(self) -> list[ScheduledAttack]:
        return [ScheduledAttack(g, c.start, c.local) for g, c in enumerate(self.components)
                if c.local is not None]

    @property
    def collusions(self) -> list[ScheduledCollusion]:
        return [ScheduledCollusion(g, c.start, c.collusion) for g, c in enumerate(self.components)
                if c.collusion is not None]

    @property
    def backdoor(self) -> Optional[Backdoor]:
        doors = [c.backdoor for c in self.components if c.backdoor is not None]
        return doors[0] if doors else None

    def local_training(self, inner=honest_training):
        """The `training=` of `build_local_sgd_client_work`: `inner` wrapped with the plan's
        gradient-ascent attacks (`inner` itself when there are none)."""
        return wrap_local_training(self.local_attacks, inner)

    def client_work(self, honest, *, seed: int, message: str = "delta", inputs=None):
        """`honest` wrapped with the local attacks (unchanged when there are none);
        `message="model"`: they corrupt the uploaded model θ + Δ instead of Δ. `inputs`:
        how `honest` receives its clients (`tff_byz.client_inputs`)."""
        transforms = [a for a in self.local_attacks
                      if a.attack.transform is not None or a.attack.perturb_weights is not None]
        if not transforms and not self.collusions:
            return honest
        return build_attacked_client_work(honest, transforms, seed=seed,
                                          mark_groups=bool(self.collusions), message=message,
                                          inputs=inputs, colluding=self.collusions)

    def step_attacks(self) -> Optional[StepAttacks]:
        """The plan's attacks inside a client step that keeps its own state (momentum SGD),
        or None when nothing acts there. The colluding wrapper (`aggregator`) still
        replaces the marked records."""
        local = self.local_attacks
        attacks = tuple(a for a in local if a.attack.transform is not None or a.attack.ascent)
        if not attacks and not self.collusions:
            return None
        idle = tuple(c for c in self.collusions
                     if c.collusion.replaces_update and not c.collusion.reads_own) + tuple(
            a for a in attacks if a.attack.transform is not None and not a.attack.reads_update)
        return StepAttacks(attacks, idle=idle, every=(*local, *self.collusions),
                           mark_groups=bool(self.collusions))

    def aggregator(self, inner, *, seed: int):
        """`inner` wrapped with the colluding attacks (unchanged when there are none)."""
        if not self.collusions:
            return inner
        return CollusionFactory(inner, self.collusions, seed=seed)

    def data_poisoning(self, *, seed: int, num_classes: int):
        """The `tff_byz.client_inputs.Poison` of the run's data-poisoning components, or None.

        A client of attack group g reads its rows poisoned by the g-th component
        from that component's `start` round on (clean before); honest clients'
        rows pass through untouched. The poisoned set is fixed for the run: each
        client's draws come from (run seed, client id) only.
        """
        poisoners = [(g, c.start, c.poison) for g, c in enumerate(self.components)
                     if c.poison is not None]
        if not poisoners:
            return None

        def poison(x, y, positions, num_examples, info, round_num):
            client = tf.random.experimental.stateless_fold_in(
                client_seed(seed, 0, info["client_id"]), tf.constant(_POISON_TAG, tf.int64))
            for group, start, component in poisoners:
                active = tf.logical_and(tf.equal(info["attack_group"], group),
                                        tf.greater_equal(round_num, tf.cast(start, tf.int64)))
                x, y = tf.cond(
                    active,
                    lambda c=component, x=x, y=y: c(x, y, positions, num_examples, client,
                                                    num_classes),
                    lambda x=x, y=y: (x, y))
            return x, y

        return poison

    def check(self, clients_per_round: int, byzantine_per_round: int) -> None:
        """Raises ValueError when an attack is undefined for the run's n and m."""
        for component in self.components:
            if component.check is not None:
                try:
                    component.check(clients_per_round, byzantine_per_round)
                except ValueError as error:
                    raise ValueError(f"--attack: {component.name}: {error}") from None
