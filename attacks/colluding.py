"""Colluding and omniscient attacks (attacks.md §4) as aggregation-factory wrappers.

`CollusionFactory(inner, collusions, seed=...)` is a client-record factory for
records that carry `byzantine_group` (added by `attacks.local`'s wrapper with
`mark_groups=True`). Each round it

1. stacks every client's delta and reported loss with its group and id
   (`tff_byz.collection`, sorted by client id: order never matters);
2. at the server, for each colluding attack g active this round, computes the
   one vector every Byzantine client of group g sends (and/or the loss it
   reports) from the reference set (honest rows, or the group's own rows with
   `stats=byzantine`);
3. broadcasts those messages; each Byzantine client of group g replaces its
   record's delta (and loss), every other record passes through untouched;
4. strips `byzantine_group` and calls the inner defence, which never learns who
   is Byzantine.

The wrapper only simulates what colluders know; it is not part of the defence.
A `Collusion` supplies `compute(values, honest, own, client_ids, losses, seed,
state) -> (vector [D], forged loss, new state, measurements)` in pure TF, where
`values` are the stacked deltas `[n, D]`, `honest`/`own` boolean row masks and
`state` an int32 scalar it may keep across rounds (mimic's target).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.collection import build_record_stack
from attacks.local import GROUP_KEY
from tff_byz.collection import (ClientRecordAggregationFactory, build_measurement_merger,
                                  build_update_aggregator)
from tff_byz.errors import ConfigError

__all__ = ["Collusion", "ScheduledCollusion", "CollusionFactory"]


@dataclasses.dataclass(frozen=True)
class Collusion:
    """A server-side attack: `compute` (module doc); `replaces_update`/`forges_loss`
    say which parts of the Byzantine records the messages overwrite; `reads_own` whether
    the message depends on the Byzantine clients' own vectors (when it does not, a
    client that keeps its own state may skip its local step); `uses_defence` that
    `compute` also takes `defence=`, the wrapped rule as a function of the stacked
    rows (adaptive attacks, `attacks.adaptive`)."""
    name: str
    compute: Callable[..., Any]
    replaces_update: bool = True
    forges_loss: bool = False
    reads_own: bool = True
    uses_defence: bool = False
    measurement_names: Sequence[str] = ()


@dataclasses.dataclass(frozen=True)
class ScheduledCollusion:
    group: int
    start: int
    collusion: Collusion


def _strip_group(record_type):
    return tff.StructWithPythonType(
        [(name, t) for name, t in tff.structure.iter_elements(record_type) if name != GROUP_KEY],
        collections.OrderedDict)


class CollusionFactory(ClientRecordAggregationFactory):
    """Wraps any aggregation factory with colluding attacks (module doc)."""

    def __init__(self, inner, collusions: Sequence[ScheduledCollusion], *, seed: int = 0):
        if not collusions:
            raise ValueError("CollusionFactory needs at least one colluding attack.")
        self._inner = inner
        self._collusions = list(collusions)
        self._seed = int(seed)

    def create(self, record_type, weight_type):
        record_type = tff.to_type(record_type)
        names = [name for name, _ in tff.structure.iter_elements(record_type)]
        if GROUP_KEY not in names:
            raise TypeError(f"CollusionFactory needs records with {GROUP_KEY!r} (build the client "
                            "work with attacks.local.build_attacked_client_work(mark_groups=True)).")
        clean_type = _strip_group(record_type)
        inner = build_update_aggregator(self._inner, clean_type, weight_type)
        records_stack = build_record_stack(record_type, tff.TensorType(np.float32))
        delta_flattener, delta_like = records_stack.delta_flattener, records_stack.delta_like
        num_groups = len(self._collusions)
        collusions = self._collusions
        seed = self._seed
        adaptive = [c for c in collusions if c.collusion.uses_defence]
        simulate = getattr(self._inner, "simulate", None)
        if adaptive and simulate is None:
            raise ConfigError(
                f"--attack: {adaptive[0].collusion.name} searches against the defence, which "
                f"must be a stacked rule or mean; {type(self._inner).__name__} is neither.")
        inner_state_type = inner.initialize.type_signature.result.member

        @tff.tensorflow.computation(record_type)
        def group_weight(record):
            return tf.cast(record[GROUP_KEY] + 1, tf.float32)

        @tff.tensorflow.computation
        def attack_init():
            return collections.OrderedDict(round=tf.constant(0, tf.int64),
                                           memory=tf.fill([num_groups], tf.constant(-1, tf.int32)))

        attack_state_type = attack_init.type_signature.result
        stacked_type = records_stack.stacked_type

        def defence_of(ids, inner_state):
            """The wrapped rule as a function of the stacked rows (non-finite ones dropped)."""
            def defence(values):
                finite = tf.reduce_all(tf.math.is_finite(values), axis=1)
                return simulate(tf.boolean_mask(values, finite), tf.boolean_mask(ids, finite),
                                inner_state)
            return defence

        def attack(attack_state, stacked, inner_state):
            @tf.function
            def run(attack_state, stacked):
                groups = tf.cast(tf.round(stacked["weights"]), tf.int32) - 1
                ids = stacked["client_ids"]
                values, losses = records_stack.split(stacked["values"])
                honest = tf.less(groups, 0)
                vectors, losses_out, actives, memory, measurements = [], [], [], [], []
                for g, scheduled in enumerate(collusions):
                    own = tf.equal(groups, scheduled.group)
                    run_seed = tf.random.experimental.stateless_fold_in(
                        tf.stack([tf.constant(seed, tf.int64), attack_state["round"]]),
                        tf.constant(g, tf.int64))
                    active = tf.logical_and(
                        tf.greater_equal(attack_state["round"], tf.cast(scheduled.start, tf.int64)),
                        tf.reduce_any(own))
                    extra = ({"defence": defence_of(ids, inner_state)}
                             if scheduled.collusion.uses_defence else {})
                    vector, loss, new_memory, named = scheduled.collusion.compute(
                        values, honest, own, ids, losses, run_seed, attack_state["memory"][g],
                        **extra)
                    vectors.append(tf.where(active, vector, tf.zeros_like(vector)))
                    losses_out.append(tf.where(active, loss, 0.0))
                    actives.append(active)
                    memory.append(tf.where(active, new_memory, attack_state["memory"][g]))
                    entry = collections.OrderedDict(active=tf.cast(active, tf.int32))
                    entry.update(named)
                    measurements.append((scheduled.collusion.name.split(":")[0], entry))
                messages = collections.OrderedDict(
                    vectors=tf.stack(vectors), losses=tf.stack(losses_out),
                    active=tf.stack(actives))
                return collections.OrderedDict(
                    state=collections.OrderedDict(round=attack_state["round"] + 1,
                                                  memory=tf.stack(memory)),
                    messages=messages,
                    measurements=collections.OrderedDict(
                        (f"{name}_{g}" if num_groups > 1 else name, m)
                        for g, (name, m) in enumerate(measurements)))

            return run(attack_state, stacked)

        if adaptive:
            server_attack = tff.tensorflow.computation(
                attack, attack_state_type, stacked_type, inner_state_type)
        else:
            server_attack = tff.tensorflow.computation(
                lambda attack_state, stacked: attack(attack_state, stacked, None),
                attack_state_type, stacked_type)

        messages_type = server_attack.type_signature.result["messages"]

        @tff.tensorflow.computation(record_type, messages_type)
        def apply_messages(record, messages):
            group = record[GROUP_KEY]
            clean = collections.OrderedDict(
                (k, v) for k, v in record.items() if k != GROUP_KEY)
            for g, scheduled in enumerate(collusions):
                replace = tf.logical_and(tf.equal(group, scheduled.group), messages["active"][g])
                if scheduled.collusion.replaces_update:
                    forged = delta_flattener.unflatten(messages["vectors"][g], delta_like)
                    clean["delta"] = tf.nest.map_structure(
                        lambda f, d, r=replace: tf.where(r, f, d), forged, clean["delta"])
                if scheduled.collusion.forges_loss:
                    clean["loss"] = tf.where(replace, messages["losses"][g], clean["loss"])
            return clean

        inner_measurements_type = inner.next.type_signature.result.measurements.member
        attack_measurements_type = server_attack.type_signature.result["measurements"]

        merge = build_measurement_merger(inner_measurements_type, "attack",
                                         attack_measurements_type)

        state_type = tff.StructWithPythonType(
            [("inner", inner.initialize.type_signature.result.member),
             ("attack", attack_state_type)], collections.OrderedDict)

        @tff.federated_computation
        def init_fn():
            return tff.federated_zip(collections.OrderedDict(
                inner=inner.initialize(), attack=tff.federated_eval(attack_init, tff.SERVER)))

        @tff.federated_computation(
            tff.FederatedType(state_type, tff.SERVER),
            tff.FederatedType(record_type, tff.CLIENTS),
            tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, records, weights):
            stacked = records_stack.stack(records, tff.federated_map(group_weight, records))
            arguments = (state.attack, stacked, state.inner) if adaptive else (state.attack, stacked)
            attack = tff.federated_map(server_attack, arguments)
            messages = tff.federated_broadcast(attack.messages)
            clean = tff.federated_map(apply_messages, (records, messages))
            output = inner.next(state.inner, clean, weights)
            new_state = tff.federated_zip(collections.OrderedDict(
                inner=output.state, attack=attack.state))
            return tff.templates.MeasuredProcessOutput(
                new_state, output.result,
                tff.federated_map(merge, (output.measurements, attack.measurements)))

        return tff.templates.AggregationProcess(init_fn, next_fn)
