"""The execution context owns its worker: it ends on exit, error, signals, even SIGKILL."""

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import portpicker
import pytest
import tensorflow_federated as tff

from tff_byz import context

from tests.workers import wait_until_gone, worker_pids


@tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
def federated_total(values):
    return tff.federated_sum(values)


@tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS),
                           tff.FederatedType(np.float32, tff.SERVER))
def federated_pair(values, offset):
    return collections.OrderedDict(total=tff.federated_sum(values), values=values,
                                   offset=offset)


def test_context_starts_and_stops_its_worker():
    before = worker_pids()
    with context.ExecutionContext() as ctx:
        assert ctx.worker_pid in worker_pids() - before
        assert federated_total([1.0, 2.0, 3.5]) == 6.5
        pid = ctx.worker_pid
    assert wait_until_gone({pid}), "worker survived close()"


def test_a_killed_worker_fails_the_next_computation_instead_of_hanging():
    """TFF retries an unreachable worker forever; ours raises WorkerDiedError, naming why."""
    with context.ExecutionContext() as ctx:
        assert federated_total([1.0, 2.0]) == 3.0
        os.kill(ctx.worker_pid, signal.SIGKILL)
        assert wait_until_gone({ctx.worker_pid})
        started = time.monotonic()
        with pytest.raises(context.WorkerDiedError, match="killed by SIGKILL"):
            federated_total([1.0, 2.0])
        assert time.monotonic() - started < 30


def test_a_value_kept_on_a_killed_worker_fails_to_fetch_with_worker_died():
    """A `Resident` (client states kept on the worker) fetched after the worker died:
    WorkerDiedError, which a run answers with a new worker, not gRPC's error."""
    with context.ExecutionContext() as ctx:
        kept = ctx.call_keeping(federated_pair, ([1.0, 2.0], 0.5), keep=("values",),
                                num_clients=2)
        assert kept["total"] == 3.0
        os.kill(ctx.worker_pid, signal.SIGKILL)
        assert wait_until_gone({ctx.worker_pid})
        with pytest.raises(context.WorkerDiedError, match="killed by SIGKILL"):
            kept["values"].fetch()


def test_close_is_idempotent_and_restores_previous_context(tff_context):
    previous = tff.framework.get_context_stack().current
    ctx = context.ExecutionContext().start()
    assert tff.framework.get_context_stack().current is not previous
    ctx.close()
    ctx.close()
    assert tff.framework.get_context_stack().current is previous
    assert federated_total([1.0]) == 1.0  # the session context works again


def test_worker_dies_with_a_sigkilled_parent():
    """PR_SET_PDEATHSIG: no Python cleanup runs on SIGKILL, the kernel kills the worker."""
    script = textwrap.dedent("""
        import sys, time
        from tff_byz.context import ExecutionContext
        ctx = ExecutionContext().start()
        print(ctx.worker_pid, flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        worker = int(child.stdout.readline())
        assert worker in worker_pids()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert wait_until_gone({worker}), "worker outlived its SIGKILLed parent"


def test_remote_workers_by_address(tff_context):
    """--tff_workers: connect to workers someone else started; split clients over two."""
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    workers = [subprocess.Popen([context.worker_binary_path(), f"--port={port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for port in ports]
    try:
        addresses = [f"localhost:{port}" for port in ports]
        with context.ExecutionContext(addresses[:1]) as ctx:
            assert ctx.worker_pid is None
            assert federated_total([1.0, 2.0]) == 3.0
        with context.ExecutionContext(addresses):
            assert federated_total([1.0, 2.0, 3.0, 4.0]) == 10.0
        assert all(w.poll() is None for w in workers), "remote workers must not be stopped"
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


@pytest.mark.parametrize("spec", ["localhost", "host:0", "host:99999", ":80", "a:b"])
def test_invalid_worker_addresses(spec):
    with pytest.raises(ValueError, match="--tff_workers"):
        context.parse_worker_addresses(spec)


def test_valid_worker_addresses():
    assert context.parse_worker_addresses("localhost:8000, gpu-1:9000") == [
        "localhost:8000", "gpu-1:9000"]


def test_sigterm_becomes_system_exit_inside_managed_context():
    with pytest.raises(SystemExit) as exit_info:
        with context.managed_execution_context():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
