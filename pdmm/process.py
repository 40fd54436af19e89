"""Centralized PDMM (pdmm.md §2) as a TFF process with stateful clients.

The server is a PDMM node without data. One round:

    clients (in parallel), from their stored state (w_i, v_i, u_i, step counter):
        K SGD steps on f_i(w) + (c/2)‖w − v_i‖², warm-started at w_i,
          on the client's example stream (it continues across rounds)
        y_i = 2 w_i − v_i                   the only uplink (a Byzantine client
                                            sends attack(y_i), keeping honest state)
        u_i ← (1 − θ) u_i + θ y_i
    server:  w_s ← (1 − θ) w_s + θ · Agg(y)  (Agg: the plain mean by default)
    broadcast w_s; clients: v_i ← (1 − θ) v_i + θ (2 w_s − u_i)

One model-sized vector goes up and one comes down, as in FedAvg. The uplink
message travels as the `delta` field of a client record
`OrderedDict(delta=y_i, client_id, num_examples, loss)`, so the library's
local attacks (`attacks.local.apply_record_attacks`) corrupt y, and colluding
attacks (aggregator wrappers) see and replace the round's y's.

Partial participation (`partial=True`, pdmm.md §2 extension): the server keeps
a copy u_i^S of z_{s|i}/c for every client id, in its state as one flat
`[N, D]` float32 matrix; participants' copies are updated from the messages
the server received (collected with their client ids by
`tff_byz.collection.StackedRecordsFactory`), w_s is the mean of all N
copies, and only participants apply the reply. Non-participants keep their
state. Full participation needs no copies: w_s itself is z̄.

Initialisation (`init`): `consensus` (default, FedSplit style) w_i = v_i = u_i
= w_s = w_0; `zero` (textbook) v_i = u_i = w_s = 0, w_i = w_0.

The process is a `tff_byz.client_state.StatefulClientsProcess`; client states
(`OrderedDict(client_id, wvu=[w_i; v_i; u_i] as a [3, D] matrix, steps)`) live
in a `ClientStateStore` between rounds, initialised with `initial_client_state`.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.collection import StackedRecordsFactory
from attacks.local import GROUP_KEY, ScheduledAttack, apply_record_attacks
from pdmm import DEFAULT_LOCAL_STEPS
from pdmm import math as pdmm_math
from tff_byz.packing import Packing, pack_numpy
from tff_byz import client_inputs, collection, fedavg, rounds, stateful_process
from tff_byz import client_work as client_work_lib
from tff_byz.client_state import StatefulClientsProcess

__all__ = ["PDMMOptions", "build_pdmm_process", "INITS"]

INITS = ("consensus", "zero")


@dataclasses.dataclass(frozen=True)
class PDMMOptions:
    """The `--aggregator=pdmm:...` parameters (pdmm.md §5 defaults)."""
    c: float = 0.4
    theta: float = 1.0
    local_steps: Optional[int] = None  # None: --local_steps if set, else 10
    init: str = "consensus"

    def validate(self) -> None:
        if not (math.isfinite(self.c) and self.c > 0):
            raise ValueError(f"pdmm: c must be a finite number > 0; got c={self.c}.")
        if not 0.0 < self.theta <= 1.0:
            raise ValueError(f"pdmm: theta must be in (0, 1] (1 plain PDMM, 1/2 averaged); "
                             f"got theta={self.theta}.")
        if self.local_steps is not None and self.local_steps < 1:
            raise ValueError(f"pdmm: local_steps must be >= 1; got {self.local_steps}.")
        if self.init not in INITS:
            raise ValueError(f"pdmm: init={self.init!r}; valid choices: {', '.join(INITS)}.")

    def steps(self, fallback: int = 0) -> int:
        if self.local_steps is not None:
            return int(self.local_steps)
        return int(fallback) if fallback else DEFAULT_LOCAL_STEPS


def _as_list(structure):
    return [tf.convert_to_tensor(t) for t in tf.nest.flatten(structure)]


def build_pdmm_process(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    initial_weights: tff.learning.models.ModelWeights,
    *,
    options: PDMMOptions = PDMMOptions(),
    local_steps: int = DEFAULT_LOCAL_STEPS,
    batch_size: int = 64,
    learning_rate: float = 0.05,
    seed: int = 0,
    num_clients: Optional[int] = None,
    partial: bool = False,
    attacks: Sequence[ScheduledAttack] = (),
    mark_groups: bool = False,
    wrap_aggregator: Callable = lambda factory: factory,
    inputs: client_inputs.ClientInputs | None = None,
) -> StatefulClientsProcess:
    """Centralized PDMM (module doc).

    Args:
      options: c, θ, init (`options.local_steps` is resolved by the caller into
        `local_steps`).
      local_steps, batch_size, learning_rate: the inexact prox: K SGD steps of
        size η on mini-batches of B examples.
      num_clients: N, needed with `partial=True` (one server copy per client id).
      attacks: local attacks (`transform` only) applied to the Byzantine
        clients' message y; `mark_groups` adds the attack group to the record
        for a colluding-attack wrapper.
      wrap_aggregator: wraps the message collection (colluding attacks).
      inputs: how clients arrive (`tff_byz.client_inputs`; default `ByValue()`).

    Returns a `StatefulClientsProcess`:
    - server state `OrderedDict(global_model_weights=ModelWeights (w_s),
      [copies=float32[N, D] with partial], aggregator, seed, round)`;
    - `next(state, client_values, client_states)` →
      `OrderedDict(state, metrics, client_states)`, metrics
      `OrderedDict(client_work=OrderedDict(train_loss, num_examples),
      aggregator=…, pdmm=OrderedDict(consensus_gap))` where `consensus_gap` is
      sqrt(mean_i ‖w_i − w_s‖²) over the round's participants after the step;
    - client state `OrderedDict(client_id=int32, wvu=float32[3, D], steps=int64)`:
      the rows of `wvu` are w_i, v_i, u_i, each the trainable weights packed
      leaf by leaf (`tff_byz.packing`); `initial_client_state` is
      the state of a client that has not taken part yet (pass it to
      `ClientStateStore(initial=...)`).
    """
    options.validate()
    if local_steps < 1:
        raise ValueError(f"pdmm: local_steps must be >= 1; got {local_steps}.")
    if partial and (num_clients is None or num_clients < 1):
        raise ValueError("pdmm: partial participation needs num_clients (one server copy each).")
    for scheduled in attacks:
        if scheduled.attack.perturb_weights is not None or scheduled.attack.ascent:
            raise ValueError(
                f"pdmm: attack {scheduled.attack.name!r} acts on local training; PDMM's Byzantine "
                "clients train honestly and corrupt only their uplink message y (pdmm.md §4).")
    c, theta = float(options.c), float(options.theta)
    attacks = [a for a in attacks if a.attack.transform is not None]

    inputs = client_inputs.ByValue() if inputs is None else inputs
    data_type, model_weights_type = client_work_lib.client_input_types(model_fn, inputs)
    init_weights = fedavg.initial_weights_fn(initial_weights)
    weights_type = init_weights.type_signature.result
    trainable_type = weights_type.trainable
    record_type = client_work_lib.client_record_type(trainable_type)
    if mark_groups:  # the attack group travels to the colluding-attack wrapper
        record_type = tff.StructWithPythonType(
            list(tff.structure.iter_elements(record_type)) + [(GROUP_KEY, np.int32)],
            collections.OrderedDict)
    packing = Packing(initial_weights.trainable)
    # w, v, u packed as the rows of one [3, D] matrix: TFF moves CLIENTS-placed values
    # tensor by tensor, at a fixed cost per tensor (3 tensors instead of 3 × leaves).
    state_type = stateful_process.client_state_type(
        wvu=tff.TensorType(np.float32, [3, packing.dimension]), steps=np.int64)
    train_metrics = rounds.build_train_metrics(record_type)

    w0 = [np.asarray(t, np.float32) for t in initial_weights.trainable]
    anchor = w0 if options.init == "consensus" else [np.zeros_like(t) for t in w0]
    initial_client_state = collections.OrderedDict(
        client_id=np.int32(0),
        wvu=np.stack([pack_numpy(w0), pack_numpy(anchor), pack_numpy(anchor)]),
        steps=np.int64(0))

    if partial:
        collector = wrap_aggregator(StackedRecordsFactory())
    else:
        # Agg(y): the unweighted mean, reporting `non_finite_clients`.
        collector = wrap_aggregator(collection.NonFiniteCountingFactory(
            tff.aggregators.MeanFactory()))
    update_aggregator = collection.build_update_aggregator(collector, record_type)
    aggregate_type = update_aggregator.next.type_signature.result.result.member

    server_init = _build_server_init(init_weights, anchor, num_clients if partial else 0)
    server_type = server_init.type_signature.result
    client_step = _build_client_step(
        model_fn, inputs, packing, weights_type, data_type, state_type, c=c, theta=theta,
        local_steps=local_steps, batch_size=batch_size, learning_rate=learning_rate,
        attacks=attacks, mark_groups=mark_groups)
    client_reply = _build_client_reply(packing, trainable_type, state_type, theta=theta)
    if partial:
        server_update = _build_partial_server_update(packing, server_type, aggregate_type,
                                                     theta=theta)
    else:
        server_update = _build_server_update(server_type, aggregate_type, theta=theta)

    @tff.tensorflow.computation(server_type)
    def server_model(server):
        return server["global_model_weights"]

    @tff.tensorflow.computation(server_type)
    def server_trainable(server):
        return list(server["global_model_weights"].trainable)

    @tff.tensorflow.computation(tf.float32)
    def root(value):
        return tf.sqrt(value)

    def initial_fields():
        return collections.OrderedDict(server=tff.federated_eval(server_init, tff.SERVER),
                                       aggregator=update_aggregator.initialize())

    def round_fn(state, round_info, client_data, client_states):
        outputs = tff.federated_map(client_step, (
            tff.federated_broadcast(round_info),
            tff.federated_broadcast(tff.federated_map(server_model, state.server)),
            client_data, client_states))
        records, weights, stepped = outputs[0], outputs[1], outputs[2]
        aggregate = update_aggregator.next(state.aggregator, records, weights)
        server = tff.federated_map(server_update, (state.server, aggregate.result))
        replied = tff.federated_map(client_reply, (
            tff.federated_broadcast(tff.federated_map(server_trainable, server)), stepped))
        new_client_states, gaps = replied[0], replied[1]
        metrics = tff.federated_zip(collections.OrderedDict(
            client_work=train_metrics(records),
            aggregator=aggregate.measurements,
            pdmm=tff.federated_zip(collections.OrderedDict(
                consensus_gap=tff.federated_map(root, tff.federated_mean(gaps)))),
        ))
        return stateful_process.RoundOutput(
            server=collections.OrderedDict(server=server, aggregator=aggregate.state),
            metrics=metrics, client_states=new_client_states)

    return stateful_process.build_stateful_process(
        seed=seed, inputs=inputs, data_type=data_type, client_state_type=state_type,
        initial_fields=initial_fields, round_fn=round_fn,
        model_weights=lambda state: state["server"]["global_model_weights"],
        initial_client_state=initial_client_state)


def _build_server_init(init_weights, anchor, num_copies):
    """The server's PDMM node: w_s = the anchor (w_0 or 0), and with `num_copies` > 0
    (partial participation) one copy u_i^S = anchor per client id."""

    @tff.tensorflow.computation
    def server_init():
        weights = init_weights()
        server = collections.OrderedDict(
            global_model_weights=tff.learning.models.ModelWeights(
                trainable=[tf.constant(t) for t in anchor],
                non_trainable=list(weights.non_trainable)))
        if num_copies:
            flat = np.concatenate([t.reshape(-1) for t in anchor]) if anchor else np.zeros([0])
            server["copies"] = tf.tile(tf.constant(flat, tf.float32)[tf.newaxis, :],
                                       [num_copies, 1])
        return server

    return server_init


def _build_client_step(model_fn, inputs, packing, weights_type, data_type, state_type, *, c,
                       theta, local_steps, batch_size, learning_rate, attacks, mark_groups):
    """A client's half of the round: the inexact prox (K SGD steps on f_i + (c/2)‖w − v_i‖²),
    the message y_i = 2 w_i − v_i (attacked for a Byzantine client) and u_i's relaxation.
    Returns `(record, weight, stepped state)`."""
    unflatten, flatten = packing.unpack, packing.pack

    @tff.tensorflow.computation(rounds.ROUND_TYPE, weights_type, data_type, state_type)
    def client_step(round_info, server_weights, client_input, client_state):
        model = model_fn()
        model_weights = tff.learning.models.ModelWeights.from_model(model)

        # One tf.function: its automatic control dependencies order the weight
        # assignment before training (a bare graph would drop the assigns).
        @tf.function
        def run(round_info, server_weights, client_input, client_state):
            tf.nest.map_structure(lambda var, value: var.assign(value), model_weights,
                                  tff.learning.models.ModelWeights(
                                      trainable=unflatten(client_state["wvu"][0]),
                                      non_trainable=list(server_weights.non_trainable)))
            examples = inputs.open(client_input, round_info["round"])
            info = examples.info
            v = unflatten(client_state["wvu"][1])
            loss = client_work_lib.local_sgd_steps(
                model, list(model_weights.trainable), examples, run_seed=round_info["seed"],
                client_id=info["client_id"], start_step=client_state["steps"],
                steps=local_steps, batch_size=batch_size, learning_rate=learning_rate,
                extra_gradient=lambda trainable: [
                    c * (tf.convert_to_tensor(t) - vl) for t, vl in zip(trainable, v)])
            w = _as_list(model_weights.trainable)
            message = pdmm_math.uplink_message(w, v)
            u = pdmm_math.relax(client_state["wvu"][2], flatten(message), theta=theta)
            record = collections.OrderedDict(
                delta=message, client_id=info["client_id"],
                num_examples=tf.cast(examples.num_examples, tf.float32), loss=loss)
            record, weight = apply_record_attacks(
                attacks, record, tf.constant(1.0), info=info, run_seed=round_info["seed"],
                round_num=round_info["round"], weights=_as_list(server_weights.trainable),
                mark_groups=mark_groups)
            state = collections.OrderedDict(
                client_id=info["client_id"],
                wvu=tf.stack([flatten(w), client_state["wvu"][1], u]),
                steps=client_state["steps"] + local_steps)
            return record, weight, state

        return run(round_info, server_weights, client_input, client_state)

    return client_step


def _build_client_reply(packing, trainable_type, state_type, *, theta):
    """A client's reply step: v_i ← (1 − θ) v_i + θ (2 w_s − u_i); also returns ‖w_i − w_s‖²."""

    @tff.tensorflow.computation(trainable_type, state_type)
    def client_reply(server_trainable, client_state):
        w_s = packing.pack(_as_list(server_trainable))
        w, v, u = tf.unstack(client_state["wvu"])
        v = pdmm_math.relax(v, pdmm_math.server_reply(w_s, u), theta=theta)
        state = collections.OrderedDict(client_id=client_state["client_id"],
                                        wvu=tf.stack([w, v, u]), steps=client_state["steps"])
        return state, pdmm_math.squared_distance(w, w_s)

    return client_reply


