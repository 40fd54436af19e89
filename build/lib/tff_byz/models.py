"""Keras model builders and their TFF wrappers.

Every builder takes the input shape, the number of classes and the dataset's
per-channel normalisation `(mean, std)`; inputs are raw pixels in [0, 1] and the
model's first layer normalises them (so data poisoning, e.g. a backdoor trigger,
works in raw pixel units). Outputs are logits; the loss is softmax cross-entropy.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

__all__ = ["MODELS", "build_keras_model", "count_parameters", "make_model_fn", "input_spec"]

Normalization = tuple[Sequence[float], Sequence[float]]

# True while `make_model_fn(zero_init=True)` builds a model: layers get constant initial
# values instead of random ones (see `make_model_fn`).
_ZERO_INIT = contextvars.ContextVar("zero_init", default=False)


@contextlib.contextmanager
def _zero_initializers():
    token = _ZERO_INIT.set(True)
    try:
        yield
    finally:
        _ZERO_INIT.reset(token)


def _init(initializer):
    """`initializer`, or zeros while a zero-initialised model is built."""
    return "zeros" if _ZERO_INIT.get() else initializer


def _dense(units, activation=None, *, kernel="glorot_uniform", bias="zeros"):
    return tf.keras.layers.Dense(units, activation=activation, kernel_initializer=_init(kernel),
                                 bias_initializer=_init(bias))


def _conv(filters, size, activation=None, **kwargs):
    return tf.keras.layers.Conv2D(filters, size, activation=activation,
                                  kernel_initializer=_init("glorot_uniform"), **kwargs)


def _normalize(input_shape, normalization: Normalization) -> tf.keras.layers.Layer:
    mean, std = (np.asarray(v, np.float32) for v in normalization)
    channels = input_shape[-1]
    if mean.size not in (1, channels) or std.size not in (1, channels):
        raise ValueError(
            f"normalization must have 1 or {channels} values per statistic; got mean={mean}, std={std}")
    # A fixed (non-trainable) layer: (x - mean) / std, broadcast over channels (one value,
    # or one per channel on the last axis; `axis=None` accepts only scalars).
    if mean.size == 1 and std.size == 1:
        return tf.keras.layers.Normalization(axis=None, mean=float(mean.ravel()[0]),
                                             variance=float(std.ravel()[0] ** 2))
    return tf.keras.layers.Normalization(
        axis=-1, mean=np.broadcast_to(mean.ravel(), [channels]),
        variance=np.broadcast_to(std.ravel() ** 2, [channels]))


def mlp(input_shape, num_classes, normalization) -> tf.keras.Model:
    """FedLAW's MNIST MLP: flatten → 128 ReLU → 64 ReLU → classes (109,386 params at 784/10)."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=input_shape),
        _normalize(input_shape, normalization),
        tf.keras.layers.Flatten(),
        _dense(128, activation="relu"),
        _dense(64, activation="relu"),
        _dense(num_classes),
    ])


def _torch_dense(units: int, fan_in: int, activation=None) -> tf.keras.layers.Dense:
    """A Dense layer initialised as PyTorch's `nn.Linear`: weights and biases both
    uniform on ±1/√fan_in (kaiming_uniform with a = √5 for the weights)."""
    bound = 1.0 / np.sqrt(fan_in)
    return _dense(units, activation,
                  kernel=tf.keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
                  bias=tf.keras.initializers.RandomUniform(-bound, bound))


def mlp_torch(input_shape, num_classes, normalization) -> tf.keras.Model:
    """`mlp` initialised as the FedLAW authors' PyTorch ThreeLayerFC (PyTorch's default
    `nn.Linear` init: weights ~2.3× smaller than Keras' Glorot, biases not zero)."""
    inputs = int(np.prod(input_shape))
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=input_shape),
        _normalize(input_shape, normalization),
        tf.keras.layers.Flatten(),
        _torch_dense(128, inputs, "relu"),
        _torch_dense(64, 128, "relu"),
        _torch_dense(num_classes, 64),
    ])


def small_mlp(input_shape, num_classes, normalization) -> tf.keras.Model:
    """A small MLP for the embedded 8×8 `digits` data: flatten → 32 ReLU → classes."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=input_shape),
        _normalize(input_shape, normalization),
        tf.keras.layers.Flatten(),
        _dense(32, activation="relu"),
        _dense(num_classes),
    ])


def wide_mlp(input_shape, num_classes, normalization) -> tf.keras.Model:
    """PDMM's suggested MLP: flatten → 200 ReLU → classes (784-200-10; 4096-256-40 style)."""
    hidden = 256 if np.prod(input_shape) > 1000 else 200
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=input_shape),
        _normalize(input_shape, normalization),
        tf.keras.layers.Flatten(),
        _dense(hidden, activation="relu"),
        _dense(num_classes),
    ])


