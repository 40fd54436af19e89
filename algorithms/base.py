"""The one interface the training loop drives, and its stateful-clients variant.

An `Algorithm` is built from a `Setting` (the run's model, clients, attack plan and
config) and hides its TFF process behind a few calls:

- `initialize()` and `next(state, client ids)` → `(state, metrics)`;
- `model_weights(state)`: the model the run evaluates;
- `report(state, evaluator)`: the algorithm's own metrics of a round (per-node
  accuracies, learned weights, detection), evaluated only when `evaluator` is given;
- `program_state`, `checkpoint_template`, `restore`: what a checkpoint holds.

Each subclass validates the settings it reads (`validate(config)`, before anything
is loaded; the modules of `algorithms` import no TensorFlow, so flag errors answer at
once). `StatefulAlgorithm` adds the clients' states (momentum, PDMM's
(w, v, u)): a `ClientStateStore` saved with every checkpoint, and a
`StatefulRounds` that keeps the states on the TFF worker between rounds.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from tff_byz.errors import ConfigError
from tff_byz.registry import Reference, Resolved

if TYPE_CHECKING:
    import tensorflow_federated as tff

    from attacks.plan import AttackPlan
    from tff_byz import client_state
    from tff_byz.client_inputs import ByReference

__all__ = ["Setting", "RoundReport", "Algorithm", "StatefulAlgorithm", "MEMMAP_BYTES"]

# Client-state stores bigger than this go to memory-mapped files in the run directory.
MEMMAP_BYTES = 2 << 30

# TensorFlow code, imported when the algorithm is built, not when its flags are checked
# (start-up time; `tff_byz.registry.Reference`).
ModelWeights = Reference("tensorflow_federated:learning.models.ModelWeights")
ClientStateStore = Reference("tff_byz.client_state:ClientStateStore")
StatefulRounds = Reference("tff_byz.client_state:StatefulRounds")
unpack_numpy = Reference("tff_byz.packing:unpack_numpy")


@dataclasses.dataclass(frozen=True)
class Setting:
    """What every algorithm is built from (no TFF execution yet)."""
    config: Any  # the resolved `orchestration.config.ExperimentConfig`, read by attribute
    aggregator: Sequence[Resolved]  # the resolved `--aggregator` components
    model_fn: Any  # () -> tff.learning.models.VariableModel
    initial_weights: tff.learning.models.ModelWeights
    num_clients: int
    inputs: ByReference  # how clients reach the process (ids → the worker reads their rows)
    attack_plan: AttackPlan
    byzantine: np.ndarray  # bool per client: the run's truth, never told to a defence
    declared_byzantine_fraction: float  # what defences are told
    run_directory: str  # where large client-state stores are kept

    @property
    def clients_per_round(self) -> int:
        return self.config.clients_per_round or self.num_clients

    @property
    def honest_ids(self) -> np.ndarray:
        return np.flatnonzero(~np.asarray(self.byzantine, bool))


@dataclasses.dataclass
class RoundReport:
    """An algorithm's own results of one round."""
    metrics: "collections.OrderedDict[str, float]" = dataclasses.field(
        default_factory=collections.OrderedDict)  # extra metrics.csv columns
    summary: dict = dataclasses.field(default_factory=dict)  # summary.json entries to set
    client_weights: Optional[np.ndarray] = None  # per-client weights (weights.csv)


