"""Momentum SGD with a persistent momentum per client, aggregated by any robust rule, under
any attack that can act on a momentum message."""

from __future__ import annotations

from algorithms.base import Algorithm, StatefulAlgorithm
from algorithms.fedavg import check_robust_aggregator, robust_aggregator
from attacks import resolve_attack
from tff_byz.errors import ConfigError
from tff_byz.registry import Reference

__all__ = ["MomentumSGD", "UNSUPPORTED_ATTACKS"]

# Attacks that mean nothing for a client that sends its momentum, and why.
UNSUPPORTED_ATTACKS = {
    "random_params": "it trains from θ + ε and reports the model difference ψ − θ; a "
                     "momentum_sgd client sends its momentum",
    "weight_lying": "it changes only the aggregation weight; momentum_sgd weighs every client 1",
}

# TensorFlow code, imported when the algorithm is built, not when its flags are checked
# (start-up time; `tff_byz.registry.Reference`).
build_momentum_sgd_process = Reference("tff_byz.momentum:build_momentum_sgd_process")


class MomentumSGD(StatefulAlgorithm):
    """One mini-batch gradient step with weight decay per client and round; each client sends
    its momentum, the server steps θ ← θ − server_lr · Agg(m_i) (`tff_byz.momentum`).

    Data attacks change the Byzantine clients' batches, local attacks the momentum they send
    (`sign_flip:mode=ascent` their gradients), colluding attacks replace it in the aggregator
    wrapper; a Byzantine client whose attack ignores its own vector skips its step."""

    @classmethod
    def validate(cls, config) -> None:
        Algorithm.validate(config)
        for component in resolve_attack(config.attack):
            reason = UNSUPPORTED_ATTACKS.get(component.name)
            if reason:
                raise ConfigError(f"--attack={component.compact!r} cannot run with "
                                  f"--client_work=momentum_sgd: {reason}.")
        if config.attack_message != "delta":
            raise ConfigError(f"--attack_message={config.attack_message} needs "
                              f"--client_work=local_sgd: a momentum_sgd client sends its "
                              f"momentum, not a model.")
        check_robust_aggregator(config)

    def build_process(self):
        setting = self.setting
        config = setting.config
        return build_momentum_sgd_process(
            setting.model_fn, setting.initial_weights, aggregator=robust_aggregator(setting),
            batch_size=config.batch_size, momentum=config.momentum,
            weight_decay=config.weight_decay, server_lr=config.server_lr, seed=config.seed,
            inputs=setting.inputs, attacks=setting.attack_plan.step_attacks())

    def model_weights(self, state):
        return state["global_model_weights"]
