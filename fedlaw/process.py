"""FedLAW (arXiv 2511.03529) as TFF computations: learning rounds and frozen rounds.

A learning round (fedlaw.md §4) is one federated computation:

    broadcast θ_k → client work (pass A) → stacked (Δ_i, f_i, id) at the server
    θ̃ = θ_k + Σ ŵ_i Δ_i → broadcast θ̃ and ŵ → client work (pass B) →
        Z = Σ_j ŵ_j Δ̃_j and f̃ by id, summed (streamed: pass B is never stacked)
    h_i = ŵ_i + (β/α)⟨Δ_i, Z⟩ − β f̃_i   (= w + αβ Gᵀz − β f̃ with g = −Δ/α)
    w ← Proj_Δ(h; s_k, t);  θ_{k+1} = θ_k + Σ w_i Δ_i  (new weights, pass-A deltas)

Both passes run the same (possibly attacked) client work from the same client
work state, so Byzantine clients act in both with the same round index. Pass A
is collected by a `StackedRecordsFactory` (G must be kept: ⟨Δ_i, Z⟩ and the θ
step), pass B by a `LookAheadPassFactory` (only Z and the losses); each is
wrapped by the attack plan, so colluding attacks use the statistics of the pass
they attack. The `clip` ablation needs every pass-B norm before Z, so with it
pass B is stacked too (a second transient `[n, D]` matrix). After
`freeze` rounds (if set), rounds are single-pass and aggregate with
`LearnedWeightsFactory` (no stacking). The weights w are a float64 vector over
all N client ids in the server state: they survive checkpoints, and partial
participation follows §9 (the round's participants' weights renormalised, s and
t scaled, written back with the participants' old mass).

Clients whose pass-A or pass-B delta or loss is non-finite get h = −∞ and their
rows count as zero: they end with weight 0 whenever enough finite clients
remain (reported as `non_finite_clients`). The look-ahead θ̃ renormalises ŵ over
the clients finite in pass A (the model the round makes puts all its weight on
finite clients); the weight step's z = Σ ŵ_j Δ̃_j keeps ŵ as it is (the paper
does not define a round with non-finite clients). The `clip` median and the
`loss_filter` statistics run over the finite clients only. With fewer than
⌈1/t⌉ finite clients no weight vector on them satisfies the cap; the round then
keeps the learned weights and does not move the model (`weights_kept` = 1; a
project choice, the paper does not say).

`FedLAWProcess` is a small Python object (`initialize`, `next(state, inputs)`,
`get_model_weights`) that dispatches each round to the learning or the frozen
computation by the round index stored in the state.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.collection import StackedRecordsFactory
from fedlaw import math as fedlaw_math
from fedlaw.learned_weights import LearnedWeightsFactory
from fedlaw.look_ahead_pass import LookAheadPassFactory
from tff_byz import client_inputs, fedavg
from tff_byz.collection import build_update_aggregator

__all__ = ["FedLAWOptions", "FedLAWSchedule", "FedLAWProcess", "build_fedlaw_process"]

FLAG_THRESHOLD = 1e-4  # §7: a client is flagged iff w_i <= 1e-4


@dataclasses.dataclass(frozen=True)
class FedLAWOptions:
    """The `--aggregator=fedlaw:...` parameters (fedlaw.md §6); None = the spec's default."""
    beta: float = 1e-3
    s_start: Optional[int] = None
    s_end: Optional[int] = None
    cap: Optional[float] = None
    freeze: Optional[int] = None
    weight_step: str = "full"
    clip: bool = False
    loss_filter: bool = False
    loss: str = "last_epoch"  # the reported loss (§3): last_epoch | start | end
    f: Optional[int] = None  # declared Byzantine count (default ⌈declared fraction · N⌉)


