"""Helpers for tests that check no TFF `worker_binary` process survives."""

import subprocess
import time


def worker_pids() -> set[int]:
    """Pids of every running TFF worker_binary process."""
    output = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True,
                            check=True).stdout
    return {int(line.split()[0]) for line in output.splitlines()[1:]
            if "worker_binary --port" in line}


def wait_until_gone(pids: set[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids & worker_pids():
            return True
        time.sleep(0.1)
    return False
