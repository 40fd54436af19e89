"""CPU time and memory of another process (the TFF worker) from Linux /proc.

Benchmarks time rounds in the Python process, but the work runs in TFF's
`worker_binary`: its CPU time is much less sensitive than wall time to other
load on the machine, and its resident memory is where the round's matrices
live. Every function returns None where /proc is unavailable.
"""

from __future__ import annotations

import os
import threading
from typing import Optional

__all__ = ["cpu_seconds", "rss_mb", "PeakRss"]


def cpu_seconds(pid) -> Optional[float]:
    """User + system CPU time of process `pid` so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid) -> Optional[float]:
    """Resident set size of process `pid` now, in MB (10^6 bytes)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except (OSError, TypeError):
        return None
    return None


class PeakRss:
    """Samples `pid`'s RSS every `interval` seconds while the block runs.

        with PeakRss(worker_pid) as peak:
            run_round()
        peak.start_mb, peak.peak_mb

    `peak_mb` is the largest sample (a peak shorter than the interval can be
    missed); the kernel's VmHWM would be exact but covers the process's whole
    life, not one round.
    """

    def __init__(self, pid, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.start_mb: Optional[float] = None
        self.peak_mb: Optional[float] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _record(self):
        value = rss_mb(self.pid)
        if value is not None and (self.peak_mb is None or value > self.peak_mb):
            self.peak_mb = value

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._record()

    def __enter__(self) -> "PeakRss":
        self.start_mb = rss_mb(self.pid)
        self._record()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._record()
