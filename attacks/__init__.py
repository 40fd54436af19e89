"""Byzantine attacks and their name registry (filled by the attacks issue)."""

from attacks.registry import ATTACKS

__all__ = ["ATTACKS"]
