"""Everything one run needs, built from its resolved config (no TFF execution yet).

The data split and its client-data store, the model, who is Byzantine, the
attack plan, and the training algorithm the settings choose
(`algorithms.algorithm_class`). Clients travel by reference: a round ships their
ids, and the TFF worker reads their rows from the store.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

from algorithms import AGGREGATOR_CHOICES, Algorithm, Setting, algorithm_class
from attacks import build_attack_plan, selection
from orchestration.config import ExperimentConfig
from orchestration.evaluation import BackdoorScore, Evaluator
from tff_byz import client_inputs, datasets, fedavg, models
from tff_byz import context as context_lib
from tff_byz.datasets import store as store_lib
from tff_byz.errors import ConfigError

__all__ = ["Experiment", "client_store", "sample_clients"]


def sample_clients(num_clients: int, clients_per_round: int, seed: int, round_index: int) -> np.ndarray:
    """Sorted client indices of a round: all clients, or M drawn from (seed, round)."""
    if clients_per_round in (0, num_clients):
        return np.arange(num_clients)
    rng = np.random.default_rng([seed, 0x5A3B, round_index])
    return np.sort(rng.choice(num_clients, size=clients_per_round, replace=False))


def client_store(config: ExperimentConfig, dataset) -> store_lib.ClientStore:
    """The run's client-data store (written once per split into the cache, then reused)."""
    key = collections.OrderedDict(
        data_dir=os.path.abspath(config.data_dir) if config.data_dir else None,
        partition=config.partition, num_clients=config.num_clients, seed=config.seed,
        q=config.q, alpha=config.alpha, q_mode=config.q_mode)
    if config.train_examples:  # absent otherwise, so existing stores keep their keys
        key["train_examples"] = config.train_examples
    arrays = [dataset.client_arrays(i) for i in range(dataset.num_clients)]
    return store_lib.ensure_store(store_lib.store_directory(config.dataset, key), arrays, key,
                                  seed=config.seed)


class Experiment:
    """The run's data, model, Byzantine clients, attack plan and algorithm."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.dataset = datasets.load_federated_dataset(
            config.dataset, data_dir=config.data_dir, partition=config.partition,
            num_clients=config.num_clients, seed=config.seed, q=config.q, alpha=config.alpha,
            q_mode=config.q_mode, train_examples=config.train_examples)
        self.num_clients = len(self.dataset.client_ids)
        input_shape, num_classes = self.dataset.input_shape, self.dataset.num_classes
        keras_model = models.build_keras_model(
            config.model, input_shape, num_classes, self.dataset.normalization, seed=config.seed)
        self.num_parameters = models.count_parameters(keras_model)
        initial_weights = fedavg.model_weights_from_keras(keras_model)
        self.evaluator = Evaluator(
            lambda: models.build_keras_model(config.model, input_shape, num_classes,
                                             self.dataset.normalization),
            self.dataset.test_x, self.dataset.test_y)
        self.attack_plan = build_attack_plan(config.attack, seed=config.seed, dataset=self.dataset)
        byzantine = selection.select_byzantine(
            self.num_clients, config.byzantine_fraction, config.byzantine_selection, config.seed,
            self.dataset.client_groups)
        if not self.attack_plan.is_noop and not byzantine.any():
            raise ConfigError(f"--attack={config.attack!r}: the selection "
                              f"{config.byzantine_selection!r} with --byzantine_fraction="
                              f"{config.byzantine_fraction:g} picks no Byzantine client among "
                              f"{self.num_clients}.")
        self.selection = selection.split_groups(byzantine, self.attack_plan.num_groups, config.seed)
        per_round = config.clients_per_round or self.num_clients
        # m per round: exact with full participation, the expected count otherwise.
        self.attack_plan.check(per_round, int(round(self.selection.actual_fraction * per_round)))
        self.byzantine = self.selection.byzantine
        # Defences are told the declared fraction only (default: the actual one).
        self.declared_byzantine_fraction = (
            config.declared_byzantine_fraction if config.declared_byzantine_fraction is not None
            else self.selection.actual_fraction)
        backdoor = self.attack_plan.backdoor
        self.backdoor_score = (None if backdoor is None else
                               BackdoorScore(backdoor, self.dataset.test_x, self.dataset.test_y))
        self.store = client_store(config, self.dataset)
        # From here on the training examples are read from the store, not held in memory.
        self.dataset = dataclasses.replace(self.dataset, client_data=datasets.StoreClientData(
            self.store, self.dataset.client_ids))
        self.inputs = client_inputs.ByReference(
            self.store, byzantine=self.selection.byzantine, attack_group=self.selection.groups,
            poison=self.attack_plan.data_poisoning(seed=config.seed, num_classes=num_classes))
        aggregator = AGGREGATOR_CHOICES.resolve(config.aggregator)
        self.algorithm: Algorithm = algorithm_class(aggregator, config.client_work,
                                                    config.topology)(Setting(
            config=config, aggregator=aggregator,
            # Every process assigns the broadcast weights before use: no random initializers.
            model_fn=models.make_model_fn(config.model, input_shape, num_classes,
                                          self.dataset.normalization, zero_init=True),
            initial_weights=initial_weights, num_clients=self.num_clients, inputs=self.inputs,
            attack_plan=self.attack_plan, byzantine=np.asarray(self.byzantine, bool),
            declared_byzantine_fraction=self.declared_byzantine_fraction,
            run_directory=os.path.join(config.output_dir, config.run_name)))

    def verify_store(self) -> None:
        """Checks that every TFF worker maps the store bytes this process validated
        (a remote worker needs the store at the same path); StoreError names the file."""
        workers = (len(context_lib.parse_worker_addresses(self.config.tff_workers))
                   if self.config.tff_workers else 1)
        try:
            answers = self.inputs.verify()([np.int32(0)] * workers)
        except Exception as error:  # pylint: disable=broad-except  (TFF wraps the worker's error)
            raise store_lib.StoreError(
                f"a TFF worker cannot read the client-data store {self.store.directory} "
                f"({type(error).__name__}); a worker host needs the store at that path") from error
        for answer in answers:
            for name, fingerprint in answer.items():
                if bytes(np.asarray(fingerprint, np.uint8)).hex() != self.store.fingerprints[name]:
                    raise store_lib.StoreError(
                        f"a TFF worker reads other bytes at {self.store.directory}/{name} than "
                        f"this process validated; copy the store to every worker host")