class Algorithm:
    """A training algorithm as the loop sees it (a stateless-clients TFF process)."""

    def __init__(self, setting: Setting):
        self.setting = setting
        self.process = self.build_process()

    @classmethod
    def validate(cls, config) -> None:
        """Raises `ConfigError` naming a setting this algorithm cannot take."""
        if config.topology != "star":
            raise ConfigError(f"--topology={config.topology} needs --aggregator=pdmm "
                              f"(decentralized PDMM); got --aggregator={config.aggregator!r}.")

    def build_process(self):
        raise NotImplementedError

    def initialize(self):
        return self.process.initialize()

    def next(self, state, clients: np.ndarray):
        """One round on `clients` (indices); returns (state, metrics)."""
        output = self.process.next(state, [np.int32(i) for i in clients])
        return output.state, output.metrics

    def model_weights(self, state) -> tff.learning.models.ModelWeights:
        return self.process.get_model_weights(state)

    def report(self, state, evaluator) -> RoundReport:  # pylint: disable=unused-argument
        """The algorithm's own metrics of the round (`evaluator(weights) → (loss, accuracy)`,
        None on rounds that are not evaluated)."""
        return RoundReport()

    def program_state(self, state, round_num: int, wall_seconds: float):
        return collections.OrderedDict(process_state=state, round=np.int64(round_num),
                                       wall_seconds=np.float64(wall_seconds))

    def checkpoint_template(self):
        """A program state of the right structure, for loading a checkpoint."""
        return self.program_state(self.process.initialize(), 0, 0.0)

    def restore(self, program_state):
        """(process state, round, wall seconds) of a loaded checkpoint."""
        return (program_state["process_state"], int(program_state["round"]),
                float(program_state["wall_seconds"]))

    def _trainable_weights(self, trainable) -> tff.learning.models.ModelWeights:
        """Model weights of `trainable` arrays (the initial non-trainable ones)."""
        return ModelWeights(
            trainable=list(trainable),
            non_trainable=list(self.setting.initial_weights.non_trainable))


class StatefulAlgorithm(Algorithm):
    """An algorithm whose clients keep a state (a `StatefulClientsProcess`)."""

    def __init__(self, setting: Setting):
        super().__init__(setting)
        self.client_states = self.client_state_store()
        self.rounds = StatefulRounds(self.process, self.client_states)

    def client_state_store(self) -> client_state.ClientStateStore:
        """In memory, or in memory-mapped files under the run directory when the states of
        all clients would take more than `MEMMAP_BYTES`."""
        process, num_clients = self.process, self.setting.num_clients
        initial = process.initial_client_state
        kwargs = dict(initial=None if callable(initial) else initial, id_key="client_id")
        probe = ClientStateStore(process.client_state_template, 1, **kwargs)
        if probe.bytes_per_client * num_clients <= MEMMAP_BYTES:
            return ClientStateStore(process.client_state_template, num_clients, **kwargs)
        return ClientStateStore(
            process.client_state_template, num_clients, backend="memmap",
            directory=os.path.join(self.setting.run_directory, "client_states"), **kwargs)

    def next(self, state, clients: np.ndarray):
        # The store checks each returned state's client_id against `clients`.
        return self.rounds.next(state, [np.int32(i) for i in clients], clients)

    def client_state_rows(self, ids: np.ndarray, key: str, row: Optional[int] = None
                          ) -> np.ndarray:
        """Leaf `key` (its row `row`, if given) of the states of clients `ids`, stacked
        ([len(ids), ...])."""
        self.rounds.sync()
        return np.stack([np.asarray(state[key] if row is None else state[key][row])
                         for state in self.client_states.get(ids)])

    def client_models(self, ids: np.ndarray, key: str, row: Optional[int] = None) -> list:
        """The models packed in leaf `key` (row `row`) of clients `ids`: one array per
        trainable leaf, `[len(ids), *shape]`."""
        return unpack_numpy(self.client_state_rows(ids, key, row),
                            self.setting.initial_weights.trainable)

    def node_accuracies(self, leaves: list, evaluator) -> collections.OrderedDict:
        """The test accuracy of each client model in `leaves` (`client_models`): mean and
        worst, as `test_accuracy_node_mean` / `test_accuracy_node_min`."""
        accuracy = [evaluator(self._trainable_weights([leaf[k] for leaf in leaves]))[1]
                    for k in range(len(leaves[0]))]
        return collections.OrderedDict(test_accuracy_node_mean=float(np.mean(accuracy)),
                                       test_accuracy_node_min=float(np.min(accuracy)))

    def program_state(self, state, round_num: int, wall_seconds: float):
        value = super().program_state(state, round_num, wall_seconds)
        self.rounds.sync()
        value["client_states"] = self.client_states.state_dict()
        return value

    def checkpoint_template(self):
        # Drops client states left on the worker: what is loaded replaces them.
        self.rounds.discard()
        return super().checkpoint_template()

    def restore(self, program_state):
        self.rounds.discard()
        self.client_states.load_state_dict(program_state["client_states"])
        return super().restore(program_state)
