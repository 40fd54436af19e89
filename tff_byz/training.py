"""The training loop of one experiment and its run directory.

    <output_dir>/<run_name>/config.json    resolved config, every default explicit
    <output_dir>/<run_name>/metrics.csv    one row per round (tff.program CSV release manager)
    <output_dir>/<run_name>/summary.json   status (running|complete|failed), final metrics
    <output_dir>/<run_name>/state/         tff.program.FileProgramStateManager checkpoints
    <output_dir>/<run_name>/tensorboard/   the same metrics for TensorBoard

A run is deterministic for its config: initial weights come from a seeded Keras
model, client sampling from (seed, round), client shuffles from the process
state. `--resume` reloads the latest checkpoint (falling back to an older one if
the newest is unreadable, e.g. after SIGKILL during a save) and continues; the
CSV manager drops rows after the checkpoint, so a resumed run's metrics equal an
uninterrupted run's. Ctrl-C/SIGTERM save the last completed round and mark the
run resumable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import glob
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_federated as tff
import tqdm

from aggregators import AggregatorContext, build_aggregator
from aggregators.base import too_few_clients_reason
from attacks import build_attack_plan, selection
from tff_byz import (client_inputs, client_state, client_work, datasets, fedavg, files, models,
                     momentum, processes)
from tff_byz import context as context_lib
from tff_byz.config import RESUMABLE_CHANGES, ConfigError, ExperimentConfig
from tff_byz.datasets import store as store_lib
from tff_byz.files import write_json_atomic
from tff_byz.packing import unpack_numpy
from tff_byz.report.results import accuracy_before_abort, breaks_loss_limit

__all__ = ["RunPaths", "Experiment", "run_experiment", "NonFiniteModelError",
           "RunDirectoryError", "sample_clients"]


class NonFiniteModelError(RuntimeError):
    pass


class RoundFailedError(RuntimeError):
    """A round has no result, for a reason of the run's own (e.g. a robust rule with too
    few finite clients): the run ends `failed` with this one-line reason."""


class RunDirectoryError(ConfigError):
    """The run directory is in a state the flags do not allow (CLI: exit 2)."""


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: str

    @property
    def config(self): return os.path.join(self.root, "config.json")
    @property
    def metrics(self): return os.path.join(self.root, "metrics.csv")
    @property
    def summary(self): return os.path.join(self.root, "summary.json")
    @property
    def state(self): return os.path.join(self.root, "state")
    @property
    def tensorboard(self): return os.path.join(self.root, "tensorboard")
    @property
    def worker_log(self): return os.path.join(self.root, "worker.log")
    @property
    def weights(self): return os.path.join(self.root, "weights.csv")


def sample_clients(num_clients: int, clients_per_round: int, seed: int, round_index: int) -> np.ndarray:
    """Sorted client indices of a round: all clients, or M drawn from (seed, round)."""
    if clients_per_round in (0, num_clients):
        return np.arange(num_clients)
    rng = np.random.default_rng([seed, 0x5A3B, round_index])
    return np.sort(rng.choice(num_clients, size=clients_per_round, replace=False))


def _flatten(structure, prefix="") -> "collections.OrderedDict[str, Any]":
    """Nested metrics → `a/b/c` keys (empty structures vanish)."""
    flat = collections.OrderedDict()
    if isinstance(structure, dict):
        items = structure.items()
    elif hasattr(structure, "_asdict"):
        items = structure._asdict().items()
    else:
        flat[prefix] = np.asarray(structure).tolist()
        return flat
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def _is_finite(weights) -> bool:
    return all(np.all(np.isfinite(np.asarray(w))) for w in tf.nest.flatten(weights))


class _Evaluator:
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


def _client_store(config: ExperimentConfig, dataset) -> store_lib.ClientStore:
    """The run's client-data store (written once per split into the cache, then reused)."""
    key = collections.OrderedDict(
        data_dir=os.path.abspath(config.data_dir) if config.data_dir else None,
        partition=config.partition, num_clients=config.num_clients, seed=config.seed,
        q=config.q, alpha=config.alpha, q_mode=config.q_mode)
    arrays = [dataset.client_arrays(i) for i in range(dataset.num_clients)]
    return store_lib.ensure_store(store_lib.store_directory(config.dataset, key), arrays, key,
                                  seed=config.seed)


