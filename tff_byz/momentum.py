"""Momentum-SGD with per-client momentum, the setting of robust-aggregation papers.

Protocol of Karimireddy, He & Jaggi (ICML 2021, "Learning from history") and
Allouah et al. (AISTATS 2023, "Fixing by mixing"), round t:

    each participating client i:
        draw ONE mini-batch of B examples without replacement (all of them if it
          has fewer), seeded by client_seed(run_seed, t, i)
        g_i ← ∇ loss(θ; batch) + wd · θ          # gradient of loss + (wd/2)‖θ‖²
        m_i ← β m_i + (1 − β) g_i                 # dampened (default): an EMA of gradients
           or β m_i + g_i                         # dampening=False (heavy ball, PyTorch-style)
        send m_i
    server: θ ← θ − server_lr · Agg(m_1, …, m_n)

m_i starts at 0 and is the client's own, persistent across the rounds it takes
part in (a client that sits out a round keeps it unchanged). The dampened form is
the one the papers analyse: m_i stays on the scale of a gradient, so server_lr
is the step size whatever β is. With `dampening=False` the steady-state step is
1/(1 − β) times larger (×10 at β = 0.9); scale server_lr down accordingly.

Library conventions reused: the client record is
`OrderedDict(delta=−m_i, client_id, num_examples=batch size used, loss=batch loss)`
(`tff_byz.client_work.client_record_type`), aggregated by any factory through
`tff_byz.collection.build_update_aggregator`, and the server applies
θ ← θ + server_lr · Agg(Δ) = θ − server_lr · Agg(m) with
`tff_byz.fedavg.build_delta_finalizer` (SGD). Every client has aggregation
weight 1: m_i is a running average over past rounds, so this round's batch size
is no measure of its worth, and the papers average clients uniformly.

A client with no examples has a zero loss gradient (Keras divides the empty
batch's loss sum with `divide_no_nan`): it sends β·m_i plus the weight-decay
term. Do not sample such clients.

Byzantine clients (`attacks=`, a `ClientAttacks`) run the same step: a data
attack changes the rows they read (through `inputs`), an ascent attack negates
their gradient, a local attack changes the momentum they send (their own state
keeps the honest momentum), and colluding attacks replace it in the aggregator
wrapper, which reads the attack group each record then carries. A client whose
active attack ignores its own vector skips the step: it keeps its momentum and
reports no examples and a zero loss (left out of `train_loss`).

Because the momenta must come back out of TFF, the result is a
`tff_byz.client_state.StatefulClientsProcess`, not a `LearningProcess`; keep the
momenta in a `tff_byz.client_state.ClientStateStore`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from numbers import Real
from typing import Optional, Protocol

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz import collection
from tff_byz import client_inputs
from tff_byz import client_work as client_work_lib
from tff_byz import fedavg, rounds, stateful_process
from tff_byz.client_state import StatefulClientsProcess
from tff_byz.packing import Packing

__all__ = ["build_momentum_sgd_process", "sample_batch_indices", "momentum_step",
           "ClientAttacks"]


class ClientAttacks(Protocol):
    """What the Byzantine clients do inside the client step (`attacks.local.StepAttacks`).

    All pure TF on one client's `info` (`tff_byz.client_inputs.INFO_SPEC`) and the
    int64 round index; honest clients must get False and their record untouched.
    """

    def is_idle(self, info, round_num):
        """bool: the client skips its local step (its message ignores it)."""

    def ascends(self, info, round_num):
        """bool: the client's gradient is negated."""

    def message(self, record, info, run_seed, round_num, trainable):
        """The record the client sends, given its honest record and the received weights."""

    def attacking(self, info, round_num):
        """int32: 1 when the client's attack is active (counted as `attacked_clients`)."""


def sample_batch_indices(num_examples, batch_size, seed):
    """Indices of one mini-batch: min(batch_size, num_examples) distinct examples.

    Pure TF (stateless): the first `batch_size` entries of a seeded permutation.
    """
    order = tf.random.experimental.stateless_shuffle(tf.range(num_examples), seed=seed)
    return order[:tf.minimum(batch_size, num_examples)]


def momentum_step(momentum, gradients, *, beta, dampening=True):
    """m ← β m + (1 − β) g (dampening) or β m + g, leaf by leaf. Pure TF."""
    scale = 1.0 - beta if dampening else 1.0
    return tf.nest.map_structure(lambda m, g: beta * m + scale * g, momentum, gradients)


