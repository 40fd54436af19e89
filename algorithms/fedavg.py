"""FedAvg (local SGD at the clients) with any robust rule, under any attack."""

from __future__ import annotations

from aggregators.build import AggregatorContext, build_aggregator
from algorithms.base import Algorithm, Setting
from tff_byz import client_work, fedavg

__all__ = ["FedAvg", "robust_aggregator"]


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

    def build_process(self):
        setting = self.setting
        config, plan = setting.config, setting.attack_plan
        honest = client_work.build_local_sgd_client_work(
            setting.model_fn, epochs=config.local_epochs, batch_size=config.batch_size,
            learning_rate=config.client_lr, seed=config.seed, ascent=plan.ascent(),
            steps=config.local_steps, inputs=setting.inputs)
        work = plan.client_work(honest, seed=config.seed, message=config.attack_message,
                                inputs=setting.inputs)
        return fedavg.build_fedavg_process(
            setting.model_fn, setting.initial_weights, aggregator=robust_aggregator(setting),
            client_work=work, server_lr=config.server_lr, inputs=setting.inputs)

    def model_weights(self, state):
        return state.global_model_weights
