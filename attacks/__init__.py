"""Byzantine attacks: selection, client-work and aggregator transforms, and their registry."""

from attacks.registry import ATTACKS, build_attack_plan, resolve_attack

__all__ = ["ATTACKS", "build_attack_plan", "resolve_attack"]
