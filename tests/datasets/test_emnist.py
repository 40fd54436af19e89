"""Tests for tff_byz/datasets/emnist.py (TFF sqlite or LEAF FEMNIST JSON)."""

import json
import sqlite3
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from tff_byz.datasets import emnist, source

# writer -> (train labels, test labels). w1 writes only letters in train, w3
# has test data only.
FAKE_WRITERS = {
    "w2": ([1, 12, 3], [5, 40]),
    "w1": ([10, 20], [2]),
    "w3": ([], [7]),
}


def pixel_value(writer, split, k):
    """A distinct, recognisable pixel value per sample (in [0, 1])."""
    return (int(writer[1]) * 10 + k + (5 if split == "test" else 0)) / 100


def leaf_json(split, writers):
    users = [w for w in writers if FAKE_WRITERS[w][split == "test"]]
    data = {"users": users, "num_samples": [], "user_data": {}}
    for w in users:
        labels = FAKE_WRITERS[w][split == "test"]
        data["num_samples"].append(len(labels))
        data["user_data"][w] = {
            "x": [[pixel_value(w, split, k)] * 784 for k in range(len(labels))],
            "y": labels,
        }
    return json.dumps(data)


def write_leaf_tree(root):
    """Two shards, as LEAF writes them; w3's shard has no train file."""
    base = root / "femnist_leaf" / "data" / "femnist" / "data"
    for split in ("train", "test"):
        (base / split).mkdir(parents=True)
        shard = base / split / f"all_data_0_niid_05_keep_0_{split}_9.json"
        shard.write_text(leaf_json(split, ["w2", "w1"]))
    (base / "test" / "all_data_1_niid_05_keep_0_test_9.json").write_text(leaf_json("test", ["w3"]))
    return base


@pytest.fixture(params=["extracted", "archive"])
def fake_leaf_dir(request, tmp_path):
    data_dir = tmp_path / "data"
    base = write_leaf_tree(tmp_path / "tree")
    if request.param == "extracted":
        (tmp_path / "tree").rename(data_dir)
    else:
        (data_dir / "femnist_leaf").mkdir(parents=True)
        with tarfile.open(data_dir / "femnist_leaf" / "femnist_partial.tar.gz", "w:gz") as tar:
            tar.add(base.parent.parent, arcname="data")
    return data_dir


def test_fake_leaf_all_classes(fake_leaf_dir, tmp_path):
    data = emnist.load_emnist(fake_leaf_dir, only_digits=False, cache_dir=tmp_path / "cache")
    assert data.num_classes == 62
    assert data.writer_ids == ("w1", "w2")  # sorted; w3 has no training data
    np.testing.assert_array_equal(data.train_y, [10, 20, 1, 12, 3])
    np.testing.assert_array_equal(data.train_writer, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data.test_y, [2, 5, 40])  # w3's test example is dropped
    assert data.train_x.shape == (5, 28, 28, 1) and data.train_x.dtype == np.float32
    np.testing.assert_allclose(data.train_x[:, 0, 0, 0], [0.10, 0.11, 0.20, 0.21, 0.22], rtol=1e-6)
    np.testing.assert_allclose(data.test_x[:, 5, 5, 0], [0.15, 0.25, 0.26], rtol=1e-6)


def test_fake_leaf_only_digits(fake_leaf_dir, tmp_path):
    data = emnist.load_emnist(fake_leaf_dir, only_digits=True, cache_dir=tmp_path / "cache")
    assert data.num_classes == 10
    # w1 has no digit in train: dropped, and with it its digit test example.
    assert data.writer_ids == ("w2",)
    np.testing.assert_array_equal(data.train_y, [1, 3])
    np.testing.assert_array_equal(data.train_writer, [0, 0])
    np.testing.assert_array_equal(data.test_y, [5])


def test_leaf_parse_is_cached(fake_leaf_dir, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = emnist.load_emnist(fake_leaf_dir, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("emnist-leaf-*.npz"))) == 1

    def fail(*_):
        raise AssertionError("JSON parsed again despite the cache")

    monkeypatch.setattr(emnist, "_read_leaf", fail)
    second = emnist.load_emnist(fake_leaf_dir, cache_dir=cache_dir)
    np.testing.assert_array_equal(first.train_x, second.train_x)
    assert first.writer_ids == second.writer_ids


