"""Honest client work: E local epochs of plain SGD, as a `ClientWorkProcess`.

Each client returns a `ClientResult` whose `update` is a *client record*

    OrderedDict(delta=Δ_i, client_id=int32, num_examples=float32, loss=float32)

with Δ_i = ψ_i − θ the model delta (trainable weights structure; the spec's
convention: the server applies θ ← θ + server_lr · Agg(Δ)), the client's index,
its example count and the mean mini-batch training loss of its last local epoch.
`update_weight` is the example count. Attacks transform this record;
`tff_byz.collection` feeds its `delta` to any TFF aggregation factory, or the
whole record to identity-aware rules.

Randomness is explicit: the process state holds the run seed and the round
index; each client's shuffles use `stateless_fold_in(seed, round, client_id,
epoch)`, so a run is reproducible and resumes exactly.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz import client_inputs, rounds

__all__ = ["build_local_sgd_client_work", "client_record_type", "client_input_types",
           "local_sgd_update", "local_sgd_steps", "stream_batch_indices", "client_seed",
           "dataset_loss", "validate_local_sgd", "ClientWorkConfigError", "LocalTraining",
           "honest_training"]

LocalTraining = Callable[..., tf.Tensor]
"""`training(model, examples, round_info, train) -> loss`: one client's local training as
another package shapes it. `train(gradient_transform=None) -> loss` runs the honest local
SGD (with `gradient_transform(gradients) -> gradients` applied to every mini-batch
gradient) and returns its reported loss; the wrapper calls it once and returns the loss the
client reports. Wrappers nest by holding an inner training (an attack's gradient ascent,
`attacks.local.GradientAscent`; FedLAW's reported loss, `fedlaw.reported_loss`)."""


def honest_training(model, examples, round_info, train) -> tf.Tensor:
    """The `LocalTraining` that changes nothing."""
    del model, examples, round_info
    return train()


class ClientWorkConfigError(ValueError):
    pass


def client_record_type(delta_type) -> tff.StructWithPythonType:
    """TFF type of the client record for a given delta (trainable weights) type."""
    return tff.StructWithPythonType(
        [("delta", delta_type), ("client_id", np.int32), ("num_examples", np.float32),
         ("loss", np.float32)],
        collections.OrderedDict)


def client_seed(run_seed, round_num, client_id):
    """A stateless seed (int64[2]) from run seed, round index and client id."""
    seed = tf.stack([tf.cast(run_seed, tf.int64), tf.cast(round_num, tf.int64)])
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(client_id, tf.int64))


def client_input_types(model_fn, inputs: client_inputs.ClientInputs | None = None):
    """TFF types of one client's value under `inputs` (default `ByValue()`) and of the model
    weights."""
    inputs = client_inputs.ByValue() if inputs is None else inputs
    with tf.Graph().as_default():
        probe = model_fn()
        weights_type = tff.learning.models.weights_type_from_model(probe)
        example_spec = collections.OrderedDict(
            x=tf.TensorSpec(probe.input_spec["x"].shape[1:], probe.input_spec["x"].dtype),
            y=tf.TensorSpec(probe.input_spec["y"].shape[1:], probe.input_spec["y"].dtype))
    return inputs.type_signature(example_spec), weights_type


