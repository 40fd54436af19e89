"""Runs interrupted and killed as users and machines do it: SIGINT and SIGKILL at any moment,
a dead TFF worker, a busy run directory, a CLI in a pipe. Each ends with the metrics of an
uninterrupted run or with one clear line, and leaves no worker behind."""

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

from algorithms import base
from orchestration import training
from tff_byz import context, processes
from tff_byz.context import ExecutionContext

from tests.runs import assert_same_metrics, cli, small_config, wait_for_round
from tests.workers import wait_until_gone, worker_pids


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
    assert_same_metrics(tmp_path / "ref", out)
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
    assert_same_metrics(tmp_path / "ref", out)
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
    assert_same_metrics(tmp_path / "ref", tmp_path / "crash")


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


def _resume_until_complete(config, attempts=20, **kwargs):
    for _ in range(attempts):
        try:
            return training.run_experiment(config, resume=os.path.exists(
                os.path.join(config.output_dir, config.run_name, "config.json")),
                progress=False, **kwargs)
        except KeyboardInterrupt:
            continue
    raise AssertionError("the run never completed")


@pytest.mark.parametrize("work", ["local_sgd", "momentum_sgd"])
def test_sigint_at_random_moments_never_loses_or_repeats_a_row(tmp_path, tff_context, work):
    """Fault injection: after each new row, SIGINT 0-300 ms later (wherever the run is), then
    --resume; until the run completes. Every row once, equal to an uninterrupted run."""
    settings = dict(client_work=work, rounds=10, checkpoint_every=2)
    if work == "momentum_sgd":
        settings["server_lr"] = 0.5
    training.run_experiment(small_config(tmp_path / "ref", **settings), progress=False)
    rng = np.random.default_rng(7)
    fired, timers, done = [], [], threading.Event()

    def interrupt():
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    def on_round(round_num, row):
        del row
        if len(fired) < 6 and round_num < 10:
            fired.append(round_num)
            timers.append(threading.Timer(rng.uniform(0.0, 0.3), interrupt))
            timers[-1].daemon = True
            timers[-1].start()

    config = small_config(tmp_path / "faulty", **settings)
    summary = None
    with processes.noticing_interrupts():
        while True:  # a timer may fire after the run completed: it must not end the test
            try:
                if summary is None:
                    summary = _resume_until_complete(config, on_round=on_round)
                done.set()
                for timer in timers:
                    timer.join()
                break
            except KeyboardInterrupt:
                continue
    assert summary["status"] == "complete" and len(fired) == 6
    assert_same_metrics(tmp_path / "ref", tmp_path / "faulty")


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
