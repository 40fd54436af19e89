"""Momentum SGD with a persistent momentum per client, aggregated by any robust rule."""

from __future__ import annotations

from algorithms.base import Algorithm, StatefulAlgorithm
from algorithms.fedavg import robust_aggregator
from attacks import resolve_attack
from tff_byz import momentum
from tff_byz.errors import ConfigError

__all__ = ["MomentumSGD"]


class MomentumSGD(StatefulAlgorithm):
    """One mini-batch gradient step with weight decay per client and round; each client sends
    its momentum, the server steps θ ← θ − server_lr · Agg(m_i) (`tff_byz.momentum`)."""

    @classmethod
    def validate(cls, config) -> None:
        Algorithm.validate(config)
        if any(c.name != "none" for c in resolve_attack(config.attack)):
            raise ConfigError(f"--attack={config.attack!r} needs --client_work=local_sgd "
                              f"(attacks transform its client work); got "
                              f"--client_work={config.client_work}.")

    def build_process(self):
        setting = self.setting
        config = setting.config
        return momentum.build_momentum_sgd_process(
            setting.model_fn, setting.initial_weights, aggregator=robust_aggregator(setting),
            batch_size=config.batch_size, momentum=config.momentum,
            weight_decay=config.weight_decay, server_lr=config.server_lr, seed=config.seed,
            inputs=setting.inputs)

    def model_weights(self, state):
        return state["global_model_weights"]