@dataclasses.dataclass(frozen=True)
class FedLAWSchedule:
    """Resolved, validated sparsity schedule and cap for N clients and T rounds."""
    num_clients: int
    s_final: int
    s_start: int
    s_end: int
    cap: float
    freeze: Optional[int]

    @classmethod
    def resolve(cls, options: FedLAWOptions, *, num_clients: int, rounds: int,
                declared_fraction: float) -> "FedLAWSchedule":
        n = num_clients
        if options.f is not None:
            if not 0 <= options.f < n:
                raise ValueError(f"fedlaw: f={options.f} must be in [0, {n}) for n={n} clients.")
            s_final = n - options.f
        else:
            s_final = fedlaw_math.s_final(n, declared_fraction)
        explicit = options.s_start is not None or options.s_end is not None
        if options.freeze is not None and not explicit:
            s_start = s_end = 0  # frozen after K: s fixed at s_final (§6)
        else:
            s_start = round(0.04 * rounds) if options.s_start is None else options.s_start
            s_end = round(0.5 * rounds) if options.s_end is None else options.s_end
        if s_end < s_start:
            raise ValueError(f"fedlaw: s_end={s_end} must be >= s_start={s_start}.")
        if options.freeze is not None and explicit and s_end > options.freeze:
            raise ValueError(f"fedlaw: the sparsity schedule must end by the freeze round: "
                             f"s_end={s_end} > freeze={options.freeze}.")
        cap = fedlaw_math.default_cap(n, s_final) if options.cap is None else float(options.cap)
        if not 0.0 < cap <= 1.0:
            raise ValueError(f"fedlaw: cap={cap} must be in (0, 1].")
        fedlaw_math.check_feasible(s_final, cap)
        return cls(n, s_final, s_start, s_end, cap, options.freeze)

    def learning(self, round_index: int) -> bool:
        return self.freeze is None or round_index < self.freeze


class FedLAWOutput(collections.namedtuple("FedLAWOutput", ["state", "metrics"])):
    pass


class FedLAWProcess:
    """`initialize()`, `next(state, client_inputs)`, `get_model_weights(state)`; see module doc."""

    def __init__(self, initialize_fn, learning_next, frozen_next, schedule: FedLAWSchedule,
                 frozen_weights_path: Callable):
        self._initialize = initialize_fn
        self.learning_next = learning_next
        self.frozen_next = frozen_next
        self.schedule = schedule
        self._frozen_weights_path = frozen_weights_path

    def initialize(self):
        return self._initialize()

    def next(self, state, client_inputs) -> FedLAWOutput:
        round_index = int(state["server"]["round"])
        if self.schedule.learning(round_index):
            state, metrics = self.learning_next(state, client_inputs)
        else:
            # The frozen aggregator aggregates with the weights learned so far.
            state = _copy_state(state)
            self._frozen_weights_path(state["frozen"])["weights"] = np.asarray(
                state["server"]["weights"], np.float64)
            state, metrics = self.frozen_next(state, client_inputs)
        return FedLAWOutput(state, metrics)

    @staticmethod
    def get_model_weights(state) -> tff.learning.models.ModelWeights:
        model = state["server"]["model"]
        return tff.learning.models.ModelWeights(trainable=list(model.trainable),
                                                non_trainable=list(model.non_trainable))

    @staticmethod
    def client_weights(state) -> np.ndarray:
        return np.asarray(state["server"]["weights"], np.float64)


def _copy_state(state):
    if isinstance(state, dict):
        return collections.OrderedDict((k, _copy_state(v)) for k, v in state.items())
    return state


