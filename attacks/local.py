"""Local attacks (attacks.md §3) as transforms of any `ClientWorkProcess`.

`build_attacked_client_work(honest, attacks, seed=...)` wraps an honest client
work: every client runs it unchanged, then each Byzantine client of attack group
g transforms its own result with the g-th attack once the round index reaches
the attack's `start`. Honest clients' results pass through a `tf.cond` branch
that returns them untouched, so they are bit-identical to the unattacked
process. Which clients are Byzantine is the client's `info`, read through the
process's `tff_byz.client_inputs`; the aggregator only ever sees the records.

A `LocalAttack` may
- `transform(record, weight, ctx) -> (record, weight)` the client record
  `OrderedDict(delta, client_id, num_examples, loss)` and its aggregation weight;
- `perturb_weights(trainable, ctx) -> noise`: the client trains from θ + ε
  instead of θ, and the wrapper reports Δ relative to the true θ (random_params);
- `ascent=True`: negate every mini-batch gradient (the local SGD client work is wrapped
  with `GradientAscent`; momentum SGD asks `StepAttacks`);
- `reads_update=False`: its message does not depend on the client's own training
  (Gaussian replacement, constants), so a client that keeps its own state may skip
  the local step (`StepAttacks.is_idle`).

Randomness: `ctx.seed` is `fold_in(client_seed(run seed, round, client id),
tag, attack index)`, so draws are reproducible and independent of the honest
shuffles. With `mark_groups=True` the records also carry `byzantine_group`
(−1 honest) for a colluding-attack wrapper (`attacks.colluding`), which strips
it before the defence sees the records.

`StepAttacks` is the same set of attacks for a process whose clients run one step
of their own inside its client computation (momentum SGD, `tff_byz.momentum`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz import client_inputs, rounds
from tff_byz.collection import build_measurement_merger
from tff_byz.client_work import client_seed, honest_training

__all__ = ["LocalAttack", "ScheduledAttack", "AttackContext", "build_attacked_client_work",
           "apply_record_attacks", "StepAttacks",
           "GradientAscent", "local_training", "attack_seed", "GROUP_KEY"]

GROUP_KEY = "byzantine_group"
_ATTACK_TAG = 0xA77AC


@dataclasses.dataclass(frozen=True)
class AttackContext:
    """What a Byzantine client knows when it attacks (all tensors)."""
    seed: Any      # int64[2], this client, round and attack
    round: Any     # int64 round index (0-based)
    weights: Any   # the received global model's trainable weights (list of tensors)


@dataclasses.dataclass(frozen=True)
class LocalAttack:
    name: str
    transform: Optional[Callable[..., Any]] = None
    perturb_weights: Optional[Callable[..., Any]] = None
    ascent: bool = False
    reads_update: bool = True


@dataclasses.dataclass(frozen=True)
class ScheduledAttack:
    """`attack` run by the clients of attack group `group` from round index `start` on."""
    group: int
    start: int
    attack: LocalAttack


def attack_seed(run_seed, round_num, client_id, index):
    """The seed of attack `index` for one client and round."""
    seed = client_seed(run_seed, round_num, client_id)
    seed = tf.random.experimental.stateless_fold_in(seed, tf.constant(_ATTACK_TAG, tf.int64))
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(index, tf.int64))


def _is_active(scheduled: ScheduledAttack, info, round_num):
    return tf.logical_and(tf.equal(info["attack_group"], scheduled.group),
                          tf.greater_equal(round_num, tf.cast(scheduled.start, tf.int64)))


def any_active(schedules: Sequence[Any], info, round_num):
    """bool: one of `schedules` (anything with `group` and `start`: scheduled local or
    colluding attacks) is the client's and has started."""
    flags = [_is_active(s, info, round_num) for s in schedules]
    return tf.reduce_any(tf.stack(flags)) if flags else tf.constant(False)


@dataclasses.dataclass(frozen=True)
class GradientAscent:
    """A `tff_byz.client_work.LocalTraining`: a client whose ascent attack is active negates
    every mini-batch gradient of its local training; every other client trains through
    `inner` unchanged (bit-identical to a process built without the attack)."""
    attacks: Sequence[ScheduledAttack]
    inner: Callable = honest_training

    def __call__(self, model, examples, round_info, train):
        ascending = any_active(self.attacks, examples.info, round_info["round"])

        def ascend(gradient_transform=None):
            def negate(gradients):
                if gradient_transform is not None:
                    gradients = gradient_transform(gradients)
                return [tf.where(ascending, -g, g) for g in gradients]
            return train(gradient_transform=negate)

        return self.inner(model, examples, round_info, ascend)


