"""Test-set evaluation of a model, in plain TensorFlow (no TFF), and the backdoor scores."""

from __future__ import annotations

import collections
import math
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from attacks.poisoning import transforms as poisoning
from attacks.plan import Backdoor

__all__ = ["Evaluator", "BackdoorScore"]


class Evaluator:
    """Centralised test-set evaluation of server model weights (plain TF, no TFF).

    The Keras model is built on first use: a Keras model created before TFF
    traces its computations (which build models inside `tf.Graph`s) is left in
    an "invalid state" by Keras, so it must come after process construction.
    """

    def __init__(self, build_model: Callable[[], tf.keras.Model], x: np.ndarray, y: np.ndarray,
                 batch_size=1000):
        self._build_model = build_model
        self._data = (x, y, batch_size)
        self._model = None
        self._evaluate = None

    def _build(self):
        self._model = self._build_model()
        x, y, batch_size = self._data
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache()
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

        # Graph code without AutoGraph: AutoGraph re-reads this file's source when it first
        # traces (at the first evaluation, possibly an hour into a run), and an edited file
        # then yields the wrong function (a Python loop over the dataset unrolled forever).
        @tf.function(autograph=False)
        def evaluate():
            def add_batch(totals, batch):
                xb, yb = batch
                logits = self._model(xb, training=False)
                correct = tf.reduce_sum(tf.cast(tf.equal(
                    tf.argmax(logits, axis=-1, output_type=tf.int32), yb), tf.float32))
                return (totals[0] + loss_fn(yb, logits), totals[1] + correct,
                        totals[2] + tf.cast(tf.shape(yb)[0], tf.float32))

            loss_sum, correct, count = dataset.reduce(
                (tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)), add_batch)
            return loss_sum / count, correct / count

        self._evaluate = evaluate

    def _load(self, weights: tff.learning.models.ModelWeights) -> None:
        if self._model is None:
            self._build()
        for variable, value in zip(self._model.trainable_variables, weights.trainable):
            variable.assign(value)
        for variable, value in zip(self._model.non_trainable_variables, weights.non_trainable):
            variable.assign(value)

    def __call__(self, weights: tff.learning.models.ModelWeights) -> tuple[float, float]:
        self._load(weights)
        loss, accuracy = self._evaluate()
        return float(loss), float(accuracy)

    def predict(self, weights: tff.learning.models.ModelWeights, x: np.ndarray) -> np.ndarray:
        """Predicted labels of `x` under `weights`."""
        self._load(weights)
        logits = self._model.predict(x, batch_size=self._data[2], verbose=0)
        return np.argmax(logits, axis=-1)


class BackdoorScore:
    """A backdoor attack's metrics on the triggered test set (attacks.md §2): the attack
    success rate (fixed target), or the triggered accuracy and its gap to the clean one."""

    def __init__(self, backdoor: Backdoor, test_x: np.ndarray, test_y: np.ndarray):
        self.target = backdoor.target
        self.triggered_x = backdoor.stamp(test_x)
        self.test_y = test_y
        self.names = (("backdoor/attack_success_rate",) if self.target is not None else
                      ("backdoor/triggered_accuracy", "backdoor/accuracy_gap"))

    def __call__(self, evaluator: Evaluator, weights, clean_accuracy: float,
                 evaluate: bool) -> "collections.OrderedDict[str, float]":
        if not evaluate:
            return collections.OrderedDict((name, math.nan) for name in self.names)
        predicted = evaluator.predict(weights, self.triggered_x)
        if self.target is not None:
            return collections.OrderedDict([(self.names[0], poisoning.attack_success_rate(
                predicted, self.test_y, self.target))])
        triggered = float(np.mean(predicted == self.test_y))
        return collections.OrderedDict([(self.names[0], triggered),
                                        (self.names[1], clean_accuracy - triggered)])
