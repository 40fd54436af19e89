"""The client-data store: a federated dataset's training examples on disk, read by reference.

A round ships client ids, not examples: TFF's worker reads each client's rows
straight from these files (`tff_byz.client_inputs.ByReference` maps them with
TensorFlow's `ImmutableConst`, so a read touches only the rows a round uses).
One store is written per (dataset, partition, seed, ...) into the cache
(`$TFF_BYZ_CACHE/stores/`) and reused by every later run and grid cell:

    <cache>/stores/<dataset>-<key hash>/
        manifest.json   format, key, example shape, x encoding, offsets, sizes, fingerprints
        x.bin           the images, client after client, row-major, C order
        y.bin           int32 labels, same order

Client i's examples are rows `offsets[i]:offsets[i + 1]`. Pixels stay raw: when
the float32 images take at most 256 distinct values (uint8 pixels / 255 for
MNIST, CIFAR-10, Olivetti; k / 16 for digits), x.bin holds uint8 codes and the
manifest a `decode_table` of 256 float32 values; decoding is a table lookup, so
the worker sees exactly the loader's float32 values (checked when written).
Other data is stored as float32.

Safety: a store is written into a private temporary directory and renamed into
place, so it is complete or absent; two runs writing the same store at once
each write their own and one rename wins. Opening checks the manifest, the file
sizes, every label, a seeded sample of rows against the in-memory dataset and
the files' fingerprints (`tf.fingerprint`, the op the worker-side check runs): a
truncated, corrupt or foreign store is rebuilt (`ensure_store`), never read
silently.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tff_byz import files
from tff_byz.datasets import cache

__all__ = ["FORMAT", "ClientStore", "StoreError", "encode_images", "ensure_store",
           "open_store", "store_directory", "write_store", "fingerprint_bytes"]

FORMAT = "tff_byz-client-store-v1"
_MANIFEST = "manifest.json"
_X_FILE, _Y_FILE = "x.bin", "y.bin"
_TMP_MARK = ".tmp-"
_CHECK_ROWS = 256  # rows compared with the in-memory dataset on every open (plus all labels)

_logger = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """A store that cannot be used or rebuilt; the message names the file (one line)."""


@dataclasses.dataclass(frozen=True, eq=False)
class ClientStore:
    """An opened, validated store (see module doc).

    Attributes:
      directory: the store's directory (absolute).
      example_shape: shape of one image, e.g. (28, 28, 1).
      x_dtype: "uint8" (codes, decoded through `decode_table`) or "float32".
      decode_table: float32 [256] for uint8 codes, else None.
      offsets: int64 [num_clients + 1]; client i owns rows offsets[i]:offsets[i + 1].
      fingerprints: {"x.bin": hex, "y.bin": hex}, `fingerprint_bytes` of each file.
    """

    directory: str
    example_shape: tuple[int, ...]
    x_dtype: str
    decode_table: Optional[np.ndarray]
    offsets: np.ndarray
    fingerprints: Mapping[str, str]

    @property
    def x_path(self) -> str:
        return os.path.join(self.directory, _X_FILE)

    @property
    def y_path(self) -> str:
        return os.path.join(self.directory, _Y_FILE)

    @property
    def num_clients(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_examples(self) -> int:
        return int(self.offsets[-1])

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def x_codes(self) -> np.ndarray:
        """x.bin as a read-only memory map [num_examples, *example_shape]."""
        return np.memmap(self.x_path, dtype=self.x_dtype, mode="r",
                         shape=(self.num_examples, *self.example_shape))

    def y_labels(self) -> np.ndarray:
        return np.memmap(self.y_path, dtype=np.int32, mode="r", shape=(self.num_examples,))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Stored rows → the loader's float32 values."""
        return self.decode_table[codes] if self.decode_table is not None else np.asarray(codes)

    def client_rows(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Client `index`'s (x float32, y int32), decoded (host side; tests and checks)."""
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.decode(self.x_codes()[start:stop]), np.array(self.y_labels()[start:stop])


def fingerprint_bytes(data: np.ndarray) -> str:
    """TensorFlow's farmhash fingerprint of an array's raw bytes, as hex.

    The same op runs in TFF's worker (`client_inputs.ByReference.verify`), so a
    worker can prove it reads the files this process validated.
    """
    flat = np.frombuffer(memoryview(np.ascontiguousarray(data)).cast("B"), np.uint8)
    return bytes(tf.fingerprint(flat[np.newaxis]).numpy()[0]).hex()


def encode_images(x: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """float32 images → (uint8 codes, float32 [256] table) when ≤ 256 distinct values, else
    (x, None). `table[codes]` equals `x` bit for bit (checked)."""
    x = np.ascontiguousarray(x, np.float32)
    table = np.arange(256, dtype=np.float32) / np.float32(255.0)  # uint8 pixels / 255
    if x.size and np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0:
        codes = np.rint(x * np.float32(255.0)).astype(np.uint8)
        if np.array_equal(table[codes], x):
            return codes, table
    values = np.unique(x) if x.size else np.zeros([0], np.float32)
    if 0 < values.size <= 256 and np.all(np.isfinite(values)):
        table = np.concatenate([values, np.zeros(256 - values.size, np.float32)])
        codes = np.searchsorted(values, x).astype(np.uint8)
        if np.array_equal(table[codes], x):
            return codes, table
    return x, None


def store_directory(dataset_name: str, key: Mapping[str, Any],
                    cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Where the store for `key` (every setting that fixes the split) lives."""
    text = json.dumps({"format": FORMAT, "dataset": dataset_name, **key}, sort_keys=True,
                      default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return cache.cache_root(cache_dir) / "stores" / f"{dataset_name}-{digest}"


def _manifest(store_key, example_shape, x_dtype, table, offsets, sizes, fingerprints):
    return {"format": FORMAT, "key": store_key, "example_shape": list(example_shape),
            "x_dtype": x_dtype, "decode_table": None if table is None else table.tolist(),
            "offsets": [int(o) for o in offsets], "sizes": sizes, "fingerprints": fingerprints}


def write_store(directory: str | os.PathLike, client_arrays: Sequence[tuple[np.ndarray, np.ndarray]],
                key: Mapping[str, Any]) -> ClientStore:
    """Writes the clients' (x float32 [n, ...], y int32 [n]) as a store at `directory`.

    Atomic: the files go to a temporary sibling directory renamed into place. If
    another writer got there first with a valid store, that one is kept. Raises
    StoreError when the directory cannot be written.
    """
    directory = pathlib.Path(directory)
    x_all = np.concatenate([np.asarray(x, np.float32) for x, _ in client_arrays])
    y_all = np.concatenate([np.asarray(y, np.int32) for _, y in client_arrays])
    offsets = np.concatenate([[0], np.cumsum([len(y) for _, y in client_arrays])]).astype(np.int64)
    codes, table = encode_images(x_all)
    del x_all
    x_dtype = "uint8" if table is not None else "float32"
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(directory.parent)
        temp = pathlib.Path(tempfile.mkdtemp(dir=directory.parent,
                                             prefix=f"{directory.name}{_TMP_MARK}{os.getpid()}-"))
    except OSError as error:
        raise StoreError(f"cannot write the client-data store {directory}: {error.strerror}") from None
    try:
        fingerprints, sizes = {}, {}
        for name, array in ((_X_FILE, codes), (_Y_FILE, y_all)):
            with open(temp / name, "wb") as stream:
                stream.write(memoryview(np.ascontiguousarray(array)).cast("B"))
                stream.flush()
                os.fsync(stream.fileno())
            fingerprints[name] = fingerprint_bytes(array)
            sizes[name] = int(array.nbytes)
        manifest = _manifest(dict(key), codes.shape[1:], x_dtype, table, offsets, sizes,
                             fingerprints)
        with open(temp / _MANIFEST, "w") as stream:
            json.dump(manifest, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, files.umask_mode(0o777))  # mkdtemp makes it owner-only
        _install(temp, directory, fingerprints)
    except OSError as error:
        shutil.rmtree(temp, ignore_errors=True)
        raise StoreError(f"cannot write the client-data store {directory}: "
                         f"{error.strerror or error}") from None
    return open_store(directory)


def _install(temp: pathlib.Path, directory: pathlib.Path, fingerprints) -> None:
    """Renames the finished `temp` to `directory`, moving another old store aside first."""
    try:
        os.rename(temp, directory)
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    # A store is in place: keep it if it holds the same bytes (a concurrent writer of the
    # same data), otherwise move it aside and install ours.
    try:
        if _file_fingerprints(open_store(directory)) == fingerprints:
            shutil.rmtree(temp, ignore_errors=True)
            return
    except StoreError:
        pass
    stale = directory.parent / f"{directory.name}{_TMP_MARK}stale-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.rename(directory, stale)
    except FileNotFoundError:
        pass
    try:
        os.rename(temp, directory)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        shutil.rmtree(temp, ignore_errors=True)  # a concurrent writer installed its copy
    shutil.rmtree(stale, ignore_errors=True)


def _remove_orphans(root: pathlib.Path) -> None:
    """Deletes temporary store directories whose writer process is gone (e.g. SIGKILL)."""
    for path in root.glob(f"*{_TMP_MARK}*"):
        owner = path.name.split(_TMP_MARK, 1)[1].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_store(directory: str | os.PathLike) -> ClientStore:
    """Reads and checks a store's manifest and file sizes; StoreError (one line) if unusable."""
    directory = pathlib.Path(directory).resolve()
    manifest_path = directory / _MANIFEST
    try:
        with open(manifest_path) as stream:
            manifest = json.load(stream)
    except FileNotFoundError:
        raise StoreError(f"client-data store {manifest_path} is missing") from None
    except (OSError, ValueError) as error:
        raise StoreError(f"client-data store {manifest_path} is unreadable: {error}") from None
    try:
        if manifest["format"] != FORMAT:
            raise StoreError(f"client-data store {manifest_path} has format "
                             f"{manifest['format']!r}, expected {FORMAT!r}")
        x_dtype = manifest["x_dtype"]
        shape = tuple(int(s) for s in manifest["example_shape"])
        offsets = np.asarray(manifest["offsets"], np.int64)
        table = manifest["decode_table"]
        table = None if table is None else np.asarray(table, np.float32)
        sizes, fingerprints = manifest["sizes"], manifest["fingerprints"]
        if x_dtype not in ("uint8", "float32") or (table is None) != (x_dtype == "float32") or \
                (table is not None and table.shape != (256,)) or offsets.ndim != 1 or \
                len(offsets) < 2 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise ValueError("inconsistent fields")
        expected = {_X_FILE: int(offsets[-1]) * int(np.prod(shape)) * np.dtype(x_dtype).itemsize,
                    _Y_FILE: int(offsets[-1]) * 4}
    except StoreError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise StoreError(f"client-data store {manifest_path} is malformed ({error})") from None
    for name, size in expected.items():
        path = directory / name
        actual = path.stat().st_size if path.exists() else None
        if actual != size or sizes.get(name) != size:
            raise StoreError(f"client-data store file {path} has {actual} bytes, expected {size} "
                             f"(missing or truncated)")
    return ClientStore(str(directory), shape, x_dtype, table, offsets, dict(fingerprints))


def _file_fingerprints(store: ClientStore) -> dict[str, str]:
    """The fingerprints of the bytes on disk now (the manifest holds those written)."""
    return {_X_FILE: fingerprint_bytes(store.x_codes()), _Y_FILE: fingerprint_bytes(store.y_labels())}


def _check_against(store: ClientStore, client_arrays, seed: int) -> Optional[str]:
    """None if `store` holds `client_arrays`, else what differs (labels, a sampled row, bytes)."""
    counts = [len(y) for _, y in client_arrays]
    if store.num_clients != len(counts) or not np.array_equal(store.counts, counts):
        return "the clients' example counts differ"
    if store.example_shape != tuple(client_arrays[0][0].shape[1:]):
        return f"the example shape is {store.example_shape}"
    labels = store.y_labels()
    if not np.array_equal(labels, np.concatenate([y for _, y in client_arrays])):
        return f"{store.y_path} holds other labels"
    rng = np.random.default_rng([seed, 0x570E])
    rows = np.unique(np.concatenate([[0, store.num_examples - 1],
                                     rng.integers(0, store.num_examples, _CHECK_ROWS)]))
    client_of = np.searchsorted(store.offsets, rows, side="right") - 1
    stored = store.decode(store.x_codes()[rows])
    for k, (row, client) in enumerate(zip(rows, client_of)):
        expected = client_arrays[client][0][row - store.offsets[client]]
        if not np.array_equal(stored[k].view(np.uint32), np.asarray(expected, np.float32).view(np.uint32)):
            return f"{store.x_path} row {row} holds other pixels"
    for name, fingerprint in _file_fingerprints(store).items():
        if fingerprint != store.fingerprints.get(name):
            return f"{os.path.join(store.directory, name)} is corrupt (its fingerprint differs)"
    return None


def ensure_store(directory: str | os.PathLike,
                 client_arrays: Sequence[tuple[np.ndarray, np.ndarray]],
                 key: Mapping[str, Any], *, seed: int = 0) -> ClientStore:
    """The store at `directory` holding exactly `client_arrays`: opened if valid, else (re)written.

    `key` is recorded in the manifest (what the split was made from). A store
    that is missing, truncated, corrupt or holds other data is rebuilt; a store
    that cannot be rebuilt (e.g. a read-only cache) raises StoreError naming the file.
    """
    try:
        store = open_store(directory)
        problem = _check_against(store, client_arrays, seed)
    except StoreError as error:
        store, problem = None, str(error)
    if store is not None and problem is None:
        return store
    if os.path.exists(directory):
        _logger.warning("rebuilding the client-data store at %s: %s", directory, problem)
    store = write_store(directory, client_arrays, key)
    problem = _check_against(store, client_arrays, seed)
    if problem is not None:
        raise StoreError(f"client-data store {store.directory} is wrong right after writing it: "
                         f"{problem}")
    return store
