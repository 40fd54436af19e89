"""The validated experiment configuration: every setting of one run, explicit.

`ExperimentConfig` is what flags (and later grid TOML cells) turn into; it is
written to `config.json` with every default made explicit, and `--resume`
checks that the stored config matches. `validate()` raises `ConfigError` with
one line naming the flag, the value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from typing import Any, Optional

from algorithms import AGGREGATOR_CHOICES, algorithm_class
from attacks import ATTACKS, resolve_attack
from attacks.selection import SelectionError, parse_selection
from pdmm.graphs import TOPOLOGIES
from tff_byz import choices
from tff_byz.errors import ConfigError
from tff_byz.registry import SpecError

__all__ = ["ExperimentConfig", "ConfigError", "CLIENT_WORKS", "ATTACK_MESSAGES", "DEFAULT_MODELS",
           "RESUMABLE_CHANGES"]

CLIENT_WORKS = ("local_sgd", "momentum_sgd")
# What a local attack corrupts under FedAvg: the delta Δ_i (what TFF's FedAvg sends) or the
# uploaded model θ + Δ_i (a model-sized message like PDMM's y; pdmm.md §4).
ATTACK_MESSAGES = ("delta", "model")

# The model each dataset gets when --model is not given.
DEFAULT_MODELS = {
    "digits": "small_mlp",
    "mnist": "mlp",
    "fashion_mnist": "mlp",
    "emnist": "emnist_cnn",
    "cifar10": "cifar_cnn",
    "olivetti": "wide_mlp",
    "synthetic": "small_mlp",
}

# Settings that may differ when a run is resumed (everything else must match).
RESUMABLE_CHANGES = ("rounds", "tff_workers", "output_dir", "eval_every", "checkpoint_every")
# Settings `base_run_name` spells out.
_NAMED_FIELDS = ("dataset", "partition", "num_clients", "aggregator", "attack",
                 "byzantine_fraction", "byzantine_selection", "topology", "seed")


def _setting(default, help: str):  # pylint: disable=redefined-builtin
    """A config field; `help` is its `--flag` help (`pipelines.cli.add_dataclass_flags`)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class ExperimentConfig:
    """Every setting of one run; each field is a `python -m pipelines.train` flag."""
    dataset: str = _setting("digits", "digits (embedded, no files), mnist, fashion_mnist, emnist, "
                            "cifar10, olivetti, synthetic.")
    data_dir: Optional[str] = _setting(None, "Directory holding real datasets (e.g. "
                                       "../shared/data).")
    partition: str = _setting("iid", "iid, q (label groups), dirichlet, natural (emnist writers).")
    q: float = _setting(0.5, "q-split: probability an example goes to its label's group.")
    q_mode: str = _setting("sample", "q-split mode: sample (paper) or exact (authors' code).")
    alpha: float = _setting(0.5, "Dirichlet concentration for --partition=dirichlet.")
    num_clients: int = _setting(20, "Number of clients (writers to keep for emnist; 0 = all).")
    train_examples: int = _setting(0, "Train on a seeded sample of this many training examples, "
                                   "split over the clients (0 = all of them).")
    clients_per_round: int = _setting(0, "Clients sampled per round (0 = all).")
    model: Optional[str] = _setting(None, "mlp, mlp_torch, small_mlp, wide_mlp, emnist_cnn, "
                                    "lenet, cifar_cnn (default: per dataset).")
    aggregator: str = _setting("mean", "NAME[:key=value,...]: a robust rule (chained after "
                               "pre-aggregators with +), or the algorithm fedlaw or pdmm; see "
                               "--list_aggregators.")
    attack: str = _setting("none", "NAME[:key=value,...]; see --list_attacks.")
    byzantine_fraction: float = _setting(0.0, "Fraction of Byzantine clients (random and "
                                         "label_groups selection).")
    byzantine_selection: str = _setting("random", "Who is Byzantine: random, label_groups (whole "
                                        "label groups of --partition=q) or ids:3,17,...")
    declared_byzantine_fraction: Optional[float] = _setting(
        None, "Fraction declared to defences (default: the actual fraction of Byzantine "
        "clients).")
    rounds: int = _setting(30, "Number of rounds.")
    local_epochs: int = _setting(1, "Local epochs per round (local_sgd).")
    local_steps: int = _setting(0, "Local SGD steps per round on each client's example stream "
                                "instead of --local_epochs (0 = epochs); PDMM's K by default.")
    batch_size: int = _setting(32, "Client mini-batch size.")
    client_lr: float = _setting(0.1, "Client SGD learning rate (local_sgd).")
    client_work: str = _setting("local_sgd", "local_sgd (FedAvg) or momentum_sgd.")
    momentum: float = _setting(0.9, "Client momentum β (momentum_sgd).")
    weight_decay: float = _setting(0.0, "Weight decay (momentum_sgd).")
    server_lr: float = _setting(1.0, "Server learning rate: θ ← θ + server_lr · Agg(Δ).")
    eval_every: int = _setting(1, "Evaluate on the test set every k rounds (and at the end).")
    checkpoint_every: int = _setting(0, "Save program state every k rounds (0 = eval_every).")
    stop_test_loss: Optional[float] = _setting(
        None, "End the run at the first evaluation whose test loss exceeds this or is NaN (the "
        "FedLAW authors' code stops at 9).")
    seed: int = _setting(0, "Run seed: data split, initial model, sampling, shuffles.")
    topology: str = _setting("star", "PDMM: star (centralized, server as a PDMM node), ring, "
                             "complete or rgg (decentralized).")
    attack_message: str = _setting("delta", "FedAvg: local attacks corrupt the delta or the "
                                   "uploaded model (model-sized message, as PDMM's y).")
    output_dir: str = _setting("runs", "Parent directory of run directories.")
    run_name: Optional[str] = _setting(None, "Run directory name (default: derived from the "
                                       "settings).")
    tff_workers: str = _setting("", "Remote TFF workers host:port,... (default: a local worker).")

    def resolved(self) -> "ExperimentConfig":
        """A validated copy with every default made explicit (canonical specs)."""
        config = dataclasses.replace(self)
        config.validate()
        if config.model is None:
            config.model = DEFAULT_MODELS[config.dataset]
        if config.checkpoint_every == 0:
            config.checkpoint_every = config.eval_every
        config.aggregator = "+".join(
            c.canonical for c in AGGREGATOR_CHOICES.resolve(config.aggregator))
        config.attack = "+".join(c.canonical for c in ATTACKS.resolve(config.attack))
        if config.run_name is None:
            config.run_name = config.default_run_name()
        return config

    def default_run_name(self) -> str:
        """Deterministic, filesystem-safe name from the settings that define the experiment:
        `base_run_name()`, plus `_<hash>` of every other setting that differs from its
        default (e.g. `--client_work=momentum_sgd --server_lr=0.5`), so two experiments
        never share a name. config.json has every setting."""
        extra = self.unnamed_settings()
        if not extra:
            return self.base_run_name()
        digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()
        return f"{self.base_run_name()}_{digest[:8]}"

    def unnamed_settings(self) -> dict[str, Any]:
        """The settings off their default that `base_run_name` does not show (the ones a
        resume may change, and where the data lives, do not count)."""
        defaults = dataclasses.asdict(ExperimentConfig(dataset=self.dataset))
        defaults["model"] = DEFAULT_MODELS.get(self.dataset)
        return {name: value for name, value in self.to_dict().items()
                if name not in _NAMED_FIELDS and name not in RESUMABLE_CHANGES
                and name not in ("run_name", "data_dir") and value != defaults[name]}

    def base_run_name(self) -> str:
        """The name from the settings that define most experiments (specs name only their
        non-default parameters)."""
        aggregator = "+".join(c.compact for c in AGGREGATOR_CHOICES.resolve(self.aggregator))
        attack = "+".join(c.compact for c in ATTACKS.resolve(self.attack))
        selection = "" if self.byzantine_selection == "random" else f"_{self.byzantine_selection}"
        if self.topology != "star":
            aggregator += f"_{self.topology}"
        name = (f"{self.dataset}_{self.partition}_n{self.num_clients}_{aggregator}_"
                f"{attack}_f{self.byzantine_fraction:g}{selection}_s{self.seed}")
        return re.sub(r"[^A-Za-z0-9_.=-]+", "-", name)

    def validate(self) -> None:
        """Raises `ConfigError` naming the first bad setting: the plain settings first
        (`validate_settings`), then the aggregator and attack specs and what the chosen
        algorithm accepts. Imports no TensorFlow (the registries name their builders)."""
        self.validate_settings()
        try:
            aggregator = AGGREGATOR_CHOICES.resolve(self.aggregator)
            attack = resolve_attack(self.attack)
        except SpecError as error:
            raise ConfigError(str(error)) from None
        algorithm_class(aggregator, self.client_work, self.topology).validate(self)
        attacked = any(c.name != "none" for c in attack)
        if attacked and self.byzantine_fraction == 0.0 and \
                not self.byzantine_selection.startswith("ids:"):
            raise ConfigError(f"--attack={self.attack!r} needs Byzantine clients: set "
                              "--byzantine_fraction > 0 or --byzantine_selection=ids:...")

    def validate_settings(self) -> None:
        """Raises `ConfigError` for a bad value of a setting that needs no registry (names,
        ranges, the selection and worker syntax); imports no TensorFlow."""
        def choice(flag, value, choices):
            if value not in choices:
                raise ConfigError(f"--{flag}: invalid value {value!r}; valid choices: "
                                  f"{', '.join(map(str, choices))}.")

        def integer(flag, value, minimum):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"--{flag} must be an integer >= {minimum}; got {value!r}.")

        def number(flag, value, low, high, low_open=False, high_open=False):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ConfigError(f"--{flag} must be a number; got {value!r}.")
            bad_low = value <= low if low_open else value < low
            bad_high = value >= high if high_open else value > high
            if bad_low or bad_high:
                interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                raise ConfigError(f"--{flag} must be in {interval}; got {value!r}.")

        choice("dataset", self.dataset, choices.DATASETS)
        choice("partition", self.partition, choices.PARTITIONS)
        choice("q_mode", self.q_mode, ("sample", "exact"))
        choice("client_work", self.client_work, CLIENT_WORKS)
        if self.model is not None:
            choice("model", self.model, choices.MODELS)
        number("q", self.q, 0.0, 1.0)
        number("alpha", self.alpha, 0.0, math.inf, low_open=True, high_open=True)
        integer("num_clients", self.num_clients, 1)
        integer("train_examples", self.train_examples, 0)
        integer("clients_per_round", self.clients_per_round, 0)
        if self.clients_per_round > self.num_clients:
            raise ConfigError(f"--clients_per_round must be <= --num_clients={self.num_clients} "
                              f"(0 means all); got {self.clients_per_round}.")
        number("byzantine_fraction", self.byzantine_fraction, 0.0, 1.0, high_open=True)
        if self.declared_byzantine_fraction is not None:
            number("declared_byzantine_fraction", self.declared_byzantine_fraction, 0.0, 1.0,
                   high_open=True)
        try:
            parse_selection(self.byzantine_selection)
        except SelectionError as error:
            raise ConfigError(str(error)) from None
        integer("rounds", self.rounds, 1)
        integer("local_epochs", self.local_epochs, 1)
        integer("local_steps", self.local_steps, 0)
        choice("topology", self.topology, TOPOLOGIES)
        choice("attack_message", self.attack_message, ATTACK_MESSAGES)
        integer("batch_size", self.batch_size, 1)
        number("client_lr", self.client_lr, 0.0, math.inf, low_open=True, high_open=True)
        number("momentum", self.momentum, 0.0, 1.0, high_open=True)
        number("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True)
        number("server_lr", self.server_lr, 0.0, math.inf, low_open=True, high_open=True)
        integer("eval_every", self.eval_every, 1)
        integer("checkpoint_every", self.checkpoint_every, 0)
        if self.stop_test_loss is not None:
            number("stop_test_loss", self.stop_test_loss, 0.0, math.inf, low_open=True,
                   high_open=True)
        integer("seed", self.seed, 0)
        if self.run_name is not None and (not self.run_name or "/" in self.run_name
                                          or self.run_name in (".", "..")):
            raise ConfigError(f"--run_name must be a non-empty name without '/'; got {self.run_name!r}.")
        if self.tff_workers:
            try:
                choices.parse_worker_addresses(self.tff_workers)
            except ValueError as error:
                raise ConfigError(str(error)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: {', '.join(sorted(known))}.")
        return cls(**values)

    def differences(self, other: "ExperimentConfig") -> list[str]:
        """Names of settings that differ, ignoring those a resume may change."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs[k]]
