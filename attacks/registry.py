"""The `--attack` registry: names, parameters, defaults, builders."""

from __future__ import annotations

from tff_byz.registry import Entry, Registry

__all__ = ["ATTACKS"]

ATTACKS = Registry("--attack")

ATTACKS.register(Entry(
    name="none", build=lambda client_work, **_: client_work, kind="local",
    help="no attack: Byzantine-selected clients behave honestly.",
))
