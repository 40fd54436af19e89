"""Local-only training, the baseline of decentralized and stateful methods: every client
trains its own model and nothing is exchanged (`tff_byz.local_only`)."""

from __future__ import annotations

import collections
import math

from algorithms.base import Algorithm, RoundReport, StatefulAlgorithm
from tff_byz.errors import ConfigError
from tff_byz.registry import Entry, Reference

__all__ = ["LOCAL_ENTRY", "LocalOnly"]

LOCAL_ENTRY = Entry(
    name="local", build=lambda **_: None, kind="algorithm",
    help="local-only baseline: every client trains its own model (--local_epochs, or "
         "--local_steps K), nothing is exchanged; reports the honest clients' models (mean and "
         "worst test accuracy). A training algorithm, not a rule.")

_NODES = ("test_accuracy_node_mean", "test_accuracy_node_min")

# TensorFlow code, imported when the algorithm is built, not when its flags are checked
# (start-up time; `tff_byz.registry.Reference`).
build_local_only_process = Reference("tff_byz.local_only:build_local_only_process")


class LocalOnly(StatefulAlgorithm):
    """Each client keeps and trains its own model. The evaluated model is the initial one (the
    server learns nothing); `test_accuracy_node_mean`/`_min` score the honest clients' own
    models, and the summary's `final_test_accuracy_node_mean` is the baseline's number."""

    @classmethod
    def validate(cls, config) -> None:
        Algorithm.validate(config)
        if config.client_work != "local_sgd":
            raise ConfigError(f"--aggregator=local trains with local SGD; --client_work must "
                              f"stay local_sgd; got {config.client_work}.")
        if config.attack != "none":
            raise ConfigError(f"--aggregator=local: clients exchange nothing, so no attack can "
                              f"act; use --attack=none (the baseline is the same under every "
                              f"attack); got --attack={config.attack!r}.")
        if config.server_lr != 1.0:
            raise ConfigError(f"--aggregator=local has no server step; --server_lr must be 1; "
                              f"got {config.server_lr}.")

    def build_process(self):
        setting = self.setting
        config = setting.config
        return build_local_only_process(
            setting.model_fn, setting.initial_weights, epochs=config.local_epochs,
            steps=config.local_steps, batch_size=config.batch_size,
            learning_rate=config.client_lr, seed=config.seed, inputs=setting.inputs)

    def model_weights(self, state):
        return state["global_model_weights"]

    def report(self, state, evaluator) -> RoundReport:
        honest = self.setting.honest_ids
        if evaluator is None or not len(honest):
            return RoundReport(collections.OrderedDict((name, math.nan) for name in _NODES))
        metrics = self.node_accuracies(self.client_models(honest, "weights"), evaluator)
        return RoundReport(metrics, summary=dict(
            final_test_accuracy_node_mean=metrics["test_accuracy_node_mean"],
            final_test_accuracy_node_min=metrics["test_accuracy_node_min"]))
