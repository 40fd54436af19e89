"""Every CLI error path: exit 2, one line naming the flag/value, nothing written."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from orchestration.config import ConfigError, ExperimentConfig
from pipelines import train


def run_cli(capsys, tmp_path, *args):
    code = train.main(["train", "--progress=false", f"--output_dir={tmp_path / 'out'}", *args])
    return code, capsys.readouterr()


@pytest.mark.parametrize("args, expected", [
    (["--dataset=bogus"], "--dataset: invalid value 'bogus'; valid choices: digits"),
    (["--partition=bogus"], "--partition: invalid value 'bogus'; valid choices: iid, q"),
    (["--q_mode=bogus"], "--q_mode: invalid value 'bogus'"),
    (["--model=bogus"], "--model: invalid value 'bogus'; valid choices: mlp"),
    (["--client_work=adam"], "--client_work: invalid value 'adam'; valid choices: local_sgd, momentum_sgd"),
    (["--rounds=0"], "--rounds must be an integer >= 1; got 0"),
    (["--rounds=abc"], "--rounds: expected an integer; got 'abc'"),
    (["--client_lr=fast"], "--client_lr: expected a number; got 'fast'"),
    (["--progress=maybe"], "--progress: expected true or false; got 'maybe'"),
    (["--round=3"], "unknown flag --round; valid flags: --aggregator, --alpha"),
    (["--num_clients=0"], "--num_clients must be an integer >= 1; got 0"),
    (["--train_examples=-5"], "--train_examples must be an integer >= 0; got -5"),
    (["--train_examples=5000"], "`train_examples` must be <= the 1438 training examples of "
                                "digits; got train_examples=5000"),
    (["--aggregator=local", "--attack=zero", "--byzantine_fraction=0.2"],
     "--aggregator=local: clients exchange nothing, so no attack can act"),
    (["--num_clients=5", "--clients_per_round=6"], "--clients_per_round must be <= --num_clients=5"),
    (["--q=1.5"], "--q must be in [0, 1]; got 1.5"),
    (["--alpha=0"], "--alpha must be in (0, inf); got 0.0"),
    (["--byzantine_fraction=1"], "--byzantine_fraction must be in [0, 1); got 1.0"),
    (["--client_lr=-0.1"], "--client_lr must be in (0, inf); got -0.1"),
    (["--server_lr=0"], "--server_lr must be in (0, inf)"),
    (["--momentum=1"], "--momentum must be in [0, 1); got 1.0"),
    (["--stop_test_loss=0"], "--stop_test_loss must be in (0, inf); got 0.0"),
    (["--stop_test_loss=nan"], "--stop_test_loss must be a number; got nan"),
    (["--eval_every=0"], "--eval_every must be an integer >= 1"),
    (["--aggregator=bogus"], "--aggregator: unknown name 'bogus'; valid choices: mean"),
    (["--aggregator=mean:foo=1"], "--aggregator: mean has no parameter 'foo'; valid parameters: weighted"),
    (["--aggregator=mean:weighted=maybe"], "--aggregator: mean:weighted='maybe' is not a valid bool"),
    (["--aggregator=mean:weighted"], "expected key=value"),
    (["--attack=bogus"], "--attack: unknown name 'bogus'; valid choices: none"),
    (["--attack=sign_flip"], "needs Byzantine clients: set --byzantine_fraction > 0"),
    (["--attack=gaussian:sigma=-1", "--byzantine_fraction=0.2"],
     "--attack: gaussian:sigma=-1.0 is invalid: must be >= 0"),
    (["--attack=random_params", "--byzantine_fraction=0.2", "--client_work=momentum_sgd"],
     "--attack='random_params' cannot run with --client_work=momentum_sgd: it trains from"),
    (["--attack=none+lie", "--byzantine_fraction=0.2"], "'none' cannot be combined"),
    (["--byzantine_selection=worst"], "--byzantine_selection: invalid value 'worst'; valid choices: "
                                      "random, label_groups, ids:<i,j,...>"),
    (["--byzantine_selection=ids:3,99", "--attack=zero"], "client ids [99] out of range [0, 20)"),
    (["--byzantine_selection=label_groups", "--byzantine_fraction=0.3"],
     "needs a label-group split (--partition=q)"),
    (["--attack=lie", "--byzantine_fraction=0.01"], "picks no Byzantine client among 20"),
    (["--attack=lie:z=fedlaw_code", "--byzantine_fraction=0.6"],
     "--attack: lie:z=fedlaw_code,stats=honest,ddof=0,start=0,loss=auto: LIE z=fedlaw_code: the "
     "Φ⁻¹ argument -3/20 is outside (0, 1); got n=20, m=12"),
    (["--attack=backdoor:size=9", "--byzantine_fraction=0.2"], "backdoor"),
    (["--aggregator=fedlaw:cap=0.05", "--byzantine_fraction=0.2", "--attack=zero"],
     "FedLAW: empty weight set: s*t = 0.8 < 1 (s=16, t=0.05); raise cap or s"),
    (["--aggregator=fedlaw:cap=1.5"], "fedlaw:cap=1.5 is invalid: must be in (0, 1]"),
    (["--aggregator=fedlaw:cap=0"], "fedlaw:cap=0.0 is invalid: must be in (0, 1]"),
    (["--aggregator=fedlaw:s_start=5,s_end=3"], "fedlaw: s_end=3 must be >= s_start=5"),
    (["--aggregator=fedlaw:s_end=12,freeze=10"], "must end by the freeze round: s_end=12 > freeze=10"),
    (["--aggregator=bucketing+fedlaw"], "fedlaw is a training algorithm and cannot be composed"),
    (["--aggregator=fedlaw", "--client_work=momentum_sgd"], "fedlaw needs --client_work=local_sgd"),
    (["--aggregator=fedlaw", "--server_lr=0.5"], "--server_lr must be 1"),
    (["--aggregator=fedlaw:beta=0"], "fedlaw:beta=0.0 is invalid: must be > 0"),
    (["--topology=ring"], "--topology=ring needs --aggregator=pdmm"),
    (["--aggregator=pdmm", "--topology=torus"], "--topology: invalid value 'torus'; valid "
                                                "choices: star, complete, ring, rgg"),
    (["--aggregator=pdmm:theta=2"], "pdmm:theta=2.0 is invalid: must be in (0, 1]"),
    (["--aggregator=pdmm", "--server_lr=0.5"], "--aggregator=pdmm has no server learning rate"),
    (["--aggregator=pdmm", "--client_work=momentum_sgd"], "--client_work must stay local_sgd"),
    (["--aggregator=pdmm", "--attack=random_params", "--byzantine_fraction=0.2"],
     "corrupt only their uplink message y"),
    (["--aggregator=pdmm", "--topology=ring", "--clients_per_round=5"],
     "decentralized PDMM runs every node every round"),
    (["--aggregator=pdmm", "--topology=ring", "--attack=lie", "--byzantine_fraction=0.2"],
     "colluding attacks are not defined per edge"),
    (["--aggregator=bucketing+pdmm"], "pdmm is a training algorithm and cannot be composed"),
    (["--aggregator=pdmm", "--baseline=bogus"], "--aggregator: unknown name 'bogus'"),
    (["--aggregator=mda:max_subsets=1000", "--byzantine_fraction=0.3"],
     "mda scores C(n, f) = 38,760 subsets for n=20, f=6; the limit is max_subsets=1,000"),
    (["--aggregator=smea", "--num_clients=25", "--byzantine_fraction=0.28"],
     "smea scores C(n, f) = 480,700 subsets for n=25, f=7; the limit is max_subsets=100,000"),
    (["--aggregator=rfa", "--attack=lie_optimal", "--byzantine_fraction=0.2"],
     "lie_optimal:stats=honest,ddof=1,tau0=0.0,delta=10.0,evals=20,ratio=0.8,start=0,loss=auto "
     "searches against the defence, which must be a stacked rule or mean; RFAFactory is neither."),
    (["--client_work=momentum_sgd", "--attack=weight_lying", "--byzantine_fraction=0.2"],
     "--attack='weight_lying' cannot run with --client_work=momentum_sgd: it changes only the "
     "aggregation weight"),
    (["--local_steps=-1"], "--local_steps must be an integer >= 0; got -1"),
    (["--attack_message=weights"], "--attack_message: invalid value 'weights'; valid choices: "
                                   "delta, model"),
    (["--declared_byzantine_fraction=1.5"], "--declared_byzantine_fraction must be in [0, 1)"),
    (["--tff_workers=nohost"], "--tff_workers: invalid worker address 'nohost'"),
    (["--run_name=a/b"], "--run_name must be a non-empty name without '/'"),
    (["--unknown_flag=1"], "unknown flag --unknown_flag; valid flags: "),
    (["positional"], "unexpected positional arguments ['positional']"),
    (["--resume"], "--resume: no run to resume"),
    (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
    (["--partition=natural"], "natural"),
    (["--dataset=mnist"], "mnist"),
])
def test_invalid_flags_exit_2_with_one_line_and_write_nothing(capsys, tmp_path, args, expected):
    code, captured = run_cli(capsys, tmp_path, *args)
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ")
    assert expected in line
    assert not (tmp_path / "out").exists()


def test_missing_dataset_files_name_file_and_directory(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, captured = run_cli(capsys, tmp_path, "--dataset=fashion_mnist",
                             f"--data_dir={tmp_path / 'empty'}")
    assert code == 2
    (line,) = captured.err.strip().splitlines()
    assert "fashion_mnist" in line and "train-images-idx3-ubyte" in line and str(tmp_path) in line
    assert not (tmp_path / "out").exists()


def test_existing_run_needs_resume_or_overwrite_and_resume_checks_settings(capsys, tmp_path):
    run_dir = tmp_path / "out" / "r"
    run_dir.mkdir(parents=True)
    stored = ExperimentConfig(output_dir=str(tmp_path / "out"), run_name="r").resolved()
    (run_dir / "config.json").write_text(json.dumps(stored.to_dict()))
    before = sorted(p.name for p in run_dir.iterdir())

    code, captured = run_cli(capsys, tmp_path, "--run_name=r")
    assert code == 2 and "already holds a run; pass --resume" in captured.err
    code, captured = run_cli(capsys, tmp_path, "--run_name=r", "--resume", "--client_lr=0.5")
    assert code == 2 and "settings differ" in captured.err and "client_lr=0.1→0.5" in captured.err
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_list_aggregators_and_attacks(capsys, tmp_path):
    code, captured = run_cli(capsys, tmp_path, "--list_aggregators", "--list_attacks")
    assert code == 0
    assert "mean [rule]:" in captured.out
    assert "weighted (bool; default true)" in captured.out
    assert "none [none]:" in captured.out
    assert "sign_flip (alias: inverse_gradient) [local]:" in captured.out
    assert "lie [colluding]:" in captured.out and "z (str; default baruch)" in captured.out


@pytest.mark.parametrize("flag", ["--help", "-h", "--helpshort", "--helpfull"])
def test_help_prints_the_usage_and_every_flag(flag):
    """absl's help flags exist only under app.run, which main() does not use: main() answers
    them (exit 0), in-process and as `python -m`."""
    done = subprocess.run([sys.executable, "-m", "pipelines.train", flag], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Runs one experiment: `python -m pipelines.train")
    for name in ("--aggregator", "--attack", "--resume", "--tff_workers", "--client_work"):
        assert name in done.stdout, name


def test_help_in_process(capsys):
    assert train.main(["train", "--dataset=bogus", "--help"]) == 0  # help wins over a bad flag
    out = capsys.readouterr().out
    assert "Exit codes:" in out and "--num_clients" in out


def _one_error_line(captured) -> str:
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_an_output_dir_under_a_file_exits_2_naming_it(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code = train.main(["train", "--progress=false", f"--output_dir={tmp_path / 'file' / 'runs'}"])
    assert code == 2
    assert f"{tmp_path / 'file'} is a file, not a directory" in _one_error_line(capsys.readouterr())


def test_an_immutable_output_dir_exits_2_and_writes_nothing(capsys, tmp_path, monkeypatch):
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(frozen)], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not available here (needs root on a filesystem with flags)")
    try:
        code = train.main(["train", "--progress=false", "--rounds=1", f"--output_dir={frozen}"])
        assert code == 2
        line = _one_error_line(capsys.readouterr())
        assert f"--output_dir={frozen}: {frozen} is not writable" in line
        # Where os.access cannot tell (e.g. root on some filesystems), the write itself fails:
        # still exit 2 in one line, before any file of the run is written.
        monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
        code = train.main(["train", "--progress=false", "--rounds=1", f"--output_dir={frozen}"])
        assert code == 2
        line = _one_error_line(capsys.readouterr())
        assert f"--output_dir={frozen}: cannot write there (Operation not permitted)" in line
        assert not list(frozen.iterdir())
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)


def test_corrupt_dataset_files_exit_2_naming_the_file(capsys, tmp_path):
    raw = tmp_path / "data" / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (raw / name).write_bytes(b"this is not gzip data")
    code, captured = run_cli(capsys, tmp_path, "--dataset=mnist", f"--data_dir={tmp_path / 'data'}")
    assert code == 2
    line = _one_error_line(captured)
    assert str(raw / "train-images-idx3-ubyte.gz") in line and "gzipped idx file" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"dataset": 3, "bogus_field": 1}'])
def test_resume_with_a_garbage_config_exits_2_naming_the_file(capsys, tmp_path, content):
    run_dir = tmp_path / "out" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(content)
    code, captured = run_cli(capsys, tmp_path, "--run_name=r", "--resume")
    assert code == 2
    line = _one_error_line(captured)
    assert f"--resume: {run_dir / 'config.json'} is not a readable run config" in line


def test_run_names_tell_every_experiment_apart_and_keep_resumable_changes():
    """The README's examples used to collide: momentum SGD ran into FedAvg's directory."""

    def name(**values):
        return ExperimentConfig(**values).resolved().run_name

    fedavg = name(dataset="digits", num_clients=20, rounds=30)
    assert fedavg == "digits_iid_n20_mean_none_f0_s0"  # default settings keep the plain name
    momentum = name(client_work="momentum_sgd", server_lr=0.5, rounds=60)
    assert momentum.startswith(fedavg + "_") and len(momentum) == len(fedavg) + 9
    assert name(client_work="momentum_sgd", server_lr=0.25) != momentum
    assert name(client_work="momentum_sgd", server_lr=0.5) == momentum  # rounds may change
    assert name(rounds=99, eval_every=3, checkpoint_every=9, data_dir="/x") == fedavg
    assert name(dataset="mnist", model="mlp") == name(dataset="mnist")  # the dataset's default
    assert name(dataset="mnist", model="lenet") != name(dataset="mnist")


def test_none_joined_with_an_attack_is_refused_by_the_config_before_any_data_loads():
    for values in (dict(attack="none+sign_flip"),
                   dict(attack="none+sign_flip", byzantine_fraction=0.2,
                        client_work="momentum_sgd")):
        with pytest.raises(ConfigError, match="'none' cannot be combined with other attacks"):
            ExperimentConfig(**values).validate()