def build_fedlaw_process(model_fn, initial_weights, client_work, *, options: FedLAWOptions,
                         num_clients: int, rounds: int, declared_fraction: float, alpha: float,
                         wrap_collector: Callable = lambda factory: factory,
                         inputs: Optional[client_inputs.ClientInputs] = None) -> FedLAWProcess:
    """FedLAW around any `client_work` producing client records (module doc).

    `alpha` is the client learning rate (the spec's α, also the server step);
    `wrap_collector(factory)` wraps each pass's collection and the frozen
    aggregator (the attack plan's colluding attacks). `inputs`: how
    `client_work` receives its clients (`tff_byz.client_inputs`, default
    `ByValue()`); `next` then takes what it says per client.
    """
    inputs = client_inputs.ByValue() if inputs is None else inputs
    schedule = FedLAWSchedule.resolve(options, num_clients=num_clients, rounds=rounds,
                                      declared_fraction=declared_fraction)
    if options.weight_step not in ("full", "bsum"):
        raise ValueError(f"fedlaw: weight_step={options.weight_step!r}; valid: full, bsum.")
    if not options.beta > 0 or not math.isfinite(options.beta):
        raise ValueError(f"fedlaw: beta={options.beta} must be a finite number > 0.")
    n_all = num_clients
    init_weights = fedavg.initial_weights_fn(initial_weights)
    record_type = client_work.next.type_signature.result.result.member.update
    weight_type = client_work.next.type_signature.result.result.member.update_weight
    data_type = client_work.next.type_signature.parameter[2].member
    collect_a = build_update_aggregator(wrap_collector(StackedRecordsFactory()), record_type,
                                        weight_type)
    # Pass B is streamed (z and the losses summed, never stacked) unless the `clip` ablation
    # needs every pass-B norm first.
    stack_b = options.clip
    if stack_b:
        collect_b = build_update_aggregator(wrap_collector(StackedRecordsFactory()), record_type,
                                            weight_type)
    else:
        collect_b = build_update_aggregator(wrap_collector(LookAheadPassFactory(n_all)),
                                            record_type, np.float64)
    uniform = np.full(n_all, 1.0 / n_all)
    frozen_factory = wrap_collector(LearnedWeightsFactory(uniform))
    frozen = build_update_aggregator(frozen_factory, record_type, weight_type)
    wrapped = not isinstance(frozen_factory, LearnedWeightsFactory)
    stacked_type = collect_a.next.type_signature.result.result.member
    pass_b_type = collect_b.next.type_signature.result.result.member
    server_init = _build_server_init(init_weights, uniform)
    server_type = server_init.type_signature.result
    look_ahead = _build_look_ahead(server_type, stacked_type, n_all=n_all, clip=options.clip)
    server_step = _build_server_step(server_type, stacked_type, pass_b_type, options=options,
                                     schedule=schedule, alpha=alpha, n_all=n_all,
                                     stack_b=stack_b)
    frozen_step = _build_frozen_step(server_type, frozen.next.type_signature.result.result.member)

    @tff.tensorflow.computation(server_type)
    def model_of(server):
        return server["model"]

    @tff.federated_computation
    def init_fn():
        return tff.federated_zip(collections.OrderedDict(
            server=tff.federated_eval(server_init, tff.SERVER),
            client_work=client_work.initialize(),
            collect_a=collect_a.initialize(), collect_b=collect_b.initialize(),
            frozen=frozen.initialize()))

    state_type = init_fn.type_signature.result

    @tff.tensorflow.computation(record_type, tff.TensorType(np.float64, [n_all]))
    def weight_of_client(record, weights):
        return tf.gather(weights, record["client_id"])

    def run_pass(state, model, client_data, collector, collector_state, weights_by_id=None):
        out = client_work.next(state.client_work, tff.federated_broadcast(model), client_data)
        if weights_by_id is None:
            weights = out.result.update_weight
        else:
            weights = tff.federated_map(weight_of_client, (
                out.result.update, tff.federated_broadcast(weights_by_id)))
        collected = collector.next(collector_state, out.result.update, weights)
        return out, collected

    @tff.federated_computation(state_type, tff.FederatedType(data_type, tff.CLIENTS))
    def learning_next(state, client_data):
        model = tff.federated_map(model_of, state.server)
        out_a, collected_a = run_pass(state, model, client_data, collect_a, state.collect_a)
        look = tff.federated_map(look_ahead, (state.server, collected_a.result))
        out_b, collected_b = run_pass(state, look[0], client_data, collect_b, state.collect_b,
                                      None if stack_b else look[1])
        stepped = tff.federated_map(server_step, (state.server, collected_a.result,
                                                  collected_b.result))
        new_state = tff.federated_zip(collections.OrderedDict(
            server=stepped[0], client_work=out_a.state, collect_a=collected_a.state,
            collect_b=collected_b.state, frozen=state.frozen))
        metrics = tff.federated_zip(collections.OrderedDict(
            client_work=out_a.measurements, fedlaw=stepped[1],
            aggregator=collected_a.measurements))
        return new_state, metrics

    @tff.federated_computation(state_type, tff.FederatedType(data_type, tff.CLIENTS))
    def frozen_next(state, client_data):
        model = tff.federated_map(model_of, state.server)
        out, aggregated = run_pass(state, model, client_data, frozen, state.frozen)
        server = tff.federated_map(frozen_step, (state.server, aggregated.result))
        new_state = tff.federated_zip(collections.OrderedDict(
            server=server, client_work=out.state, collect_a=state.collect_a,
            collect_b=state.collect_b, frozen=aggregated.state))
        metrics = tff.federated_zip(collections.OrderedDict(
            client_work=out.measurements, fedlaw_frozen=aggregated.measurements))
        return new_state, metrics

    def frozen_weights_path(frozen_state):
        return frozen_state["inner"] if wrapped else frozen_state

    return FedLAWProcess(init_fn, inputs.compose(learning_next), inputs.compose(frozen_next),
                         schedule, frozen_weights_path)


