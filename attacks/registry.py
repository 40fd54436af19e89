"""The `--attack` registry: names, parameters, defaults, builders.

`--attack=NAME[:key=value,...]`; `a+b` runs `a` and `b` on disjoint parts of the
Byzantine clients (a seeded split, larger part first); `double` is the FedLAW
paper's preset `sign_flip:start=2+random_params:start=5`. Every attack takes
`start` (first active round index) and `loss` (what a Byzantine client reports
as its training loss: `auto` = the attack's own definition, honest unless the
attack defines one; `honest`; `value:x`; `mean_minus_rho_std:ρ`;
`mean_plus_z_std:z` of the honest losses).

`build_attack_plan(spec, dataset)` returns the `attacks.plan.AttackPlan` a run
wires in.
"""

from __future__ import annotations

import math
from typing import Optional

from attacks import definitions, perturbations
from attacks.plan import AttackComponent, AttackPlan
from tff_byz.registry import (Entry, Param, Registry, Resolved, SpecError, non_negative,
                              positive)

__all__ = ["ATTACKS", "build_attack_plan", "resolve_attack"]

ATTACKS = Registry("--attack")




def _finite(value) -> Optional[str]:
    return None if math.isfinite(value) else "must be finite"


def _probability(value) -> Optional[str]:
    return None if 0.0 <= value <= 1.0 else "must be in [0, 1]"


def _fraction(value) -> Optional[str]:
    return None if 0.0 < value <= 1.0 else "must be in (0, 1]"


def _bits(value) -> Optional[str]:
    parts = value.split("|") if value else []
    valid = ("all", "sign", "exponent", "mantissa")
    return None if parts and all(p in valid for p in parts) else \
        "must be all, sign, exponent, mantissa or a |-combination such as sign|exponent"


def _target(value) -> Optional[str]:
    if value == "random":
        return None
    try:
        return None if int(value) >= 0 else "must be random or a label >= 0"
    except ValueError:
        return "must be random or a label >= 0"


def _mimic_target(value) -> Optional[str]:
    if value in ("random", "max_variance"):
        return None
    try:
        return None if int(value) >= 0 else "must be random, max_variance or a client id"
    except ValueError:
        return "must be random, max_variance or a client id"


START = Param(int, 0, "first round index (0-based) in which the attack is active",
              check=non_negative)
LOSS = Param(str, "auto", "reported loss: auto|honest|value:x|mean_minus_rho_std:rho|"
             "mean_plus_z_std:z", check=definitions.check_loss)
STATS = Param(str, "honest", "reference set: the honest vectors (omniscient) or the Byzantine "
              "clients' own honest vectors (colluding)", choices=("honest", "byzantine"))


def attack(name, build, help_text, kind, *, aliases=(), **params):
    """Registers an attack; `build(name, **values)` returns component(s)."""
    all_params = dict(params)
    all_params["start"] = START
    all_params["loss"] = LOSS
    return ATTACKS.register(Entry(name=name, build=build, params=all_params, help=help_text,
                                  aliases=aliases, kind=kind))


def _loss(values):
    values = dict(values)
    values["loss"] = definitions.parse_loss(values["loss"])
    return values


def _leaf(fn):
    """An attack u → fn(u, seed, **params) on every leaf of the delta."""
    def build(name, *, start, loss, **params):
        return definitions.local_update_attack(
            name, lambda u, seed: fn(u, seed, **params), start=start,
            loss=definitions.parse_loss(loss))
    return build


ATTACKS.register(Entry(
    name="none", build=lambda name, **_: [], kind="none",
    help="no attack: Byzantine-selected clients behave honestly (defences still get the "
         "declared fraction)."))

attack("sign_flip", lambda name, **v: definitions.sign_flip(name, **_loss(v)),
       "u → −λu after honest training (mode=final), or gradient ascent during local training "
       "(mode=ascent, Blades' sign flip; local_sgd only).", "local",
       aliases=("inverse_gradient",),
       scale=Param(float, 1.0, "λ (final mode)", check=positive),
       mode=Param(str, "final", "final or ascent", choices=("final", "ascent")))
