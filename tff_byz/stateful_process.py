"""The frame every process with stateful clients shares: momentum SGD, local-only training,
centralized and decentralized PDMM.

`build_stateful_process` writes the parts these processes have in common, once:
- the server state `OrderedDict(<the algorithm's fields>, seed=int64, round=int64)`, with the
  (seed, round) counter of `tff_byz.rounds`;
- `next(state, client_values, client_states)`, which zips the round info, calls the
  algorithm's `round_fn` for the round itself, advances the counter and returns
  `OrderedDict(state, metrics, client_states)`;
- `get_model_weights`, and the client-state template for `ClientStateStore`;
- the composition with the client inputs (`ClientInputs.compose`), so a process built by
  reference takes client ids.

An algorithm supplies only what is its own: its server fields at initialisation, the round
(`round_fn`), where its model lives in the state, and its client-state type.
`client_state_type(**fields)` builds the conventional client-state type: an int32
`client_id` (the client writes its own id into it; `ClientStateStore` checks it) followed by
the algorithm's tensors.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from tff_byz import client_inputs, rounds
from tff_byz.client_state import StatefulClientsProcess, zeros_from_type

__all__ = ["RoundOutput", "build_stateful_process", "client_state_type"]


@dataclasses.dataclass(frozen=True)
class RoundOutput:
    """What an algorithm's round returns, inside the federated computation: its new server
    fields (@SERVER, without `seed` and `round`), its metrics (@SERVER) and the participants'
    new states (@CLIENTS)."""
    server: Mapping[str, Any]
    metrics: Any
    client_states: Any


def client_state_type(**fields) -> tff.StructWithPythonType:
    """`OrderedDict(client_id=int32, **fields)` as a TFF type; `fields` maps names to dtypes
    or `tff.TensorType`s, in order."""
    return tff.StructWithPythonType([("client_id", np.int32), *fields.items()],
                                    collections.OrderedDict)


def build_stateful_process(
    *,
    seed: int,
    inputs: client_inputs.ClientInputs,
    data_type,
    client_state_type: tff.Type,
    initial_fields: Callable[[], Mapping[str, Any]],
    round_fn: Callable[..., RoundOutput],
    model_weights: Callable[[Any], Any],
    initial_client_state: Optional[Any] = None,
) -> StatefulClientsProcess:
    """The process of an algorithm with stateful clients (module doc).

    Args:
      seed: the run seed, kept in the server state with the round number.
      inputs: how clients arrive (`tff_byz.client_inputs`); `data_type` their value's type.
      client_state_type: one client's state (see `client_state_type`).
      initial_fields: `() -> OrderedDict` of @SERVER values, called inside `initialize`.
      round_fn: `(state, round_info, client_data, client_states) -> RoundOutput`, called
        inside `next` with the @SERVER state, the round's @SERVER `OrderedDict(seed, round)`
        and the @CLIENTS arguments.
      model_weights: `(unplaced server state) -> ModelWeights`, inside a TF computation.
      initial_client_state: the state of a client that has not taken part yet (a structure,
        or a function of the client id); None means zeros.
    """
    counter = rounds.round_counter(seed)

    @tff.federated_computation
    def initialize():
        round_info = tff.federated_eval(counter.initial, tff.SERVER)
        return tff.federated_zip(collections.OrderedDict(
            **initial_fields(), seed=round_info.seed, round=round_info.round))

    state_type = initialize.type_signature.result

    @tff.federated_computation(
        state_type,
        tff.FederatedType(data_type, tff.CLIENTS),
        tff.FederatedType(client_state_type, tff.CLIENTS))
    def next_fn(state, client_data, client_states):
        round_info = rounds.server_round(state)
        output = round_fn(state, round_info, client_data, client_states)
        next_round = tff.federated_map(counter.advance, round_info)
        new_state = tff.federated_zip(collections.OrderedDict(
            **output.server, seed=next_round.seed, round=next_round.round))
        return collections.OrderedDict(state=new_state, metrics=output.metrics,
                                       client_states=output.client_states)

    @tff.tensorflow.computation(state_type.member)
    def get_model_weights(state):
        return model_weights(state)

    return inputs.compose(StatefulClientsProcess(
        initialize=initialize, next=next_fn, get_model_weights=get_model_weights,
        client_state_template=zeros_from_type(client_state_type),
        initial_client_state=initial_client_state))
