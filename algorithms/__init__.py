"""Training algorithms behind one interface (`algorithms.base.Algorithm`).

`--aggregator` names either a robust rule (FedAvg, or momentum SGD with
`--client_work=momentum_sgd`, aggregate with it) or a training algorithm of its
own (`fedlaw:...`, `pdmm:...`, the local-only baseline `local`; PDMM runs
decentralized with `--topology`).
`AGGREGATOR_CHOICES` is the registry behind that flag and `algorithm_class` the
one place a run's settings pick its algorithm.
"""

from __future__ import annotations

from typing import Sequence

from aggregators import AGGREGATORS
from algorithms.base import Algorithm, RoundReport, Setting, StatefulAlgorithm
from algorithms.fedavg import FedAvg
from algorithms.fedlaw import FEDLAW, FedLAW
from algorithms.local import LOCAL_ENTRY, LocalOnly
from algorithms.momentum import MomentumSGD
from algorithms.pdmm import PDMM, PDMM_ENTRY, DecentralizedPDMM
from tff_byz.errors import ConfigError
from tff_byz.registry import Registry, Resolved

__all__ = ["AGGREGATOR_CHOICES", "algorithm_class", "Algorithm", "StatefulAlgorithm", "Setting",
           "RoundReport", "FedAvg", "MomentumSGD", "FedLAW", "PDMM", "DecentralizedPDMM",
           "LocalOnly"]

AGGREGATOR_CHOICES = Registry.union("--aggregator", AGGREGATORS,
                                    entries=(FEDLAW, PDMM_ENTRY, LOCAL_ENTRY))

_BY_NAME = {"fedlaw": FedLAW, "pdmm": PDMM, "local": LocalOnly}


def algorithm_class(aggregator: Sequence[Resolved], client_work: str,
                    topology: str) -> type[Algorithm]:
    """The algorithm of the resolved `--aggregator` components, `--client_work`, `--topology`."""
    named = [c.name for c in aggregator if c.entry.kind == "algorithm"]
    if named:
        if len(aggregator) > 1:
            spec = "+".join(c.canonical for c in aggregator)
            raise ConfigError(f"--aggregator={spec!r}: {named[0]} is a training algorithm and "
                              "cannot be composed with '+'.")
        if named[0] == "pdmm" and topology != "star":
            return DecentralizedPDMM
        return _BY_NAME[named[0]]
    return MomentumSGD if client_work == "momentum_sgd" else FedAvg
