"""PDMM as a training algorithm: `--aggregator=pdmm:...`, centralized (`--topology=star`)
or decentralized over a graph (pdmm.md)."""

from __future__ import annotations

import collections
import functools
import math
from typing import TYPE_CHECKING, Optional

import numpy as np

from algorithms.base import RoundReport, StatefulAlgorithm
from attacks import resolve_attack
from pdmm import graphs
from pdmm.regimes import linear_factor, weight_decay
from tff_byz.errors import ConfigError
from tff_byz.registry import Entry, Param, Reference, at_least_one, positive

if TYPE_CHECKING:
    from pdmm.process import PDMMOptions

__all__ = ["PDMM_ENTRY", "PDMM", "DecentralizedPDMM"]

# TensorFlow code, imported when the algorithm is built, not when its flags are checked
# (start-up time; `tff_byz.registry.Reference`).
build_pdmm_process = Reference("pdmm.process:build_pdmm_process")
build_decentralized_pdmm_process = Reference(
    "pdmm.decentralized:build_decentralized_pdmm_process")


def _theta(value) -> Optional[str]:
    return None if 0.0 < value <= 1.0 else "must be in (0, 1] (1 plain PDMM, 0.5 averaged)"


PDMM_ENTRY = Entry(
    name="pdmm", build="pdmm.process:PDMMOptions", kind="algorithm",
    help="PDMM (Xia, Yu & Li, arXiv 2503.10792): primal-dual consensus; the server is a data-less "
         "PDMM node, clients keep (w, v, u) between rounds and send only y = 2w − v; "
         "--topology=ring|complete|rgg runs it decentralized. A training algorithm, not a rule.",
    params={
        "c": Param(float, 0.4, "penalty c (sets the speed, not the fixed point)", check=positive),
        "theta": Param(float, 1.0, "relaxation θ: 1 plain PDMM (FedSplit), 0.5 averaged",
                       check=_theta),
        "local_steps": Param(int, None, "SGD steps K of the inexact prox (default --local_steps "
                             "if set, else 10)", check=at_least_one),
        "init": Param(str, "consensus", "consensus (w = v = u = w_0) or zero (v = u = 0)",
                      choices=("consensus", "zero")),
    })

_HONEST_MEAN = ("test_accuracy_honest_mean", "test_loss_honest_mean", "consensus_gap_honest")
_NODES = ("test_accuracy_node_mean", "test_accuracy_node_min")


class PDMM(StatefulAlgorithm):
    """Centralized PDMM: the server is a data-less PDMM node; clients keep (w, v, u).

    Besides the server model w_s it reports the honest clients' mean model w̄_H, its test
    accuracy and loss, and the consensus gap mean_{i∈H} ‖w_i − w̄_H‖ (pdmm.md §2)."""
    _STATE_KEY = "wvu"  # row 0 of a client's state is its w_i
    _METRICS = _HONEST_MEAN + _NODES

    @classmethod
    def validate(cls, config) -> None:
        if config.client_work != "local_sgd":
            raise ConfigError(f"--aggregator=pdmm runs its own client work (K prox steps); "
                              f"--client_work must stay local_sgd; got {config.client_work}.")
        if config.server_lr != 1.0:
            raise ConfigError(f"--aggregator=pdmm has no server learning rate (w_s is the "
                              f"mean of the messages); --server_lr must be 1; got "
                              f"{config.server_lr}.")

    @property
    def options(self) -> PDMMOptions:
        return PDMM_ENTRY.build(**self.setting.aggregator[0].params)

    def build_process(self):
        setting = self.setting
        config, plan = setting.config, setting.attack_plan
        return build_pdmm_process(
            setting.model_fn, setting.initial_weights, options=self.options,
            local_steps=self.options.steps(config.local_steps),
            batch_size=config.batch_size, learning_rate=config.client_lr, seed=config.seed,
            num_clients=setting.num_clients,
            partial=setting.clients_per_round < setting.num_clients,
            attacks=plan.local_attacks, mark_groups=bool(plan.collusions),
            wrap_aggregator=lambda factory: plan.aggregator(factory, seed=config.seed),
            inputs=setting.inputs)

    def model_weights(self, state):
        return state["server"]["global_model_weights"]

    def honest_models(self):
        """The honest clients' w, stacked (one array per leaf), and their mean."""
        leaves = self.client_models(self.setting.honest_ids, self._STATE_KEY, row=0)
        return leaves, [leaf.mean(axis=0) for leaf in leaves]

    @functools.cached_property
    def weight_decay(self) -> Optional[float]:
        """λ_P of the run's attack (`pdmm.regimes`), or None when the attack is not linear in
        the message (or there are several)."""
        components = resolve_attack(self.setting.config.attack)
        if len(components) != 1:
            return None
        kappa = linear_factor(components[0].name, components[0].params)
        if kappa is None:
            return None
        fraction = float(np.mean(np.asarray(self.setting.byzantine, bool)))
        return weight_decay(kappa, fraction, self.options.c)

    def report(self, state, evaluator) -> RoundReport:
        decay = self.weight_decay
        extra = {} if decay is None else {"lambda_p": decay}
        if evaluator is None or not len(self.setting.honest_ids):
            return RoundReport(collections.OrderedDict(
                [(name, math.nan) for name in self._METRICS] + list(extra.items())))
        leaves, mean = self.honest_models()
        gap = np.mean(np.sqrt(sum(np.sum((leaf - m) ** 2, axis=tuple(range(1, leaf.ndim)))
                                  for leaf, m in zip(leaves, mean))))
        loss, accuracy = evaluator(self._trainable_weights(mean))
        metrics = collections.OrderedDict(zip(_HONEST_MEAN, [accuracy, loss, float(gap)]))
        metrics.update(self.node_accuracies(leaves, evaluator))
        metrics.update(extra)
        return RoundReport(metrics, summary=dict(
            extra, final_test_accuracy_honest_mean=accuracy,
            final_test_accuracy_node_mean=metrics["test_accuracy_node_mean"],
            final_test_accuracy_node_min=metrics["test_accuracy_node_min"]))


class DecentralizedPDMM(PDMM):
    """PDMM over a graph (`--topology=ring|complete|rgg`): every node runs every round; the
    evaluated model is the honest nodes' mean, and every honest node's own model is scored
    too (mean and worst accuracy)."""
    _STATE_KEY = "wz"

    @classmethod
    def validate(cls, config) -> None:
        PDMM.validate(config)
        if config.clients_per_round not in (0, config.num_clients):
            raise ConfigError(f"--topology={config.topology}: decentralized PDMM runs every node "
                              f"every round; --clients_per_round must be 0; got "
                              f"{config.clients_per_round}.")

    def build_process(self):
        setting = self.setting
        config, plan = setting.config, setting.attack_plan
        if plan.collusions:
            raise ConfigError(f"--attack={config.attack!r}: colluding attacks are not defined per "
                              f"edge; decentralized PDMM takes local message attacks only.")
        self.graph = graphs.build_graph(config.topology, setting.num_clients, config.seed)
        return build_decentralized_pdmm_process(
            setting.model_fn, setting.initial_weights, self.graph, options=self.options,
            local_steps=self.options.steps(config.local_steps),
            batch_size=config.batch_size, learning_rate=config.client_lr, seed=config.seed,
            attacks=plan.local_attacks, inputs=setting.inputs)

    def client_state_store(self):
        store = super().client_state_store()
        ids = np.arange(self.setting.num_clients)
        store.put(ids, [self.process.initial_client_state(int(i)) for i in ids])
        return store

    def model_weights(self, state):
        del state
        return self._trainable_weights(self.honest_models()[1])

