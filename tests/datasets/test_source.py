"""Tests for tff_byz/datasets/source.py (SourceData, errors, stratified split)."""

import numpy as np
import pytest

from tff_byz.datasets import source


def test_stratified_split_counts_per_class():
    labels = np.repeat(np.arange(40), 10)
    train, test = source.stratified_split(labels, 0.2, rng=0)
    np.testing.assert_array_equal(np.bincount(labels[test]), [2] * 40)
    np.testing.assert_array_equal(np.bincount(labels[train]), [8] * 40)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(400))


def test_stratified_split_rounds_half_up_and_is_seeded():
    labels = np.repeat([0, 1], [5, 7])  # 0.5 * 5 = 2.5 -> 3; 0.5 * 7 = 3.5 -> 4
    train, test = source.stratified_split(labels, 0.5, rng=1)
    np.testing.assert_array_equal(np.bincount(labels[test]), [3, 4])
    again = source.stratified_split(labels, 0.5, rng=1)[1]
    np.testing.assert_array_equal(test, again)
    others = [source.stratified_split(labels, 0.5, rng=s)[1] for s in range(2, 6)]
    assert any(not np.array_equal(test, o) for o in others)


def test_dataset_not_found_error():
    error = source.not_found("mnist", ["a.gz", "b.gz"], "/x", ["/x/m", "/x"])
    assert isinstance(error, FileNotFoundError)
    assert str(error) == "mnist: a.gz, b.gz not found in /x (searched /x/m, /x)"
    with pytest.raises(source.DatasetNotFoundError,
                       match=r"^olivetti: --data_dir is required \(the directory holding a, b\)$"):
        source.require_data_dir("olivetti", None, ["a", "b"])


def test_require_data_dir_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(source.DatasetNotFoundError,
                       match=f"^cifar10: data_dir {missing} is not a directory"):
        source.require_data_dir("cifar10", missing, ["x"])


def test_source_data_checks_layout():
    x = np.zeros((3, 2, 2, 1), np.float32)
    y = np.zeros(3, np.int32)
    source.SourceData("d", 2, x, y, x, y)
    with pytest.raises(ValueError, match=r"d: train_x must be float32 \[N, H, W, C\]"):
        source.SourceData("d", 2, x.astype(np.float64), y, x, y)
    with pytest.raises(ValueError, match=r"d: test_y must be int32 \[3\]"):
        source.SourceData("d", 2, x, y, x, y.astype(np.int64))
    with pytest.raises(ValueError, match="writer_ids and train_writer go together"):
        source.SourceData("d", 2, x, y, x, y, writer_ids=("a",))
