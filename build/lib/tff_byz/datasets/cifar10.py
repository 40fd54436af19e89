"""CIFAR-10 from the python pickle batches (`cifar-10-batches-py`).

Accepts the extracted directory or a `.tar.xz` / `.tar.gz` archive of it. Each
batch is a pickle with `b"data"` (uint8 [N, 3072], channel-first) and
`b"labels"`; the rebuilt batches in shared/data lack `b"filenames"`, which is
not used. Decoding the xz archive takes ~20 s, so the decoded uint8 arrays
are cached (see `cache.py`) and converted to float32 on every load.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import tarfile
from collections.abc import Callable, Iterable
from typing import BinaryIO

import numpy as np

from tff_byz.datasets import cache, source

__all__ = ["load_cifar10"]

_DIR_NAME = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_ARCHIVE_PATTERNS = ("cifar-10*.tar.xz", "cifar-10*.tar.gz")
# Bump when the decoded layout changes, to invalidate old cache files.
_CACHE_VERSION = "cifar10-v1"


def _read_batch(stream: BinaryIO) -> tuple[np.ndarray, np.ndarray]:
    # Python-2 pickles of byte strings; encoding="bytes" keeps keys as bytes.
    # (pickle executes code from the file: only point data_dir at trusted data.)
    batch = pickle.load(stream, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch[b"labels"], dtype=np.int32)
    # Channel-first rows -> [N, H, W, C].
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels


def _assemble(read: Callable[[str], tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    train = [read(name) for name in _TRAIN_BATCHES]
    test_x, test_y = read(_TEST_BATCH)
    return {
        "train_x": np.concatenate([x for x, _ in train]),
        "train_y": np.concatenate([y for _, y in train]),
        "test_x": test_x,
        "test_y": test_y,
    }


def _read_directory(directory: pathlib.Path) -> dict[str, np.ndarray]:
    def read(name):
        with open(directory / name, "rb") as stream:
            return _read_batch(stream)
    return _assemble(read)


def _read_archive(archive: pathlib.Path) -> dict[str, np.ndarray]:
    # One sequential pass: random access into an xz tar would decompress again.
    batches = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            name = pathlib.PurePosixPath(member.name).name
            if member.isfile() and name in _TRAIN_BATCHES + (_TEST_BATCH,):
                with tar.extractfile(member) as stream:
                    batches[name] = _read_batch(stream)
    missing = [n for n in _TRAIN_BATCHES + (_TEST_BATCH,) if n not in batches]
    if missing:
        raise source.DatasetNotFoundError(
            f"cifar10: {', '.join(missing)} not found in archive {archive}")
    return _assemble(batches.__getitem__)


def _has_batches(directory: pathlib.Path) -> bool:
    return all((directory / n).is_file() for n in _TRAIN_BATCHES + (_TEST_BATCH,))


def _first_archive(directories: Iterable[pathlib.Path]) -> pathlib.Path | None:
    for directory in directories:
        for pattern in _ARCHIVE_PATTERNS:
            matches = sorted(directory.glob(pattern))
            if matches:
                return matches[0]
    return None


def load_cifar10(
    data_dir: str | os.PathLike | None, *, cache_dir: str | os.PathLike | None = None
) -> source.SourceData:
    """CIFAR-10: 50000 / 10000 images [32, 32, 3] in [0, 1], 10 classes.

    Search order: the extracted directory `cifar-10-batches-py/` under
    `<data_dir>/cifar10` or `<data_dir>` (read directly, no cache), then the
    first archive matching `cifar-10*.tar.xz` / `cifar-10*.tar.gz` in those
    directories (decoded once, then cached under `cache_dir`, default
    `$TFF_BYZ_CACHE` or `~/.cache/tff_byz`).
    """
    expected = (_DIR_NAME + "/", *_ARCHIVE_PATTERNS)
    root = source.require_data_dir("cifar10", data_dir, expected)
    searched = [root / "cifar10", root]
    arrays = None
    for directory in searched:
        if _has_batches(directory / _DIR_NAME):
            arrays = _read_directory(directory / _DIR_NAME)
            break
    if arrays is None:
        archive = _first_archive(searched)
        if archive is None:
            raise source.not_found("cifar10", expected, root, searched)
        path = cache.cached_path("cifar10", [archive], version=_CACHE_VERSION, cache_dir=cache_dir)
        arrays = cache.load_npz(path)
        if arrays is None:
            arrays = _read_archive(archive)
            cache.save_npz_atomic(path, arrays)
    return source.SourceData(
        name="cifar10", num_classes=10,
        train_x=source.uint8_to_unit(arrays["train_x"]),
        train_y=arrays["train_y"].astype(np.int32),
        test_x=source.uint8_to_unit(arrays["test_x"]),
        test_y=arrays["test_y"].astype(np.int32))
