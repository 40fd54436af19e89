"""Federated image datasets for tff-byz: loaders, partitioners, `FederatedDataset`.

`load_federated_dataset(name, partition=..., num_clients=..., seed=...)` is the
entry point. Source loaders (`load_mnist`, ...) return centralized arrays
(`SourceData`); partitioners (`iid_partition`, ...) are pure NumPy.
"""

from tff_byz.datasets.cache import CACHE_ENV, cache_root
from tff_byz.datasets.cifar10 import load_cifar10
from tff_byz.datasets.client_data import ArrayClientData, StoreClientData
from tff_byz.datasets.digits import load_digits
from tff_byz.datasets.emnist import load_emnist
from tff_byz.datasets.federated import (
    DATASETS,
    NATURALLY_FEDERATED,
    PARTITIONS,
    FederatedDataset,
    load_federated_dataset,
    load_source,
)
from tff_byz.datasets.idx import load_fashion_mnist, load_mnist, read_idx
from tff_byz.datasets.olivetti import load_olivetti
from tff_byz.datasets.partition import (
    Q_MODES,
    dirichlet_partition,
    iid_partition,
    label_groups,
    label_histograms,
    natural_partition,
    q_partition,
)
from tff_byz.datasets.source import DatasetCorruptError, DatasetNotFoundError, SourceData
from tff_byz.datasets.synthetic import load_synthetic

__all__ = [
    "ArrayClientData",
    "CACHE_ENV",
    "DATASETS",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "FederatedDataset",
    "NATURALLY_FEDERATED",
    "PARTITIONS",
    "Q_MODES",
    "SourceData",
    "StoreClientData",
    "cache_root",
    "dirichlet_partition",
    "iid_partition",
    "label_groups",
    "label_histograms",
    "load_cifar10",
    "load_digits",
    "load_emnist",
    "load_fashion_mnist",
    "load_federated_dataset",
    "load_mnist",
    "load_olivetti",
    "load_source",
    "load_synthetic",
    "natural_partition",
    "q_partition",
    "read_idx",
]