class Experiment:
    """Everything one run needs, built from a resolved config (no TFF execution yet)."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.dataset = datasets.load_federated_dataset(
            config.dataset, data_dir=config.data_dir, partition=config.partition,
            num_clients=config.num_clients, seed=config.seed, q=config.q, alpha=config.alpha,
            q_mode=config.q_mode)
        self.num_clients = len(self.dataset.client_ids)
        input_shape = self.dataset.input_shape
        keras_model = models.build_keras_model(
            config.model, input_shape, self.dataset.num_classes, self.dataset.normalization,
            seed=config.seed)
        self.num_parameters = models.count_parameters(keras_model)
        self.initial_weights = fedavg.model_weights_from_keras(keras_model)
        # Every process assigns the broadcast weights before use: no random initializers.
        self.model_fn = models.make_model_fn(config.model, input_shape, self.dataset.num_classes,
                                             self.dataset.normalization, zero_init=True)
        self.evaluator = _Evaluator(
            lambda: models.build_keras_model(config.model, input_shape, self.dataset.num_classes,
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
        base_aggregator = build_aggregator(config.aggregator, AggregatorContext(
            declared_byzantine_fraction=self.declared_byzantine_fraction,
            clients_per_round=per_round, seed=config.seed))
        from fedlaw.process import FedLAWOptions  # pylint: disable=import-outside-toplevel
        from pdmm.process import PDMMOptions  # pylint: disable=import-outside-toplevel
        self.fedlaw_options = base_aggregator if isinstance(base_aggregator, FedLAWOptions) else None
        self.pdmm_options = base_aggregator if isinstance(base_aggregator, PDMMOptions) else None
        algorithm = self.fedlaw_options is not None or self.pdmm_options is not None
        self.aggregator = (None if algorithm else
                           self.attack_plan.aggregator(base_aggregator, seed=config.seed))
        self.backdoor = self.attack_plan.backdoor
        self.triggered_test_x = (self.backdoor.stamp(self.dataset.test_x)
                                 if self.backdoor is not None else None)
        self.graph = None  # decentralized PDMM's communication graph
        self.store = _client_store(config, self.dataset)
        # From here on the training examples are read from the store, not held in memory.
        self.dataset = dataclasses.replace(self.dataset, client_data=datasets.StoreClientData(
            self.store, self.dataset.client_ids))
        # Clients travel by reference: a round ships their ids; the worker reads their rows.
        self.inputs = client_inputs.ByReference(
            self.store, byzantine=self.selection.byzantine, attack_group=self.selection.groups,
            poison=self.attack_plan.data_poisoning(seed=config.seed,
                                                   num_classes=self.dataset.num_classes))
        self.process, self.client_states = self._build_process()
        self.rounds = (None if self.client_states is None else
                       client_state.StatefulRounds(self.process, self.client_states))

    def _build_process(self):
        config = self.config
        if self.pdmm_options is not None:
            return self._build_pdmm_process()
        if config.client_work == "local_sgd":
            honest = client_work.build_local_sgd_client_work(
                self.model_fn, epochs=config.local_epochs, batch_size=config.batch_size,
                learning_rate=config.client_lr, seed=config.seed, ascent=self.attack_plan.ascent(),
                loss_at=self.fedlaw_options.loss if self.fedlaw_options is not None else "last_epoch",
                steps=config.local_steps, inputs=self.inputs)
            if self.fedlaw_options is not None:
                from fedlaw.process import build_fedlaw_process  # pylint: disable=import-outside-toplevel
                process = build_fedlaw_process(
                    self.model_fn, self.initial_weights,
                    self.attack_plan.client_work(honest, seed=config.seed, inputs=self.inputs),
                    options=self.fedlaw_options, num_clients=self.num_clients,
                    rounds=config.rounds, declared_fraction=self.declared_byzantine_fraction,
                    alpha=config.client_lr,
                    wrap_collector=lambda f: self.attack_plan.aggregator(f, seed=config.seed),
                    inputs=self.inputs)
                return process, None
            process = fedavg.build_fedavg_process(
                self.model_fn, self.initial_weights, aggregator=self.aggregator,
                client_work=self.attack_plan.client_work(honest, seed=config.seed,
                                                         message=config.attack_message,
                                                         inputs=self.inputs),
                server_lr=config.server_lr, inputs=self.inputs)
            return process, None
        process = momentum.build_momentum_sgd_process(
            self.model_fn, self.initial_weights, aggregator=self.aggregator,
            batch_size=config.batch_size, momentum=config.momentum,
            weight_decay=config.weight_decay, server_lr=config.server_lr, seed=config.seed,
            inputs=self.inputs)
        store = client_state.ClientStateStore(process.client_state_template, self.num_clients,
                                              id_key="client_id")
        return process, store

    def _build_pdmm_process(self):
        """Centralized PDMM (`pdmm.process`) and the store of its client states."""
        from pdmm.process import build_pdmm_process  # pylint: disable=import-outside-toplevel
        config, plan = self.config, self.attack_plan
        per_round = config.clients_per_round or self.num_clients
        if config.topology != "star":
            return self._build_decentralized_pdmm_process()
        process = build_pdmm_process(
            self.model_fn, self.initial_weights, options=self.pdmm_options,
            local_steps=self.pdmm_options.steps(config.local_steps),
            batch_size=config.batch_size, learning_rate=config.client_lr, seed=config.seed,
            num_clients=self.num_clients, partial=per_round < self.num_clients,
            attacks=plan.local_attacks, mark_groups=bool(plan.collusions),
            wrap_aggregator=lambda factory: plan.aggregator(factory, seed=config.seed),
            inputs=self.inputs)
        return process, self._client_state_store(process)

    def _build_decentralized_pdmm_process(self):
        from pdmm import graphs  # pylint: disable=import-outside-toplevel
        from pdmm.decentralized import build_decentralized_pdmm_process  # pylint: disable=import-outside-toplevel
        config, plan = self.config, self.attack_plan
        if config.clients_per_round not in (0, self.num_clients):
            raise ConfigError(f"--topology={config.topology}: decentralized PDMM runs every node "
                              f"every round; --clients_per_round must be 0; got "
                              f"{config.clients_per_round}.")
        if plan.collusions:
            raise ConfigError(f"--attack={config.attack!r}: colluding attacks are not defined per "
                              f"edge; decentralized PDMM takes local message attacks only.")
        self.graph = graphs.build_graph(config.topology, self.num_clients, config.seed)
        process = build_decentralized_pdmm_process(
            self.model_fn, self.initial_weights, self.graph, options=self.pdmm_options,
            local_steps=self.pdmm_options.steps(config.local_steps),
            batch_size=config.batch_size, learning_rate=config.client_lr, seed=config.seed,
            attacks=plan.local_attacks, inputs=self.inputs)
        store = self._client_state_store(process)
        ids = np.arange(self.num_clients)
        store.put(ids, [process.initial_client_state(int(i)) for i in ids])
        return process, store

    def _client_state_store(self, process):
        """In memory, or in memory-mapped files under the run directory when the
        states of all clients would take more than `_MEMMAP_BYTES`."""
        initial = process.initial_client_state
        store_kwargs = dict(initial=None if callable(initial) else initial, id_key="client_id")
        probe = client_state.ClientStateStore(process.client_state_template, 1, **store_kwargs)
        if probe.bytes_per_client * self.num_clients <= _MEMMAP_BYTES:
            return client_state.ClientStateStore(process.client_state_template, self.num_clients,
                                                 **store_kwargs)
        directory = os.path.join(self.config.output_dir, self.config.run_name, "client_states")
        return client_state.ClientStateStore(process.client_state_template, self.num_clients,
                                             backend="memmap", directory=directory, **store_kwargs)

    def honest_mean_metrics(self, evaluate: bool):
        """PDMM (pdmm.md §2): the honest clients' mean model w̄_H, its test accuracy and loss,
        and the consensus gap mean_{i∈H} ‖w_i − w̄_H‖ (from the client-state store)."""
        names = ["test_accuracy_honest_mean", "test_loss_honest_mean", "consensus_gap_honest"]
        if self.graph is not None:  # decentralized: also every honest node's own model
            names += ["test_accuracy_node_mean", "test_accuracy_node_min"]
        if self.pdmm_options is None:
            return collections.OrderedDict()
        honest = np.flatnonzero(~np.asarray(self.byzantine, bool))
        if not evaluate or not len(honest):
            return collections.OrderedDict((name, math.nan) for name in names)
        leaves, mean = self._honest_models(honest)
        gap = np.mean(np.sqrt(sum(np.sum((leaf - m) ** 2, axis=tuple(range(1, leaf.ndim)))
                                  for leaf, m in zip(leaves, mean))))
        loss, accuracy = self.evaluator(self._weights(mean))
        values = [accuracy, loss, float(gap)]
        if self.graph is not None:
            node_accuracy = [self.evaluator(self._weights([leaf[k] for leaf in leaves]))[1]
                             for k in range(len(honest))]
            values += [float(np.mean(node_accuracy)), float(np.min(node_accuracy))]
        return collections.OrderedDict(zip(names, values))

    def _honest_models(self, honest):
        """Stacked honest clients' w (one array per leaf) and their mean."""
        key = "wz" if self.graph is not None else "wvu"  # row 0 is the client's w_i
        self.rounds.sync()
        rows = np.stack([np.asarray(state[key][0]) for state in self.client_states.get(honest)])
        leaves = unpack_numpy(rows, self.initial_weights.trainable)  # [clients, *shape] each
        return leaves, [leaf.mean(axis=0) for leaf in leaves]

    def _weights(self, trainable):
        return tff.learning.models.ModelWeights(
            trainable=list(trainable), non_trainable=list(self.initial_weights.non_trainable))

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

    def backdoor_metrics(self, weights, clean_accuracy: float, evaluate: bool):
        """Backdoor metrics on the triggered test set (attacks.md §2)."""
        from attacks import poisoning  # pylint: disable=import-outside-toplevel
        target = self.backdoor.target
        names = (("backdoor/attack_success_rate",) if target is not None else
                 ("backdoor/triggered_accuracy", "backdoor/accuracy_gap"))
        if not evaluate:
            return collections.OrderedDict((name, math.nan) for name in names)
        predicted = self.evaluator.predict(weights, self.triggered_test_x)
        if target is not None:
            return collections.OrderedDict([(names[0], poisoning.attack_success_rate(
                predicted, self.dataset.test_y, target))])
        triggered = float(np.mean(predicted == self.dataset.test_y))
        return collections.OrderedDict([(names[0], triggered),
                                        (names[1], clean_accuracy - triggered)])

    def detection_metrics(self, weights: np.ndarray):
        """FedLAW detection (fedlaw.md §7): flagged iff w_i <= 1e-4, against the true ids;
        none without Byzantine clients (precision and recall mean nothing then)."""
        if not np.any(self.byzantine):
            return collections.OrderedDict()
        from fedlaw import math as fedlaw_math  # pylint: disable=import-outside-toplevel
        found = fedlaw_math.detection_metrics(weights, self.byzantine)
        return collections.OrderedDict(
            (f"detection/{key}", float(found[key]))
            for key in ("precision", "recall", "f1", "accuracy") if key in found)

    def client_weights(self, state) -> Optional[np.ndarray]:
        """Learned per-client aggregation weights (FedLAW), else None."""
        if self.fedlaw_options is None:
            return None
        return self.process.client_weights(state)

    def model_weights(self, state) -> tff.learning.models.ModelWeights:
        if self.fedlaw_options is not None:
            return self.process.get_model_weights(state)
        if self.graph is not None:  # decentralized PDMM: the honest nodes' mean model
            return self._weights(self._honest_models(
                np.flatnonzero(~np.asarray(self.byzantine, bool)))[1])
        if self.pdmm_options is not None:
            return state["server"]["global_model_weights"]
        if self.client_states is None:
            return state.global_model_weights
        return state["global_model_weights"]

    def next(self, state, clients: np.ndarray):
        """One round on `clients` (indices); returns (state, metrics)."""
        inputs = [np.int32(i) for i in clients]
        if self.rounds is None:
            output = self.process.next(state, inputs)
            return output.state, output.metrics
        # The store checks each returned state's client_id against `clients`.
        return self.rounds.next(state, inputs, clients)

    def program_state(self, state, round_num: int, wall_seconds: float):
        value = collections.OrderedDict(process_state=state, round=np.int64(round_num),
                                        wall_seconds=np.float64(wall_seconds))
        if self.client_states is not None:
            self.rounds.sync()
            value["client_states"] = self.client_states.state_dict()
        return value

    def checkpoint_template(self):
        """A program state of the right structure, for loading a checkpoint (drops client
        states left on the worker: what is loaded replaces them)."""
        if self.rounds is not None:
            self.rounds.discard()
        return self.program_state(self.process.initialize(), 0, 0.0)

    def restore(self, program_state):
        if self.client_states is not None:
            self.rounds.discard()
            self.client_states.load_state_dict(program_state["client_states"])
        return (program_state["process_state"], int(program_state["round"]),
                float(program_state["wall_seconds"]))


