"""`FederatedDataset`: a dataset split over clients, ready for TFF simulation.

`load_federated_dataset` reads a source (see the per-dataset modules), splits
its training pool over clients with a partitioner from `partition.py`, and
wraps the result: TFF `ClientData` for training, NumPy arrays for the
centralized test set, per-client label histograms, label groups (q split)
and the per-channel normalisation for the model's input layer.

Determinism: `seed` feeds one `np.random.SeedSequence`, spawned into two
independent streams: one for the source's train/test split (digits,
olivetti) and one for the client partition. Same seed -> identical arrays.
"""

from __future__ import annotations

import dataclasses
import lzma
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable

import numpy as np
import tensorflow_federated as tff

from tff_byz.choices import DATASETS, NATURALLY_FEDERATED, PARTITIONS
from tff_byz.datasets import cifar10, client_data, digits, emnist, idx, olivetti, source, synthetic
# Imported under another name: `partition` is an argument of load_federated_dataset.
from tff_byz.datasets import partition as partition_lib

__all__ = [
    "DATASETS",
    "NATURALLY_FEDERATED",
    "PARTITIONS",
    "FederatedDataset",
    "load_federated_dataset",
    "load_source",
]

Normalization = tuple[tuple[float, ...], tuple[float, ...]]

# Per-channel (mean, std) of the standard training sets, as the FedLAW code
# and most FL code bases use them (fedlaw.md §10); the shared/data README
# confirms them for the files here. Other datasets are normalised with
# statistics computed from their own training pool.
_STANDARD_NORMALIZATION: dict[str, Normalization] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedDataset:
    """A training pool split over clients, plus a centralized test set.

    Client index i (0 <= i < num_clients) corresponds to `client_ids[i]` and
    to row i of `label_histograms` and `client_groups`. All arrays are
    read-only.

    Attributes:
      name: dataset name (one of `DATASETS`).
      num_classes: number of labels.
      client_ids: TFF client ids: zero-padded indices ("0000", "0001", ...)
        for partitioned data, the sorted writer ids for `partition="natural"`.
      client_data: `ClientData` (an `ArrayClientData`) whose datasets yield
        `OrderedDict(x=float32 [H, W, C], y=int32 [])`.
      test_x: float32 [M, H, W, C] in [0, 1].
      test_y: int32 [M].
      label_histograms: int64 [num_clients, num_classes], label counts.
      client_groups: int64 [num_clients] label group of each client for the
        q split, else None.
      normalization: per-channel ((mean, ...), (std, ...)) for the model's
        input normalisation layer.
    """

    name: str
    num_classes: int
    client_ids: list[str]
    client_data: tff.simulation.datasets.ClientData
    test_x: np.ndarray
    test_y: np.ndarray
    label_histograms: np.ndarray
    client_groups: np.ndarray | None
    normalization: Normalization

    @property
    def num_clients(self) -> int:
        return len(self.client_ids)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example's x, e.g. (28, 28, 1)."""
        return tuple(self.test_x.shape[1:])

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"`index` must be an int; got index={index!r}.")
        if not 0 <= index < self.num_clients:
            raise ValueError(
                f"`index` must be in [0, {self.num_clients}); got index={index}.")
        return int(index)

    def client_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Client `index`'s (x float32 [n, H, W, C], y int32 [n]) as NumPy arrays."""
        return self.client_data.arrays(self.client_ids[self._check_index(index)])

    def num_examples(self, index: int) -> int:
        """Number of training examples of client `index`."""
        return int(self.label_histograms[self._check_index(index)].sum())


def _check_choice(argument: str, value, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str):
        raise TypeError(f"`{argument}` must be a str, one of {choices}; got {argument}={value!r}.")
    if value not in choices:
        raise ValueError(f"`{argument}` must be one of {choices}; got {argument}={value!r}.")


def load_source(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: partition_lib.RandomSource = 0,
    only_digits: bool = True,
) -> source.SourceData:
    """Reads dataset `name` (one of `DATASETS`) into centralized arrays.

    `seed` only affects datasets without an official test set (digits,
    olivetti), whose train/test split is drawn from it.
    """
    _check_choice("name", name, DATASETS)
    try:
        return _load(name, data_dir=data_dir, seed=seed, only_digits=only_digits)
    except (source.DatasetNotFoundError, source.DatasetCorruptError):
        raise
    except (OSError, EOFError, ValueError, KeyError, zlib.error, lzma.LZMAError, tarfile.TarError,
            pickle.UnpicklingError) as error:
        raise source.DatasetCorruptError(
            f"{name}: its files under {data_dir} cannot be read ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no details'})") from None