def _add_to_model(model, vector):
    """`model` with the flat `vector` added to its trainable weights, leaf by leaf."""
    sizes = [int(np.prod(t.shape)) for t in model.trainable]
    parts = tf.split(vector, sizes) if len(sizes) > 1 else [vector]
    trainable = [t + tf.reshape(p, tf.shape(t)) for t, p in zip(model.trainable, parts)]
    return tff.learning.models.ModelWeights(trainable=trainable,
                                            non_trainable=list(model.non_trainable))


def _finite_rows(deltas, losses):
    return tf.logical_and(tf.reduce_all(tf.math.is_finite(deltas), axis=1),
                          tf.math.is_finite(losses))


def _zero_rows(deltas, keep):
    return tf.where(keep[:, tf.newaxis], deltas, tf.zeros_like(deltas))


def _streamed_pass_b(ids, pass_b):
    """(finite [m], losses [m], z) of a streamed pass B, in pass A's row order."""
    present = tf.gather(pass_b["present"], ids)
    checks = [tf.debugging.assert_equal(
        present, tf.ones_like(present),
        message="FedLAW: passes A and B saw different clients"),
        tf.debugging.assert_equal(tf.reduce_sum(pass_b["present"]),
                                  tf.cast(tf.size(ids), tf.float64),
                                  message="FedLAW: passes A and B saw different clients")]
    with tf.control_dependencies(checks):
        finite = tf.gather(pass_b["finite"], ids) > 0.5
    return finite, tf.gather(pass_b["losses"], ids), pass_b["z"]


def _build_server_init(init_weights, uniform):
    """The server state: the initial model, uniform weights, learning-round counter 0."""

    @tff.tensorflow.computation
    def server_init():
        weights = init_weights()
        return collections.OrderedDict(
            model=weights, weights=tf.constant(uniform, tf.float64),
            round=tf.constant(0, tf.int64))

    return server_init