attack("scaling", _leaf(lambda u, seed, scale: perturbations.scaling(u, scale)),
       "boosting: u → λu.", "local", scale=Param(float, 10.0, "λ", check=_finite))
attack("gaussian", _leaf(lambda u, seed, sigma, mu, mode: perturbations.gaussian(
    u, seed, sigma=sigma, mu=mu, mode=mode)),
       "u → N(μ, σ²I) (mode=replace) or u + N(0, σ²I) (mode=add).", "local",
       sigma=Param(float, 1.0, "σ", check=non_negative),
       mu=Param(float, 0.0, "μ (replace mode)", check=_finite),
       mode=Param(str, "replace", "replace or add", choices=("replace", "add")))
attack("bit_flip", _leaf(lambda u, seed, p, bits: perturbations.bit_flip(
    u, seed, p=p, bits=bits.replace("|", ","))),
       "flip each bit of the float32 representation with probability p (bits=sign,p=1 is "
       "sign_flip; exponent flips make huge/Inf/NaN values).", "local",
       p=Param(float, 1e-3, "flip probability per bit", check=_probability),
       bits=Param(str, "all", "all|sign|exponent|mantissa, or a |-combination", check=_bits))
attack("zero", _leaf(lambda u, seed: perturbations.constant(u, 0.0)), "u → 0.", "local")
attack("constant", _leaf(lambda u, seed, c: perturbations.constant(u, c)), "u → c·1.", "local",
       c=Param(float, 1.0, "c", check=_finite))
attack("inf", _leaf(lambda u, seed: perturbations.constant(u, math.inf)), "u → +∞·1.", "local")
attack("nan", _leaf(lambda u, seed: perturbations.constant(u, math.nan)), "u → NaN·1.", "local")
attack("random_params", lambda name, **v: definitions.random_params(name, **_loss(v)),
       "global-parameter attack: train from θ + ε, ε ~ N(ν1·mean θ, (ν2·std θ)²); report ψ − θ.",
       "local", nu1=Param(float, -5.0, "ν1", check=_finite),
       nu2=Param(float, 1.5, "ν2", check=non_negative))
attack("weight_lying", lambda name, **v: definitions.weight_lying(name, **_loss(v)),
       "report `count` training examples (affects weighted rules only).", "local",
       count=Param(float, 1e6, "reported example count", check=positive))
attack("label_flip", lambda name, label_map, **v: definitions.label_flip(
    name, label_map=label_map.replace(";", ","), **_loss(v)),
       "data poisoning: every training label l → L−1−l, or `label_map=a:b;c:d`.", "data",
       label_map=Param(str, "", "explicit label map a:b;c:d (identity elsewhere); empty: L−1−l"))
attack("backdoor", None,  # bound per dataset in build_attack_plan
       "data poisoning: stamp a k×k trigger patch and relabel; reports the attack success rate "
       "on triggered test images each evaluation round.", "data",
       size=Param(int, None, "patch size k (default min(8, min(H, W)//2))", check=positive),
       row=Param(int, None, "patch top row (default centred)", check=non_negative),
       col=Param(int, None, "patch left column (default centred)", check=non_negative),
       value=Param(float, 0.0, "patch value in raw pixels [0, 1]", check=_probability),
       target=Param(str, "random", "random (per example) or a fixed label", check=_target),
       fraction=Param(float, 1.0, "share of each Byzantine client's examples poisoned",
                      check=_fraction),
       preset=Param(str, "none", "fedlaw_code: k=10 at (9,9), value 0 after normalisation, "
                    "target uniform in 0..8", choices=("none", "fedlaw_code")))
