"""Tests for tff_byz/datasets/store.py: the client-data store on disk."""

import multiprocessing
import os
import stat

import numpy as np
import pytest

from tff_byz.datasets import store


def _clients(seed=0, sizes=(5, 3, 7), shape=(4, 4, 1), levels=255):
    """Client arrays whose pixels are k / `levels`, as the loaders make them."""
    rng = np.random.default_rng(seed)
    arrays = []
    for n in sizes:
        codes = rng.integers(0, levels + 1, size=(n, *shape))
        x = codes.astype(np.float32) / np.float32(levels)
        arrays.append((x, rng.integers(0, 10, n).astype(np.int32)))
    return arrays


KEY = {"partition": "iid", "seed": 0}


def _bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


def test_uint8_pixels_are_stored_as_codes_that_decode_bit_for_bit():
    x = np.arange(256, dtype=np.float32).reshape(4, 8, 8, 1) / np.float32(255.0)
    codes, table = store.encode_images(x)
    assert codes.dtype == np.uint8 and table.dtype == np.float32 and table.shape == (256,)
    np.testing.assert_array_equal(codes.ravel(), np.arange(256))
    np.testing.assert_array_equal(_bits(table[codes]), _bits(x))


def test_few_distinct_values_get_their_own_table_and_others_stay_float32():
    sixteenths = np.arange(17, dtype=np.float32).reshape(1, 17, 1, 1) / np.float32(16.0)
    codes, table = store.encode_images(sixteenths)  # digits' pixels: k / 16
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(_bits(table[codes]), _bits(sixteenths))
    floats = np.linspace(-1, 1, 300, dtype=np.float32).reshape(3, 10, 10, 1)
    kept, none = store.encode_images(floats)
    assert none is None and kept.dtype == np.float32
    np.testing.assert_array_equal(_bits(kept), _bits(floats))


def test_written_store_holds_every_client_in_order(tmp_path):
    clients = _clients()
    written = store.write_store(tmp_path / "s", clients, KEY)
    assert written.num_clients == 3 and written.num_examples == 15
    np.testing.assert_array_equal(written.offsets, [0, 5, 8, 15])
    assert written.x_dtype == "uint8" and written.example_shape == (4, 4, 1)
    assert os.path.getsize(written.x_path) == 15 * 16 and os.path.getsize(written.y_path) == 60
    for index, (x, y) in enumerate(clients):
        got_x, got_y = written.client_rows(index)
        np.testing.assert_array_equal(_bits(got_x), _bits(x))
        np.testing.assert_array_equal(got_y, y)
    reopened = store.open_store(tmp_path / "s")
    assert reopened.fingerprints == written.fingerprints
    # Nothing but the store itself is left in the parent directory.
    assert sorted(os.listdir(tmp_path)) == ["s"]