def _build_look_ahead(server_type, stacked_type, *, n_all, clip):
    """Pass A → θ̃ = θ_k − α G_k ŵ (renormalised over the finite clients) and pass B's
    weights by client id (ŵ_j, 0 for clients non-finite in pass A)."""

    @tff.tensorflow.computation(server_type, stacked_type)
    def look_ahead(server, stacked_a):
        @tf.function
        def run(server, stacked_a):
            keep = _finite_rows(stacked_a["deltas"], stacked_a["losses"])
            ids = stacked_a["client_ids"]
            w_hat, _ = fedlaw_math.participant_weights(server["weights"], ids)
            w_finite = tf.where(keep, w_hat, tf.zeros_like(w_hat))
            pass_b_weights = tf.scatter_nd(tf.cast(ids, tf.int32)[:, tf.newaxis], w_finite,
                                           [n_all])
            # θ̃ looks ahead to the model the round will make, whose weights sum to 1 over
            # the finite clients: renormalise over them (uniform if they hold no weight).
            finite_mass = tf.reduce_sum(w_finite)
            uniform = tf.cast(keep, tf.float64) / tf.maximum(
                tf.reduce_sum(tf.cast(keep, tf.float64)), 1.0)
            w_hat = tf.where(finite_mass > 0.0, w_finite / tf.maximum(finite_mass, 1e-300),
                             uniform)
            deltas = _zero_rows(stacked_a["deltas"], keep)
            if clip:
                # θ̃ = θ_k − α G_k w_k with the clipped G_k, as the weight and θ steps use it:
                # an unclipped huge update with weight 1/n would wreck θ̃ (every pass-B
                # update non-finite) before the weight step could exclude it.
                deltas, _, _ = fedlaw_math.clip_by_median_norm(deltas, valid=keep)
            step = fedlaw_math.weighted_delta(deltas, w_hat)
            return _add_to_model(server["model"], step), pass_b_weights
        return run(server, stacked_a)

    return look_ahead


