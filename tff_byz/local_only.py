"""Local-only training: every client trains its own model and never exchanges anything.

The baseline that tells collaboration from decoupling (PDMM with a small penalty c keeps
its clients apart; with enough local data, clients alone also do well). Each participating
client runs local SGD from its own model, `epochs` passes over its data or, with `steps`
= K > 0, K mini-batch steps on its example stream (`tff_byz.client_work.local_sgd_steps`,
so the batches match FedAvg's and PDMM's K-step protocol). A client's model starts at
`initial_weights` and is its state between rounds; the server holds only the initial
model and the round counter.

The result is a `tff_byz.client_state.StatefulClientsProcess`:
- state `OrderedDict(global_model_weights=initial weights, seed=int64, round=int64)`;
- client state `OrderedDict(client_id=int32, weights=float32[D])`, the model packed leaf by
  leaf (`tff_byz.packing`), `initial_client_state` the packed initial model;
- metrics `OrderedDict(client_work=OrderedDict(train_loss, num_examples))`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz import client_inputs, fedavg, rounds, stateful_process
from tff_byz import client_work as client_work_lib
from tff_byz.client_state import StatefulClientsProcess
from tff_byz.packing import Packing, pack_numpy

__all__ = ["build_local_only_process"]


def build_local_only_process(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    initial_weights: tff.learning.models.ModelWeights,
    *,
    epochs: int = 1,
    steps: int = 0,
    batch_size: int = 32,
    learning_rate: float = 0.1,
    seed: int = 0,
    inputs: client_inputs.ClientInputs | None = None,
) -> StatefulClientsProcess:
    """Each client trains alone from its own model (module doc)."""
    client_work_lib.validate_local_sgd(epochs, batch_size, learning_rate, steps)
    inputs = client_inputs.ByValue() if inputs is None else inputs
    data_type, _ = client_work_lib.client_input_types(model_fn, inputs)
    init_weights = fedavg.initial_weights_fn(initial_weights)
    packing = Packing(initial_weights.trainable)
    state_type = stateful_process.client_state_type(
        weights=tff.TensorType(np.float32, [packing.dimension]))
    initial_client_state = collections.OrderedDict(
        client_id=np.int32(0), weights=pack_numpy(
            [np.asarray(t, np.float32) for t in initial_weights.trainable]))
    client_update = _build_client_update(
        model_fn, inputs, packing, data_type, state_type, epochs=epochs, steps=steps,
        batch_size=batch_size, learning_rate=learning_rate)
    train_metrics = rounds.build_train_metrics(client_update.type_signature.result[0])

    def initial_fields():
        return collections.OrderedDict(
            global_model_weights=tff.federated_eval(init_weights, tff.SERVER))

    def round_fn(state, round_info, client_data, client_states):
        outputs = tff.federated_map(
            client_update, (tff.federated_broadcast(round_info), client_data, client_states))
        records, new_client_states = outputs[0], outputs[1]
        return stateful_process.RoundOutput(
            server=collections.OrderedDict(global_model_weights=state.global_model_weights),
            metrics=tff.federated_zip(collections.OrderedDict(
                client_work=train_metrics(records))),
            client_states=new_client_states)

    return stateful_process.build_stateful_process(
        seed=seed, inputs=inputs, data_type=data_type, client_state_type=state_type,
        initial_fields=initial_fields, round_fn=round_fn,
        model_weights=lambda state: state["global_model_weights"],
        initial_client_state=initial_client_state)


def _build_client_update(model_fn, inputs, packing, data_type, state_type, *, epochs, steps,
                         batch_size, learning_rate):
    """One client's local training from its own model: `(record, new client state)`."""

    @tff.tensorflow.computation(rounds.ROUND_TYPE, data_type, state_type)
    def client_update(round_info, client_input, client_state):
        model = model_fn()
        trainable = list(tff.learning.models.ModelWeights.from_model(model).trainable)

        @tf.function
        def train(packed):
            for variable, value in zip(trainable, packing.unpack(packed)):
                variable.assign(value)
            examples = inputs.open(client_input, round_info["round"])
            client_id = examples.info["client_id"]
            if steps:
                loss = client_work_lib.local_sgd_steps(
                    model, trainable, examples, run_seed=round_info["seed"],
                    client_id=client_id, start_step=round_info["round"] * steps, steps=steps,
                    batch_size=batch_size, learning_rate=learning_rate)
            else:
                loss = client_work_lib.local_sgd_update(
                    model, trainable, examples,
                    client_work_lib.client_seed(round_info["seed"], round_info["round"],
                                                client_id),
                    epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
            record = collections.OrderedDict(
                client_id=client_id, num_examples=tf.cast(examples.num_examples, tf.float32),
                loss=loss)
            return record, packing.pack([tf.convert_to_tensor(v) for v in trainable])

        record, packed = train(client_state["weights"])
        return record, collections.OrderedDict(client_id=record["client_id"], weights=packed)

    return client_update
