"""FedLAW as a training algorithm: `--aggregator=fedlaw:...` (fedlaw.md)."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from aggregators.registry import F_PARAM
from algorithms.base import Algorithm, RoundReport
from tff_byz.errors import ConfigError
from tff_byz.registry import (Entry, Param, Reference, at_least_one, in_unit_interval,
                              non_negative, positive)

if TYPE_CHECKING:
    from fedlaw.process import FedLAWOptions

__all__ = ["FEDLAW", "FedLAW"]

# TensorFlow code, imported when the algorithm is built, not when its flags are checked
# (start-up time; `tff_byz.registry.Reference`).
build_fedlaw_process = Reference("fedlaw.process:build_fedlaw_process")
detection_metrics = Reference("fedlaw.math:detection_metrics")
build_local_sgd_client_work = Reference("tff_byz.client_work:build_local_sgd_client_work")
reported_loss = Reference("fedlaw.reported_loss:reported_loss")

FEDLAW = Entry(
    name="fedlaw", build="fedlaw.process:FedLAWOptions", kind="algorithm",
    help="FedLAW (Parsa et al., arXiv 2511.03529): learnable sparse client weights, two client "
         "passes per learning round; a training algorithm, not a rule (no pre-aggregators).",
    params={
        "beta": Param(float, 1e-3, "weight step β", check=positive),
        "s_start": Param(int, None, "last round of s = n (default round(0.04·rounds))",
                         check=non_negative),
        "s_end": Param(int, None, "first round of s = n − f (default round(0.5·rounds))",
                       check=non_negative),
        "cap": Param(float, None, "weight cap t (default 1/(s_final − ⌈0.05n⌉))", check=in_unit_interval),
        "freeze": Param(int, None, "learn w in rounds 0..K−1, then aggregate with frozen w",
                        check=at_least_one),
        "weight_step": Param(str, "full", "full, or bsum (loss-only ablation)",
                             choices=("full", "bsum")),
        "clip": Param(bool, False, "ablation: clip deltas to the median norm"),
        "loss_filter": Param(bool, False, "ablation: MAD pre-filter on the pass-B losses"),
        "loss": Param(str, "last_epoch", "reported loss: last_epoch (mean of the last local "
                      "epoch), start / end (whole local set before / after training)",
                      choices=("last_epoch", "start", "end")),
        "f": F_PARAM,
    })


class FedLAW(Algorithm):
    """Learned sparse client weights: θ ← θ + Σ w_i Δ_i, w learned by a look-ahead pass.

    Reports the learned weights (weights.csv) and, when the run has Byzantine clients,
    how well small weights detect them (fedlaw.md §7)."""

    @classmethod
    def validate(cls, config) -> None:
        Algorithm.validate(config)
        if config.client_work != "local_sgd":
            raise ConfigError(f"--aggregator=fedlaw needs --client_work=local_sgd; got "
                              f"--client_work={config.client_work}.")
        if config.server_lr != 1.0:
            raise ConfigError(f"--aggregator=fedlaw steps θ + Σ w_i Δ_i (its server step is "
                              f"the client lr α); --server_lr must be 1; got {config.server_lr}.")

    @property
    def options(self) -> FedLAWOptions:
        return FEDLAW.build(**self.setting.aggregator[0].params)

    def build_process(self):
        setting = self.setting
        config, plan, options = setting.config, setting.attack_plan, self.options
        honest = build_local_sgd_client_work(
            setting.model_fn, epochs=config.local_epochs, batch_size=config.batch_size,
            learning_rate=config.client_lr, seed=config.seed, steps=config.local_steps,
            inputs=setting.inputs, training=reported_loss(
                options.loss, config.batch_size, inner=plan.local_training()))
        return build_fedlaw_process(
            setting.model_fn, setting.initial_weights,
            plan.client_work(honest, seed=config.seed, inputs=setting.inputs),
            options=options, num_clients=setting.num_clients, rounds=config.rounds,
            declared_fraction=setting.declared_byzantine_fraction, alpha=config.client_lr,
            wrap_collector=lambda factory: plan.aggregator(factory, seed=config.seed),
            inputs=setting.inputs)

    def report(self, state, evaluator) -> RoundReport:
        weights = self.process.client_weights(state)
        report = RoundReport(client_weights=weights)
        byzantine = self.setting.byzantine
        if byzantine.any():  # precision and recall mean nothing without Byzantine clients
            found = detection_metrics(weights, byzantine)
            detection = collections.OrderedDict(
                (key, float(found[key])) for key in ("precision", "recall", "f1", "accuracy")
                if key in found)
            report.metrics.update((f"detection/{key}", value) for key, value in detection.items())
            report.summary["final_detection"] = detection
        return report