def _build_server_step(server_type, stacked_type, pass_b_type, *, options, schedule, alpha,
                       n_all, stack_b):
    """The learning round's server step (fedlaw.md §4): the weight step from pass A's G and
    pass B (streamed z and losses, or the stacked `clip` ablation), the sparse capped-simplex
    projection, the model step and the weights written back by client id; with metrics."""
    s_final, s_start, s_end, cap = schedule.s_final, schedule.s_start, schedule.s_end, schedule.cap

    @tff.tensorflow.computation(server_type, stacked_type, pass_b_type)
    def server_step(server, stacked_a, pass_b):
        @tf.function
        def run(server, stacked_a, pass_b):
            ids = stacked_a["client_ids"]
            m = tf.shape(ids)[0]
            w_hat, mass = fedlaw_math.participant_weights(server["weights"], ids)
            metrics = collections.OrderedDict()
            if stack_b:
                tf.debugging.assert_equal(ids, pass_b["client_ids"],
                                          message="FedLAW: passes A and B saw different clients")
                keep = tf.logical_and(_finite_rows(stacked_a["deltas"], stacked_a["losses"]),
                                      _finite_rows(pass_b["deltas"], pass_b["losses"]))
                losses_b = pass_b["losses"]
            else:
                finite_b, losses_b, consensus = _streamed_pass_b(ids, pass_b)
                keep = tf.logical_and(_finite_rows(stacked_a["deltas"], stacked_a["losses"]),
                                      finite_b)
            deltas_a = _zero_rows(stacked_a["deltas"], keep)
            losses_b = tf.where(keep, losses_b, tf.zeros_like(losses_b))
            finite = keep
            if stack_b:  # the clip ablation (§6) clips pass A and pass B by their median norms
                deltas_b = _zero_rows(pass_b["deltas"], keep)
                deltas_a, radius_a, clipped_a = fedlaw_math.clip_by_median_norm(deltas_a,
                                                                                valid=keep)
                deltas_b, _, clipped_b = fedlaw_math.clip_by_median_norm(deltas_b, valid=keep)
                metrics["clip_radius"] = tf.cast(radius_a, tf.float32)
                metrics["clipped_clients"] = tf.cast(clipped_a, tf.int32) + tf.cast(
                    clipped_b, tf.int32)
                consensus = fedlaw_math.weighted_delta(deltas_b, w_hat, dtype=tf.float64)
            # Z sums ŵ_j Δ̃_j over the clients finite in both passes (stacked: their rows are
            # zeroed; streamed: v_j = 0 for pass-A non-finite clients, and pass-B non-finite
            # ones add nothing).
            if options.weight_step == "bsum":
                h = fedlaw_math.weight_step(None, None, w_hat, losses_b, alpha=alpha,
                                            beta=options.beta, mode="bsum")
            else:
                h = fedlaw_math.alignment_step(deltas_a, consensus, w_hat, losses_b, alpha=alpha,
                                               beta=options.beta)
            h = tf.where(keep, h, tf.fill(tf.shape(h), tf.constant(-np.inf, tf.float64)))
            s_k = fedlaw_math.sparsity_tensor(server["round"], n_all, s_final, s_start, s_end)
            s_p, t_p = fedlaw_math.participant_sparsity(s_k, cap, m, n_all)
            s_p = tf.cast(s_p, tf.int32)
            t_p = tf.cast(t_p, tf.float64)
            if options.loss_filter:
                min_keep = tf.cast(tf.math.ceil(1.0 / t_p - 1e-9), tf.int32)
                passed, flagged, skipped = fedlaw_math.mad_loss_filter(losses_b, min_keep,
                                                                       valid=keep)
                keep = tf.logical_and(keep, passed)
                h = tf.where(keep, h, tf.fill(tf.shape(h), tf.constant(-np.inf, tf.float64)))
                metrics["loss_filter_flagged"] = tf.cast(flagged, tf.int32)
                metrics["loss_filter_skipped"] = tf.cast(skipped, tf.int32)
            # Fewer finite clients than the cap allows to carry all the weight (⌈1/t⌉):
            # the projection would hand weight to excluded clients. Keep the learned
            # weights and leave the model where it is this round (`weights_kept`).
            enough = tf.reduce_sum(tf.cast(keep, tf.int32)) >= tf.cast(
                tf.math.ceil(1.0 / t_p - 1e-9), tf.int32)
            w_new = tf.cond(enough,
                            lambda: fedlaw_math.project_sparse_capped_simplex(h, s_p, t_p),
                            lambda: w_hat)
            step = tf.where(enough, fedlaw_math.weighted_delta(deltas_a, w_new),
                            tf.zeros([tf.shape(deltas_a)[1]], tf.float32))
            metrics["weights_kept"] = tf.cast(tf.logical_not(enough), tf.int32)
            new_weights = fedlaw_math.write_back(server["weights"], ids, w_new, mass)
            metrics.update(collections.OrderedDict(
                s=s_p, cap=tf.cast(t_p, tf.float32),
                flagged_clients=tf.reduce_sum(tf.cast(w_new <= FLAG_THRESHOLD, tf.int32)),
                weight_max=tf.cast(tf.reduce_max(w_new), tf.float32),
                non_finite_clients=m - tf.reduce_sum(tf.cast(finite, tf.int32)),
                learning=tf.constant(1, tf.int32)))
            return collections.OrderedDict(
                model=_add_to_model(server["model"], step), weights=new_weights,
                round=server["round"] + 1), metrics
        return run(server, stacked_a, pass_b)

    return server_step


def _build_frozen_step(server_type, aggregate_type):
    """A frozen round's server step: the model plus the fixed-weight aggregate."""

    @tff.tensorflow.computation(server_type, aggregate_type)
    def frozen_step(server, aggregate):
        flat = tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1])
                          for t in tf.nest.flatten(aggregate)], axis=0)
        return collections.OrderedDict(
            model=_add_to_model(server["model"], flat), weights=server["weights"],
            round=server["round"] + 1)

    return frozen_step
