"""CPU and RSS of a process from /proc, sampled between two instants (Linux only)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    cpu_percent: float
    rss_mb: float


class ProcSampler:
    """Reads utime+stime and VmRSS of ``pids`` (summed); ``sample()`` gives CPU % since the last call.

    CPU % is of one core (two busy cores read 200 %). A vanished process reads as zero.
    """

    def __init__(self, pids: tuple[int, ...]) -> None:
        self.pids = pids
        self._last_wall = time.monotonic()
        self._last_cpu = self._cpu_seconds()

    def _cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # Fields after the ")" that ends comm start at field 3 (state); utime/stime are fields 14/15.
            total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
        return total

    def _rss_mb(self) -> float:
        total_kb = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total_kb += int(line.split()[1])
                            break
            except OSError:
                continue
        return total_kb / 1024

    def sample(self) -> ProcSample:
        now = time.monotonic()
        cpu = self._cpu_seconds()
        elapsed = now - self._last_wall
        percent = 100.0 * (cpu - self._last_cpu) / elapsed if elapsed > 0 else 0.0
        self._last_wall, self._last_cpu = now, cpu
        return ProcSample(percent, self._rss_mb())
