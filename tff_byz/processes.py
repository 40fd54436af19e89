"""Child processes that never outlive their parent (no TensorFlow here).

`die_with_parent` runs in a forked child (`subprocess.Popen(preexec_fn=...)`): the
kernel then SIGKILLs the child when its parent dies, even by SIGKILL. It fires when
the *thread* that forked the child exits, so fork from the main thread.
"""

from __future__ import annotations

import ctypes
import signal

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