def _build_server_update(server_type, aggregate_type, *, theta):
    """Full participation: w_s ← (1 − θ) w_s + θ · Agg(y)."""

    @tff.tensorflow.computation(server_type, aggregate_type)
    def server_update(server, aggregate):
        weights = server["global_model_weights"]
        trainable = pdmm_math.relax(_as_list(weights.trainable), _as_list(aggregate),
                                    theta=theta)
        return collections.OrderedDict(global_model_weights=tff.learning.models.ModelWeights(
            trainable=trainable, non_trainable=list(weights.non_trainable)))

    return server_update


def _build_partial_server_update(packing, server_type, stacked_type, *, theta):
    """Partial participation: the participants' copies u_i^S relax towards their messages;
    w_s is the mean of all N copies."""

    @tff.tensorflow.computation(server_type, stacked_type)
    def server_update(server, stacked):
        ids = tf.cast(stacked["client_ids"], tf.int32)[:, tf.newaxis]
        old = tf.gather_nd(server["copies"], ids)
        new = old + theta * (stacked["deltas"] - old) if theta != 1.0 else stacked["deltas"]
        copies = tf.tensor_scatter_nd_update(server["copies"], ids, new)
        trainable = packing.unpack(tf.reduce_mean(copies, axis=0))
        weights = server["global_model_weights"]
        return collections.OrderedDict(
            global_model_weights=tff.learning.models.ModelWeights(
                trainable=trainable, non_trainable=list(weights.non_trainable)),
            copies=copies)

    return server_update