def write_tff_sqlite(path):
    """A tiny emnist_all.sqlite in TFF's SqlClientData layout."""
    def example(label, value):
        return tf.train.Example(features=tf.train.Features(feature={
            "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=[value] * 784)),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        })).SerializeToString()

    splits = {
        "digits_only_train": {"b": [1, 2], "a": [3]},
        "digits_only_test": {"b": [4], "a": [5]},
        "all_train": {"b": [1, 2, 30], "a": [3], "c": [50]},
        "all_test": {"b": [4], "a": [5, 60], "c": [7]},
    }
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
                           "serialized_example_proto BLOB NOT NULL);")
        connection.execute("CREATE TABLE client_metadata (client_id TEXT NOT NULL, "
                           "split_name TEXT NOT NULL, num_examples INTEGER NOT NULL);")
        for split, clients in splits.items():
            for client, labels in clients.items():
                for label in labels:
                    connection.execute("INSERT INTO examples VALUES (?, ?, ?);",
                                       (split, client, example(label, label / 100)))
                connection.execute("INSERT INTO client_metadata VALUES (?, ?, ?);",
                                   (client, split, len(labels)))


def test_tff_sqlite_is_preferred(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "emnist").mkdir(parents=True)
    write_tff_sqlite(data_dir / "emnist" / "emnist_all.sqlite")
    write_leaf_tree(data_dir)  # present but ignored
    digits = emnist.load_emnist(data_dir, only_digits=True, cache_dir=tmp_path / "cache")
    assert digits.writer_ids == ("a", "b") and digits.num_classes == 10
    np.testing.assert_array_equal(digits.train_y, [3, 1, 2])
    np.testing.assert_array_equal(digits.train_writer, [0, 1, 1])
    np.testing.assert_array_equal(digits.test_y, [5, 4])
    np.testing.assert_allclose(digits.train_x[:, 3, 4, 0], [0.03, 0.01, 0.02], rtol=1e-6)
    everything = emnist.load_emnist(data_dir, only_digits=False, cache_dir=tmp_path / "cache")
    assert everything.writer_ids == ("a", "b", "c") and everything.num_classes == 62
    np.testing.assert_array_equal(everything.train_y, [3, 1, 2, 30, 50])
    np.testing.assert_array_equal(everything.test_y, [5, 60, 4, 7])
    assert len(list((tmp_path / "cache").glob("emnist-tff-*.npz"))) == 2


def test_missing_files_message(tmp_path):
    with pytest.raises(source.DatasetNotFoundError) as info:
        emnist.load_emnist(tmp_path)
    message = str(info.value)
    assert message.startswith(
        f"emnist: emnist_all.sqlite, femnist_leaf/*.tar.gz, data/femnist/data/{{train,test}}/*.json "
        f"not found in {tmp_path} (searched {tmp_path}, {tmp_path}/emnist, {tmp_path}/femnist_leaf, ")
    assert "\n" not in message
    with pytest.raises(TypeError, match="`only_digits` must be a bool; got only_digits=1"):
        emnist.load_emnist(tmp_path, only_digits=1)


def test_real_leaf_femnist(require_data):
    data_dir = require_data("femnist_leaf")
    everything = emnist.load_emnist(data_dir, only_digits=False)
    # shared/data README: 105 writers with train and test data, 14,708 train
    # and 1,685 test samples; the 79 test-only writers are dropped.
    assert len(everything.writer_ids) == 105
    assert everything.train_y.size == 14708 and everything.test_y.size == 1685
    assert list(everything.writer_ids) == sorted(everything.writer_ids)
    assert everything.train_y.max() == 61 and everything.train_y.min() == 0
    # Background 1.0, as TFF's EMNIST: most pixels are exactly 1.
    assert np.mean(everything.train_x == 1.0) > 0.5
    assert everything.train_x.min() == 0.0 and everything.train_x.max() == 1.0

    digits = emnist.load_emnist(data_dir, only_digits=True)
    # README: 10,596 train and 1,180 test digits. One writer (f2210_96) has no
    # digit among its 4 training samples (nor in its test samples), so 104 remain.
    assert digits.train_y.size == 10596 and digits.test_y.size == 1180
    assert len(digits.writer_ids) == 104 and "f2210_96" not in digits.writer_ids
    np.testing.assert_array_equal(np.bincount(digits.train_y),
                                  [1044, 1124, 1062, 1073, 1008, 1034, 1077, 1097, 1050, 1027])
    assert np.bincount(digits.train_writer).min() >= 1
