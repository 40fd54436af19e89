"""FedAvg (local SGD at the clients) with any robust rule, under any attack."""

from __future__ import annotations

from aggregators import AGGREGATORS, AggregatorContext
from aggregators.registry import resolve_chain
from algorithms.base import Algorithm, Setting
from tff_byz.errors import ConfigError
from tff_byz.registry import Reference, SpecError

__all__ = ["FedAvg", "robust_aggregator", "check_robust_aggregator"]

# TensorFlow code, imported when the algorithm is built, not when its flags are checked
# (start-up time; `tff_byz.registry.Reference`).
build_aggregator = Reference("aggregators.build:build_aggregator")
build_local_sgd_client_work = Reference("tff_byz.client_work:build_local_sgd_client_work")
build_fedavg_process = Reference("tff_byz.fedavg:build_fedavg_process")


def check_robust_aggregator(config) -> None:
    """Raises `ConfigError` unless `--aggregator` is pre-aggregators before one rule (what
    `robust_aggregator` builds)."""
    spec = "+".join(c.canonical for c in AGGREGATORS.resolve(config.aggregator))
    try:
        resolve_chain(spec)
    except SpecError as error:
        raise ConfigError(str(error)) from None


def robust_aggregator(setting: Setting):
    """The run's `--aggregator` rule, told the declared Byzantine fraction only, wrapped by
    the colluding attacks (unchanged when there are none)."""
    config = setting.config
    rule = build_aggregator(config.aggregator, AggregatorContext(
        declared_byzantine_fraction=setting.declared_byzantine_fraction,
        clients_per_round=setting.clients_per_round, seed=config.seed))
    return setting.attack_plan.aggregator(rule, seed=config.seed)


class FedAvg(Algorithm):
    """θ ← θ + server_lr · Agg(Δ_i): each client runs local SGD from θ (epochs or K steps);
    local attacks transform the Byzantine clients' records, colluding ones the rule's input."""

    @classmethod
    def validate(cls, config) -> None:
        Algorithm.validate(config)
        check_robust_aggregator(config)

    def build_process(self):
        setting = self.setting
        config, plan = setting.config, setting.attack_plan
        honest = build_local_sgd_client_work(
            setting.model_fn, epochs=config.local_epochs, batch_size=config.batch_size,
            learning_rate=config.client_lr, seed=config.seed, steps=config.local_steps,
            inputs=setting.inputs, training=plan.local_training())
        work = plan.client_work(honest, seed=config.seed, message=config.attack_message,
                                inputs=setting.inputs)
        return build_fedavg_process(
            setting.model_fn, setting.initial_weights, aggregator=robust_aggregator(setting),
            client_work=work, server_lr=config.server_lr, inputs=setting.inputs)

    def model_weights(self, state):
        return state.global_model_weights
