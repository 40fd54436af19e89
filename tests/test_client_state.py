"""Tests of tff_byz.client_state: the per-client state store and its helpers."""

import asyncio
import collections
import os

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_byz.client_state import ClientStateStore, zeros_from_type

NUM_CLIENTS = 6


def _template():
    return collections.OrderedDict(
        client_id=np.zeros((), np.int32),
        momentum=[np.zeros((2, 3), np.float32), np.zeros((3,), np.float32)])


def _state(client_id, value):
    return collections.OrderedDict(
        client_id=np.int32(client_id),
        momentum=[np.full((2, 3), value, np.float32), np.arange(3, dtype=np.float32) + value])


def _zeros(client_id=0):
    return collections.OrderedDict(
        client_id=np.int32(client_id),
        momentum=[np.zeros((2, 3), np.float32), np.zeros(3, np.float32)])


def _assert_states_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert list(a) == list(e)
        np.testing.assert_array_equal(a["client_id"], e["client_id"])
        assert a["client_id"].dtype == np.int32
        for a_leaf, e_leaf in zip(a["momentum"], e["momentum"]):
            np.testing.assert_array_equal(a_leaf, e_leaf)
            assert a_leaf.dtype == e_leaf.dtype


@pytest.fixture(params=["memory", "memmap"])
def store(request, tmp_path):
    directory = tmp_path / "store" if request.param == "memmap" else None
    return ClientStateStore(_template(), NUM_CLIENTS, backend=request.param, directory=directory)


# --- get / put ------------------------------------------------------------

def test_put_then_get_round_trip(store):
    store.put([4, 1], [_state(4, 4.0), _state(1, 1.5)])
    _assert_states_equal(store.get([1, 4]), [_state(1, 1.5), _state(4, 4.0)])
    # Duplicates are fine when reading.
    _assert_states_equal(store.get([4, 4]), [_state(4, 4.0), _state(4, 4.0)])
    np.testing.assert_array_equal(store.seen, [False, True, False, False, True, False])


def test_put_overwrites_only_the_given_clients(store):
    store.put([0, 1], [_state(0, 1.0), _state(1, 2.0)])
    store.put([1], [_state(1, 9.0)])
    _assert_states_equal(store.get([0, 1]), [_state(0, 1.0), _state(1, 9.0)])


def test_unseen_clients_get_zeros_by_default(store):
    store.put([2], [_state(2, 3.0)])
    # Without id_key the id leaf is the template's value (0) for unseen clients.
    _assert_states_equal(store.get([0, 2, 5]), [_zeros(), _state(2, 3.0), _zeros()])


def test_unseen_clients_get_the_initial_state(tmp_path):
    initial = _state(0, 7.0)
    for backend, directory in (("memory", None), ("memmap", tmp_path)):
        store = ClientStateStore(_template(), NUM_CLIENTS, initial=initial, backend=backend,
                                 directory=directory)
        store.put([3], [_state(3, 0.5)])
        _assert_states_equal(store.get([3, 1]), [_state(3, 0.5), _state(0, 7.0)])
        assert not store.seen[1]


def test_get_returns_copies(store):
    store.put([0], [_state(0, 1.0)])
    state, = store.get([0])
    state["momentum"][0][...] = 100.0
    _assert_states_equal(store.get([0]), [_state(0, 1.0)])
    seen = store.seen
    seen[:] = True
    assert not store.seen[1]


def test_empty_get_and_put(store):
    assert store.get([]) == []
    store.put([], [])
    assert not store.seen.any()


def test_id_key_fills_and_checks_client_ids():
    store = ClientStateStore(_template(), NUM_CLIENTS, id_key="client_id")
    # Unseen clients get their own id, not the template's 0.
    assert [int(s["client_id"]) for s in store.get([3, 5])] == [3, 5]
    store.put([3, 5], [_state(3, 1.0), _state(5, 2.0)])
    # States come back in another order (several workers): each is stored by its own id.
    store.put([3, 5], [_state(5, 4.0), _state(3, 3.0)])
    _assert_states_equal(store.get([3, 5]), [_state(3, 3.0), _state(5, 4.0)])
    with pytest.raises(ValueError, match=r"carry client_ids \[3, 6\], not the client ids "
                                         r"\[3, 5\] \(missing \[5\], unexpected \[6\]\)"):
        store.put([3, 5], [_state(6, 2.0), _state(3, 1.0)])
    # Nothing was written by the rejected put.
    _assert_states_equal(store.get([3, 5]), [_state(3, 3.0), _state(5, 4.0)])


