"""TFF's execution context and the lifecycle of the worker process behind it.

`import tensorflow_federated` installs a default context whose C++ `worker_binary`
is started lazily and stopped only by a `__del__` that often never runs: the
worker then outlives Python, keeps the parent's stdout open, and a shell pipeline
(`cmd | tee log`) or CI hangs forever. This module is the one place that creates
the execution context. It starts the local worker itself, with

- stdin/stdout/stderr detached from the parent (a log file or /dev/null), so the
  worker can never hold a pipe of the caller open;
- `PR_SET_PDEATHSIG=SIGKILL`, so the kernel kills the worker even when Python is
  killed with SIGKILL and no Python cleanup can run;
- explicit termination on `close()`, on interpreter exit (`atexit`) and on
  SIGTERM/SIGHUP (turned into `SystemExit` so `finally` blocks run; SIGINT raises
  `KeyboardInterrupt` as usual).

Remote workers (`--tff_workers=host:port,...`, e.g. a CUDA build of the worker on
a GPU host) are connected to, never started or stopped. With several workers the
clients of each computation are split across them with TFF's mergeable-comp
execution context.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import gc
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Optional

import grpc
import portpicker
import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import async_utils
from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.execution_contexts import async_execution_context
from tensorflow_federated.python.core.impl.execution_contexts import compiler_pipeline
from tensorflow_federated.python.core.impl.types import type_conversions

from tff_byz import processes
from tff_byz.choices import parse_worker_addresses

__all__ = [
    "ExecutionContext",
    "Resident",
    "WorkerDiedError",
    "current",
    "parse_worker_addresses",
    "worker_binary_path",
    "managed_execution_context",
]

# Same limits TFF uses for its own local worker: model-sized tensors for many
# clients travel in one message.
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [
    ("grpc.max_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE_BYTES),
]


class WorkerDiedError(RuntimeError):
    """The local TFF worker exited while the context was open (e.g. killed when memory ran out).

    TFF's execution context retries computations whose worker is unreachable
    (gRPC UNAVAILABLE) forever, waiting for it to come back; a worker this
    context started never comes back, so the retry fails with this error instead.
    """


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's out-of-memory killer sends this)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def worker_binary_path() -> str:
    """Path of the C++ worker shipped inside the tensorflow-federated wheel."""
    path = os.path.join(os.path.dirname(tff.__file__), "data", "worker_binary")
    if not os.path.isfile(path):
        raise RuntimeError(f"TFF worker binary not found at {path}; reinstall with `make install`.")
    return path


# glibc serves allocations above its mmap threshold with their own mapping, returned on free;
# the threshold adapts upward (to 32 MB) as big blocks are freed, and the model-sized tensors
# of later rounds then come from the heap, which fragments and keeps growing: a 200-client
# FedLAW MNIST worker held 2.30 GB at round 20 and 2.54 GB at 60. Fixed at 1 MB: 2.24 and
# 2.24 GB, rounds no slower (BUILD_NOTES.md).
_MMAP_THRESHOLD = 1 << 20


def _worker_environment() -> dict:
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(_MMAP_THRESHOLD))
    return env


def _die_with_parent() -> None:
    """Runs in the forked child: ask the kernel to SIGKILL us when the parent dies."""
    processes.die_with_parent()
    # Own process group, so a terminal's Ctrl-C reaches only Python, which then
    # shuts the worker down in order (instead of racing it).
    os.setpgid(0, 0)


_CURRENT: list["ExecutionContext"] = []  # the open contexts, innermost last


def current() -> Optional["ExecutionContext"]:
    """The innermost open `ExecutionContext`, or None."""
    return _CURRENT[-1] if _CURRENT else None


class Resident:
    """A value left on the TFF worker by `ExecutionContext.call_keeping`.

    Pass it back to `call_keeping` to use it without a round trip through
    Python; `fetch()` brings it to Python (cached). It belongs to one worker
    executor: `valid` turns False when that executor is replaced (e.g. after
    an error or for another number of clients), and `fetch()` then fails.
    """

    def __init__(self, remote_value, executor, cardinalities, python_type,
                 context: "ExecutionContext"):
        self._remote, self._executor, self._cardinalities = remote_value, executor, cardinalities
        self._type, self._context = python_type, context
        self._fetched = None

    def on(self, executor) -> bool:
        """Whether this value lives in `executor`."""
        return executor is self._executor

    @property
    def valid(self) -> bool:
        return self._context.executor_for(self._cardinalities) is self._executor

    def fetch(self):
        if self._fetched is None:
            if not self.valid:
                raise RuntimeError("the TFF executor holding this value was replaced; "
                                   "its contents are lost")
            value = self._context.run_coroutine(self._remote.compute())
            self._fetched = type_conversions.type_to_py_container(value, self._type)
        return self._fetched


class ExecutionContext:
    """A TFF execution context on a local worker it owns, or on remote workers.

    Use as a context manager (or call `start()`/`close()`); `close()` is
    idempotent and also registered with `atexit`. While open, the context is
    TFF's default context, so every `tff.Computation` call runs on it.

    With one worker, `call_keeping` runs a computation and leaves chosen parts
    of its result on the worker (`Resident`), for the next call to use without
    sending them through Python (e.g. every client's model-sized state).
    """

    def __init__(
        self,
        workers: Sequence[str] = (),
        *,
        log_path: Optional[str] = None,
        startup_timeout_seconds: float = 60.0,
        default_num_clients: int = 0,
    ):
        self._workers = list(workers)
        self._log_path = log_path
        self._startup_timeout = startup_timeout_seconds
        self._default_num_clients = default_num_clients
        self._process: Optional[subprocess.Popen] = None
        self._channels: list[grpc.Channel] = []
        self._previous_context = None
        self._closed = True
        self._lock = threading.Lock()
        self._single_factory = None  # the executor factory, with exactly one worker
        self._compiler = compiler_pipeline.CompilerPipeline(compiler.desugar_and_transform_to_native)
        self._runner = None

    @property
    def worker_pid(self) -> Optional[int]:
        """Pid of the local worker this context started (None for remote workers)."""
        return self._process.pid if self._process is not None else None

    @property
    def targets(self) -> list[str]:
        return list(self._workers) if self._workers else self._local_targets

    def start(self) -> "ExecutionContext":
        if not self._closed:
            return self
        self._closed = False
        atexit.register(self.close)
        try:
            if self._workers:
                self._local_targets = []
                targets = self._workers
            else:
                targets = self._local_targets = [self._start_local_worker()]
            stubs = [self._connect(target) for target in targets]
            context = self._build_context(stubs)
            stack = tff.framework.get_context_stack()
            self._previous_context = stack.current
            stack.set_default_context(context)
            _CURRENT.append(self)
        except BaseException:
            self.close()
            raise
        return self

    def _start_local_worker(self) -> str:
        port = portpicker.pick_unused_port()
        if self._log_path:
            output = open(self._log_path, "ab")  # pylint: disable=consider-using-with
        else:
            output = subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                [worker_binary_path(), f"--port={port}", "--max_concurrent_computation_calls=-1"],
                env=_worker_environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                close_fds=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        return f"localhost:{port}"

    def _connect(self, target: str) -> tff.framework.RemoteExecutorGrpcStub:
        channel = grpc.insecure_channel(target, _GRPC_OPTIONS)
        self._channels.append(channel)
        stub = tff.framework.RemoteExecutorGrpcStub(channel)
        deadline = time.monotonic() + self._startup_timeout
        while not stub.is_ready:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"TFF worker exited with code {self._process.returncode} before it was ready "
                    f"(log: {self._log_path or 'disabled'}).")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"TFF worker at {target} not ready after {self._startup_timeout:.0f} s.")
            time.sleep(0.05)
        return stub

    def _build_context(self, stubs):
        def executor_factory_for(stub):
            def stack_fn(cardinalities):
                # Called again on every retry of a failed computation: a dead local
                # worker ends the retries (otherwise TFF waits for it forever).
                self.check_worker()
                if cardinalities.get(tff.CLIENTS) is None:
                    cardinalities[tff.CLIENTS] = self._default_num_clients
                executor = tff.framework.RemoteExecutor(stub)
                executor.set_cardinalities(cardinalities)
                return executor
            return tff.framework.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)

        if len(stubs) == 1:
            self._single_factory = executor_factory_for(stubs[0])
            return tff.framework.SyncExecutionContext(
                executor_fn=self._single_factory,
                compiler_fn=compiler.desugar_and_transform_to_native,
                transform_args=tensorflow_computation.transform_args,
                transform_result=tensorflow_computation.transform_result,
            )
        async_contexts = [
            tff.framework.AsyncExecutionContext(
                executor_fn=executor_factory_for(stub),
                compiler_fn=compiler.desugar_and_transform_to_native,
                transform_args=tensorflow_computation.transform_args,
                transform_result=tensorflow_computation.transform_result,
            )
            for stub in stubs
        ]
        return tff.framework.MergeableCompExecutionContext(
            async_contexts=async_contexts,
            compiler_fn=mergeable_comp_compiler.compile_to_mergeable_comp_form,
            transform_args=tensorflow_computation.transform_args,
            transform_result=tensorflow_computation.transform_result,
        )

    @property
    def can_restart(self) -> bool:
        """Whether `restart` can replace the worker (this context started it)."""
        return not self._workers and not self._closed

    def restart(self) -> None:
        """Starts a fresh local worker in place of one that died (values on it are lost)."""
        if not self.can_restart:
            raise RuntimeError("only an open context on a local worker it started can restart it")
        self.close()
        self.start()

    @property
    def can_keep_values(self) -> bool:
        """Whether `call_keeping` is available (an open context on exactly one worker)."""
        return self._single_factory is not None and not self._closed

    def run_coroutine(self, coroutine):
        """Runs `coroutine` on the worker; a failure because the local worker died raises
        `WorkerDiedError` (naming how it died), not gRPC's words."""
        if self._runner is None:
            self._runner = async_utils.AsyncThreadRunner()
        try:
            return self._runner.run_coro_and_return_result(coroutine)
        except Exception:
            self.check_worker()
            raise

    def executor_for(self, cardinalities):
        """The worker executor for `cardinalities` (the one TFF's context uses too), or None."""
        if not self.can_keep_values:
            return None
        return self._single_factory.create_executor(dict(cardinalities))

    def call_keeping(self, comp: tff.Computation, args: Sequence, *, keep: Sequence[str],
                     num_clients: int):
        """Calls `comp(*args)` on the worker; returns its result (a named struct, as a
        Python container) with the fields named in `keep` left on the worker as
        `Resident` values. An argument may be a `Resident` of this executor.

        `num_clients` is the CLIENTS cardinality of the call. Needs
        `can_keep_values`; errors propagate after the executor is reset.
        """
        if not self.can_keep_values:
            raise RuntimeError("call_keeping needs an open context on exactly one worker")
        return self.run_coroutine(self._call_keeping(comp, list(args), tuple(keep), num_clients))

    async def _call_keeping(self, comp, args, keep, num_clients):
        cardinalities = {tff.CLIENTS: int(num_clients)}
        compiled = self._compiler.compile(comp)
        parameter = compiled.type_signature.parameter
        result_type = comp.type_signature.result
        try:
            executor = self.executor_for(cardinalities)
            function = await executor.create_value(compiled, compiled.type_signature)
            ingested = []
            for index, arg in enumerate(args):
                if isinstance(arg, Resident) and arg.on(executor):
                    ingested.append(arg._remote)  # pylint: disable=protected-access
                else:
                    value = arg.fetch() if isinstance(arg, Resident) else arg
                    value = tensorflow_computation.transform_args(value)
                    ingested.append(await async_execution_context._ingest(  # pylint: disable=protected-access
                        executor, value, parameter[index]))
            argument = (await executor.create_struct(ingested)) if len(args) != 1 else ingested[0]
            call = await executor.create_call(function, argument)
            names = [name for name, _ in tff.structure.iter_elements(result_type)]
            result = collections.OrderedDict()
            for index, name in enumerate(names):
                selection = await executor.create_selection(call, index)
                if name in keep:
                    result[name] = Resident(selection, executor, cardinalities, result_type[index],
                                            self)
                else:
                    value = await selection.compute()
                    result[name] = tensorflow_computation.transform_result(
                        type_conversions.type_to_py_container(value, result_type[index]))
            return result
        except Exception:
            self._single_factory.clean_up_executor(dict(cardinalities))
            raise

    def check_worker(self) -> None:
        """Raises `WorkerDiedError` if the local worker this context started has exited."""
        process = self._process
        if process is not None and not self._closed and process.poll() is not None:
            raise WorkerDiedError(
                f"the TFF worker (pid {process.pid}) {_describe_exit(process.returncode)}; "
                f"log: {self._log_path or 'disabled (set TFF_BYZ_WORKER_LOG)'}")

    def close(self) -> None:
        """Restores the previous default context and stops the local worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._previous_context is not None:
                tff.framework.get_context_stack().set_default_context(self._previous_context)
                self._previous_context = None
            if self in _CURRENT:
                _CURRENT.remove(self)
            self._single_factory = None
            self._runner = None
            for channel in self._channels:
                channel.close()
            self._channels = []
            process, self._process = self._process, None
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            with contextlib.suppress(Exception):
                atexit.unregister(self.close)

    def __enter__(self) -> "ExecutionContext":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()


class _NoExecutionContext(tff.framework.SyncContext):
    """Default context after interpreter shutdown began: computations cannot run."""

    def invoke(self, comp, arg):
        raise RuntimeError("no TFF execution context is open; use tff_byz.context.ExecutionContext")


def _release_tff_default_context() -> None:
    """At exit, drop the default context `import tensorflow_federated` installed.

    Its never-started worker manager has a `__del__` that, when it runs during
    interpreter teardown, prints "Exception ignored ... 'NoneType' object has no
    attribute 'Popen'". Releasing it from an atexit hook collects it while
    modules are still alive, silently.
    """
    tff.framework.get_context_stack().set_default_context(_NoExecutionContext())
    gc.collect()


atexit.register(_release_tff_default_context)


def _raise_system_exit(signum, frame):  # pylint: disable=unused-argument
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def managed_execution_context(workers: Sequence[str] = (), *, log_path: Optional[str] = None):
    """`ExecutionContext` plus SIGTERM/SIGHUP → `SystemExit` for the duration.

    For command-line programs: termination signals unwind the stack through the
    caller's `finally` blocks (which save state) and this context's `close()`.
    """
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            handlers[signum] = signal.signal(signum, _raise_system_exit)
    try:
        with ExecutionContext(workers, log_path=log_path) as context:
            yield context
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
