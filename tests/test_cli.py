"""pipelines.cli: flags derived from a dataclass, switches, one-line errors, help."""

import dataclasses
import subprocess
import sys
from typing import Optional

import pytest

import algorithms
from algorithms import AGGREGATOR_CHOICES, base, fedavg, fedlaw, local, momentum, pdmm
from attacks import ATTACKS
from attacks import registry as attack_registry
from pipelines import cli
from tff_byz import choices, datasets, models
from tff_byz.registry import Reference


@dataclasses.dataclass
class Settings:
    name: str = dataclasses.field(default="a", metadata={"help": "the name"})
    count: int = 3
    rate: Optional[float] = None
    fast: bool = False


def parser():
    p = cli.Parser("prog")
    assert cli.add_dataclass_flags(p, Settings) == ["name", "count", "rate", "fast"]
    cli.add_switch(p, "progress", True, "a bar")
    return p


def test_dataclass_flags_take_their_types_and_defaults():
    args = parser().parse([])
    assert (args.name, args.count, args.rate, args.fast, args.progress) == ("a", 3, None, False, True)
    args = parser().parse(["--name=b", "--count", "7", "--rate=0.5", "--fast", "--noprogress"])
    assert (args.name, args.count, args.rate, args.fast, args.progress) == ("b", 7, 0.5, True, False)
    assert parser().parse(["--fast=false", "--progress=yes"]).fast is False
    assert "the name" in parser().help_text("Doc.")


@pytest.mark.parametrize("argv, message", [
    (["--count=x"], "--count: expected an integer; got 'x'"),
    (["--rate=fast"], "--rate: expected a number; got 'fast'"),
    (["--fast=maybe"], "--fast: expected true or false; got 'maybe'"),
    (["--cout=3"], "unknown flag --cout; valid flags: --count, --fast, --name, --progress, --rate"),
    (["--coun=3"], "unknown flag --coun"),  # no abbreviations
    (["extra"], "unexpected positional arguments ['extra']"),
])
def test_bad_flags_raise_one_line(argv, message):
    with pytest.raises(cli.UsageError) as info:
        parser().parse(argv)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_error_prints_one_line_and_returns_2(capsys):
    assert cli.error("bad --x") == 2
    assert capsys.readouterr().err == "error: bad --x\n"