def emnist_cnn(input_shape, num_classes, normalization) -> tf.keras.Model:
    """TFF's EMNIST CNN (simple_fedavg / the EMNIST tutorial): 2 convs, pool, dropout, dense 128."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=input_shape),
        _normalize(input_shape, normalization),
        _conv(32, 3, activation="relu"),
        _conv(64, 3, activation="relu"),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Dropout(0.25),
        tf.keras.layers.Flatten(),
        _dense(128, activation="relu"),
        tf.keras.layers.Dropout(0.5),
        _dense(num_classes),
    ])


def lenet(input_shape, num_classes, normalization) -> tf.keras.Model:
    """The robust-aggregation literature's MNIST CNN: conv5×5×20 → pool → conv5×5×50 → pool → 500 → classes."""
    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=input_shape),
        _normalize(input_shape, normalization),
        _conv(20, 5, activation="relu"),
        tf.keras.layers.MaxPool2D(2),
        _conv(50, 5, activation="relu"),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        _dense(500, activation="relu"),
        _dense(num_classes),
    ])


def cifar_cnn(input_shape, num_classes, normalization) -> tf.keras.Model:
    """FedLAW's CIFAR GroupNorm CNN (2,492,170 params at 32×32×3/10 classes)."""

    def conv_block(filters, groups, pool):
        layers = [
            _conv(filters, 3, padding="same"),
            tf.keras.layers.GroupNormalization(groups=groups, epsilon=1e-5),
            tf.keras.layers.ReLU(),
        ]
        return layers + ([tf.keras.layers.MaxPool2D(2, strides=2)] if pool else [])

    return tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=input_shape),
        _normalize(input_shape, normalization),
        *conv_block(32, 4, True),
        *conv_block(64, 8, True),
        *conv_block(128, 16, False),
        *conv_block(256, 32, True),
        tf.keras.layers.Flatten(),
        _dense(512, activation="relu"),
        _dense(num_classes),
    ])


MODELS: dict[str, Callable[..., tf.keras.Model]] = collections.OrderedDict(
    mlp=mlp, mlp_torch=mlp_torch, small_mlp=small_mlp, wide_mlp=wide_mlp, emnist_cnn=emnist_cnn,
    lenet=lenet, cifar_cnn=cifar_cnn)


def build_keras_model(name: str, input_shape, num_classes: int, normalization: Normalization,
                      seed: int | None = None) -> tf.keras.Model:
    """Builds model `name`; with `seed`, its initial weights are deterministic."""
    if name not in MODELS:
        raise ValueError(f"--model: unknown model {name!r}; valid choices: {', '.join(MODELS)}.")
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    return MODELS[name](tuple(input_shape), num_classes, normalization)


def count_parameters(model: tf.keras.Model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def input_spec(input_shape) -> collections.OrderedDict:
    """Element spec of one batch: raw pixels `x` and integer labels `y`."""
    return collections.OrderedDict(
        x=tf.TensorSpec([None, *input_shape], tf.float32),
        y=tf.TensorSpec([None], tf.int32),
    )


def make_model_fn(name: str, input_shape, num_classes: int, normalization: Normalization,
                  initial_weights: Sequence[np.ndarray] | None = None, *,
                  zero_init: bool = False):
    """A no-arg `model_fn` returning a `tff.learning.models.VariableModel`.

    `initial_weights` (Keras `get_weights()` order) fixes the initial model, so
    a run is reproducible and equal across processes built from the same fn.

    `zero_init=True` builds the layers with zero initial values: TFF runs a
    computation's variable initializers on every call, once per client and
    round, and random initializers are a fifth of a small client's fixed cost
    in the worker. Only for processes that assign the model's weights before
    using it, as every builder of this project does (never for TFF's own
    `build_weighted_fed_avg`, which takes its initial model from `model_fn`).
    """

    def model_fn() -> tff.learning.models.VariableModel:
        with (_zero_initializers() if zero_init else contextlib.nullcontext()):
            keras_model = MODELS[name](tuple(input_shape), num_classes, normalization)
        if initial_weights is not None:
            keras_model.set_weights(initial_weights)
        return tff.learning.models.from_keras_model(
            keras_model,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=input_spec(input_shape),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    if name not in MODELS:
        raise ValueError(f"--model: unknown model {name!r}; valid choices: {', '.join(MODELS)}.")
    return model_fn
