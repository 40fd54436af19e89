"""Federated EMNIST with its natural writer split.

Two sources, tried in this order:

1. TFF's own files: if `<data_dir>/emnist_all.sqlite` or
   `<data_dir>/emnist/emnist_all.sqlite` exists, it is read with
   `tff.simulation.datasets.emnist.load_data(only_digits, cache_dir=<that dir>)`,
   which uses an existing `emnist_all.sqlite` in `cache_dir` without
   downloading (TFF 0.87, `simulation/datasets/download.py`).
2. LEAF FEMNIST JSON: every `<data_dir>/femnist_leaf/*.tar.gz`, else an
   extracted `data/femnist/data/{train,test}/*.json` tree under
   `<data_dir>/femnist_leaf`, `<data_dir>` or `<data_dir>/femnist` (as `data/`).
   Each JSON holds `users`, `num_samples` and `user_data[user] = {x, y}` with
   784 floats per image.

Both give pixels in [0, 1] with background 1.0 (as TFF's EMNIST), kept as is.
Only writers with training data are kept; `only_digits` keeps labels < 10 and
then drops writers left without training examples. The test set is the union
of the kept writers' test examples. Decoding (tf.Example protos or 94 MB of
JSON) is slow, so decoded arrays are cached (see `cache.py`).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import tarfile
from collections.abc import Iterator

import numpy as np
import tensorflow_federated as tff

from tff_byz.datasets import cache, source

__all__ = ["load_emnist"]

_SQLITE = "emnist_all.sqlite"
_LEAF_ARCHIVE_DIR = "femnist_leaf"
_LEAF_JSON_DIR = pathlib.PurePosixPath("data", "femnist", "data")
_SIDE = 28
_NUM_DIGITS = 10
_NUM_CHARACTERS = 62
_CACHE_VERSION = "emnist-v1"
# Batch size used only to pull a client's whole dataset out of tf.data at once.
_READ_BATCH = 1 << 16


def _writer_arrays(writers: list[str], train: dict, test: dict) -> dict[str, np.ndarray]:
    """Stacks per-writer (x, y) lists into the cached array layout.

    `train`/`test` map writer -> list of (x [n, 28, 28] float32, y [n]) chunks;
    test chunks of writers not in `writers` are dropped.
    """
    index = {w: i for i, w in enumerate(writers)}
    arrays = {"writer_ids": np.asarray(writers, dtype=str)}
    for split, chunks in (("train", train), ("test", test)):
        xs, ys, ws = [], [], []
        for writer in writers:
            for x, y in chunks.get(writer, ()):
                xs.append(np.asarray(x, np.float32).reshape(-1, _SIDE, _SIDE, 1))
                ys.append(np.asarray(y, np.int32).reshape(-1))
                ws.append(np.full(len(ys[-1]), index[writer], np.int32))
        arrays[f"{split}_x"] = (np.concatenate(xs) if xs
                                else np.zeros((0, _SIDE, _SIDE, 1), np.float32))
        arrays[f"{split}_y"] = np.concatenate(ys) if ys else np.zeros(0, np.int32)
        arrays[f"{split}_writer"] = np.concatenate(ws) if ws else np.zeros(0, np.int32)
    return arrays


# --- TFF's sqlite -----------------------------------------------------------------


def _client_chunks(client_data, client_ids) -> dict[str, list]:
    # Eager tf.data iteration only: no TFF computation runs here.
    chunks = {}
    for client_id in client_ids:
        dataset = client_data.create_tf_dataset_for_client(client_id).batch(_READ_BATCH)
        chunks[client_id] = [(b["pixels"], b["label"]) for b in dataset.as_numpy_iterator()]
    return chunks


def _read_tff_sqlite(directory: pathlib.Path, only_digits: bool) -> dict[str, np.ndarray]:
    train, test = tff.simulation.datasets.emnist.load_data(
        only_digits=only_digits, cache_dir=str(directory))
    train_chunks = _client_chunks(train, sorted(train.client_ids))
    writers = sorted(w for w, c in train_chunks.items() if sum(len(y) for _, y in c) > 0)
    test_chunks = _client_chunks(test, sorted(set(test.client_ids) & set(writers)))
    return _writer_arrays(writers, train_chunks, test_chunks)


# --- LEAF JSON --------------------------------------------------------------------


def _leaf_json_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    """Where an extracted LEAF tree may hold its train/ and test/ folders."""
    return [root / _LEAF_ARCHIVE_DIR / _LEAF_JSON_DIR, root / _LEAF_JSON_DIR, root / "femnist" / "data"]


def _leaf_sources(root: pathlib.Path) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """(archives, json_files): the LEAF files found; archives win if present."""
    archives = sorted((root / _LEAF_ARCHIVE_DIR).glob("*.tar.gz"))
    if archives:
        return archives, []
    for directory in _leaf_json_dirs(root):
        train_files = sorted(directory.glob("train/*.json"))
        if train_files:
            return [], train_files + sorted(directory.glob("test/*.json"))
    return [], []


def _iter_leaf_json(archives, json_files) -> Iterator[tuple[str, dict]]:
    """Yields (split, parsed JSON) once per distinct (split, file name)."""
    seen = set()
    for path in json_files:
        key = (path.parent.name, path.name)
        if key not in seen:
            seen.add(key)
            with open(path, "rb") as stream:
                yield path.parent.name, json.load(stream)
    for archive in archives:
        with tarfile.open(archive) as tar:
            for member in tar:
                path = pathlib.PurePosixPath(member.name)
                key = (path.parent.name, path.name)
                if (member.isfile() and path.suffix == ".json"
                        and key[0] in ("train", "test") and key not in seen):
                    seen.add(key)
                    with tar.extractfile(member) as stream:
                        yield key[0], json.load(stream)


def _read_leaf(archives, json_files) -> dict[str, np.ndarray]:
    chunks = {"train": {}, "test": {}}
    for split, data in _iter_leaf_json(archives, json_files):
        for user in data["users"]:
            samples = data["user_data"][user]
            chunks[split].setdefault(user, []).append((samples["x"], samples["y"]))
    writers = sorted(w for w, c in chunks["train"].items() if sum(len(y) for _, y in c) > 0)
    return _writer_arrays(writers, chunks["train"], chunks["test"])


# --- selection --------------------------------------------------------------------


def _select(arrays: dict[str, np.ndarray], only_digits: bool) -> source.SourceData:
    """Applies only_digits, drops writers without training data, re-indexes."""
    num_classes = _NUM_DIGITS if only_digits else _NUM_CHARACTERS
    keep = {s: arrays[f"{s}_y"] < num_classes for s in ("train", "test")}
    kept_writers = np.unique(arrays["train_writer"][keep["train"]])
    new_index = np.full(len(arrays["writer_ids"]), -1, np.int32)
    new_index[kept_writers] = np.arange(kept_writers.size, dtype=np.int32)
    keep["test"] &= new_index[arrays["test_writer"]] >= 0
    return source.SourceData(
        name="emnist", num_classes=num_classes,
        train_x=arrays["train_x"][keep["train"]],
        train_y=arrays["train_y"][keep["train"]].astype(np.int32),
        test_x=arrays["test_x"][keep["test"]],
        test_y=arrays["test_y"][keep["test"]].astype(np.int32),
        writer_ids=tuple(str(w) for w in arrays["writer_ids"][kept_writers]),
        train_writer=new_index[arrays["train_writer"][keep["train"]]])


def load_emnist(
    data_dir: str | os.PathLike | None,
    *,
    only_digits: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> source.SourceData:
    """Federated EMNIST: [28, 28, 1] in [0, 1]; 10 classes (digits) or 62.

    Returns a naturally federated SourceData: `writer_ids` are the sorted ids
    of the kept writers and `train_writer` maps each training example to one.

    Args:
      data_dir: directory holding TFF's sqlite or the LEAF files (see module doc).
      only_digits: keep labels 0-9 only (and writers that still have training data).
      cache_dir: cache directory; default `$TFF_BYZ_CACHE` or `~/.cache/tff_byz`.
    """
    if not isinstance(only_digits, bool):
        raise TypeError(f"`only_digits` must be a bool; got only_digits={only_digits!r}.")
    expected = (_SQLITE, f"{_LEAF_ARCHIVE_DIR}/*.tar.gz", f"{_LEAF_JSON_DIR}/{{train,test}}/*.json")
    root = source.require_data_dir("emnist", data_dir, expected)
    sqlite = next((p for p in (root / _SQLITE, root / "emnist" / _SQLITE) if p.is_file()), None)
    if sqlite is not None:
        sources = [sqlite]
        # TFF stores the digits-only and full splits separately; cache each.
        prefix = f"emnist-tff-{'digits' if only_digits else 'all'}"
        read = functools.partial(_read_tff_sqlite, sqlite.parent, only_digits)
    else:
        archives, json_files = _leaf_sources(root)
        sources = archives + json_files
        if not sources:
            searched = [root, root / "emnist", root / _LEAF_ARCHIVE_DIR, *_leaf_json_dirs(root)]
            raise source.not_found("emnist", expected, root, searched)
        # The LEAF cache keeps all 62 classes; only_digits filters after loading.
        prefix = "emnist-leaf"
        read = functools.partial(_read_leaf, archives, json_files)
    path = cache.cached_path(prefix, sources, version=_CACHE_VERSION, cache_dir=cache_dir)
    arrays = cache.load_npz(path)
    if arrays is None:
        arrays = read()
        cache.save_npz_atomic(path, arrays)
    return _select(arrays, only_digits)
