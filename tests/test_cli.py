"""pipelines.cli: flags derived from a dataclass, switches, one-line errors, help."""

import dataclasses
import subprocess
import sys
from typing import Optional

import pytest

from pipelines import cli
from tff_byz import choices, datasets, models


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