def test_bytes_per_client_and_leaf_names(store):
    assert store.bytes_per_client == 4 + 6 * 4 + 3 * 4
    assert store.leaf_names == ["client_id", "momentum/0", "momentum/1"]
    assert store.num_clients == NUM_CLIENTS


# --- memmap backend ---------------------------------------------------------

def test_memmap_equals_memory(tmp_path):
    memory = ClientStateStore(_template(), NUM_CLIENTS)
    memmap = ClientStateStore(_template(), NUM_CLIENTS, backend="memmap", directory=tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(5):
        ids = rng.choice(NUM_CLIENTS, size=3, replace=False)
        states = [_state(i, rng.normal()) for i in ids]
        memory.put(ids, states)
        memmap.put(ids, states)
    everyone = list(range(NUM_CLIENTS))
    _assert_states_equal(memmap.get(everyone), memory.get(everyone))
    np.testing.assert_array_equal(memmap.seen, memory.seen)
    memmap.flush()
    files = sorted(os.listdir(tmp_path))
    assert files == ["leaf_000_client_id.npy", "leaf_001_momentum_0.npy",
                     "leaf_002_momentum_1.npy", "seen.npy"]
    # The files are plain .npy arrays with the clients as leading dimension.
    on_disk = np.load(tmp_path / "leaf_001_momentum_0.npy")
    np.testing.assert_array_equal(on_disk, memory.state_dict()["states"]["momentum"][0])


def test_memmap_state_dict_is_read_only_view(tmp_path):
    store = ClientStateStore(_template(), NUM_CLIENTS, backend="memmap", directory=tmp_path)
    store.put([1], [_state(1, 2.0)])
    state_dict = store.state_dict()
    with pytest.raises(ValueError, match="read-only"):
        state_dict["states"]["momentum"][0][1] = 0.0


# --- program state --------------------------------------------------------

def _filled_store(**kwargs):
    store = ClientStateStore(_template(), NUM_CLIENTS, **kwargs)
    store.put([0, 4, 2], [_state(0, 0.25), _state(4, -1.0), _state(2, 3.0)])
    return store


def test_state_dict_round_trip(tmp_path):
    source = _filled_store()
    state_dict = source.state_dict()
    assert list(state_dict) == ["seen", "states"]
    assert state_dict["seen"].dtype == np.bool_
    assert state_dict["states"]["momentum"][0].shape == (NUM_CLIENTS, 2, 3)
    target = ClientStateStore(_template(), NUM_CLIENTS, backend="memmap", directory=tmp_path)
    target.load_state_dict(state_dict)
    everyone = list(range(NUM_CLIENTS))
    _assert_states_equal(target.get(everyone), source.get(everyone))
    np.testing.assert_array_equal(target.seen, source.seen)
    # A copy: later puts to the source do not change the saved dict.
    source.put([1], [_state(1, 5.0)])
    assert not state_dict["seen"][1]


def test_state_dict_through_file_program_state_manager(tmp_path):
    source = _filled_store()
    manager = tff.program.FileProgramStateManager(str(tmp_path / "state"))
    program_state = collections.OrderedDict(round=np.int64(3), clients=source.state_dict())
    asyncio.run(manager.save(program_state, 3))
    loaded = asyncio.run(manager.load(3, program_state))
    target = ClientStateStore(_template(), NUM_CLIENTS)
    target.load_state_dict(loaded["clients"])
    everyone = list(range(NUM_CLIENTS))
    _assert_states_equal(target.get(everyone), source.get(everyone))
    np.testing.assert_array_equal(target.seen, source.seen)


# --- validation -----------------------------------------------------------

def test_unknown_client_ids(store):
    with pytest.raises(ValueError, match=r"unknown client id 6: the store holds clients 0\.\.5"):
        store.get([1, 6])
    with pytest.raises(ValueError, match="unknown client id -1"):
        store.put([-1], [_state(0, 0.0)])


def test_bad_client_id_types(store):
    with pytest.raises(TypeError, match="client_ids must be a sequence of integers"):
        store.get(3)
    with pytest.raises(TypeError, match="client_ids must be a sequence of integers"):
        store.get([1.0])


def test_duplicate_ids_in_put(store):
    with pytest.raises(ValueError, match="client id 2 appears more than once"):
        store.put([2, 2], [_state(2, 0.0), _state(2, 1.0)])


def test_put_length_mismatch(store):
    with pytest.raises(ValueError, match="put\\(\\) got 2 client ids but 1 states"):
        store.put([0, 1], [_state(0, 0.0)])


def test_shape_mismatch_names_client_and_leaf(store):
    bad = _state(4, 0.0)
    bad["momentum"][1] = np.zeros((4,), np.float32)
    with pytest.raises(ValueError, match=r"client 4, leaf 'momentum/1': expected shape \(3,\) "
                                         r"float32; got shape \(4,\) float32"):
        store.put([1, 4], [_state(1, 0.0), bad])
    assert not store.seen.any()  # validated before anything was written


def test_dtype_mismatch_names_client_and_leaf(store):
    bad = _state(2, 0.0)
    bad["client_id"] = np.int64(2)
    with pytest.raises(ValueError, match=r"client 2, leaf 'client_id': expected shape \(\) int32; "
                                         r"got shape \(\) int64"):
        store.put([2], [bad])


def test_structure_mismatch(store):
    with pytest.raises(ValueError, match="client 0: structure does not match the template"):
        store.put([0], [collections.OrderedDict(client_id=np.int32(0), velocity=[])])


def test_constructor_validation(tmp_path):
    with pytest.raises(ValueError, match="num_clients must be >= 1; got 0"):
        ClientStateStore(_template(), 0)
    with pytest.raises(TypeError, match="num_clients must be an integer"):
        ClientStateStore(_template(), 2.0)
    with pytest.raises(ValueError, match="backend must be one of memory, memmap; got 'disk'"):
        ClientStateStore(_template(), 2, backend="disk")
    with pytest.raises(ValueError, match="backend='memmap' needs a directory"):
        ClientStateStore(_template(), 2, backend="memmap")
    with pytest.raises(ValueError, match="directory is only used with backend='memmap'"):
        ClientStateStore(_template(), 2, directory=tmp_path)
    with pytest.raises(ValueError,
                       match=r"initial state, leaf 'momentum/0': expected shape \(2, 3\)"):
        ClientStateStore(_template(), 2, initial=collections.OrderedDict(
            client_id=np.int32(0), momentum=[np.zeros(6, np.float32), np.zeros(3, np.float32)]))
    with pytest.raises(ValueError, match="id_key 'id' is not a top-level key"):
        ClientStateStore(_template(), 2, id_key="id")
    with pytest.raises(ValueError, match="id_key 'momentum' must name an integer scalar leaf"):
        ClientStateStore(collections.OrderedDict(momentum=np.zeros(2, np.float32)), 2,
                         id_key="momentum")


def test_load_state_dict_validation():
    store = _filled_store()
    before = store.get(list(range(NUM_CLIENTS)))
    with pytest.raises(ValueError, match="exactly the keys seen, states"):
        store.load_state_dict({"seen": store.seen})
    with pytest.raises(ValueError, match=r"'seen': expected shape \(6,\) bool"):
        store.load_state_dict({"seen": np.zeros(5, np.bool_),
                               "states": store.state_dict()["states"]})
    other = ClientStateStore(_template(), NUM_CLIENTS + 1)
    with pytest.raises(ValueError, match=r"leaf 'client_id': expected shape \(6,\) int32; "
                                         r"got shape \(7,\) int32"):
        store.load_state_dict({"seen": store.seen, "states": other.state_dict()["states"]})
    # Rejected loads wrote nothing.
    _assert_states_equal(store.get(list(range(NUM_CLIENTS))), before)


# --- zeros_from_type --------------------------------------------------------

def test_zeros_from_type_keeps_containers():
    state_type = tff.StructWithPythonType(
        [("client_id", np.int32),
         ("momentum", tff.StructWithPythonType(
             [tff.TensorType(np.float32, [2, 3]), tff.TensorType(np.float32, [3])], list))],
        collections.OrderedDict)
    zeros = zeros_from_type(state_type)
    _assert_states_equal([zeros], [_zeros()])
    assert isinstance(zeros, collections.OrderedDict) and isinstance(zeros["momentum"], list)
    # attrs containers (ModelWeights) are rebuilt too.
    weights_type = tff.StructWithPythonType(
        [("trainable", tff.StructWithPythonType([tff.TensorType(np.float32, [2])], list)),
         ("non_trainable", tff.StructWithPythonType([], list))],
        tff.learning.models.ModelWeights)
    weights = zeros_from_type(weights_type)
    assert isinstance(weights, tff.learning.models.ModelWeights)
    np.testing.assert_array_equal(weights.trainable[0], np.zeros(2, np.float32))


def test_zeros_from_type_rejects_unknown_shapes():
    with pytest.raises(ValueError, match="fully defined shapes"):
        zeros_from_type(tff.TensorType(np.float32, [None, 3]))