def _load(name, *, data_dir, seed, only_digits) -> source.SourceData:
    loaders: dict[str, Callable[[], source.SourceData]] = {
        "digits": lambda: digits.load_digits(seed=seed),
        "mnist": lambda: idx.load_mnist(data_dir),
        "fashion_mnist": lambda: idx.load_fashion_mnist(data_dir),
        "cifar10": lambda: cifar10.load_cifar10(data_dir),
        "emnist": lambda: emnist.load_emnist(data_dir, only_digits=only_digits),
        "olivetti": lambda: olivetti.load_olivetti(data_dir, seed=seed),
        "synthetic": synthetic.load_synthetic,
    }
    return loaders[name]()


def _normalization(data: source.SourceData) -> Normalization:
    if data.name in _STANDARD_NORMALIZATION:
        return _STANDARD_NORMALIZATION[data.name]
    # Population statistics over every pixel of the training pool, per channel.
    # float64 accumulation: float32 sums over ~10^7 pixels lose digits.
    axes = (0, 1, 2)
    mean = data.train_x.mean(axis=axes, dtype=np.float64)
    std = data.train_x.std(axis=axes, dtype=np.float64)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _client_id_width(num_clients: int) -> int:
    # At least 4 digits ("0007"); wider only past 9999 clients, so ids sort
    # in index order.
    return max(4, len(str(num_clients - 1)))


def _check_arguments(name, partition, num_clients, seed, q, alpha, q_mode, only_digits) -> None:
    """The checks of `load_federated_dataset` that need no data."""
    _check_choice("name", name, DATASETS)
    _check_choice("partition", partition, PARTITIONS)
    if partition == "natural" and name not in NATURALLY_FEDERATED:
        raise ValueError(
            f"partition='natural' needs a naturally federated dataset {NATURALLY_FEDERATED}; "
            f"got name={name!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be a non-negative int; got seed={seed!r}.")
    if seed < 0:
        raise ValueError(f"`seed` must be a non-negative int; got seed={seed}.")
    partition_lib.check_q(q)
    partition_lib.check_alpha(alpha)
    partition_lib.check_q_mode(q_mode)
    if not isinstance(only_digits, bool):
        raise TypeError(f"`only_digits` must be a bool; got only_digits={only_digits!r}.")
    if partition != "natural":
        # The upper bound (the number of training examples) is checked by the
        # partitioner once the data is loaded.
        if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
            raise TypeError(f"`num_clients` must be an int; got num_clients={num_clients!r}.")
        if num_clients < 1:
            raise ValueError(f"`num_clients` must be >= 1; got num_clients={num_clients}.")
    elif num_clients is not None:
        if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
            raise TypeError(f"`num_clients` must be an int or None; got num_clients={num_clients!r}.")
        if num_clients < 0:
            raise ValueError(
                f"`num_clients` must be >= 0 (0: all writers); got num_clients={num_clients}.")


def _sample_training_pool(data: source.SourceData, count: int, rng) -> source.SourceData:
    """`data` with `count` training examples drawn without replacement (kept in pool order)."""
    total = data.train_y.size
    if count > total:
        raise ValueError(f"`train_examples` must be <= the {total} training examples of "
                         f"{data.name}; got train_examples={count}.")
    keep = np.sort(rng.choice(total, size=count, replace=False))
    writer = None if data.train_writer is None else data.train_writer[keep]
    return dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep],
                               train_writer=writer)


def _split(data: source.SourceData, partition: str, num_clients, rng, *, q, alpha, q_mode):
    """Runs the partitioner: (index arrays, label groups or None, client ids)."""
    groups = None
    if partition == "natural":
        parts = partition_lib.natural_partition(
            data.train_writer, len(data.writer_ids), num_clients)
        client_ids = list(data.writer_ids[: len(parts)])
    else:
        if partition == "iid":
            parts = partition_lib.iid_partition(data.train_y, num_clients, rng=rng)
        elif partition == "q":
            parts, groups = partition_lib.q_partition(
                data.train_y, num_clients, q=q, num_classes=data.num_classes, rng=rng, mode=q_mode)
        else:
            parts = partition_lib.dirichlet_partition(
                data.train_y, num_clients, alpha=alpha, num_classes=data.num_classes, rng=rng)
        width = _client_id_width(len(parts))
        client_ids = [f"{i:0{width}d}" for i in range(len(parts))]
    return parts, groups, client_ids