def local_training(attacks: Sequence[ScheduledAttack], inner: Callable = honest_training):
    """`inner` wrapped with the gradient ascent of `attacks` that ascend, if any."""
    ascending = tuple(a for a in attacks if a.attack.ascent)
    return GradientAscent(ascending, inner) if ascending else inner


def apply_record_attacks(attacks: Sequence[ScheduledAttack], record, weight, *, info, run_seed,
                         round_num, weights, mark_groups: bool = False):
    """One client's record and weight after its group's active `transform` attacks.

    Pure TF, for use inside a client computation: every attack whose group is
    the client's and whose start has come transforms `(record, weight)` inside
    a `tf.cond`, so honest clients pass through untouched. `weights` is the
    received global model's trainable weights (`AttackContext.weights`);
    attack k draws from `attack_seed(run_seed, round, client id, k)` (k its
    index in `attacks`). With `mark_groups` the record gains `GROUP_KEY`.
    Used by `build_attacked_client_work` and by processes whose uplink message
    is not a FedAvg delta (PDMM's y).
    """
    for index, scheduled in enumerate(attacks):
        if scheduled.attack.transform is None:
            continue
        ctx = AttackContext(seed=attack_seed(run_seed, round_num, info["client_id"], index),
                            round=round_num, weights=list(weights))
        active = _is_active(scheduled, info, round_num)
        record, weight = tf.cond(
            active,
            lambda s=scheduled, c=ctx, r=record, w=weight: s.attack.transform(r, w, c),
            lambda r=record, w=weight: (r, w))
    if mark_groups:
        record = collections.OrderedDict(record)
        record[GROUP_KEY] = info["attack_group"]
    return record, weight


@dataclasses.dataclass(frozen=True)
class StepAttacks:
    """The Byzantine clients' part of a client step that keeps its own state.

    For processes whose client computation runs the step itself (momentum SGD;
    the hooks `tff_byz.momentum.build_momentum_sgd_process(attacks=...)` calls):
    - `is_idle(info, round)`: True when the client's active attack replaces its message
      without reading it (`idle`: the colluding attacks that do not read their own
      vectors and the local `reads_update=False` ones); the client then skips its local
      step and keeps its state;
    - `ascends(info, round)`: True when the client's gradient is negated;
    - `message(record, info, run_seed, round, trainable)`: the record it sends, after
      its group's `transform` attacks (`apply_record_attacks`); the aggregation weight
      is not part of it;
    - `attacking(info, round)`: int32 1 when any attack of the client's group is active
      (`every` schedule, local or colluding), for the `attacked_clients` count.
    Honest clients get False and their record untouched (bit-identical). Attacks
    with `perturb_weights` define a model difference (ψ − θ) and have no place here.
    """
    attacks: tuple[ScheduledAttack, ...] = ()
    idle: tuple[Any, ...] = ()  # the schedules whose message ignores the client's vector
    every: tuple[Any, ...] = ()  # every schedule of the plan, local and colluding
    mark_groups: bool = False

    def is_idle(self, info, round_num):
        return any_active(self.idle, info, round_num)

    def attacking(self, info, round_num):
        return tf.cast(any_active(self.every, info, round_num), tf.int32)

    def ascends(self, info, round_num):
        return any_active([a for a in self.attacks if a.attack.ascent], info, round_num)

    def message(self, record, info, run_seed, round_num, trainable):
        record, _ = apply_record_attacks(
            self.attacks, record, tf.constant(1.0), info=info, run_seed=run_seed,
            round_num=round_num, weights=trainable, mark_groups=self.mark_groups)
        return record