@pytest.mark.parametrize("program", ["train", "compare", "report"])
def test_help_answers_without_tensorflow(program):
    code = (f"import sys\nfrom pipelines import {program}\n"
            f"assert {program}.main(['{program}', '--bogus', '-h']) == 0\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"python -m pipelines.{program}" in done.stdout and "--" in done.stdout


def test_a_flag_syntax_error_answers_without_tensorflow():
    code = ("import sys\nfrom pipelines import train\n"
            "assert train.main(['train', '--rounds=x']) == 2\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "error: --rounds: expected an integer; got 'x'\n"


@pytest.mark.parametrize("flag, message", [
    ("--rounds=0", "--rounds must be an integer >= 1; got 0."),
    ("--dataset=bogus", "--dataset: invalid value 'bogus'; valid choices: digits, mnist, "
                        "fashion_mnist, cifar10, emnist, olivetti, synthetic."),
    ("--model=resnet", "--model: invalid value 'resnet'; valid choices: mlp, mlp_torch, "
                       "small_mlp, wide_mlp, emnist_cnn, lenet, cifar_cnn."),
    ("--topology=torus", "--topology: invalid value 'torus'; valid choices: star, complete, "
                         "ring, rgg."),
    ("--byzantine_selection=worst", "--byzantine_selection: invalid value 'worst'"),
])
def test_a_bad_plain_setting_answers_without_tensorflow(flag, message):
    code = ("import sys\nfrom pipelines import train\n"
            f"assert train.main(['train', '{flag}']) == 2\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"error: {message}") and done.stderr.count("\n") == 1


def test_the_plain_names_are_the_implementations():
    assert tuple(models.MODELS) == choices.MODELS
    assert datasets.DATASETS is choices.DATASETS


# ------------------------------------------------ registry and algorithm errors, without TensorFlow

_NO_TENSORFLOW = ("assert 'tensorflow' not in sys.modules, 'TensorFlow imported'\n"
                  "assert 'tensorflow_federated' not in sys.modules, 'TFF imported'\n")
_AGGREGATOR_NAMES = ("mean, median, trimmed_mean, krum, multi_krum, bulyan, geometric_median, "
                     "centered_clipping, huber, meamed, monna, caf, mda, smea, rfa, bucketing, "
                     "nnm, clip, arc, fedlaw, pdmm, local")
_ATTACK_NAMES = ("none, sign_flip, scaling, gaussian, bit_flip, zero, constant, inf, nan, "
                 "random_params, weight_lying, label_flip, backdoor, lie, ipm, min_max, min_sum, "
                 "mimic, mimic_misaligned, ipm_optimal, lie_optimal, double")


def _train_in_subprocess(flags, expected_code):
    """`pipelines.train.main(flags)` in a fresh interpreter: checks its return code and that
    neither TensorFlow nor TFF was imported; returns the finished process."""
    code = ("import sys\nfrom pipelines import train\n"
            f"assert train.main(['train', *{list(flags)!r}]) == {expected_code}\n"
            + _NO_TENSORFLOW)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("flags, message", [
    (["--aggregator=bogus"], f"--aggregator: unknown name 'bogus'; valid choices: "
                             f"{_AGGREGATOR_NAMES}."),
    (["--aggregator=median:f=-1"], "--aggregator: median:f=-1 is invalid: must be >= 0."),
    (["--aggregator=bucketing:s=2+bogus"], f"--aggregator: unknown name 'bogus'; valid choices: "
                                           f"{_AGGREGATOR_NAMES}."),
    (["--aggregator=median+bucketing"],
     "--aggregator='median:even=mean,weighted=false+bucketing:s=2,variant=mean': the last "
     "component must be a rule; bucketing is a pre-aggregator."),
    (["--aggregator=fedlaw+median"],
     "--aggregator='fedlaw:beta=0.001,weight_step=full,clip=false,loss_filter=false,"
     "loss=last_epoch+median:even=mean,weighted=false': fedlaw is a training algorithm and "
     "cannot be composed with '+'."),
    (["--attack=bogus"], f"--attack: unknown name 'bogus'; valid choices: {_ATTACK_NAMES}."),
    (["--attack=sign_flip:scale=x"], "--attack: sign_flip:scale='x' is not a valid float."),
    (["--attack=lie:z=foo"], "--attack: lie:z='foo' is invalid: must be baruch, blades, "
                             "fedlaw_code or a number."),
    (["--attack=none+sign_flip"], "--attack='none+sign_flip': 'none' cannot be combined with "
                                  "other attacks."),
    (["--attack=sign_flip"], "--attack='sign_flip' needs Byzantine clients: set "
                             "--byzantine_fraction > 0 or --byzantine_selection=ids:..."),
    (["--aggregator=fedlaw", "--client_work=momentum_sgd"],
     "--aggregator=fedlaw needs --client_work=local_sgd; got --client_work=momentum_sgd."),
    (["--aggregator=fedlaw", "--server_lr=0.5"],
     "--aggregator=fedlaw steps θ + Σ w_i Δ_i (its server step is the client lr α); "
     "--server_lr must be 1; got 0.5."),
    (["--aggregator=local", "--attack=sign_flip"],
     "--aggregator=local: clients exchange nothing, so no attack can act; use --attack=none "
     "(the baseline is the same under every attack); got --attack='sign_flip'."),
    (["--aggregator=local", "--client_work=momentum_sgd"],
     "--aggregator=local trains with local SGD; --client_work must stay local_sgd; got "
     "momentum_sgd."),
    (["--client_work=momentum_sgd", "--attack=random_params"],
     "--attack='random_params' cannot run with --client_work=momentum_sgd: it trains from "
     "θ + ε and reports the model difference ψ − θ; a momentum_sgd client sends its momentum."),
    (["--client_work=momentum_sgd", "--attack_message=model"],
     "--attack_message=model needs --client_work=local_sgd: a momentum_sgd client sends its "
     "momentum, not a model."),
    (["--client_work=momentum_sgd", "--aggregator=nnm"],
     "--aggregator='nnm': the last component must be a rule; nnm is a pre-aggregator."),
    (["--aggregator=pdmm", "--server_lr=0.5"],
     "--aggregator=pdmm has no server learning rate (w_s is the mean of the messages); "
     "--server_lr must be 1; got 0.5."),
    (["--aggregator=pdmm", "--topology=ring", "--clients_per_round=5"],
     "--topology=ring: decentralized PDMM runs every node every round; --clients_per_round "
     "must be 0; got 5."),
    (["--topology=ring"], "--topology=ring needs --aggregator=pdmm (decentralized PDMM); got "
                          "--aggregator='mean'."),
])
def test_a_bad_aggregator_attack_or_algorithm_setting_answers_without_tensorflow(flags, message):
    done = _train_in_subprocess(flags, 2)
    assert done.stderr == f"error: {message}\n"


@pytest.mark.parametrize("flags", [["--list_aggregators"], ["--list_attacks"],
                                   ["--list_aggregators", "--list_attacks"]])
def test_the_lists_answer_without_tensorflow(flags):
    done = _train_in_subprocess(flags, 0)
    expected = [registry.describe() + "\n" for flag, registry in
                (("--list_aggregators", AGGREGATOR_CHOICES), ("--list_attacks", ATTACKS))
                if flag in flags]
    assert done.stdout == "".join(expected) and done.stderr == ""
    assert done.stdout.startswith("mean [rule]: " if "--list_aggregators" in flags else
                                  "none [none]: ")


def _references():
    """Every `Reference` the fast flag checks stand on: the builders of the `--aggregator` and
    `--attack` entries, and the module-level references of `algorithms` and the registries."""
    found = {}
    for table in (AGGREGATOR_CHOICES, ATTACKS):
        for name in table.names:
            build = table.entry(name).build
            if isinstance(build, Reference):
                found[f"{table.flag} {name}"] = build
            else:  # built in place: nothing to import
                assert name in ("none", "double", "local"), name
    for module in (algorithms, base, fedavg, fedlaw, local, momentum, pdmm, attack_registry):
        for attribute, value in vars(module).items():
            if isinstance(value, Reference):
                found[f"{module.__name__}.{attribute}"] = value
    return found


def test_every_reference_resolves():
    """A mistyped "module:attribute" would only fail when a run builds it: resolve them all."""
    references = _references()
    assert len(references) > 40
    for where, reference in references.items():
        assert callable(reference.resolve()), where
