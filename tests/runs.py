"""Runs for the tests: a small digits config, and `pipelines.train` as a subprocess."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd

from orchestration.config import ExperimentConfig


# Columns whose values must be identical between a resumed and an uninterrupted run.
DETERMINISTIC_COLUMNS = ["round", "test_accuracy", "test_loss", "train_loss",
                         "client_work/num_examples", "clients"]


def small_config(tmp_path, **overrides):
    values = dict(dataset="digits", num_clients=10, rounds=6, eval_every=1, checkpoint_every=1,
                  output_dir=str(tmp_path), run_name="run", seed=3)
    values.update(overrides)
    return ExperimentConfig(**values)


def assert_same_metrics(reference_dir, run_dir):
    """The `run` directories under both output directories hold the same metrics.csv, every
    column that does not measure time."""
    def read(output_dir):
        return pd.read_csv(os.path.join(output_dir, "run", "metrics.csv"))[DETERMINISTIC_COLUMNS]
    pd.testing.assert_frame_equal(read(reference_dir), read(run_dir))


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
