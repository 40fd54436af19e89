"""Helpers for tests that check no TFF `worker_binary` process survives."""

import os
import subprocess
import time


def in_this_session(pid: int) -> bool:
    """Started (directly or not) by this test session: carries its marker (tests/conftest.py)."""
    marker = os.environ.get("TFF_BYZ_TEST_SESSION")
    if marker is None:
        return True
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"TFF_BYZ_TEST_SESSION={marker}".encode() in f.read().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False


def session_pids(command_part: str) -> set[int]:
    """Pids of this test session's running processes whose command line contains `command_part`."""
    output = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True,
                            check=True).stdout
    return {int(line.split()[0]) for line in output.splitlines()[1:]
            if command_part in line and in_this_session(int(line.split()[0]))}


def worker_pids() -> set[int]:
    """Pids of the running TFF worker_binary processes started by this test session."""
    return session_pids("worker_binary --port")


def wait_until_gone(pids: set[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids & worker_pids():
            return True
        time.sleep(0.1)
    return False
