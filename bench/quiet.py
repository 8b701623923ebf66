"""How much CPU other processes used while we measured: the benchmark's noise floor.

This machine is shared (other jobs run tests and exports); a timing taken while
someone else was busy is slower for reasons that are not ours.  ``CpuWatch``
reads the machine-wide busy time (/proc/stat) and this process tree's own CPU
time (os.times) around a measurement; the difference is the foreign CPU time.
"""
from __future__ import annotations

import os
import time

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_s() -> float | None:
    """Seconds of non-idle CPU time on all CPUs since boot."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)        # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK                          # user..steal, no guest double count


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


class CpuWatch:
    """with CpuWatch() as w: ...;  w.foreign_s = CPU seconds other processes used meanwhile."""

    def __enter__(self):
        self._busy, self._own, self._t = machine_busy_s(), own_cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = machine_busy_s()
        self.wall_s = time.perf_counter() - self._t
        own = own_cpu_s() - self._own
        self.foreign_s = None if busy is None or self._busy is None else max(0.0, (busy - self._busy) - own)
        return False
