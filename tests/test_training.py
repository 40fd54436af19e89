"""The training loop end to end on the embedded dataset: accuracy, files, resume."""

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from algorithms import base
from orchestration import evaluation, experiment, training
from orchestration.config import ExperimentConfig
from orchestration.report import results
from tff_byz import context, processes
from tff_byz.context import ExecutionContext
from tff_byz.datasets import load_federated_dataset

from tests.workers import wait_until_gone, worker_pids

# Columns whose values must be identical between a resumed and an uninterrupted run.
DETERMINISTIC_COLUMNS = ["round", "test_accuracy", "test_loss", "train_loss",
                         "client_work/num_examples", "clients"]


def small_config(tmp_path, **overrides):
    values = dict(dataset="digits", num_clients=10, rounds=6, eval_every=1, checkpoint_every=1,
                  output_dir=str(tmp_path), run_name="run", seed=3)
    values.update(overrides)
    return ExperimentConfig(**values)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """FedAvg on digits, 20 clients, the demo's settings."""
    out = tmp_path_factory.mktemp("digits")
    config = ExperimentConfig(dataset="digits", num_clients=20, rounds=25, eval_every=5,
                              output_dir=str(out), run_name="fedavg", seed=0)
    with ExecutionContext():
        summary = training.run_experiment(config, progress=False)
    return out / "fedavg", summary


def test_fedavg_on_digits_reaches_90_percent(digits_run):
    _, summary = digits_run
    assert summary["status"] == "complete"
    assert summary["rounds_completed"] == 25
    assert summary["final_test_accuracy"] >= 0.90


def test_run_directory_layout_and_stable_names(digits_run):
    run_dir, summary = digits_run
    assert sorted(os.listdir(run_dir)) == ["config.json", "metrics.csv", "state", "summary.json",
                                           "tensorboard"]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    for column in ("round", "test_accuracy", "test_loss", "train_loss", "round_seconds"):
        assert column in metrics.columns
    assert metrics["round"].tolist() == list(range(1, 26))
    evaluated = metrics.dropna(subset=["test_accuracy"])["round"].tolist()
    assert evaluated == [5, 10, 15, 20, 25]
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    train_examples = load_federated_dataset("digits", num_clients=20, seed=0).label_histograms.sum()
    assert (metrics["client_work/num_examples"] == train_examples).all()  # every client, every round
    assert summary["final_test_accuracy"] == pytest.approx(metrics["test_accuracy"].iloc[-1])
    stored = json.loads((run_dir / "summary.json").read_text())
    for key in ("status", "final_test_accuracy", "rounds_completed", "wall_seconds"):
        assert key in stored
    config = json.loads((run_dir / "config.json").read_text())
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "summary.json", "metrics.csv"):  # as open() makes them, not 0600
        assert os.stat(run_dir / name).st_mode & 0o777 == 0o666 & ~umask, name
    assert config["model"] == "small_mlp"  # defaults are explicit
    assert config["checkpoint_every"] == 5
    assert config["aggregator"] == "mean:weighted=true"
    assert set(config) == set(ExperimentConfig().to_dict())


