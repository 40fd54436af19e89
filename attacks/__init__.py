"""Byzantine attacks: who is Byzantine (`selection`), one module per attack family (math,
binding to a run, `--attack` entry: `perturbations`, `poisoning`, `lie`, `ipm`, `min_max`,
`mimic`), the mechanisms they act through (`local` client-work transforms, the `colluding`
aggregator wrapper, the `reference` set, forged `losses`), and the `--attack` registry."""

from attacks.registry import ATTACKS, build_attack_plan, resolve_attack

__all__ = ["ATTACKS", "build_attack_plan", "resolve_attack"]
