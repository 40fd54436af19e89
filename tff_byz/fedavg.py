"""FedAvg around any aggregation factory, composed from TFF's learning templates.

`build_fedavg_process` = broadcast distributor + client work (honest local SGD
by default) + the update aggregator (any TFF factory on the deltas, or a
client-record factory) + a server finalizer applying θ ← θ + server_lr · Agg(Δ),
joined by `tff.learning.templates.compose_learning_process`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz import client_inputs, collection
from tff_byz import client_work as client_work_lib

__all__ = ["build_fedavg_process", "build_delta_finalizer", "initial_weights_fn",
           "model_weights_from_keras"]


def model_weights_from_keras(keras_model: tf.keras.Model) -> tff.learning.models.ModelWeights:
    """Numpy `ModelWeights` of a Keras model, in `from_keras_model`'s variable order."""
    return tff.learning.models.ModelWeights(
        trainable=[v.numpy() for v in keras_model.trainable_variables],
        non_trainable=[v.numpy() for v in keras_model.non_trainable_variables])


def initial_weights_fn(weights: tff.learning.models.ModelWeights) -> tff.Computation:
    """A no-arg computation returning fixed (numpy) initial model weights."""

    @tff.tensorflow.computation
    def init():
        return tff.learning.models.ModelWeights(
            trainable=[tf.constant(w) for w in weights.trainable],
            non_trainable=[tf.constant(w) for w in weights.non_trainable])

    return init


def _keep_non_finite_update(state, update):
    """Never reject an update, but report whether it was non-finite.

    TFF's default finalizer silently drops a non-finite update, which would make
    a defenceless mean look robust against NaN/Inf attacks. Here the model
    becomes non-finite and the training loop stops with a clear message.
    """
    del state
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(update)])
    return tf.constant(False), collections.OrderedDict(
        update_non_finite=tf.cast(tf.logical_not(finite), tf.int32))


def build_delta_finalizer(server_optimizer: tff.learning.optimizers.Optimizer,
                          model_weights_type) -> tff.learning.templates.FinalizerProcess:
    """Applies `server_optimizer` with gradient −Agg(Δ), i.e. θ ← θ + lr · Agg(Δ) for SGD."""
    inner = tff.learning.templates.build_apply_optimizer_finalizer(
        server_optimizer, model_weights_type, should_reject_update=_keep_non_finite_update)
    update_type = model_weights_type.trainable

    @tff.tensorflow.computation(update_type)
    def negate(update):
        return tf.nest.map_structure(tf.negative, update)

    @tff.federated_computation(
        inner.next.type_signature.parameter[0],
        inner.next.type_signature.parameter[1],
        tff.FederatedType(update_type, tff.SERVER))
    def next_fn(state, weights, update):
        return inner.next(state, weights, tff.federated_map(negate, update))

    return tff.learning.templates.FinalizerProcess(inner.initialize, next_fn)


def build_fedavg_process(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    initial_weights: tff.learning.models.ModelWeights,
    *,
    aggregator=None,
    client_work: Optional[tff.learning.templates.ClientWorkProcess] = None,
    server_lr: float = 1.0,
    local_epochs: int = 1,
    batch_size: int = 32,
    client_lr: float = 0.1,
    seed: int = 0,
    inputs: client_inputs.ClientInputs | None = None,
) -> tff.learning.templates.LearningProcess:
    """FedAvg with any aggregation factory (default `tff.aggregators.MeanFactory()`).

    `client_work` defaults to `build_local_sgd_client_work(model_fn, ...)` with
    the given epochs, batch size, learning rate, seed and `inputs`; pass another
    (e.g. an attacked one, built for the same `inputs`) to replace it. The
    process's `next` takes one value per client: a
    `tff_byz.client_inputs.make_client_input(...)` (`inputs=ByValue()`, the
    default) or a client id (`inputs=ByReference(store, ...)`).
    """
    if not np.isfinite(server_lr) or server_lr <= 0:
        raise ValueError(f"--server_lr must be a finite number > 0; got {server_lr!r}.")
    if aggregator is None:
        aggregator = tff.aggregators.MeanFactory()
    inputs = client_inputs.ByValue() if inputs is None else inputs
    if client_work is None:
        client_work = client_work_lib.build_local_sgd_client_work(
            model_fn, epochs=local_epochs, batch_size=batch_size, learning_rate=client_lr,
            seed=seed, inputs=inputs)
    init_weights = initial_weights_fn(initial_weights)
    weights_type = init_weights.type_signature.result
    record_type = client_work.next.type_signature.result.result.member.update
    update_aggregator = collection.build_update_aggregator(aggregator, record_type)
    finalizer = build_delta_finalizer(
        tff.learning.optimizers.build_sgdm(learning_rate=server_lr), weights_type)
    return inputs.compose(tff.learning.templates.compose_learning_process(
        init_weights,
        tff.learning.templates.build_broadcast_process(weights_type),
        client_work,
        update_aggregator,
        finalizer,
    ))