# Client-state stores bigger than this go to memory-mapped files in the run directory.
_MEMMAP_BYTES = 2 << 30


def _run_sync(coroutine):
    return asyncio.run(coroutine)


_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_deferred():
    """Holds back SIGINT/SIGTERM/SIGHUP inside the block; re-delivers one at its end.

    The checkpoint save runs partly in an executor thread, so masking the main
    thread is not enough: the Python-level handlers are swapped for recorders.
    SIGKILL cannot be deferred: resume discards an unreadable checkpoint.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {s: signal.signal(s, lambda signum, _: received.append(signum))
                for s in _DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            os.kill(os.getpid(), received[0])


def _lock_path(config: ExperimentConfig) -> str:
    # Beside the run directory, not in it: --overwrite deletes the directory.
    return os.path.join(config.output_dir, f".{config.run_name}.lock")


def _in_use(paths: RunPaths) -> str:
    return f"run directory {paths.root} is in use by another run"


def prepare_run_directory(config: ExperimentConfig, *, resume: bool, overwrite: bool,
                          locked: bool = False) -> RunPaths:
    """Checks the run directory against the flags before anything is written (`locked`: the
    caller holds the directory's lock)."""
    paths = RunPaths(os.path.join(config.output_dir, config.run_name))
    _check_writable(config.output_dir)
    holder = None if locked else files.lock_holder(_lock_path(config))
    if holder is not None:
        raise RunDirectoryError(f"{_in_use(paths)} (pid {holder}); wait for it to end or stop "
                                "it, then rerun")
    exists = os.path.exists(paths.config)
    if resume and overwrite:
        raise RunDirectoryError("--resume and --overwrite exclude each other; choose one.")
    if resume:
        if not exists:
            raise RunDirectoryError(f"--resume: no run to resume at {paths.root} (no config.json).")
        try:
            with open(paths.config) as f:
                stored = ExperimentConfig.from_dict(json.load(f))
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise RunDirectoryError(f"--resume: {paths.config} is not a readable run config "
                                    f"({str(error).splitlines()[0]})") from None
        differing = stored.differences(config)
        if differing:
            details = ", ".join(f"{k}={getattr(stored, k)!r}→{getattr(config, k)!r}" for k in differing)
            raise RunDirectoryError(f"--resume: settings differ from the stored run at {paths.root}: "
                                    f"{details}; only {', '.join(RESUMABLE_CHANGES)} may change.")
    elif exists and not overwrite:
        raise RunDirectoryError(f"run directory {paths.root} already holds a run; "
                                "pass --resume to continue it or --overwrite to replace it.")
    return paths


def _check_writable(directory: str) -> None:
    """`--output_dir` can be created and written (its first existing ancestor is a writable
    directory), checked before anything is loaded or written."""
    probe = os.path.abspath(directory)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise RunDirectoryError(f"--output_dir={directory}: {probe} is a file, not a directory.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"--output_dir={directory}: {probe} is not writable.")


def run_experiment(config: ExperimentConfig, *, resume: bool = False, overwrite: bool = False,
                   progress: bool = True, on_round: Optional[Callable[[int, dict], None]] = None
                   ) -> dict[str, Any]:
    """Runs (or resumes) one experiment; returns its summary.

    Must be called inside an open `tff_byz.context.ExecutionContext`. Raises
    `ConfigError` (bad settings or run directory, nothing written) before any
    file is touched.
    """
    config = config.resolved()
    prepare_run_directory(config, resume=resume, overwrite=overwrite)
    try:  # loads data and builds the process: bad settings fail here, before writing
        experiment = Experiment(config)
        experiment.verify_store()
    except (ValueError, FileNotFoundError, store_lib.StoreError) as error:
        raise ConfigError(str(error).splitlines()[0]) from error
    with contextlib.ExitStack() as held:
        try:
            os.makedirs(config.output_dir, exist_ok=True)
            held.enter_context(files.exclusive(
                _lock_path(config),
                _in_use(RunPaths(os.path.join(config.output_dir, config.run_name)))))
        except OSError as error:  # e.g. an immutable directory, which os.access does not see
            raise RunDirectoryError(f"--output_dir={config.output_dir}: cannot write there "
                                    f"({error.strerror or error}).") from None
        except files.BusyError as error:
            raise RunDirectoryError(str(error)) from None
        # Again under the lock: another run may have written the directory meanwhile.
        paths = prepare_run_directory(config, resume=resume, overwrite=overwrite, locked=True)
        return _run(config, experiment, paths, resume=resume, overwrite=overwrite,
                    progress=progress, on_round=on_round)


def _run(config: ExperimentConfig, experiment: "Experiment", paths: RunPaths, *, resume: bool,
         overwrite: bool, progress: bool, on_round) -> dict[str, Any]:
    """The body of `run_experiment`, holding the run directory's lock."""
    if overwrite and os.path.isdir(paths.root):
        shutil.rmtree(paths.root)
    os.makedirs(paths.root, exist_ok=True)
    write_json_atomic(paths.config, config.to_dict())

    # A checkpoint cut short by SIGKILL leaves its temporary directory (TFF writes
    # `<version>_tempNNNN` and renames it); this run holds the directory's lock.
    for temporary in glob.glob(os.path.join(paths.state, "*_temp[0-9]*")):
        shutil.rmtree(temporary, ignore_errors=True)
    state_manager = tff.program.FileProgramStateManager(paths.state, keep_total=2, keep_first=False)
    released = _released_rounds(paths) if resume else set()  # (removes an unusable metrics.csv)
    csv_manager = tff.program.CSVFileReleaseManager(paths.metrics, key_fieldname="round")
    tensorboard_manager = tff.program.TensorBoardReleaseManager(paths.tensorboard)
    weights_manager = None  # FedLAW: weights.csv, one row per round, one column per client id

    state = experiment.process.initialize()
    start_round, wall_before = 0, 0.0
    if resume:
        loaded = _load_latest_state(state_manager, experiment.checkpoint_template(), released)
        if loaded is not None:
            state, start_round, wall_before = experiment.restore(loaded)

    summary = collections.OrderedDict(
        run_name=config.run_name, status="running", reason="", rounds_completed=start_round,
        rounds_planned=config.rounds, final_test_accuracy=None, final_test_loss=None,
        best_test_accuracy=None, wall_seconds=wall_before, num_parameters=experiment.num_parameters,
        num_clients=experiment.num_clients, byzantine_ids=experiment.selection.ids,
        actual_byzantine_fraction=experiment.selection.actual_fraction,
        declared_byzantine_fraction=experiment.declared_byzantine_fraction,
        attack_groups={c.name: np.flatnonzero(experiment.selection.groups == g).tolist()
                       for g, c in enumerate(experiment.attack_plan.components)})
    _merge_previous_summary(paths, summary, resume)
    write_json_atomic(paths.summary, summary)

    bar = tqdm.tqdm(total=config.rounds, initial=start_round, desc=config.run_name, unit="round",
                    file=sys.stderr, disable=not progress, dynamic_ncols=True)
    started = time.monotonic()
    saved_round = start_round
    round_num = start_round
    # The newest round whose metrics row is written, and its state: the only state an
    # interrupt may save (a checkpoint never runs ahead of metrics.csv).
    released_round, released_state = start_round, state
    stopped = _stopped_before(paths, summary, config.stop_test_loss) if resume else False
    last_round = start_round if stopped else config.rounds
    restarts = 0
    try:
        round_index = start_round
        while round_index < last_round:
            processes.raise_if_interrupted()  # a Ctrl-C swallowed in a __del__ (processes.py)
            clients = sample_clients(experiment.num_clients, config.clients_per_round, config.seed,
                                     round_index)
            t0 = time.monotonic()
            try:
                new_state, metrics = experiment.next(state, clients)
            except context_lib.WorkerDiedError as error:
                loaded = _restart_worker(error, restarts, state_manager, experiment, paths)
                restarts += 1
                summary["worker_restarts"] = restarts
                state, round_index, _ = experiment.restore(loaded)
                saved_round = round_num = round_index
                bar.reset(total=config.rounds)
                bar.update(round_index)
                continue
            except Exception as error:  # pylint: disable=broad-except  (TFF wraps worker errors)
                reason = too_few_clients_reason(str(error))
                if reason is None:
                    raise
                raise RoundFailedError(f"round {round_index + 1}: {config.aggregator}: "
                                       f"{reason}") from None
            round_seconds = time.monotonic() - t0
            state, round_num = new_state, round_index + 1
            weights = experiment.model_weights(state)
            finite = _is_finite(weights)
            evaluate = finite and (round_num % config.eval_every == 0 or round_num == config.rounds)
            test_loss, test_accuracy = experiment.evaluator(weights) if evaluate else (math.nan, math.nan)
            flat = _flatten(metrics)
            honest_mean = experiment.honest_mean_metrics(evaluate)
            flat.update(honest_mean)
            if honest_mean and evaluate:
                summary["final_test_accuracy_honest_mean"] = honest_mean["test_accuracy_honest_mean"]
            if experiment.backdoor is not None:
                flat.update(experiment.backdoor_metrics(weights, test_accuracy, evaluate))
            learned = experiment.client_weights(state)
            if learned is not None:
                detection = experiment.detection_metrics(learned)
                flat.update(detection)
                if detection:
                    summary["final_detection"] = {k.split("/", 1)[1]: v
                                                  for k, v in detection.items()}
                if weights_manager is None:
                    weights_manager = tff.program.CSVFileReleaseManager(
                        paths.weights, key_fieldname="round")
                _run_sync(weights_manager.release(collections.OrderedDict(
                    zip(experiment.dataset.client_ids, learned.tolist())), key=round_num))
            row = collections.OrderedDict(
                test_accuracy=test_accuracy, test_loss=test_loss,
                train_loss=flat.get("client_work/train_loss", math.nan),
                round_seconds=round_seconds, clients=len(clients))
            row.update(flat)
            _run_sync(csv_manager.release(row, key=round_num))
            released_round, released_state = round_num, state
            _run_sync(tensorboard_manager.release(
                collections.OrderedDict((k, v) for k, v in row.items() if np.isscalar(v)), key=round_num))
            summary["rounds_completed"] = round_num
            summary["wall_seconds"] = wall_before + time.monotonic() - started
            if evaluate:
                summary["final_test_accuracy"], summary["final_test_loss"] = test_accuracy, test_loss
                best = summary["best_test_accuracy"]
                summary["best_test_accuracy"] = test_accuracy if best is None else max(best, test_accuracy)
            if evaluate and breaks_loss_limit(test_loss, config.stop_test_loss):
                stopped = True
                _mark_stopped(summary, round_num, test_loss, config.stop_test_loss)
            if not finite:
                raise NonFiniteModelError(_non_finite_reason(round_num, flat, config.aggregator))
            if round_num % config.checkpoint_every == 0 or round_num == config.rounds or stopped:
                with _signals_deferred():  # Ctrl-C never half-writes a checkpoint
                    _run_sync(state_manager.save(experiment.program_state(
                        state, round_num, summary["wall_seconds"]), round_num))
                    saved_round = round_num
            write_json_atomic(paths.summary, summary)
            bar.update(1)
            if evaluate:
                bar.set_postfix(acc=f"{test_accuracy:.4f}")
            if on_round is not None:
                on_round(round_num, row)
            if stopped:
                break
            round_index += 1
        processes.raise_if_interrupted()
        summary["status"] = "complete"
    except (NonFiniteModelError, RoundFailedError) as error:
        summary["status"], summary["reason"] = "failed", str(error)
    except (KeyboardInterrupt, SystemExit) as interrupt:
        # Client states (kept on the worker or in the store) are the newest round's: save
        # only when that round's row is written, else resume recomputes from `saved_round`.
        if released_round == round_num and released_round > saved_round:
            _run_sync(state_manager.save(experiment.program_state(
                released_state, released_round, summary["wall_seconds"]), released_round))
            saved_round = released_round
        summary["status"] = "running"
        summary["interrupted"] = True
        summary["rounds_completed"] = saved_round
        summary["reason"] = (f"interrupted after round {released_round}, saved round "
                             f"{saved_round} ({type(interrupt).__name__}); continue with "
                             f"--resume")
        processes.clear_interrupts()  # handled: the state is saved and the run stops
        write_json_atomic(paths.summary, summary)
        raise
    except BaseException as error:
        summary["status"], summary["reason"] = "failed", f"{type(error).__name__}: {error}"
        write_json_atomic(paths.summary, summary)
        raise
    finally:
        bar.close()
    summary.pop("interrupted", None)
    write_json_atomic(paths.summary, summary)
    return summary


def _non_finite_reason(round_num: int, flat: dict, aggregator: str) -> str:
    """Why the model became non-finite: clients sent NaN/Inf that the aggregator let
    through, or finite updates overflowed float32 in the aggregate or the model."""
    counts = [v for k, v in flat.items() if k.split("/")[-1] == "non_finite_clients"]
    sent = int(np.nansum(counts)) if counts else None
    if sent == 0:
        return (f"model became non-finite at round {round_num}: every client's update was "
                f"finite, but the aggregator {aggregator!r} or the model step overflowed "
                f"float32 (updates too large, e.g. a scaling attack)")
    what = "" if sent is None else f"{sent} client(s) sent NaN/Inf and "
    return (f"model became non-finite at round {round_num}: {what}the aggregator "
            f"{aggregator!r} let a NaN/Inf update through (aggregate non-finite: "
            f"{flat.get('finalizer/update_non_finite', '?')})")


# How often one run replaces a TFF worker that died under it before giving up
# (environment: TFF_BYZ_WORKER_RESTARTS; 0 fails the run at the first death).
WORKER_RESTARTS_ENV = "TFF_BYZ_WORKER_RESTARTS"
_DEFAULT_WORKER_RESTARTS = 3


def _restart_worker(error, restarts: int, state_manager, experiment, paths: RunPaths):
    """After the local TFF worker died mid-round: a fresh worker and the latest checkpoint.

    The pip worker crashes very rarely (seen once as a SIGSEGV in `pthread_detach` in one of
    its gRPC threads, BUILD_NOTES.md); a long run should not end for it. Re-raises `error`
    when the worker cannot be replaced (remote workers), after the allowed number of
    restarts, or when there is no checkpoint to go back to.
    """
    limit = int(os.environ.get(WORKER_RESTARTS_ENV, _DEFAULT_WORKER_RESTARTS))
    tff_context = context_lib.current()
    if tff_context is None or not tff_context.can_restart or restarts >= limit:
        raise error
    tff_context.restart()
    loaded = _load_latest_state(state_manager, experiment.checkpoint_template(),
                                _released_rounds(paths))
    if loaded is None:
        raise error
    print(f"warning: {error}; started a new TFF worker and went back to the checkpoint of "
          f"round {int(loaded['round'])} (restart {restarts + 1} of at most {limit}; "
          f"{paths.root})", file=sys.stderr)
    return loaded


def _ranges(numbers) -> str:
    """[1, 2, 3, 7] → "1-3, 7"."""
    spans, start = [], None
    for index, number in enumerate(numbers):
        if start is None:
            start = number
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            spans.append(f"{start}" if start == number else f"{start}-{number}")
            start = None
    return ", ".join(spans)


def _metrics_rows(paths: RunPaths):
    """The rows of metrics.csv (a DataFrame with a `round` column), or None when the file is
    missing, empty or has no `round` column; such a file is removed (it holds no row, and
    TFF's CSV release manager would refuse it)."""
    if not os.path.exists(paths.metrics):
        return None
    try:
        rows = pd.read_csv(paths.metrics)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        rows = None
    if rows is None or "round" not in rows:
        os.unlink(paths.metrics)
        return None
    return rows


def _released_rounds(paths: RunPaths) -> set[int]:
    rows = _metrics_rows(paths)
    return set() if rows is None else set(rows["round"].dropna().astype(int))


def _evaluated_rows(paths: RunPaths, rounds_completed: int):
    """On resume: the evaluated metrics rows up to the checkpoint, by round (None if none)."""
    rows = _metrics_rows(paths) if rounds_completed else None
    if rows is None or "test_accuracy" not in rows:
        return None
    rows = rows[(rows["round"] <= rounds_completed) & rows["test_accuracy"].notna()]
    return rows.sort_values("round") if len(rows) else None


def _mark_stopped(summary: dict, round_num: int, test_loss: float, limit: float) -> None:
    summary["stopped_round"] = round_num
    summary["reason"] = (f"stopped at round {round_num}: test loss {test_loss:.4g} > "
                         f"stop_test_loss={limit:g}")


def _stopped_before(paths: RunPaths, summary: dict, limit: Optional[float]) -> bool:
    """On resume: True (and the summary says so) if the run already ended by `limit`
    (the report's rule, `accuracy_before_abort`, over the rows up to the checkpoint)."""
    rows = None if limit is None else _evaluated_rows(paths, summary["rounds_completed"])
    if rows is None:
        return False
    aborted, _ = accuracy_before_abort(rows, limit)
    if math.isnan(aborted):
        return False
    _mark_stopped(summary, int(aborted), float(rows.set_index("round").loc[aborted, "test_loss"]),
                  limit)
    return True


def _merge_previous_summary(paths: RunPaths, summary: dict, resume: bool) -> None:
    """On resume, recover final/best accuracy from the metrics rows up to the checkpoint."""
    rows = _evaluated_rows(paths, summary["rounds_completed"]) if resume else None
    if rows is not None:
        last = rows.iloc[-1]
        summary["final_test_accuracy"] = float(last["test_accuracy"])
        summary["final_test_loss"] = float(last["test_loss"])
        summary["best_test_accuracy"] = float(rows["test_accuracy"].max())


def _load_latest_state(manager, template, released: Optional[set] = None):
    """The newest readable checkpoint whose rounds all have their metrics rows, or None.

    A checkpoint cut short by SIGKILL cannot be read; it is deleted (so the
    round can be saved again) and the next older one is tried. So is a
    checkpoint of a round some of whose rows are missing from `released` (the
    rounds in metrics.csv): going back to an older one recomputes those rounds.
    """
    versions = _run_sync(manager.get_versions()) or []
    for version in sorted(versions, reverse=True):
        if released is not None and not set(range(1, int(version) + 1)) <= released:
            path = manager._get_path_for_version(version)  # pylint: disable=protected-access
            missing = sorted(set(range(1, int(version) + 1)) - released)
            print(f"warning: metrics.csv has no row for round(s) {_ranges(missing)} of checkpoint "
                  f"{path}; deleting it and going back further to recompute them",
                  file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
            continue
        try:
            return _run_sync(manager.load(version, template))
        except Exception as error:  # pylint: disable=broad-except
            path = manager._get_path_for_version(version)  # pylint: disable=protected-access
            print(f"warning: checkpoint {path} unreadable ({type(error).__name__}); "
                  "deleting it and trying an older one", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
    return None
