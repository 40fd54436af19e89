"""Decentralized PDMM on a graph (pdmm.md §1, §3), simulated in TFF with the server as a relay.

Every node is a TFF client holding w_i and one dual z_{i|j} per neighbour (in
the order of `Graph.neighbours`, padded to the maximum degree). One round:

    node i:  K SGD steps on f_i(w) + Σ_j B_{i|j} z_{i|j}ᵀ w + (c d_i / 2)‖w‖²,
             warm-started at w_i, on its example stream
             y_{i|j} = z_{i|j} + 2c B_{i|j} w_i for each neighbour j (a Byzantine
             node sends attack(y_{i|j}), noise drawn independently per edge)
    relay:   the server stacks every node's outgoing messages by node id
             (`tff_byz.collection.StackedRecordsFactory`) and broadcasts
             the table; it computes nothing
    node i:  z_{i|j} ← (1 − θ) z_{i|j} + θ y_{j|i}, reading y_{j|i} from the table
             at (sender j, the slot of i in j's list)

The relay's broadcast carries N × max-degree messages to each node; a real
deployment would deliver each node only its d_i incoming messages (per-edge
traffic d_i model-sized vectors each way). This is a simulation device: no
node uses another's messages except those addressed to it.

Duals start at z = 0 (`init=zero`, the textbook form) or at the consensus
analogue z_{i|j} = −c B_{i|j} w_0 (`init=consensus`, default). All nodes take
part in every round. Colluding attacks are not defined per edge here and are
rejected; local message attacks (sign flip, Gaussian, bit flip, ...) apply.

There is no server model: `get_model_weights` returns the initial weights w_0
that every round broadcasts as the nodes' reference (non-trainable variables
and the shapes), not a trained model. Runs evaluate the honest nodes' mean
model, each honest node's own model and the consensus gap
(`algorithms.pdmm.DecentralizedPDMM`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_byz.collection import StackedRecordsFactory
from attacks.local import ScheduledAttack, apply_record_attacks
from pdmm import math as pdmm_math
from pdmm.graphs import Graph
from tff_byz.packing import Packing, pack_numpy
from pdmm.process import PDMMOptions
from tff_byz import client_inputs, collection, fedavg, rounds, stateful_process
from tff_byz import client_work as client_work_lib
from tff_byz.client_state import StatefulClientsProcess

__all__ = ["build_decentralized_pdmm_process"]


def _as_list(structure):
    return [tf.convert_to_tensor(t) for t in tf.nest.flatten(structure)]


def build_decentralized_pdmm_process(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    initial_weights: tff.learning.models.ModelWeights,
    graph: Graph,
    *,
    options: PDMMOptions = PDMMOptions(),
    local_steps: int = 10,
    batch_size: int = 64,
    learning_rate: float = 0.05,
    seed: int = 0,
    attacks: Sequence[ScheduledAttack] = (),
    inputs: client_inputs.ClientInputs | None = None,
) -> StatefulClientsProcess:
    """Decentralized PDMM (module doc) as a `StatefulClientsProcess`.

    `next(state, client_values, client_states)` must receive every node, in
    node-id order (the relay table is indexed by node id). Node state:
    `OrderedDict(client_id, wz=float32[1 + max degree, D], steps)`: row 0 is
    w_i, row 1 + k the dual of the k-th neighbour, each packed leaf by leaf
    (`tff_byz.packing`); `initial_client_state(i)` gives node i's
    initial state (its duals depend on its neighbours' signs). Metrics:
    `client_work=OrderedDict(train_loss, num_examples)`,
    `pdmm=OrderedDict(message_norm)` (root mean square of the sent messages).
    `inputs`: how nodes arrive (`tff_byz.client_inputs`; default `ByValue()`).
    """
    options.validate()
    for scheduled in attacks:
        if scheduled.attack.perturb_weights is not None or scheduled.attack.ascent:
            raise ValueError(
                f"pdmm: attack {scheduled.attack.name!r} acts on local training; PDMM's Byzantine "
                "clients train honestly and corrupt only their messages (pdmm.md §4).")
    attacks = [a for a in attacks if a.attack.transform is not None]
    c, theta = float(options.c), float(options.theta)
    width = graph.slot_tables()[0].shape[1]

    inputs = client_inputs.ByValue() if inputs is None else inputs
    data_type, _ = client_work_lib.client_input_types(model_fn, inputs)
    init_weights = fedavg.initial_weights_fn(initial_weights)
    weights_type = init_weights.type_signature.result
    packing = Packing(initial_weights.trainable)
    dual_type = tff.StructWithPythonType(
        [(None, tff.TensorType(np.float32, [width, *shape])) for shape in packing.shapes], list)
    # w_i and the duals z_{i|j} packed as the rows of one [1 + width, D] matrix: TFF moves
    # CLIENTS-placed values tensor by tensor, at a fixed cost per tensor.
    state_type = stateful_process.client_state_type(
        wz=tff.TensorType(np.float32, [1 + width, packing.dimension]), steps=np.int64)
    record_type = client_work_lib.client_record_type(dual_type)
    train_metrics = rounds.build_train_metrics(record_type)
    collector = collection.build_update_aggregator(StackedRecordsFactory(), record_type)
    stacked_type = collector.next.type_signature.result.result.member

    node_step = _build_node_step(
        model_fn, inputs, packing, graph, weights_type, data_type, state_type, c=c,
        local_steps=local_steps, batch_size=batch_size, learning_rate=learning_rate,
        attacks=attacks)
    relay_table = _build_relay_table(stacked_type, graph.num_nodes)
    node_receive = _build_node_receive(packing, graph, relay_table.type_signature.result,
                                       state_type, theta=theta)
    message_norm = _build_message_norm(packing, graph, record_type)

    def initial_fields():
        return collections.OrderedDict(reference=tff.federated_eval(init_weights, tff.SERVER))

    def round_fn(state, round_info, client_data, node_states):
        outputs = tff.federated_map(node_step, (
            tff.federated_broadcast(round_info), tff.federated_broadcast(state.reference),
            client_data, node_states))
        records, weights, stepped = outputs[0], outputs[1], outputs[2]
        stacked = collector.next(collector.initialize(), records, weights).result
        table = tff.federated_broadcast(tff.federated_map(relay_table, stacked))
        metrics = tff.federated_zip(collections.OrderedDict(
            client_work=train_metrics(records),
            pdmm=tff.federated_zip(collections.OrderedDict(
                message_norm=message_norm(records)))))
        return stateful_process.RoundOutput(
            server=collections.OrderedDict(reference=state.reference), metrics=metrics,
            client_states=tff.federated_map(node_receive, (table, stepped)))

    return stateful_process.build_stateful_process(
        seed=seed, inputs=inputs, data_type=data_type, client_state_type=state_type,
        initial_fields=initial_fields, round_fn=round_fn,
        model_weights=lambda state: state["reference"],
        initial_client_state=_initial_node_state(initial_weights, packing, graph, c=c,
                                                 init=options.init))


def _initial_node_state(initial_weights, packing, graph, *, c, init):
    """`node -> its initial state`: w_i = w_0, duals 0 (`zero`) or −c B_{i|j} w_0
    (`consensus`; padding slots have sign 0)."""
    _, _, sign = graph.slot_tables()
    width = sign.shape[1]
    flat_w0 = pack_numpy([np.asarray(t, np.float32) for t in initial_weights.trainable])

    def initial_node_state(node: int):
        wz = np.zeros([1 + width, packing.dimension], np.float32)
        wz[0] = flat_w0
        if init == "consensus":
            for k in range(width):
                wz[1 + k] = -c * sign[node, k] * flat_w0
        return collections.OrderedDict(client_id=np.int32(node), wz=wz, steps=np.int64(0))

    return initial_node_state


def _build_node_step(model_fn, inputs, packing, graph, weights_type, data_type, state_type, *,
                     c, local_steps, batch_size, learning_rate, attacks):
    """A node's half of the round: K SGD steps on its augmented loss, then one message per
    neighbour (attacked for a Byzantine node). Returns `(record, weight, stepped state)`."""
    _, _, sign = graph.slot_tables()
    width = sign.shape[1]
    degrees = graph.degrees.astype(np.float32)
    shapes = packing.shapes

    @tff.tensorflow.computation(rounds.ROUND_TYPE, weights_type, data_type, state_type)
    def node_step(round_info, reference_weights, client_input, node_state):
        model = model_fn()
        model_weights = tff.learning.models.ModelWeights.from_model(model)

        @tf.function
        def run(round_info, reference_weights, client_input, node_state):
            tf.nest.map_structure(lambda var, value: var.assign(value), model_weights,
                                  tff.learning.models.ModelWeights(
                                      trainable=packing.unpack(node_state["wz"][0]),
                                      non_trainable=list(reference_weights.non_trainable)))
            examples = inputs.open(client_input, round_info["round"])
            info = examples.info
            node = info["client_id"]
            signs = tf.gather(tf.constant(sign), node)  # [width]
            degree = tf.gather(tf.constant(degrees), node)
            duals = packing.unpack_rows(node_state["wz"][1:], width)
            dual_sum = [tf.tensordot(signs, z, axes=1) for z in duals]  # Σ_j B_{i|j} z_{i|j}
            loss = client_work_lib.local_sgd_steps(
                model, list(model_weights.trainable), examples, run_seed=round_info["seed"],
                client_id=node, start_step=node_state["steps"], steps=local_steps,
                batch_size=batch_size, learning_rate=learning_rate,
                extra_gradient=lambda trainable: [
                    d + c * degree * tf.convert_to_tensor(t)
                    for t, d in zip(trainable, dual_sum)])
            w = _as_list(model_weights.trainable)
            shaped_signs = [tf.reshape(signs, [width] + [1] * len(shape)) for shape in shapes]
            messages = [pdmm_math.edge_message(z, wl[tf.newaxis], c=c, sign=s)
                        for z, wl, s in zip(duals, w, shaped_signs)]
            messages = [m * tf.abs(s) for m, s in zip(messages, shaped_signs)]  # padding: 0
            record = collections.OrderedDict(
                delta=messages, client_id=node,
                num_examples=tf.cast(examples.num_examples, tf.float32), loss=loss)
            record, weight = apply_record_attacks(
                attacks, record, tf.constant(1.0), info=info, run_seed=round_info["seed"],
                round_num=round_info["round"], weights=_as_list(reference_weights.trainable))
            state = collections.OrderedDict(
                client_id=node,
                wz=tf.concat([packing.pack(w)[tf.newaxis], node_state["wz"][1:]], 0),
                steps=node_state["steps"] + local_steps)
            return record, weight, state

        return run(round_info, reference_weights, client_input, node_state)

    return node_step


def _build_relay_table(stacked_type, num_nodes):
    """The relay: every node's outgoing messages stacked by node id, checked complete."""

    @tff.tensorflow.computation(stacked_type)
    def relay_table(stacked):
        check = tf.debugging.assert_equal(
            stacked["client_ids"], tf.range(num_nodes, dtype=stacked["client_ids"].dtype),
            message="decentralized PDMM needs every node, once, in every round")
        with tf.control_dependencies([check]):
            return tf.identity(stacked["deltas"])

    return relay_table


def _build_node_receive(packing, graph, table_type, state_type, *, theta):
    """A node reads y_{j|i} at (sender j, its slot in j's list) and relaxes its duals:
    z_{i|j} ← (1 − θ) z_{i|j} + θ y_{j|i}."""
    neighbour, reverse, _ = graph.slot_tables()
    width = neighbour.shape[1]

    @tff.tensorflow.computation(table_type, state_type)
    def node_receive(table, node_state):
        node = node_state["client_id"]
        senders = tf.gather(tf.constant(neighbour), node)  # [width], −1 = padding
        slots = tf.gather(tf.constant(reverse), node)
        valid = senders >= 0
        rows = tf.gather(table, tf.maximum(senders, 0))  # [width, Dtot]
        offset, incoming = 0, []
        for size in packing.sizes:
            block = tf.reshape(rows[:, offset:offset + width * size], [width, width, size])
            picked = tf.gather(block, slots, axis=1, batch_dims=1)  # [width, size]
            incoming.append(tf.where(valid[:, tf.newaxis], picked, tf.zeros_like(picked)))
            offset += width * size
        duals = pdmm_math.relax(node_state["wz"][1:], tf.concat(incoming, axis=1), theta=theta)
        return collections.OrderedDict(client_id=node,
                                       wz=tf.concat([node_state["wz"][:1], duals], 0),
                                       steps=node_state["steps"])

    return node_receive


def _build_message_norm(packing, graph, record_type):
    """`records@CLIENTS → root mean square of the sent messages@SERVER` (padding slots
    excluded), inside a federated computation."""
    _, _, sign = graph.slot_tables()
    dimension = float(sum(packing.sizes))

    @tff.tensorflow.computation(record_type)
    def message_square(record):
        degree_slots = tf.reduce_sum(tf.abs(tf.constant(sign)[record["client_id"]]))
        total = tf.add_n([tf.reduce_sum(tf.square(m)) for m in record["delta"]])
        return total / tf.maximum(degree_slots, 1.0) / dimension

    @tff.tensorflow.computation(tf.float32)
    def root(value):
        return tf.sqrt(value)

    def message_norm(records):
        return tff.federated_map(root, tff.federated_mean(
            tff.federated_map(message_square, records)))

    return message_norm
