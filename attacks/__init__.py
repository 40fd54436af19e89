"""Byzantine attacks: who is Byzantine (`selection`), one package per attack family (its
`--attack` entries, without TensorFlow, and a submodule with its math and binding to a run:
`perturbations`, `poisoning`, `lie`, `ipm`, `min_max`, `mimic`, `adaptive`), the mechanisms
they act through (`local` client-work transforms, the `colluding` aggregator wrapper, the
`reference` set, forged `losses`), and the `--attack` registry."""

from attacks.registry import ATTACKS, build_attack_plan, resolve_attack

__all__ = ["ATTACKS", "build_attack_plan", "resolve_attack"]