def load_federated_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    partition: str = "iid",
    num_clients: int | None = 10,
    seed: int = 0,
    q: float = 0.5,
    alpha: float = 0.5,
    q_mode: str = "sample",
    only_digits: bool = True,
    train_examples: int = 0,
) -> FederatedDataset:
    """Loads dataset `name` and splits its training pool over clients.

    Args:
      name: one of `DATASETS`.
      data_dir: directory holding the data files (see each loader); not
        needed for "digits" and "synthetic".
      partition: one of `PARTITIONS`: "iid", "q" (label-group split,
        fedlaw.md §10; L = num_classes groups), "dirichlet" (per-class
        Dir(alpha) over clients) or "natural" (one client per writer; only for
        `NATURALLY_FEDERATED` datasets). The naturally federated datasets can
        also be pooled and re-partitioned with "iid", "q" or "dirichlet".
      num_clients: number of clients, 1 <= num_clients <= training examples;
        with "natural", the first `num_clients` writers in sorted-id order
        (0 or None: all writers).
      seed: non-negative int; fixes the source's train/test split (where the
        dataset has none) and the partition.
      q: share of an example going to its own label's group ("q" only), in [0, 1].
        Like `alpha` and `q_mode`, validated whatever the partition, so a
        mistyped flag fails early.
      alpha: Dirichlet concentration ("dirichlet" only), > 0.
      q_mode: "sample" (paper) or "exact" (authors' code); "q" only.
      only_digits: EMNIST only: 10 digit classes (True) or all 62.
      train_examples: > 0: the training pool is a seeded sample of this many examples
        (drawn from `seed` before partitioning; the test set is untouched), so clients hold
        as few examples as collaboration needs; 0: every example.

    Returns:
      A `FederatedDataset`.

    Raises:
      TypeError, ValueError: an argument has the wrong type or range; the
        message names the argument and the value. Also raised when a "q"
        split leaves a client without examples (too few examples per client).
      DatasetNotFoundError: the dataset's files are missing under `data_dir`.
    """
    # Validate everything that does not need the data before reading it.
    _check_arguments(name, partition, num_clients, seed, q, alpha, q_mode, only_digits)
    if isinstance(train_examples, bool) or not isinstance(train_examples, (int, np.integer)) \
            or train_examples < 0:
        raise ValueError(f"`train_examples` must be an int >= 0; got "
                         f"train_examples={train_examples!r}.")
    # The third child seeds only the sample: the first two are the same as without it.
    split_seed, partition_seed, sample_seed = np.random.SeedSequence(int(seed)).spawn(3)
    data = load_source(name, data_dir=data_dir, seed=np.random.default_rng(split_seed),
                       only_digits=only_digits)
    if train_examples:
        data = _sample_training_pool(data, int(train_examples),
                                     np.random.default_rng(sample_seed))
    rng = np.random.default_rng(partition_seed)

    parts, groups, client_ids = _split(
        data, partition, num_clients, rng, q=float(q), alpha=float(alpha), q_mode=q_mode)
    empty = [i for i, p in enumerate(parts) if p.size == 0]
    if empty:
        # ClientData cannot hold empty clients, and silently moving examples
        # would change the split's statistics: refuse instead.
        raise ValueError(
            f"partition={partition!r} left {len(empty)} of {len(parts)} clients without "
            f"examples (first: index {empty[0]}) for {name} with {data.train_y.size} training "
            f"examples (num_clients={num_clients}, seed={seed}); reduce num_clients.")

    arrays = {
        cid: (_read_only(data.train_x[p]), _read_only(data.train_y[p]))
        for cid, p in zip(client_ids, parts)
    }
    return FederatedDataset(
        name=name,
        num_classes=data.num_classes,
        client_ids=client_ids,
        client_data=client_data.ArrayClientData(arrays),
        test_x=_read_only(data.test_x),
        test_y=_read_only(data.test_y),
        label_histograms=_read_only(
            partition_lib.label_histograms(data.train_y, parts, data.num_classes)),
        client_groups=None if groups is None else _read_only(groups),
        normalization=_normalization(data),
    )
