"""The valid names of the core's settings, and the worker-address syntax, without TensorFlow.

A run's settings are checked against these before anything imports TensorFlow (~5 s), so a
mistyped `--dataset` or `--model` answers at once (`orchestration.config`). The modules that
implement them (`tff_byz.datasets`, `tff_byz.models`, `tff_byz.context`) use these names.
"""

from __future__ import annotations

__all__ = ["DATASETS", "PARTITIONS", "NATURALLY_FEDERATED", "MODELS", "parse_worker_addresses"]

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "emnist", "olivetti", "synthetic")
PARTITIONS = ("iid", "q", "dirichlet", "natural")
# Datasets whose examples carry a writer, so `partition="natural"` applies.
NATURALLY_FEDERATED = ("emnist", "synthetic")
MODELS = ("mlp", "mlp_torch", "small_mlp", "wide_mlp", "emnist_cnn", "lenet", "cifar_cnn")


def parse_worker_addresses(spec: str) -> list[str]:
    """Parses `host:port,host:port` into a list, validating each entry."""
    addresses = [part.strip() for part in spec.split(",") if part.strip()]
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"--tff_workers: invalid worker address {address!r}; expected host:port "
                "with a port in 1..65535, e.g. localhost:8000,gpu-host:8000.")
    return addresses
