"""Tests for tff_byz/datasets/idx.py (MNIST and Fashion-MNIST idx files)."""

import gzip
import struct

import numpy as np
import pytest

from tff_byz.datasets import idx, source

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def write_idx(path, array, compress=True):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as stream:
            stream.write(payload)
    else:
        path.write_bytes(payload)


def write_tiny_mnist(directory, compress=True):
    """4 train + 2 test images 28x28 with known pixels; returns the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)),
        "train-labels-idx1-ubyte": np.array([3, 1, 4, 1]),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([5, 9]),
    }
    for name, array in arrays.items():
        write_idx(directory / (name + (".gz" if compress else "")), array, compress)
    return arrays


def test_read_idx_gz_and_raw(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "a", array, compress=False)
    for path in (tmp_path / "a.gz", tmp_path / "a"):
        read = idx.read_idx(path)
        assert read.dtype == np.uint8
        np.testing.assert_array_equal(read, array)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 1) + b"\0" * 4)
    with pytest.raises(ValueError, match="not a uint8 idx file"):
        idx.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", 5) + b"\0\0")
    with pytest.raises(ValueError, match=r"header says shape \(5,\) but holds 2 values"):
        idx.read_idx(tmp_path / "short")


@pytest.mark.parametrize("layout", [("mnist", "MNIST", "raw"), ("MNIST", "raw"), ()])
def test_tiny_mnist_in_each_layout(tmp_path, layout):
    arrays = write_tiny_mnist(tmp_path.joinpath(*layout))
    data = idx.load_mnist(tmp_path)
    assert data.train_x.shape == (4, 28, 28, 1) and data.test_x.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(data.train_x[..., 0] * 255, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.test_y, [5, 9])
    assert data.train_y.dtype == np.int32 and data.train_x.dtype == np.float32


def test_uncompressed_files_in_fashion_layout(tmp_path):
    write_tiny_mnist(tmp_path / "fashion_mnist" / "FashionMNIST" / "raw", compress=False)
    data = idx.load_fashion_mnist(tmp_path)
    assert data.name == "fashion_mnist"
    np.testing.assert_array_equal(data.train_y, [3, 1, 4, 1])


def test_missing_files_message(tmp_path):
    expected = (
        f"mnist: {', '.join(idx.IDX_FILES)} not found in {tmp_path} (searched "
        f"{tmp_path}/mnist/MNIST/raw, {tmp_path}/MNIST/raw, {tmp_path})")
    with pytest.raises(source.DatasetNotFoundError) as info:
        idx.load_mnist(tmp_path)
    assert str(info.value) == expected
    assert isinstance(info.value, FileNotFoundError)


def test_partially_missing_files_are_named(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_tiny_mnist(raw)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(source.DatasetNotFoundError,
                       match=r"^fashion_mnist: t10k-labels-idx1-ubyte\.gz not found in "):
        idx.load_fashion_mnist(tmp_path)


def test_data_dir_required():
    with pytest.raises(source.DatasetNotFoundError,
                       match=r"^mnist: --data_dir is required \(the directory holding train-images"):
        idx.load_mnist(None)


def test_real_mnist(require_data):
    data = idx.load_mnist(require_data("mnist/MNIST/raw"))
    assert data.train_x.shape == (60000, 28, 28, 1) and data.test_x.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(data.train_y), MNIST_TRAIN_COUNTS)
    np.testing.assert_array_equal(np.bincount(data.test_y), MNIST_TEST_COUNTS)
    assert data.train_x.min() == 0.0 and data.train_x.max() == 1.0
    # The constants the model normalises MNIST with (fedlaw.md §10).
    assert data.train_x.mean(dtype=np.float64) == pytest.approx(0.1307, abs=5e-5)
    assert data.train_x.std(dtype=np.float64) == pytest.approx(0.3081, abs=5e-5)


def test_real_fashion_mnist(require_data):
    data = idx.load_fashion_mnist(require_data("fashion_mnist/FashionMNIST/raw"))
    assert data.train_x.shape == (60000, 28, 28, 1) and data.test_x.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(data.train_y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(data.test_y), [1000] * 10)
    assert data.train_x.mean(dtype=np.float64) == pytest.approx(0.2860, abs=5e-5)
    assert data.train_x.std(dtype=np.float64) == pytest.approx(0.3530, abs=5e-5)
