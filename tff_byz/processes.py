"""Process lifecycle helpers (no TensorFlow here).

`die_with_parent` runs in a forked child (`subprocess.Popen(preexec_fn=...)`): the
kernel then SIGKILLs the child when its parent dies, even by SIGKILL. It fires when
the *thread* that forked the child exits, so fork from the main thread.

`exit_now(code)` ends a process whose work is done and saved without Python's
interpreter teardown, which takes seconds once TensorFlow is imported (3.2 s
measured, on a loaded machine): a grid waits for it on every worker and at its end.

`noticing_interrupts()` makes Ctrl-C impossible to lose. Python raises
`KeyboardInterrupt` wherever the main thread happens to be, and when that is a
`__del__` or a gc callback (TensorFlow's `AtomicFunction.__del__`, jax's
`_xla_gc_callback`) Python prints "Exception ignored in ..." and carries on:
4 of 26 SIGINTs were lost that way. While it is installed, every SIGINT is also
counted, and `raise_if_interrupted()` (called at safe points: between rounds,
before a run reports success) raises the one that was swallowed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading

__all__ = ["die_with_parent", "exit_now", "noticing_interrupts", "raise_if_interrupted",
           "clear_interrupts"]

_SIGINTS = [0]  # SIGINTs received while `noticing_interrupts` is installed, not yet handled

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def exit_now(code: int) -> None:
    """Flushes stdout and stderr, then `os._exit(code)`: no atexit handlers, no module
    teardown. Only for a process that has closed its files and stopped its children."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)  # pylint: disable=protected-access


def _count_and_raise(signum, frame):  # pylint: disable=unused-argument
    _SIGINTS[0] += 1
    raise KeyboardInterrupt


@contextlib.contextmanager
def noticing_interrupts():
    """SIGINT raises `KeyboardInterrupt` as usual and is also counted (module doc)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear_interrupts()
    previous = signal.signal(signal.SIGINT, _count_and_raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        clear_interrupts()


def raise_if_interrupted() -> None:
    """Raises `KeyboardInterrupt` if a SIGINT arrived and was not handled yet."""
    if _SIGINTS[0]:
        raise KeyboardInterrupt


def clear_interrupts() -> None:
    """The pending SIGINTs are handled (the run saved its state and stops)."""
    _SIGINTS[0] = 0
