"""The `--attack` registry and CLI: names, composition, invalid combinations (exit 2)."""

import re
import types

import pytest

from attacks import ATTACKS, build_attack_plan
from attacks.local import GradientAscent
from orchestration.config import ConfigError, ExperimentConfig
from tff_byz.client_work import honest_training
from tff_byz.registry import SpecError

STABLE_NAMES = ["none", "sign_flip", "gaussian", "bit_flip", "scaling", "zero", "constant", "inf",
                "nan", "random_params", "label_flip", "backdoor", "lie", "ipm", "min_max",
                "min_sum", "mimic", "mimic_misaligned", "double"]


def test_every_stable_name_is_registered():
    for name in STABLE_NAMES:
        assert name in ATTACKS
    assert ATTACKS.entry("inverse_gradient").name == "sign_flip"


def test_every_attack_but_none_takes_start_and_loss():
    for name in ATTACKS.names:
        params = ATTACKS.entry(name).params
        if name not in ("none", "double"):
            assert {"start", "loss"} <= set(params), name


@pytest.mark.parametrize("name", ATTACKS.names)
def test_every_attack_builds_at_its_defaults(name):
    """Each entry's builder is imported at the first build ("module:attribute"): build them all."""
    digits = types.SimpleNamespace(input_shape=(8, 8, 1), num_classes=10, normalization=None)
    plan = build_attack_plan(name, seed=0, dataset=digits)
    assert plan.is_noop == (name == "none")
    assert len(plan.components) == {"none": 0, "double": 2}.get(name, 1)


def test_double_is_sign_flip_then_random_params_on_two_groups():
    plan = build_attack_plan("double")
    assert [c.name.split(":")[0] for c in plan.components] == ["sign_flip", "random_params"]
    assert [c.start for c in plan.components] == [2, 5]
    assert plan.num_groups == 2
    custom = build_attack_plan("double:first_start=0,second_start=1")
    assert [c.start for c in custom.components] == [0, 1]


def test_composition_and_what_each_part_needs():
    plan = build_attack_plan("label_flip+lie:z=1.5")
    assert plan.num_groups == 2
    assert plan.components[0].poison is not None and plan.components[1].poison is None
    assert plan.data_poisoning(seed=0, num_classes=10) is not None
    assert build_attack_plan("lie").data_poisoning(seed=0, num_classes=10) is None
    assert [c.group for c in plan.collusions] == [1]
    assert isinstance(build_attack_plan("sign_flip:mode=ascent").local_training(), GradientAscent)
    assert build_attack_plan("sign_flip").local_training() is honest_training
    assert build_attack_plan("none").is_noop


@pytest.mark.parametrize("spec, fragment", [
    ("sign_flop", "unknown name 'sign_flop'"),
    ("gaussian:sigma=-1", "sigma=-1.0 is invalid: must be >= 0"),
    ("bit_flip:bits=odd", "bits='odd' is invalid"),
    ("lie:z=big", "must be baruch, blades, fedlaw_code or a number"),
    ("lie:loss=median", "valid forms"),
    ("mimic:target=someone", "must be random, max_variance or a client id"),
    ("none+sign_flip", "'none' cannot be combined"),
    ("scaling:lambda=3", "has no parameter 'lambda'"),
])
def test_invalid_specs_name_the_value(spec, fragment):
    with pytest.raises(SpecError, match=re.escape(fragment)):
        build_attack_plan(spec)


def test_config_rejects_impossible_combinations(tmp_path):
    def config(**values):
        return ExperimentConfig(output_dir=str(tmp_path), **values)
    with pytest.raises(ConfigError, match="needs Byzantine clients"):
        config(attack="sign_flip").resolved()
    with pytest.raises(ConfigError, match="cannot run with --client_work=momentum_sgd"):
        config(attack="weight_lying", byzantine_fraction=0.2,
               client_work="momentum_sgd").resolved()
    config(attack="sign_flip", byzantine_fraction=0.2, client_work="momentum_sgd").resolved()
    with pytest.raises(ConfigError, match="--byzantine_selection: invalid value 'some'"):
        config(byzantine_selection="some").resolved()
    # explicit ids need no fraction
    config(attack="sign_flip", byzantine_selection="ids:1,2").resolved()


def test_run_name_names_only_non_default_parameters(tmp_path):
    resolved = ExperimentConfig(output_dir=str(tmp_path), attack="lie:z=1.5",
                                byzantine_fraction=0.3, byzantine_selection="label_groups",
                                partition="q").resolved()
    assert resolved.run_name == "digits_q_n20_mean_lie-z=1.5_f0.3_label_groups_s0"
    assert resolved.attack == "lie:z=1.5,stats=honest,ddof=0,start=0,loss=auto"


@pytest.mark.parametrize("spec, value", [("scaling:scale=1e16", 1e16), ("scaling:scale=1e+16", 1e16),
                                         ("scaling:scale=2.5E+20", 2.5e20),
                                         ("constant:c=+3", 3.0)])
def test_signs_and_exponents_are_not_component_joins(spec, value):
    """`+` joins attacks, but not in `1e+16` or `=+3` (scale=1e16 used to be split at its +)."""
    (resolved,) = ATTACKS.resolve(spec)
    (param,) = [v for k, v in resolved.params.items() if k in ("scale", "c")]
    assert param == value
    assert [r.name for r in ATTACKS.resolve(resolved.canonical)] == [resolved.name]
    joined = ATTACKS.resolve(f"{spec}+sign_flip")
    assert [r.name for r in joined] == [resolved.name, "sign_flip"]


def test_a_huge_float_passes_the_config_and_keeps_its_value(tmp_path):
    config = ExperimentConfig(attack="scaling:scale=1e16", byzantine_fraction=0.2,
                              output_dir=str(tmp_path)).resolved()
    assert config.attack.startswith("scaling:scale=1e+16")