def _is_real(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _validate(batch_size, momentum, weight_decay, server_lr, seed, dampening):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"--batch_size must be an integer; got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1; got {batch_size}.")
    if not _is_real(momentum):
        raise TypeError(f"--momentum must be a number; got {momentum!r}.")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"--momentum must be in [0, 1); got {momentum}.")
    if not _is_real(weight_decay):
        raise TypeError(f"--weight_decay must be a number; got {weight_decay!r}.")
    if not (np.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"--weight_decay must be a finite number >= 0; got {weight_decay}.")
    if not _is_real(server_lr):
        raise TypeError(f"--server_lr must be a number; got {server_lr!r}.")
    if not (np.isfinite(server_lr) and server_lr > 0):
        raise ValueError(f"--server_lr must be a finite number > 0; got {server_lr}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"--seed must be an integer; got {seed!r}.")
    if not isinstance(dampening, (bool, np.bool_)):
        raise TypeError(f"dampening must be a bool; got {dampening!r}.")


def build_momentum_sgd_process(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    initial_weights: tff.learning.models.ModelWeights,
    *,
    aggregator=None,
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    server_lr: float = 0.1,
    seed: int = 0,
    dampening: bool = True,
    inputs: client_inputs.ClientInputs | None = None,
    attacks: Optional[ClientAttacks] = None,
) -> StatefulClientsProcess:
    """Distributed momentum-SGD with client momentum (see module doc).

    `aggregator`: any TFF aggregation factory (weighted or not) or a
    `tff_byz.collection.ClientRecordAggregationFactory`; default
    `tff.aggregators.MeanFactory()`.

    `inputs`: how clients arrive (`tff_byz.client_inputs`; default `ByValue()`).
    A client reads only its round's mini-batch.

    `attacks`: the Byzantine clients' behaviour (`ClientAttacks`, module doc); the
    records may then carry extra fields (the attack group) for the aggregator.

    Returns a `StatefulClientsProcess`:
    - state `OrderedDict(global_model_weights=ModelWeights, aggregator=…,
      finalizer=OrderedDict(learning_rate), seed=int64, round=int64)`;
    - `next(state, client_values, client_states)`, with one client value (a
      `make_client_input(...)` or, by reference, a client id) and one client state
      per participant, returns `OrderedDict(state, metrics, client_states)`, metrics
      `OrderedDict(distributor=(), client_work=OrderedDict(train_loss,
      num_examples), aggregator=…, finalizer=OrderedDict(update_non_finite))`
      (the FedAvg process's names; `train_loss` is the example-weighted mean
      batch loss, `num_examples` the examples used this round; with `attacks`,
      also `attacked_clients`, the Byzantine clients whose attack was active);
    - client state `OrderedDict(client_id=int32, momentum=float32[D])`, the
      momentum packed leaf by leaf (`tff_byz.packing`: TFF moves client values
      tensor by tensor at a fixed cost per tensor);
      the returned state carries the client's own id (from its `info`), whatever
      id the incoming state held.
    """
    _validate(batch_size, momentum, weight_decay, server_lr, seed, dampening)
    if aggregator is None:
        aggregator = tff.aggregators.MeanFactory()
    beta = float(momentum)
    weight_decay = float(weight_decay)
    dampening = bool(dampening)

    inputs = client_inputs.ByValue() if inputs is None else inputs
    data_type, model_weights_type = client_work_lib.client_input_types(model_fn, inputs)
    init_weights = fedavg.initial_weights_fn(initial_weights)
    weights_type = init_weights.type_signature.result
    if not weights_type.is_assignable_from(model_weights_type) and not \
            model_weights_type.is_assignable_from(weights_type):
        raise ValueError(
            f"initial_weights do not match model_fn's weights: {weights_type} vs "
            f"{model_weights_type}.")
    packing = Packing(initial_weights.trainable)
    state_type = stateful_process.client_state_type(
        momentum=tff.TensorType(np.float32, [packing.dimension]))
    client_update = _build_client_update(
        model_fn, inputs, packing, weights_type, data_type, state_type, batch_size=batch_size,
        beta=beta, weight_decay=weight_decay, dampening=dampening, attacks=attacks)
    record_type = client_update.type_signature.result[0]
    train_metrics = rounds.build_train_metrics(record_type)
    update_aggregator = collection.build_update_aggregator(aggregator, record_type)
    finalizer = fedavg.build_delta_finalizer(
        tff.learning.optimizers.build_sgdm(learning_rate=server_lr), weights_type)

    @tff.tensorflow.computation(record_type)
    def unit_weight(record):
        del record
        return tf.constant(1.0, tf.float32)

    def initial_fields():
        return collections.OrderedDict(
            global_model_weights=tff.federated_eval(init_weights, tff.SERVER),
            aggregator=update_aggregator.initialize(),
            finalizer=finalizer.initialize())

    def round_fn(state, round_info, client_data, client_states):
        weights = state.global_model_weights
        client_outputs = tff.federated_map(
            client_update,
            (tff.federated_broadcast(round_info), tff.federated_broadcast(weights),
             client_data, client_states))
        records, new_client_states = client_outputs[0], client_outputs[1]
        aggregate = update_aggregator.next(
            state.aggregator, records, tff.federated_map(unit_weight, records))
        finalized = finalizer.next(state.finalizer, weights, aggregate.result)
        client_work = train_metrics(records)
        if attacks is not None:
            client_work = tff.federated_zip(collections.OrderedDict(
                train_loss=client_work.train_loss, num_examples=client_work.num_examples,
                attacked_clients=tff.federated_sum(client_outputs[2])))
        metrics = tff.federated_zip(collections.OrderedDict(
            distributor=tff.federated_value((), tff.SERVER),
            client_work=client_work,
            aggregator=aggregate.measurements,
            finalizer=finalized.measurements))
        return stateful_process.RoundOutput(
            server=collections.OrderedDict(global_model_weights=finalized.result,
                                           aggregator=aggregate.state,
                                           finalizer=finalized.state),
            metrics=metrics, client_states=new_client_states)

    return stateful_process.build_stateful_process(
        seed=seed, inputs=inputs, data_type=data_type, client_state_type=state_type,
        initial_fields=initial_fields, round_fn=round_fn,
        model_weights=lambda state: state["global_model_weights"])


def _build_client_update(model_fn, inputs, packing, weights_type, data_type, state_type, *,
                         batch_size, beta, weight_decay, dampening, attacks):
    """The client's step: one mini-batch gradient (plus weight decay, ascent when its attack
    says so), the momentum update, and the record it sends (`-momentum`, possibly attacked).
    Returns `(record, new client state, attacking)`."""

    @tff.tensorflow.computation(rounds.ROUND_TYPE, weights_type, data_type, state_type)
    def client_update(round_info, weights, client_input, client_state):
        model = model_fn()
        model_weights = tff.learning.models.ModelWeights.from_model(model)

        # A tf.function, so that its automatic control dependencies order the
        # weight assignment before the forward pass (plain graph mode would not).
        @tf.function
        def step(weights, momentum):
            tf.nest.map_structure(lambda v, w: v.assign(w), model_weights, weights)
            examples = inputs.open(client_input, round_info["round"])
            info = examples.info

            def train():
                seed_tensor = client_work_lib.client_seed(
                    round_info["seed"], round_info["round"], info["client_id"])
                index = sample_batch_indices(examples.num_examples, batch_size, seed_tensor)
                x, y = examples.gather(index)
                trainable = list(model_weights.trainable)
                with tf.GradientTape() as tape:
                    output = model.forward_pass(collections.OrderedDict(x=x, y=y),
                                                training=True)
                gradients = tape.gradient(output.loss, trainable)
                if weight_decay:
                    # (wd/2)‖θ‖² added by hand: its gradient is wd·θ.
                    gradients = [g + weight_decay * tf.convert_to_tensor(v)
                                 for g, v in zip(gradients, trainable)]
                if attacks is not None:
                    gradients = tf.cond(attacks.ascends(info, round_info["round"]),
                                        lambda g=gradients: [tf.negative(x) for x in g],
                                        lambda g=gradients: g)
                new_momentum = momentum_step(momentum, gradients, beta=beta,
                                             dampening=dampening)
                return (new_momentum, tf.cast(tf.shape(index)[0], tf.float32),
                        tf.cast(output.loss, tf.float32))

            if attacks is None:
                new_momentum, num_examples, loss = train()
            else:
                new_momentum, num_examples, loss = tf.cond(
                    attacks.is_idle(info, round_info["round"]),
                    lambda: (list(momentum), tf.constant(0.0), tf.constant(0.0)), train)
            record = collections.OrderedDict(
                delta=[tf.negative(m) for m in new_momentum],
                client_id=info["client_id"],
                num_examples=num_examples,
                loss=loss)
            attacking = tf.constant(0)
            if attacks is not None:
                record = attacks.message(record, info, round_info["seed"], round_info["round"],
                                         list(weights.trainable))
                attacking = attacks.attacking(info, round_info["round"])
            return record, new_momentum, attacking

        record, new_momentum, attacking = step(weights,
                                               packing.unpack(client_state["momentum"]))
        new_state = collections.OrderedDict(client_id=record["client_id"],
                                            momentum=packing.pack(new_momentum))
        return record, new_state, attacking

    return client_update
