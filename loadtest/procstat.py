"""CPU and RSS of a process (and its direct children, e.g. SO_REUSEPORT workers) from /proc (Linux)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    cpu_percent: float
    rss_mb: float


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields after the ")" that ends comm start at field 3 (state); utime/stime are fields 14/15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class ProcSampler:
    """``sample()`` gives the CPU % used since the previous sample and the current RSS, summed over
    ``pids`` and their direct children (re-discovered each time, so workers forked later count).

    CPU % is of one core (two busy cores read 200 %). A vanished process reads as zero.
    """

    def __init__(self, pids: tuple[int, ...], include_children: bool = True) -> None:
        self.pids = pids
        self._include_children = include_children
        self._last_wall = time.monotonic()
        self._last_cpu = self._cpu_by_pid()

    def _all_pids(self) -> list[int]:
        pids = list(self.pids)
        if self._include_children:
            for pid in self.pids:
                pids += _children(pid)
        return pids

    def _cpu_by_pid(self) -> dict[int, float]:
        out = {}
        for pid in self._all_pids():
            cpu = _cpu_seconds(pid)
            if cpu is not None:
                out[pid] = cpu
        return out

    def sample(self) -> ProcSample:
        now = time.monotonic()
        cpu = self._cpu_by_pid()
        # A process first seen now started after the previous sample: all its CPU time is new.
        used = sum(value - self._last_cpu.get(pid, 0.0) for pid, value in cpu.items())
        elapsed = now - self._last_wall
        self._last_wall, self._last_cpu = now, cpu
        percent = 100.0 * used / elapsed if elapsed > 0 else 0.0
        rss_mb = sum(_rss_kb(pid) for pid in cpu) / 1024
        return ProcSample(percent, rss_mb)