def validate_local_sgd(epochs, batch_size, learning_rate, steps=0):
    """Raises `ClientWorkConfigError` naming the flag of a bad local SGD setting."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ClientWorkConfigError(f"--local_steps must be an integer >= 0; got {steps!r}.")
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ClientWorkConfigError(f"--local_epochs must be an integer >= 1; got {epochs!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ClientWorkConfigError(f"--batch_size must be an integer >= 1; got {batch_size!r}.")
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ClientWorkConfigError(f"--client_lr must be a finite number > 0; got {learning_rate!r}.")


def local_sgd_update(model, trainable, examples: client_inputs.ClientExamples, seed, *, epochs,
                     batch_size, learning_rate, shuffle=True,
                     gradient_transform: Callable | None = None):
    """Plain SGD over `epochs` passes of `examples`; returns the last epoch's mean batch loss.

    Pure TF; call inside a `tf.function` (its loops need AutoGraph). `trainable` are the
    model's trainable variables, updated in place. Each epoch visits a fresh
    seeded permutation (unless `shuffle=False`) in batches of `batch_size`,
    keeping the last partial batch. `gradient_transform(grads) -> grads` lets
    attacks (e.g. gradient ascent) act on every mini-batch gradient.
    """
    num_examples = examples.num_examples
    num_batches = (num_examples + batch_size - 1) // batch_size
    last_epoch_loss = tf.constant(0.0, tf.float32)
    for epoch in tf.range(epochs):
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(num_examples), seed=tf.random.experimental.stateless_fold_in(
                    seed, tf.cast(epoch, tf.int64)))
        else:
            order = tf.range(num_examples)
        loss_sum = tf.constant(0.0, tf.float32)
        for b in tf.range(num_batches):
            index = order[b * batch_size:tf.minimum((b + 1) * batch_size, num_examples)]
            x, y = examples.gather(index)
            with tf.GradientTape() as tape:
                output = model.forward_pass(collections.OrderedDict(x=x, y=y), training=True)
            gradients = tape.gradient(output.loss, trainable)
            if gradient_transform is not None:
                gradients = gradient_transform(gradients)
            for variable, gradient in zip(trainable, gradients):
                variable.assign_sub(learning_rate * gradient)
            loss_sum += tf.cast(output.loss, tf.float32)
        last_epoch_loss = loss_sum / tf.cast(tf.maximum(num_batches, 1), tf.float32)
    return last_epoch_loss


_STREAM_TAG = 0x57EA  # separates the step stream's shuffles from the epoch shuffles


def stream_batch_indices(num_examples, batch_size, run_seed, client_id, step):
    """Indices of mini-batch number `step` of a client's endless example stream.

    The stream visits the client's examples epoch after epoch, each epoch in a
    fresh permutation seeded by (run seed, epoch, client id), in batches of
    `batch_size` (the last batch of an epoch may be smaller). Step k of round r
    continues where round r − 1 stopped, so "K local steps" walk through the
    data rather than restarting it every round. Pure TF (stateless); empty if
    the client has no examples.
    """
    step = tf.cast(step, tf.int64)
    num_examples = tf.cast(num_examples, tf.int64)
    batch_size = tf.constant(batch_size, tf.int64)
    num_batches = tf.maximum((num_examples + batch_size - 1) // batch_size, 1)
    epoch, position = step // num_batches, step % num_batches
    seed = tf.random.experimental.stateless_fold_in(
        client_seed(run_seed, epoch, client_id), tf.constant(_STREAM_TAG, tf.int64))
    order = tf.random.experimental.stateless_shuffle(tf.range(num_examples), seed=seed)
    return order[position * batch_size:tf.minimum((position + 1) * batch_size, num_examples)]


def local_sgd_steps(model, trainable, examples: client_inputs.ClientExamples, *, run_seed,
                    client_id, start_step, steps, batch_size, learning_rate,
                    extra_gradient: Callable | None = None,
                    gradient_transform: Callable | None = None):
    """`steps` SGD steps on the client's stream from `start_step`; returns the mean batch loss.

    Pure TF; call inside a `tf.function`. `trainable` (the model's trainable
    variables) is updated in place: v ← v − lr (∇loss(batch) + extra), where
    `extra_gradient(trainable) -> list` adds a term such as PDMM's proximal
    pull c (w − v). Batches come from `stream_batch_indices`.
    """
    loss_sum = tf.constant(0.0, tf.float32)
    for k in tf.range(steps):
        index = stream_batch_indices(examples.num_examples, batch_size, run_seed, client_id,
                                     tf.cast(start_step, tf.int64) + tf.cast(k, tf.int64))
        x, y = examples.gather(index)
        with tf.GradientTape() as tape:
            output = model.forward_pass(collections.OrderedDict(x=x, y=y), training=True)
        gradients = tape.gradient(output.loss, trainable)
        if gradient_transform is not None:
            gradients = gradient_transform(gradients)
        if extra_gradient is not None:
            gradients = [g + e for g, e in zip(gradients, extra_gradient(trainable))]
        for variable, gradient in zip(trainable, gradients):
            variable.assign_sub(learning_rate * gradient)
        loss_sum += tf.cast(output.loss, tf.float32)
    return loss_sum / tf.cast(tf.maximum(steps, 1), tf.float32)


def dataset_loss(model, examples: client_inputs.ClientExamples, batch_size):
    """Mean loss of `model` on all `examples` (inference mode), batch by batch; 0 if empty."""
    num_examples = examples.num_examples
    num_batches = (num_examples + batch_size - 1) // batch_size
    total = tf.constant(0.0, tf.float32)
    for b in tf.range(num_batches):
        start, stop = b * batch_size, tf.minimum((b + 1) * batch_size, num_examples)
        x, y = examples.gather(tf.range(start, stop))
        output = model.forward_pass(collections.OrderedDict(x=x, y=y), training=False)
        total += tf.cast(output.loss, tf.float32) * tf.cast(stop - start, tf.float32)
    return total / tf.cast(tf.maximum(num_examples, 1), tf.float32)


def build_local_sgd_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 0.1,
    seed: int = 0,
    shuffle: bool = True,
    steps: int = 0,
    inputs: client_inputs.ClientInputs | None = None,
    training: LocalTraining = honest_training,
) -> tff.learning.templates.ClientWorkProcess:
    """FedAvg's honest client work: `epochs` of SGD from the broadcast model.

    With `steps` = K > 0, each client instead takes exactly K mini-batch steps
    (`epochs` is ignored) on its example stream (`stream_batch_indices`),
    round r covering stream steps rK … rK + K − 1: PDMM's local-step
    protocol, so FedAvg and PDMM can be compared step for step. The reported
    `last_epoch` loss is then the mean loss of the K steps.

    Process: `initialize()` → state `OrderedDict(seed=int64, round=int64)@SERVER`;
    `next(state, model_weights@CLIENTS, client_input@CLIENTS)` → client records
    (see module doc) with example-count weights, measurements
    `OrderedDict(train_loss, num_examples)` (example-weighted mean loss, total
    examples) and the round counter advanced.

    `training` (`LocalTraining`) wraps each client's local training: an attack's gradient
    ascent or FedLAW's reported loss; the default trains honestly and reports the mean
    mini-batch loss of the last epoch (of the K steps).

    `inputs` (`tff_byz.client_inputs`): how clients arrive, `ByValue()` (default:
    `make_client_input` values) or `ByReference(store, ...)` (client ids). Each
    client reads only the rows its batches use.
    """
    validate_local_sgd(epochs, batch_size, learning_rate, steps)
    inputs = client_inputs.ByValue() if inputs is None else inputs
    data_type, weights_type = client_input_types(model_fn, inputs)
    counter = rounds.round_counter(seed)

    @tff.tensorflow.computation(rounds.ROUND_TYPE, weights_type, data_type)
    def client_update(state, weights, client_input):
        model = model_fn()
        model_weights = tff.learning.models.ModelWeights.from_model(model)

        # One tf.function: automatic control dependencies order the weight
        # assignment before training (a bare graph would drop the assigns).
        @tf.function
        def update(state, weights, client_input):
            tf.nest.map_structure(lambda v, w: v.assign(w), model_weights, weights)
            examples = inputs.open(client_input, state["round"])
            info = examples.info

            def train(gradient_transform=None):
                if steps:
                    return local_sgd_steps(
                        model, list(model_weights.trainable), examples,
                        run_seed=state["seed"], client_id=info["client_id"],
                        start_step=state["round"] * steps, steps=steps, batch_size=batch_size,
                        learning_rate=learning_rate, gradient_transform=gradient_transform)
                return local_sgd_update(
                    model, list(model_weights.trainable), examples,
                    client_seed(state["seed"], state["round"], info["client_id"]),
                    epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                    shuffle=shuffle, gradient_transform=gradient_transform)

            loss = training(model, examples, state, train)
            delta = tf.nest.map_structure(tf.subtract, model_weights.trainable, weights.trainable)
            num_examples = tf.cast(examples.num_examples, tf.float32)
            record = collections.OrderedDict(delta=delta, client_id=info["client_id"],
                                             num_examples=num_examples, loss=loss)
            return tff.learning.templates.ClientResult(update=record, update_weight=num_examples)

        return update(state, weights, client_input)

    @tff.federated_computation
    def init_fn():
        return tff.federated_eval(counter.initial, tff.SERVER)

    @tff.federated_computation(
        tff.FederatedType(rounds.ROUND_TYPE, tff.SERVER),
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS))
    def next_fn(state, weights, client_data):
        results = tff.federated_map(client_update,
                                    (tff.federated_broadcast(state), weights, client_data))
        measurements = tff.federated_zip(collections.OrderedDict(
            train_loss=tff.federated_mean(results.update.loss, results.update_weight),
            num_examples=tff.federated_sum(results.update_weight)))
        return tff.templates.MeasuredProcessOutput(
            state=tff.federated_map(counter.advance, state), result=results,
            measurements=measurements)

    return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