def build_attacked_client_work(
    honest: tff.learning.templates.ClientWorkProcess,
    attacks: Sequence[ScheduledAttack],
    *,
    seed: int,
    mark_groups: bool = False,
    message: str = "delta",
    inputs: client_inputs.ClientInputs | None = None,
    colluding: Sequence[Any] = (),
) -> tff.learning.templates.ClientWorkProcess:
    """`honest` with the Byzantine clients' local attacks applied (module doc).

    State: `OrderedDict(inner=<honest state>, attack=OrderedDict(seed, round))`.
    Measurements: the honest work's, plus `attacked_clients` (Byzantine clients
    whose attack was active this round: the local `attacks` and the `colluding`
    schedules, anything with `group` and `start`, whose attack the aggregator
    wrapper carries out).

    `message="model"` makes the attacks corrupt the uploaded model θ + Δ_i
    instead of the delta Δ_i (the record still carries a delta: θ is added
    before and subtracted after the transforms), as when FedAvg is compared
    with PDMM, whose message is model-sized (pdmm.md §4).

    `inputs` must be how `honest` receives its clients (default `ByValue()`):
    the wrapper reads each client's `info` through it.
    """
    if message not in ("delta", "model"):
        raise ValueError(f"message must be delta or model; got {message!r}.")
    attacks = list(attacks)
    inputs = client_inputs.ByValue() if inputs is None else inputs
    inner_state_type = honest.initialize.type_signature.result.member
    weights_type = honest.next.type_signature.parameter[1].member
    data_type = honest.next.type_signature.parameter[2].member
    result_type = honest.next.type_signature.result.result.member
    counter = rounds.round_counter(seed)
    attack_state_type = rounds.ROUND_TYPE
    info_type = tff.types.tensorflow_to_type(client_inputs.INFO_SPEC)
    perturbing = [(k, a) for k, a in enumerate(attacks) if a.attack.perturb_weights is not None]

    @tff.tensorflow.computation(data_type)
    def read_info(data):
        return inputs.info(data)

    def context(attack_state, info, weights, index):
        return AttackContext(
            seed=attack_seed(attack_state["seed"], attack_state["round"], info["client_id"], index),
            round=attack_state["round"], weights=list(weights.trainable))

    @tff.tensorflow.computation(weights_type, info_type, attack_state_type)
    def perturb(weights, info, attack_state):
        @tf.function
        def run(weights, info, attack_state):
            trainable = list(weights.trainable)
            for index, scheduled in perturbing:
                ctx = context(attack_state, info, weights, index)
                active = _is_active(scheduled, info, attack_state["round"])
                trainable = tf.cond(
                    active,
                    lambda s=scheduled, c=ctx, t=trainable: [
                        w + e for w, e in zip(t, s.attack.perturb_weights(c.weights, c))],
                    lambda t=trainable: t)
            return tff.learning.models.ModelWeights(trainable=trainable,
                                                    non_trainable=list(weights.non_trainable))

        return run(weights, info, attack_state)

    @tff.tensorflow.computation(result_type, weights_type, info_type, attack_state_type)
    def transform(result, weights, info, attack_state):
        @tf.function
        def run(result, weights, info, attack_state):
            record = result.update
            if message == "model":
                record = collections.OrderedDict(record)
                record["delta"] = tf.nest.map_structure(tf.add, record["delta"],
                                                        list(weights.trainable))
            record, weight = apply_record_attacks(
                attacks, record, result.update_weight, info=info,
                run_seed=attack_state["seed"], round_num=attack_state["round"],
                weights=list(weights.trainable), mark_groups=mark_groups)
            if message == "model":
                record = collections.OrderedDict(record)
                record["delta"] = tf.nest.map_structure(tf.subtract, record["delta"],
                                                        list(weights.trainable))
            return tff.learning.templates.ClientResult(update=record, update_weight=weight)

        return run(result, weights, info, attack_state)

    @tff.tensorflow.computation(info_type, attack_state_type)
    def is_attacking(info, attack_state):
        return tf.cast(any_active([*attacks, *colluding], info, attack_state["round"]), tf.int32)

    inner_measurements_type = honest.next.type_signature.result.measurements.member

    merge = build_measurement_merger(inner_measurements_type, "attacked_clients", np.int32)

    @tff.federated_computation
    def init_fn():
        return tff.federated_zip(collections.OrderedDict(
            inner=honest.initialize(), attack=tff.federated_eval(counter.initial, tff.SERVER)))

    @tff.federated_computation(
        tff.FederatedType(tff.StructWithPythonType(
            [("inner", inner_state_type), ("attack", attack_state_type)], collections.OrderedDict),
            tff.SERVER),
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS))
    def next_fn(state, weights, client_data):
        info = tff.federated_map(read_info, client_data)
        attack_state = tff.federated_broadcast(state.attack)
        trained_from = weights
        if perturbing:
            trained_from = tff.federated_map(perturb, (weights, info, attack_state))
        output = honest.next(state.inner, trained_from, client_data)
        results = tff.federated_map(transform, (output.result, weights, info, attack_state))
        count = tff.federated_sum(tff.federated_map(is_attacking, (info, attack_state)))
        new_state = tff.federated_zip(collections.OrderedDict(
            inner=output.state, attack=tff.federated_map(counter.advance, state.attack)))
        return tff.templates.MeasuredProcessOutput(
            state=new_state, result=results,
            measurements=tff.federated_map(merge, (output.measurements, count)))

    return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