attack("lie", lambda name, **v: definitions.lie(name, **_loss(v)),
       "a little is enough (Baruch et al. 2019): μ + zσ of the reference set.", "colluding",
       z=Param(str, "baruch", "baruch|blades|fedlaw_code or a number", check=definitions.check_z),
       stats=STATS, ddof=Param(int, 0, "0 (population) or 1", choices=None,
                                check=lambda v: None if v in (0, 1) else "must be 0 or 1"),
       preset=Param(str, None, "the FedLAW authors' code: fedlaw_code (final release: honest "
                    "statistics, z=fedlaw_code) or fedlaw_code_v1 (earlier: their own "
                    "statistics, z=baruch) as it attacks FedLAW: ddof 1, the update mu - z sigma (it "
                    "acts on pseudo-gradients), the loss mu_f + z sigma_f; their FedAvg is "
                    "attacked on deltas: lie:z=fedlaw_code,ddof=1",
                    choices=tuple(definitions.LIE_PRESETS)))
attack("ipm", lambda name, **v: definitions.ipm(name, **_loss(v)),
       "inner product manipulation (Xie et al. 2019): −ε μ.", "colluding",
       eps=Param(float, 0.1, "ε", check=_finite), stats=STATS)
_SEARCH = dict(p=Param(str, "std", "perturbation: std (σ), unit (μ/‖μ‖) or sign (sign μ)",
                       choices=("std", "unit", "sign")),
               gamma0=Param(float, 10.0, "initial γ of the search", check=positive),
               stats=STATS)
attack("min_max", lambda name, **v: definitions.min_max(name, **_loss(v)),
       "min-max (Shejwalkar & Houmansadr 2021): μ − γp, the largest γ whose max distance to "
       "the reference set stays within its diameter.", "colluding", **_SEARCH)
attack("min_sum", lambda name, **v: definitions.min_sum(name, **_loss(v)),
       "min-sum (Shejwalkar & Houmansadr 2021): μ − γp, the largest γ whose sum of squared "
       "distances stays within the reference set's smallest (bound=min) or largest sum.",
       "colluding", bound=Param(str, "min", "min (authors' code) or max (paper text)",
                                choices=("min", "max")), **_SEARCH)
attack("mimic", None,  # needs the run seed: bound in build_attack_plan
       "mimic (Karimireddy et al. 2022): every Byzantine client sends one honest client's "
       "vector (target random, fixed for the run; a client id; or max_variance).", "colluding",
       target=Param(str, "random", "random|max_variance|<client id>", check=_mimic_target))
attack("mimic_misaligned", lambda name, **v: definitions.mimic_misaligned(name, **_loss(v)),
       "FedLAW appendix: −u_j + η e_j (random unit e_j), loss μ_f − ρσ_f of the honest losses.",
       "local", eta=Param(float, 0.1, "η (absolute norm)", check=non_negative),
       rho=Param(float, 0.3, "ρ of the default loss forgery", check=_finite))
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


def build_attack_plan(spec: str, *, seed: int = 0, dataset=None) -> AttackPlan:
    """The plan for `spec` (raises SpecError with a one-line message when invalid).

    `dataset` (a `FederatedDataset`) is needed by data attacks that depend on
    the image shape (backdoor); without it they are only validated by name.
    """
    components = resolve_attack(spec)
    built: list[AttackComponent] = []
    for component in components:
        name = component.canonical
        values = dict(component.params)
        try:
            if component.name == "none":
                continue
            if component.name == "backdoor":
                if dataset is None:
                    raise ValueError("backdoor needs the dataset's image shape")
                built.append(definitions.backdoor(
                    name, image_shape=dataset.input_shape, num_classes=dataset.num_classes,
                    normalization=dataset.normalization, start=values.pop("start"),
                    loss=definitions.parse_loss(values.pop("loss")), **values))
            elif component.name == "mimic":
                built.append(definitions.mimic(name, seed=seed, **_loss(values)))
            else:
                built.append(component.entry.build(name, **values))
        except ValueError as error:
            raise SpecError(f"--attack: {name}: {str(error).splitlines()[0]}") from None
    return AttackPlan(tuple(built))
