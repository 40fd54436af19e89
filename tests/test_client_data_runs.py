"""Runs with client data by reference: the store in the cache, remote workers, bad stores."""

import os
import subprocess

import numpy as np
import pandas as pd
import portpicker
import pytest

from tff_byz import context
from orchestration import training
from orchestration.experiment import Experiment
from orchestration.config import ConfigError, ExperimentConfig
from tff_byz.datasets import store as store_lib

COMPARED = ["round", "test_accuracy", "test_loss", "train_loss", "client_work/num_examples"]


def config(tmp_path, name, **overrides):
    values = dict(dataset="digits", num_clients=6, rounds=3, eval_every=1, seed=5,
                  output_dir=str(tmp_path), run_name=name)
    values.update(overrides)
    return ExperimentConfig(**values)


def test_the_store_is_written_once_into_the_cache_and_reused(tmp_path, monkeypatch, tff_context):
    monkeypatch.setenv("TFF_BYZ_CACHE", str(tmp_path / "cache"))
    training.run_experiment(config(tmp_path, "a"), progress=False)
    (store_dir,) = (tmp_path / "cache" / "stores").iterdir()
    assert store_dir.name.startswith("digits-")
    inode = os.stat(store_dir / "x.bin").st_ino
    training.run_experiment(config(tmp_path, "b", aggregator="median"), progress=False)
    assert os.stat(store_dir / "x.bin").st_ino == inode
    training.run_experiment(config(tmp_path, "c", seed=6), progress=False)
    assert len(list((tmp_path / "cache" / "stores").iterdir())) == 2  # another split


def test_a_corrupt_store_is_rebuilt_before_the_run(tmp_path, monkeypatch, tff_context):
    monkeypatch.setenv("TFF_BYZ_CACHE", str(tmp_path / "cache"))
    first = training.run_experiment(config(tmp_path, "a"), progress=False)
    (store_dir,) = (tmp_path / "cache" / "stores").iterdir()
    with open(store_dir / "y.bin", "r+b") as f:
        f.write(b"\xff\xff\xff\x7f")  # label 2**31 - 1 for the first example
    again = training.run_experiment(config(tmp_path, "b"), progress=False)
    assert again["final_test_accuracy"] == first["final_test_accuracy"]
    assert store_lib.open_store(store_dir).y_labels()[0] != 2**31 - 1


def test_a_worker_that_maps_other_bytes_fails_in_one_line(tmp_path, monkeypatch, tff_context):
    """What a remote worker with a stale copy of the store would read."""
    monkeypatch.setenv("TFF_BYZ_CACHE", str(tmp_path / "cache"))
    experiment = Experiment(config(tmp_path, "a").resolved())
    experiment.verify_store()
    with open(experiment.store.x_path, "r+b") as f:
        f.write(b"\x01")
    with pytest.raises(store_lib.StoreError, match=r"reads other bytes at .*x\.bin") as info:
        experiment.verify_store()
    assert "\n" not in str(info.value)
    os.unlink(experiment.store.y_path)
    with pytest.raises(store_lib.StoreError, match="cannot read the client-data store"):
        experiment.verify_store()


@pytest.fixture
def loopback_workers():
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    workers = [subprocess.Popen([context.worker_binary_path(), f"--port={port}",
                                 "--max_concurrent_computation_calls=-1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for port in ports]
    try:
        yield ",".join(f"localhost:{port}" for port in ports)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


@pytest.mark.parametrize("settings", [dict(), dict(client_work="momentum_sgd", server_lr=0.5)],
                         ids=["fedavg", "momentum_sgd"])
def test_two_remote_workers_read_the_store_by_path(tmp_path, tff_context, loopback_workers,
                                                   settings):
    """Each worker opens the store by path; the clients split over both give the local
    run's metrics (to float tolerance: the mean is summed in another order)."""
    local = config(tmp_path, "local", **settings)
    training.run_experiment(local, progress=False)
    remote = config(tmp_path, "remote", tff_workers=loopback_workers, **settings)
    with context.ExecutionContext(context.parse_worker_addresses(loopback_workers)):
        summary = training.run_experiment(remote, progress=False)
    assert summary["status"] == "complete" and summary["rounds_completed"] == 3
    a = pd.read_csv(tmp_path / "local" / "metrics.csv")[COMPARED]
    b = pd.read_csv(tmp_path / "remote" / "metrics.csv")[COMPARED]
    np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), rtol=1e-5, atol=1e-6)


def test_verify_store_errors_are_config_errors(tmp_path, monkeypatch, tff_context):
    """run_experiment turns an unreadable store into a one-line ConfigError (CLI exit 2)."""
    monkeypatch.setenv("TFF_BYZ_CACHE", str(tmp_path / "cache"))

    def broken(self):
        raise store_lib.StoreError("client-data store /x/y.bin is broken")

    monkeypatch.setattr(Experiment, "verify_store", broken)
    with pytest.raises(ConfigError, match="y.bin is broken"):
        training.run_experiment(config(tmp_path, "a"), progress=False)
    assert not (tmp_path / "a").exists()
