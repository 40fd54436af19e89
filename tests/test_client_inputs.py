"""Client inputs by value and by reference (tff_byz/client_inputs.py): same rows, same rounds."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from fedlaw.reported_loss import reported_loss
from tff_byz import client_inputs, client_work, fedavg, models, momentum
from tff_byz.client_state import ClientStateStore
from tff_byz.datasets import store as store_lib

SHAPE = (8, 8, 1)
NORMALIZATION = ((0.3,), (0.3,))


def _clients(sizes=(13, 4, 9), seed=0):
    rng = np.random.default_rng(seed)
    return [((rng.integers(0, 17, (n, *SHAPE)).astype(np.float32) / np.float32(16.0)),
             rng.integers(0, 10, n).astype(np.int32)) for n in sizes]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    clients = _clients()
    store = store_lib.write_store(tmp_path_factory.mktemp("store") / "s", clients, {"test": 1})
    return clients, store


def _by_value(clients, byzantine=()):
    return [client_inputs.make_client_input(
        tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)), i,
        i in byzantine) for i, (x, y) in enumerate(clients)]


def _model_fn():
    return models.make_model_fn("small_mlp", SHAPE, 10, NORMALIZATION)


def _initial():
    return fedavg.model_weights_from_keras(
        models.build_keras_model("small_mlp", SHAPE, 10, NORMALIZATION, seed=1))


def _gather_computation(inputs, example_spec_type):
    """`(client value, indices) -> (x, y, info)` through `inputs.open`, round 0."""

    @tff.tensorflow.computation(example_spec_type, tff.TensorType(np.int32, [None]))
    def gather(value, indices):
        @tf.function
        def run(value, indices):
            examples = inputs.open(value, tf.constant(0, tf.int64))
            x, y = examples.gather(indices)
            return x, y, examples.info, examples.num_examples
        return run(value, indices)

    return gather


def test_by_reference_reads_the_same_rows_as_by_value(data, tff_context):
    clients, store = data
    spec = collections.OrderedDict(x=tf.TensorSpec(SHAPE, tf.float32), y=tf.TensorSpec([], tf.int32))
    by_reference = client_inputs.ByReference(store, attack_group=[-1, 0, -1])
    read = _gather_computation(by_reference, by_reference.type_signature(spec))
    make_value = by_reference.dataset_computation
    indices = np.array([8, 0, 3, 3], np.int32)
    x, y, info, count = read(make_value(0), indices)
    np.testing.assert_array_equal(x.view(np.uint32), clients[0][0][indices].view(np.uint32))
    np.testing.assert_array_equal(y, clients[0][1][indices])
    assert count == 13 and info["client_id"] == 0 and not info["byzantine"]
    x, y, info, count = read(make_value(1), np.array([3, 1], np.int32))
    np.testing.assert_array_equal(y, clients[1][1][[3, 1]])
    assert count == 4 and info["byzantine"] and info["attack_group"] == 0
    by_value = client_inputs.ByValue()
    read_value = _gather_computation(by_value, by_value.type_signature(spec))
    xv, yv, infov, countv = read_value(_by_value(clients, byzantine=(1,))[1],
                                       np.array([3, 1], np.int32))
    np.testing.assert_array_equal(xv.view(np.uint32), x.view(np.uint32))
    assert countv == 4 and infov["attack_group"] == 0


def test_the_model_and_the_store_must_agree_on_the_example_shape(data):
    _, store = data
    spec = collections.OrderedDict(x=tf.TensorSpec((28, 28, 1), tf.float32),
                                   y=tf.TensorSpec([], tf.int32))
    with pytest.raises(ValueError, match=r"shape \(28, 28, 1\).*holds \(8, 8, 1\)"):
        client_inputs.ByReference(store).type_signature(spec)


def test_info_tables_must_match_the_store(data):
    _, store = data
    with pytest.raises(ValueError, match=r"must be \[3\] and agree"):
        client_inputs.ByReference(store, byzantine=[True, False, False], attack_group=[-1, -1, -1])


@pytest.mark.parametrize("steps", [0, 3])
def test_fedavg_rounds_are_bit_identical_by_value_and_by_reference(data, tff_context, steps):
    clients, store = data
    processes = [fedavg.build_fedavg_process(
        _model_fn(), _initial(), local_epochs=2, batch_size=3, client_lr=0.1, seed=4,
        client_work=client_work.build_local_sgd_client_work(
            _model_fn(), epochs=2, batch_size=3, learning_rate=0.1, seed=4, steps=steps,
            training=reported_loss("end", batch_size=3), inputs=inputs), inputs=inputs)
        for inputs in (client_inputs.ByValue(), client_inputs.ByReference(store))]
    values = [_by_value(clients), [np.int32(i) for i in (2, 0, 1)]]
    values[0] = [values[0][i] for i in (2, 0, 1)]
    outputs = []
    for process, value in zip(processes, values):
        state = process.initialize()
        for _ in range(3):
            output = process.next(state, value)
            state = output.state
        outputs.append((state.global_model_weights.trainable, output.metrics))
    for a, b in zip(outputs[0][0], outputs[1][0]):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert outputs[0][1]["client_work"] == outputs[1][1]["client_work"]
    # The composed process takes ids; its computation holds no example.
    assert processes[1].next.type_signature.parameter[1].member == tff.TensorType(np.int32)


def test_momentum_rounds_are_bit_identical_by_value_and_by_reference(data, tff_context):
    clients, store = data
    results = []
    for inputs, values in ((client_inputs.ByValue(), _by_value(clients)),
                           (client_inputs.ByReference(store), [np.int32(i) for i in range(3)])):
        process = momentum.build_momentum_sgd_process(_model_fn(), _initial(), batch_size=5,
                                                      server_lr=0.3, seed=2, inputs=inputs)
        states = ClientStateStore(process.client_state_template, 3, id_key="client_id")
        state = process.initialize()
        for _ in range(3):
            output = process.next(state, values, states.get(range(3)))
            states.put(range(3), output["client_states"])
            state = output["state"]
        results.append((state["global_model_weights"].trainable, states.state_dict()))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(results[0][1]["states"]["momentum"],
                                  results[1][1]["states"]["momentum"])


def test_poison_acts_on_the_rows_read(data, tff_context):
    clients, store = data

    def flip(x, y, positions, num_examples, info, round_num):
        del positions, num_examples
        active = tf.logical_and(info["byzantine"], round_num >= 0)
        return x, tf.where(active, 9 - y, y)

    spec = collections.OrderedDict(x=tf.TensorSpec(SHAPE, tf.float32), y=tf.TensorSpec([], tf.int32))
    inputs = client_inputs.ByReference(store, attack_group=[-1, 0, -1], poison=flip)
    read = _gather_computation(inputs, inputs.type_signature(spec))
    everything = np.arange(4, dtype=np.int32)
    _, y, _, _ = read(inputs.dataset_computation(1), everything)
    np.testing.assert_array_equal(y, 9 - clients[1][1])
    _, y, _, _ = read(inputs.dataset_computation(2), everything)
    np.testing.assert_array_equal(y, clients[2][1][:4])


def test_workers_report_the_fingerprints_of_the_files_they_map(data, tff_context):
    _, store = data
    answers = client_inputs.ByReference(store).verify()([np.int32(0), np.int32(0)])
    assert len(answers) == 2
    for answer in answers:
        assert {name: bytes(np.asarray(v, np.uint8)).hex() for name, v in answer.items()} == \
            dict(store.fingerprints)
