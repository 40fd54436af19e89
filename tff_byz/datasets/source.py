"""What every source loader returns, and the helpers they share.

A loader (`digits.py`, `idx.py`, ...) reads one dataset into a `SourceData`:
centralized train/test arrays in the package-wide convention (x float32
[N, H, W, C] in raw pixel units [0, 1], y int32 in [0, num_classes)), plus,
for naturally federated data, the writer of every training example. Splitting
the training pool over clients is `partition.py`'s job, not the loader's.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from tff_byz.datasets import partition

__all__ = [
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "SourceData",
    "not_found",
    "require_data_dir",
    "stratified_split",
    "uint8_to_unit",
]


class DatasetCorruptError(ValueError):
    """A dataset file exists but cannot be decoded; the message (one line) names it."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing.

    The message is one line naming the dataset, the expected file name(s) and
    the directories searched.
    """


@dataclasses.dataclass(frozen=True, eq=False)
class SourceData:
    """A dataset as read from disk, before any client partitioning.

    Attributes:
      name: dataset name, e.g. "mnist".
      num_classes: number of labels.
      train_x, train_y: training pool, float32 [N, H, W, C] in [0, 1] and int32 [N].
      test_x, test_y: test set, same conventions.
      writer_ids: for naturally federated data, the sorted writer ids, else None.
      train_writer: int32 [N], index into `writer_ids` of each training
        example's writer; None when `writer_ids` is None.
    """

    name: str
    num_classes: int
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    writer_ids: tuple[str, ...] | None = None
    train_writer: np.ndarray | None = None

    def __post_init__(self):
        # Cheap structural checks: a loader bug should fail here, not deep
        # inside TFF.
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != np.float32 or x.ndim != 4:
                raise ValueError(f"{self.name}: {split}_x must be float32 [N, H, W, C]; got "
                                 f"{x.dtype} {x.shape}")
            if y.dtype != np.int32 or y.shape != (x.shape[0],):
                raise ValueError(f"{self.name}: {split}_y must be int32 [{x.shape[0]}]; got "
                                 f"{y.dtype} {y.shape}")
        if (self.writer_ids is None) != (self.train_writer is None):
            raise ValueError(f"{self.name}: writer_ids and train_writer go together")
        if self.train_writer is not None and self.train_writer.shape != self.train_y.shape:
            raise ValueError(f"{self.name}: train_writer must have shape {self.train_y.shape}")

    @property
    def naturally_federated(self) -> bool:
        return self.writer_ids is not None


def not_found(
    dataset: str, expected: Sequence[str], data_dir: pathlib.Path, searched: Sequence[pathlib.Path]
) -> DatasetNotFoundError:
    """The one-line error for files missing under `data_dir`."""
    return DatasetNotFoundError(
        f"{dataset}: {', '.join(expected)} not found in {data_dir} "
        f"(searched {', '.join(str(p) for p in searched)})"
    )


def require_data_dir(
    dataset: str, data_dir: str | os.PathLike | None, expected: Sequence[str]
) -> pathlib.Path:
    """`data_dir` as a Path; raises DatasetNotFoundError if it is None or missing."""
    if data_dir is None:
        raise DatasetNotFoundError(
            f"{dataset}: --data_dir is required (the directory holding {', '.join(expected)})"
        )
    path = pathlib.Path(data_dir).expanduser()
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"{dataset}: data_dir {path} is not a directory (expected {', '.join(expected)} under it)"
        )
    return path


def stratified_split(
    labels: np.ndarray, test_fraction: float, *, rng: partition.RandomSource
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class train/test split.

    Each class contributes round(test_fraction * N_c) examples (halves round
    up) to the test set, drawn without replacement; e.g. 2 of each Olivetti
    person's 10 images at test_fraction=0.2.

    Returns:
      (train_indices, test_indices), each sorted int64.
    """
    rng = partition.as_generator(rng)
    labels = np.asarray(labels)
    test_parts = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        n_test = int(np.floor(test_fraction * idx.size + 0.5))
        test_parts.append(rng.choice(idx, size=n_test, replace=False))
    test = np.sort(np.concatenate(test_parts)).astype(np.int64)
    train = np.setdiff1d(np.arange(labels.size), test).astype(np.int64)
    return train, test


def uint8_to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], without a float64 intermediate."""
    out = images.astype(np.float32)
    out /= np.float32(255.0)
    return out
