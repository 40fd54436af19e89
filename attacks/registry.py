"""The `--attack` registry: names, parameters, defaults, builders.

`--attack=NAME[:key=value,...]`; `a+b` runs `a` and `b` on disjoint parts of the
Byzantine clients (a seeded split, larger part first); `double` is the FedLAW
paper's preset `sign_flip:start=2+random_params:start=5`. Every attack takes
`start` (first active round index) and `loss` (what a Byzantine client reports
as its training loss: `auto` = the attack's own definition, honest unless the
attack defines one; `honest`; `value:x`; `mean_minus_rho_std:ρ`;
`mean_plus_z_std:z` of the honest losses).

`build_attack_plan(spec, dataset)` returns the `attacks.plan.AttackPlan` a run
wires in. The table and `resolve_attack` import no TensorFlow: each family's entries name
their builders, imported at the first build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attacks import adaptive, ipm, lie, mimic, min_max, perturbations, poisoning
from tff_byz.registry import Entry, Param, Reference, Registry, Resolved, SpecError, non_negative

if TYPE_CHECKING:
    from attacks.plan import AttackComponent, AttackPlan

__all__ = ["ATTACKS", "build_attack_plan", "resolve_attack"]

ATTACKS = Registry("--attack")
ATTACKS.register(Entry(
    name="none", build=lambda name, **_: None, kind="none",
    help="no attack: Byzantine-selected clients behave honestly (defences still get the "
         "declared fraction)."))
for _family in (perturbations, poisoning, lie, ipm, min_max, mimic, adaptive):
    for _entry in _family.ENTRIES:
        ATTACKS.register(_entry)
ATTACKS.register(Entry(
    name="double", build=None, kind="preset",
    help="FedLAW paper: a seeded half of the Byzantine clients runs sign_flip from round "
         "first_start, the other half random_params from second_start.",
    params={"first_start": Param(int, 2, "sign_flip start round", check=non_negative),
            "second_start": Param(int, 5, "random_params start round", check=non_negative)}))


def _expand(components):
    """Replaces the `double` preset by its two components."""
    expanded = []
    for component in components:
        if component.name == "double":
            expanded += ATTACKS.resolve(
                f"sign_flip:start={component.params['first_start']}"
                f"+random_params:start={component.params['second_start']}")
        else:
            expanded.append(component)
    return expanded


def resolve_attack(spec: str) -> list[Resolved]:
    """The components `spec` runs (presets such as `double` expanded); SpecError when invalid."""
    components = _expand(ATTACKS.resolve(spec))
    if len(components) > 1 and any(c.name == "none" for c in components):
        raise SpecError(f"--attack={spec!r}: 'none' cannot be combined with other attacks.")
    return components


_ATTACK_PLAN = Reference("attacks.plan:AttackPlan")


def build_attack_plan(spec: str, *, seed: int = 0, dataset=None) -> AttackPlan:
    """The plan for `spec` (raises SpecError with a one-line message when invalid).

    `dataset` (a `FederatedDataset`) is needed by data attacks that depend on
    the image shape (backdoor); without it they are only validated by name.
    """
    built: list[AttackComponent] = []
    for component in resolve_attack(spec):
        if component.name == "none":
            continue
        name = component.canonical
        try:
            built.append(component.entry.build(name, seed=seed, dataset=dataset,
                                               **component.params))
        except ValueError as error:
            raise SpecError(f"--attack: {name}: {str(error).splitlines()[0]}") from None
    return _ATTACK_PLAN(tuple(built))