def test_files_keep_the_umasks_mode(tmp_path):
    written = store.write_store(tmp_path / "s", _clients(), KEY)
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (written.x_path, written.y_path, os.path.join(written.directory, "manifest.json")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE(os.stat(written.directory).st_mode) == 0o777 & ~umask


def test_directory_depends_on_every_key_field(tmp_path):
    base = store.store_directory("mnist", {"seed": 0, "q": 0.5}, tmp_path)
    assert base.parent == tmp_path / "stores" and base.name.startswith("mnist-")
    assert store.store_directory("mnist", {"q": 0.5, "seed": 0}, tmp_path) == base
    assert store.store_directory("mnist", {"seed": 1, "q": 0.5}, tmp_path) != base
    assert store.store_directory("fashion_mnist", {"seed": 0, "q": 0.5}, tmp_path) != base


def test_ensure_reuses_a_valid_store(tmp_path):
    clients = _clients()
    first = store.ensure_store(tmp_path / "s", clients, KEY)
    inode = os.stat(first.x_path).st_ino
    again = store.ensure_store(tmp_path / "s", clients, KEY)
    assert os.stat(again.x_path).st_ino == inode  # not rewritten


def _corrupt_truncate(written):
    with open(written.x_path, "r+b") as f:
        f.truncate(os.path.getsize(written.x_path) - 16)


def _corrupt_flip_one_byte(written):
    with open(written.x_path, "r+b") as f:  # a byte no sampled row may cover
        f.seek(6 * 16 + 3)
        value = f.read(1)[0]
        f.seek(6 * 16 + 3)
        f.write(bytes([value ^ 0xFF]))


def _corrupt_manifest(written):
    with open(os.path.join(written.directory, "manifest.json"), "w") as f:
        f.write("{not json")


def _delete_labels(written):
    os.unlink(written.y_path)


@pytest.mark.parametrize("corrupt", [_corrupt_truncate, _corrupt_flip_one_byte,
                                     _corrupt_manifest, _delete_labels])
def test_ensure_rebuilds_a_broken_store(tmp_path, corrupt, caplog):
    clients = _clients()
    written = store.write_store(tmp_path / "s", clients, KEY)
    corrupt(written)
    rebuilt = store.ensure_store(tmp_path / "s", clients, KEY)
    assert "rebuilding the client-data store" in caplog.text
    for index, (x, y) in enumerate(clients):
        np.testing.assert_array_equal(_bits(rebuilt.client_rows(index)[0]), _bits(x))
    assert sorted(os.listdir(tmp_path)) == ["s"]


def test_ensure_rebuilds_a_store_of_other_data(tmp_path):
    store.write_store(tmp_path / "s", _clients(seed=1), KEY)
    clients = _clients(seed=2)
    rebuilt = store.ensure_store(tmp_path / "s", clients, KEY)
    np.testing.assert_array_equal(rebuilt.client_rows(2)[1], clients[2][1])
    # Same labels and counts, other pixels: the sampled rows catch it.
    other_pixels = [(np.clip(x + np.float32(1 / 255), 0, 1), y) for x, y in clients]
    rebuilt = store.ensure_store(tmp_path / "s", other_pixels, KEY)
    np.testing.assert_array_equal(_bits(rebuilt.client_rows(0)[0]), _bits(other_pixels[0][0]))


def test_open_names_the_missing_or_truncated_file(tmp_path):
    with pytest.raises(store.StoreError, match=r"manifest.json is missing"):
        store.open_store(tmp_path / "nothing")
    written = store.write_store(tmp_path / "s", _clients(), KEY)
    _corrupt_truncate(written)
    with pytest.raises(store.StoreError, match=r"x\.bin has 224 bytes, expected 240"):
        store.open_store(tmp_path / "s")


def test_an_unwritable_cache_fails_in_one_line_naming_the_store(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the stores directory should be
    with pytest.raises(store.StoreError, match="cannot write the client-data store") as info:
        store.ensure_store(blocker / "s", _clients(), KEY)
    assert "\n" not in str(info.value) and str(blocker / "s") in str(info.value)


def _write_in_child(directory, start, results):
    start.wait()
    results.put(store.ensure_store(directory, _clients(), KEY).fingerprints)


def test_concurrent_writers_leave_one_valid_store(tmp_path):
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    writers = [context.Process(target=_write_in_child, args=(tmp_path / "s", start, results))
               for _ in range(4)]
    for writer in writers:
        writer.start()
    start.set()
    fingerprints = [results.get(timeout=120) for _ in writers]
    for writer in writers:
        writer.join(timeout=30)
        assert writer.exitcode == 0
    assert all(f == fingerprints[0] for f in fingerprints)
    assert sorted(os.listdir(tmp_path)) == ["s"]
    reopened = store.open_store(tmp_path / "s")
    assert reopened.fingerprints == fingerprints[0]


def test_temporary_directories_of_dead_writers_are_removed(tmp_path):
    dead = multiprocessing.get_context("fork").Process(target=lambda: None)
    dead.start()
    dead.join()
    orphan = tmp_path / f"s.tmp-{dead.pid}-abc"
    orphan.mkdir()
    (orphan / "x.bin").write_bytes(b"half")
    live = tmp_path / f"s.tmp-{os.getpid()}-def"
    live.mkdir()
    store.write_store(tmp_path / "t", _clients(), KEY)
    assert not orphan.exists() and live.exists()