def test_runs_are_deterministic_and_resume_extends_exactly(tmp_path, tff_context):
    """6 rounds in one go == 3 rounds, then --resume with rounds=6."""
    whole = training.run_experiment(small_config(tmp_path / "a"), progress=False)
    training.run_experiment(small_config(tmp_path / "b", rounds=3), progress=False)
    resumed = training.run_experiment(small_config(tmp_path / "b"), resume=True, progress=False)
    a = pd.read_csv(tmp_path / "a" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    b = pd.read_csv(tmp_path / "b" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    pd.testing.assert_frame_equal(a, b)
    assert resumed["final_test_accuracy"] == whole["final_test_accuracy"]
    assert resumed["best_test_accuracy"] == whole["best_test_accuracy"]


def test_stop_test_loss_ends_the_run_at_the_first_evaluation_above_it(tmp_path, tff_context):
    """Mean under a scaled sign flip climbs in loss; the limit between rounds 3 and 4 ends
    the run at 4, exactly as the unlimited run went, and a resume does not continue it."""
    attacked = dict(attack="sign_flip:scale=3", byzantine_fraction=0.4)
    training.run_experiment(small_config(tmp_path / "a", **attacked), progress=False)
    whole = pd.read_csv(tmp_path / "a" / "run" / "metrics.csv")
    losses = whole["test_loss"].to_numpy()
    assert (np.diff(losses[2:]) > 0).all()  # the premise: the loss climbs from round 3
    limit = float(losses[2] + losses[3]) / 2
    summary = training.run_experiment(small_config(tmp_path / "b", stop_test_loss=limit,
                                                   **attacked), progress=False)
    assert (summary["status"], summary["rounds_completed"], summary["stopped_round"]) == (
        "complete", 4, 4)
    assert summary["reason"].startswith("stopped at round 4: test loss ")
    stopped = pd.read_csv(tmp_path / "b" / "run" / "metrics.csv")
    pd.testing.assert_frame_equal(stopped[DETERMINISTIC_COLUMNS],
                                  whole[DETERMINISTIC_COLUMNS].iloc[:4])
    again = training.run_experiment(small_config(tmp_path / "b", stop_test_loss=limit, rounds=8,
                                                 **attacked), resume=True, progress=False)
    assert (again["status"], again["rounds_completed"], again["stopped_round"]) == (
        "complete", 4, 4)
    assert len(pd.read_csv(tmp_path / "b" / "run" / "metrics.csv")) == 4
    frame = results.load_results(str(tmp_path / "b"))[0]  # scored by the run's own limit
    assert frame.loc[0, "aborted_round"] == 4
    assert frame.loc[0, "final_accuracy"] == pytest.approx(whole["test_accuracy"].iloc[2])


def test_clients_per_round_samples_deterministically(tmp_path, tff_context):
    summary = training.run_experiment(small_config(tmp_path, clients_per_round=4, rounds=2),
                                      progress=False)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert (metrics["clients"] == 4).all()
    assert summary["status"] == "complete"
    rounds = [experiment.sample_clients(10, 4, 3, r) for r in range(3)]
    assert all(len(set(r)) == 4 and list(r) == sorted(r) for r in rounds)
    assert not np.array_equal(rounds[0], rounds[1])
    np.testing.assert_array_equal(rounds[0], experiment.sample_clients(10, 4, 3, 0))


def _default_sigint():
    # A shell's background job (`make test &`, nohup) inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: the Ctrl-C test needs the terminal's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args, env=None, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "pipelines.train", "--progress=false", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint, **kwargs)


def wait_for_round(metrics_path, round_num, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if os.path.exists(metrics_path):
            rounds = pd.read_csv(metrics_path)["round"]
            if len(rounds) and rounds.max() >= round_num:
                return
        time.sleep(0.05)
    raise AssertionError(f"round {round_num} never appeared in {metrics_path}")


@pytest.mark.parametrize("how, work", [("sigkill", "local_sgd"), ("sigint", "local_sgd"),
                                       ("sigkill", "momentum_sgd"), ("sigint", "momentum_sgd")])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, tff_context, how, work):
    """Kill the CLI after round 3 (SIGKILL: mid-anything; SIGINT: clean save), resume.
    momentum_sgd checkpoints every 2 rounds: between them its client states live only on the
    TFF worker (StatefulRounds), and SIGINT must still save round 3's."""
    every = 1 if work == "local_sgd" else 2
    settings = dict(client_work=work, checkpoint_every=every)
    if work == "momentum_sgd":
        settings["server_lr"] = 0.5
    reference = training.run_experiment(small_config(tmp_path / "ref", **settings), progress=False)
    out = tmp_path / "killed"
    before = worker_pids()
    flags = ["--dataset=digits", "--num_clients=10", "--rounds=6", f"--checkpoint_every={every}",
             f"--output_dir={out}", "--run_name=run", "--seed=3", f"--client_work={work}"]
    if work == "momentum_sgd":
        flags.append("--server_lr=0.5")
    process = cli(*flags)
    wait_for_round(out / "run" / "metrics.csv", 3, process)
    process.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert wait_until_gone(worker_pids() - before), "the killed run's worker survived"
    if how == "sigint":
        assert process.returncode == 130, stderr
        assert "--resume" in stderr
        summary = json.loads((out / "run" / "summary.json").read_text())
        assert summary["status"] == "running" and summary["interrupted"]
    else:
        assert process.returncode == -signal.SIGKILL
    resumed = training.run_experiment(small_config(out, **settings), resume=True, progress=False)
    a = pd.read_csv(tmp_path / "ref" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    b = pd.read_csv(out / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    pd.testing.assert_frame_equal(a, b)
    assert resumed["status"] == "complete"
    assert resumed["final_test_accuracy"] == reference["final_test_accuracy"]


@pytest.mark.parametrize("work", ["local_sgd", "momentum_sgd"])
def test_a_killed_worker_is_replaced_and_the_run_goes_back_to_its_checkpoint(tmp_path,
                                                                             tff_context, work):
    """The worker killed mid-run (as a crash or the out-of-memory killer would): the run
    starts a new worker, goes back to its last checkpoint and ends with the metrics of an
    uninterrupted run (momentum_sgd: its client states had lived on the dead worker)."""
    settings = dict(client_work=work, rounds=12, checkpoint_every=2)
    reference = training.run_experiment(small_config(tmp_path / "ref", **settings), progress=False)
    out = tmp_path / "crash"
    before = worker_pids()
    process = cli("--dataset=digits", "--num_clients=10", "--rounds=12", "--checkpoint_every=2",
                  f"--output_dir={out}", "--run_name=run", "--seed=3", f"--client_work={work}")
    wait_for_round(out / "run" / "metrics.csv", 3, process)
    (worker,) = worker_pids() - before
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("warning: the TFF worker") and "killed by SIGKILL" in line
    back_to = re.search(r"started a new TFF worker and went back to the checkpoint of round (\d+)",
                        line)
    assert back_to and int(back_to.group(1)) % 2 == 0 and int(back_to.group(1)) >= 2, line
    assert stdout.startswith("complete: run: 12/12 rounds")
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["worker_restarts"] == 1
    assert summary["final_test_accuracy"] == reference["final_test_accuracy"]
    a = pd.read_csv(tmp_path / "ref" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    b = pd.read_csv(out / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    pd.testing.assert_frame_equal(a, b)
    assert wait_until_gone(worker_pids() - before)


def test_a_worker_killed_while_a_checkpoint_fetches_client_states_is_replaced(tmp_path,
                                                                              monkeypatch,
                                                                              tff_context):
    """momentum_sgd keeps client states on the worker; a checkpoint fetches them. The worker
    killed just before that fetch (round 4): the run starts a new worker, goes back to round
    2's checkpoint and ends with the metrics of an uninterrupted run."""
    settings = dict(client_work="momentum_sgd", rounds=6, checkpoint_every=2)
    reference = training.run_experiment(small_config(tmp_path / "ref", **settings), progress=False)
    original = base.StatefulAlgorithm.program_state
    killed = []

    def program_state(self, state, round_num, wall_seconds):
        if round_num == 4 and not killed:
            pid = context.current().worker_pid
            os.kill(pid, signal.SIGKILL)
            assert wait_until_gone({pid})
            killed.append(pid)
        return original(self, state, round_num, wall_seconds)

    monkeypatch.setattr(base.StatefulAlgorithm, "program_state", program_state)
    with ExecutionContext():
        summary = training.run_experiment(small_config(tmp_path / "crash", **settings),
                                          progress=False)
    assert killed and summary["worker_restarts"] == 1
    assert summary["status"] == "complete"
    assert summary["final_test_accuracy"] == reference["final_test_accuracy"]
    a = pd.read_csv(tmp_path / "ref" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    b = pd.read_csv(tmp_path / "crash" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    pd.testing.assert_frame_equal(a, b)


def test_cli_exits_when_its_tff_worker_dies_and_restarts_are_off(tmp_path, tff_context):
    """TFF_BYZ_WORKER_RESTARTS=0: exit 1 with one line, the summary says why, and --resume
    continues from the last checkpoint."""
    out = tmp_path / "oom"
    before = worker_pids()
    flags = ["--dataset=digits", "--num_clients=10", "--rounds=15", "--checkpoint_every=1",
             f"--output_dir={out}", "--run_name=run", "--seed=3"]
    process = cli(*flags, env={training.WORKER_RESTARTS_ENV: "0"})
    wait_for_round(out / "run" / "metrics.csv", 2, process)
    (worker,) = worker_pids() - before
    os.kill(worker, signal.SIGKILL)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 1, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: the TFF worker") and "SIGKILL" in line and "--resume" in line
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "WorkerDiedError" in summary["reason"]
    assert wait_until_gone(worker_pids() - before)
    resumed = cli(*flags, "--resume")
    stdout, stderr = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, stderr
    assert stdout.startswith("complete: run: 15/15 rounds")
    rounds = pd.read_csv(out / "run" / "metrics.csv")["round"]
    assert list(rounds) == list(range(1, 16))


def test_cli_completes_in_a_pipe_and_leaves_no_worker(tmp_path):
    """`python -m pipelines.train ... | cat` terminates, and no worker survives."""
    before = worker_pids()
    command = (f"{sys.executable} -m pipelines.train --progress=false --dataset=digits "
               f"--num_clients=5 --rounds=2 --output_dir={tmp_path} --run_name=piped | cat")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=180,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("complete: piped: 2/2 rounds")
    assert wait_until_gone(worker_pids() - before)


def test_cli_failure_after_start_leaves_no_worker(tmp_path):
    """A dataset missing its files fails inside the context: exit 2, one line, worker gone."""
    before = worker_pids()
    process = cli("--dataset=mnist", f"--data_dir={tmp_path / 'empty'}",
                  f"--output_dir={tmp_path / 'out'}")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: mnist") and "train-images-idx3-ubyte" in line
    assert not (tmp_path / "out").exists()
    assert wait_until_gone(worker_pids() - before)


def test_momentum_sgd_learns_and_resumes_with_client_state(tmp_path, tff_context):
    """momentum_sgd keeps each client's momentum by id, saved with the program state."""
    settings = dict(client_work="momentum_sgd", server_lr=0.5, num_clients=10, eval_every=5)
    whole = training.run_experiment(small_config(tmp_path / "a", rounds=40, **settings),
                                    progress=False)
    assert whole["final_test_accuracy"] >= 0.85
    training.run_experiment(small_config(tmp_path / "b", rounds=20, **settings), progress=False)
    training.run_experiment(small_config(tmp_path / "b", rounds=40, **settings), resume=True,
                            progress=False)
    a = pd.read_csv(tmp_path / "a" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    b = pd.read_csv(tmp_path / "b" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    pd.testing.assert_frame_equal(a, b)


def test_evaluator_equals_numpy_over_uneven_batches():
    """Test loss (mean cross-entropy) and accuracy over 7 examples in batches of 3 (the last
    batch short), against numpy on the same linear model."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0, 2, 2], dtype=np.int32)
    kernel = rng.normal(size=(4, 3)).astype(np.float32)
    bias = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    evaluator = evaluation.Evaluator(
        lambda: tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)]),
        x, y, batch_size=3)
    weights = collections.namedtuple("Weights", "trainable non_trainable")([kernel, bias], [])
    loss, accuracy = evaluator(weights)
    logits = x @ kernel + bias
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_softmax[np.arange(7), y].mean(), rel=1e-5)
    assert accuracy == pytest.approx(np.mean(logits.argmax(axis=1) == y))
    assert 0 < accuracy < 1  # the case tells right from wrong


@pytest.mark.parametrize("second", [[], ["--overwrite"]], ids=["same run", "overwrite"])
def test_a_second_run_into_a_busy_run_directory_exits_2_naming_the_holder(tmp_path, tff_context,
                                                                           second):
    """Two runs into one run directory: the second (also with --overwrite) exits 2 in one
    line naming the first's pid, and the first ends complete with every row once."""
    out = tmp_path / "busy"
    flags = ["--dataset=digits", "--num_clients=10", "--rounds=30", f"--output_dir={out}",
             "--run_name=run", "--seed=3"]
    first = cli(*flags)
    wait_for_round(out / "run" / "metrics.csv", 1, first)
    other = cli(*flags, *second)
    _, stderr = other.communicate(timeout=180)
    assert other.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    (line,) = lines
    assert line == (f"error: run directory {out / 'run'} is in use by another run (pid "
                    f"{first.pid}); wait for it to end or stop it, then rerun")
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert list(pd.read_csv(out / "run" / "metrics.csv")["round"]) == list(range(1, 31))


@pytest.mark.parametrize("damage", ["missing", "empty", "header only", "rows cut"])
def test_resume_rebuilds_metrics_rows_the_checkpoints_lack(tmp_path, tff_context, damage):
    """--resume with metrics.csv missing, empty, header-only or short: checkpoints whose rounds
    lack rows are dropped and those rounds recomputed (it used to crash with KeyError and leave
    a header-only file, so every retry failed the same way)."""
    reference = training.run_experiment(small_config(tmp_path / "ref"), progress=False)
    out = tmp_path / "damaged"
    training.run_experiment(small_config(out, rounds=4), progress=False)
    metrics = out / "run" / "metrics.csv"
    if damage == "missing":
        metrics.unlink()
    elif damage == "empty":
        metrics.write_text("")
    elif damage == "header only":
        metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    else:  # the rows of rounds 3 and 4 lost, checkpoints of rounds 3 and 4 kept
        lines = metrics.read_text().splitlines()
        metrics.write_text("\n".join(lines[:3]) + "\n")
    resumed = training.run_experiment(small_config(out), resume=True, progress=False)
    assert resumed["status"] == "complete"
    a = pd.read_csv(tmp_path / "ref" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    b = pd.read_csv(metrics)[DETERMINISTIC_COLUMNS]
    pd.testing.assert_frame_equal(a, b)
    assert resumed["final_test_accuracy"] == reference["final_test_accuracy"]


def _resume_until_complete(config, attempts=20, **kwargs):
    for _ in range(attempts):
        try:
            return training.run_experiment(config, resume=os.path.exists(
                os.path.join(config.output_dir, config.run_name, "config.json")),
                progress=False, **kwargs)
        except KeyboardInterrupt:
            continue
    raise AssertionError("the run never completed")


def test_an_interrupt_between_a_round_and_its_row_saves_no_checkpoint_of_that_round(
        tmp_path, tff_context, monkeypatch):
    """Ctrl-C after round 3 was computed but before its metrics row was written: round 3 must
    not be checkpointed (its row would be lost for good: --resume went on after it)."""
    training.run_experiment(small_config(tmp_path / "ref"), progress=False)
    flatten, calls = training._flatten, []  # pylint: disable=protected-access

    def interrupt_in_round_3(metrics, prefix=""):
        calls.append(prefix)
        if calls.count("") == 3 and not prefix:  # the round's own call (it recurses)
            raise KeyboardInterrupt
        return flatten(metrics, prefix)

    monkeypatch.setattr(training, "_flatten", interrupt_in_round_3)
    config = small_config(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        training.run_experiment(config, progress=False)
    summary = json.loads((tmp_path / "cut" / "run" / "summary.json").read_text())
    assert summary["interrupted"] and summary["rounds_completed"] == 2
    assert sorted(os.listdir(tmp_path / "cut" / "run" / "state")) == ["program_state_1",
                                                                     "program_state_2"]
    monkeypatch.setattr(training, "_flatten", flatten)
    training.run_experiment(config, resume=True, progress=False)
    a = pd.read_csv(tmp_path / "ref" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    b = pd.read_csv(tmp_path / "cut" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("work", ["local_sgd", "momentum_sgd"])
def test_sigint_at_random_moments_never_loses_or_repeats_a_row(tmp_path, tff_context, work):
    """Fault injection: after each new row, SIGINT 0-300 ms later (wherever the run is), then
    --resume; until the run completes. Every row once, equal to an uninterrupted run."""
    settings = dict(client_work=work, rounds=10, checkpoint_every=2)
    if work == "momentum_sgd":
        settings["server_lr"] = 0.5
    training.run_experiment(small_config(tmp_path / "ref", **settings), progress=False)
    rng = np.random.default_rng(7)
    fired = []

    def on_round(round_num, row):
        del row
        if len(fired) < 6 and round_num < 10:
            fired.append(round_num)
            timer = threading.Timer(rng.uniform(0.0, 0.3), os.kill, (os.getpid(), signal.SIGINT))
            timer.daemon = True
            timer.start()

    config = small_config(tmp_path / "faulty", **settings)
    with processes.noticing_interrupts():
        summary = _resume_until_complete(config, on_round=on_round)
        time.sleep(0.4)  # a timer still pending fires here, not in the next test
    assert summary["status"] == "complete" and len(fired) == 6
    a = pd.read_csv(tmp_path / "ref" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    b = pd.read_csv(tmp_path / "faulty" / "run" / "metrics.csv")[DETERMINISTIC_COLUMNS]
    pd.testing.assert_frame_equal(a, b)


def test_a_ctrl_c_swallowed_in_a_del_still_stops_the_run(tmp_path, tff_context, monkeypatch):
    """Python prints "Exception ignored in ..." for a KeyboardInterrupt raised inside a
    __del__ (TF's AtomicFunction.__del__, jax's gc callback) and goes on; the run must still
    stop (KeyboardInterrupt at the next round, state saved, resumable)."""

    class InterruptedWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler raises inside this __del__
            time.sleep(0.05)

    def on_round(round_num, row):
        del row
        if round_num == 2:
            InterruptedWhileCollected()

    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: swallowed.append(
        unraisable.exc_type))  # what prints "Exception ignored in ..."
    config = small_config(tmp_path / "swallowed")
    with processes.noticing_interrupts():
        with pytest.raises(KeyboardInterrupt):
            training.run_experiment(config, progress=False, on_round=on_round)
    assert swallowed == [KeyboardInterrupt]
    summary = json.loads((tmp_path / "swallowed" / "run" / "summary.json").read_text())
    assert summary["interrupted"] and summary["rounds_completed"] == 2
    assert training.run_experiment(config, resume=True, progress=False)["status"] == "complete"


def test_a_sigint_during_start_up_exits_130_and_says_nothing_was_saved(tmp_path, tff_context):
    """Ctrl-C while TensorFlow is still importing or the process is being built."""
    process = cli("--dataset=digits", f"--output_dir={tmp_path}", "--run_name=run")
    time.sleep(2.0)  # inside the imports or the experiment's construction
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last in ("interrupted before the run started; nothing was written",
                    "interrupted: no round was saved yet (run run); rerun to start it"), stderr


def test_resume_removes_temporary_checkpoint_directories(tmp_path, tff_context):
    """SIGKILL during a checkpoint leaves TFF's `program_state_N_tempNNNN` directory."""
    config = small_config(tmp_path, rounds=2)
    training.run_experiment(config, progress=False)
    stale = tmp_path / "run" / "state" / "program_state_3_temp4321"
    stale.mkdir()
    (stale / "half.pb").write_bytes(b"x")
    training.run_experiment(small_config(tmp_path, rounds=3), resume=True, progress=False)
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path / "run" / "state")) == ["program_state_2",
                                                              "program_state_3"]
