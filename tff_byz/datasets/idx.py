"""MNIST and Fashion-MNIST from the canonical idx files (gzipped or not).

Keras' loaders need `mnist.npz` from the network, so the idx files are read
with NumPy: a big-endian header (two zero bytes, a type code, the number of
dimensions, one uint32 per dimension) followed by the raw uint8 data.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import struct
import zlib

import numpy as np

from tff_byz.datasets import source

__all__ = ["IDX_FILES", "load_fashion_mnist", "load_mnist", "read_idx"]

# The four canonical file names; the same for both datasets.
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

_UINT8_TYPE_CODE = 0x08

# Where the files may sit under data_dir, in search order: torchvision's layout
# first, then the files directly in data_dir.
_SEARCH = {
    "mnist": (("mnist", "MNIST", "raw"), ("MNIST", "raw"), ()),
    "fashion_mnist": (("fashion_mnist", "FashionMNIST", "raw"), ("FashionMNIST", "raw"), ()),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads a uint8 idx file (`.gz` is decompressed) into an array of its shape."""
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as error:  # e.g. gzip.BadGzipFile, a cut file
        raise source.DatasetCorruptError(f"{path}: cannot be read as "
                                         f"{'a gzipped ' if path.suffix == '.gz' else 'an '}idx "
                                         f"file ({error})") from None
    if len(data) < 4:
        raise source.DatasetCorruptError(f"{path}: not a uint8 idx file ({len(data)} bytes)")
    zeros, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zeros != 0 or type_code != _UINT8_TYPE_CODE:
        raise source.DatasetCorruptError(f"{path}: not a uint8 idx file (header {data[:4].hex()})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise source.DatasetCorruptError(f"{path}: idx header cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    array = np.frombuffer(data, dtype=np.uint8, offset=header_size)
    if array.size != int(np.prod(shape)):
        raise source.DatasetCorruptError(
            f"{path}: header says shape {shape} but holds {array.size} values")
    return array.reshape(shape)


def _find(directory: pathlib.Path, name: str) -> pathlib.Path | None:
    # torchvision extracts the files next to the .gz; accept either.
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _locate(dataset: str, data_dir) -> list[pathlib.Path]:
    root = source.require_data_dir(dataset, data_dir, IDX_FILES)
    searched = [root.joinpath(*parts) for parts in _SEARCH[dataset]]
    for directory in searched:
        found = [_find(directory, name) for name in IDX_FILES]
        if all(found):
            return found
    # Name only the files missing from the most complete candidate.
    best = max(searched, key=lambda d: sum(_find(d, n) is not None for n in IDX_FILES))
    missing = [n for n in IDX_FILES if _find(best, n) is None]
    raise source.not_found(dataset, missing, root, searched)


def _load(dataset: str, data_dir) -> source.SourceData:
    train_images, train_labels, test_images, test_labels = (
        read_idx(path) for path in _locate(dataset, data_dir))
    return source.SourceData(
        name=dataset, num_classes=10,
        train_x=source.uint8_to_unit(train_images)[..., np.newaxis],
        train_y=train_labels.astype(np.int32),
        test_x=source.uint8_to_unit(test_images)[..., np.newaxis],
        test_y=test_labels.astype(np.int32))


def load_mnist(data_dir: str | os.PathLike | None) -> source.SourceData:
    """MNIST: 60000 / 10000 images [28, 28, 1] in [0, 1], 10 classes.

    Searches `<data_dir>/mnist/MNIST/raw`, `<data_dir>/MNIST/raw`, `<data_dir>`.
    """
    return _load("mnist", data_dir)


def load_fashion_mnist(data_dir: str | os.PathLike | None) -> source.SourceData:
    """Fashion-MNIST: 60000 / 10000 images [28, 28, 1] in [0, 1], 10 classes.

    Searches `<data_dir>/fashion_mnist/FashionMNIST/raw`,
    `<data_dir>/FashionMNIST/raw`, `<data_dir>`. The file names equal MNIST's,
    so a data_dir holding MNIST's files directly would be read as Fashion-MNIST
    too: point data_dir at the parent of the torchvision layout.
    """
    return _load("fashion_mnist", data_dir)
