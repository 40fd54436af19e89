"""Byzantine attacks: who is Byzantine (`selection`), one module per attack family (math,
binding to a run, `--attack` entry: `perturbations`, `poisoning`, `lie`, `ipm`, `min_max`,
`mimic`), the mechanisms they act through (`local` client-work transforms, the `colluding`
aggregator wrapper, the `reference` set, forged `losses`), and the `--attack` registry."""

import importlib

__all__ = ["ATTACKS", "build_attack_plan", "resolve_attack"]


def __getattr__(name):
    # The registry imports TensorFlow; `attacks.selection` (checked before a run starts) does
    # not, so the package imports it on first use only.
    if name in __all__:
        return getattr(importlib.import_module("attacks.registry"), name)
    raise AttributeError(f"module 'attacks' has no attribute {name!r}")
