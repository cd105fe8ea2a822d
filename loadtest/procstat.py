"""CPU and RSS of a process (and its direct children, e.g. SO_REUSEPORT workers) from /proc (Linux);
how long its threads waited for a core, and how much of a core the hypervisor took (steal)."""

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


def _with_children(pids: tuple[int, ...], include_children: bool) -> list[int]:
    """``pids`` and, when asked, their direct children as they are now (workers forked later count)."""
    out = list(pids)
    if include_children:
        for pid in pids:
            out += _children(pid)
    return out


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

    def _cpu_by_pid(self) -> dict[int, float]:
        out = {}
        for pid in _with_children(self.pids, self._include_children):
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


# -- waiting for a core --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaitSample:
    """Run-queue wait over the interval, in ms per second of wall time: how long threads were ready to
    run but had no core. ``main`` counts each process's main thread (the event loop in the gateway, the
    generator and the simulators), ``all`` every thread. None where the kernel keeps no schedstat."""

    main_ms_per_s: float | None
    all_ms_per_s: float | None


def _waits_ns(pid: int) -> tuple[int, int] | None:
    """(main thread's, all threads') cumulative run-queue wait in ns: field 2 of
    ``/proc/<pid>/task/<tid>/schedstat`` (time on CPU, time waiting on a run queue, timeslices)."""
    main = total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    seen = False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                waited = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        seen = True
        total += waited
        if tid == str(pid):
            main = waited
    return (main, total) if seen else None


class WaitSampler:
    """``sample()`` gives the run-queue wait since the previous sample of ``pids`` (and their direct
    children). Why it matters here: a process pinned beside another busy one (the simulator beside the
    generator, the gateway's loop beside its storage threads) delays audio by exactly this, yet its CPU %
    looks modest."""

    def __init__(self, pids: tuple[int, ...], include_children: bool = True) -> None:
        self.pids = pids
        self._include_children = include_children
        self._last_wall = time.monotonic()
        self._last = self._by_pid()

    def _by_pid(self) -> dict[int, tuple[int, int]]:
        out = {}
        for pid in _with_children(self.pids, self._include_children):
            waits = _waits_ns(pid)
            if waits is not None:
                out[pid] = waits
        return out

    def sample(self) -> WaitSample:
        now = time.monotonic()
        cur = self._by_pid()
        elapsed = now - self._last_wall
        self._last_wall, last, self._last = now, self._last, cur
        if not cur or elapsed <= 0:
            return WaitSample(None, None)
        zero = (0, 0)
        main = sum(w[0] - last.get(pid, zero)[0] for pid, w in cur.items())
        total = sum(w[1] - last.get(pid, zero)[1] for pid, w in cur.items())
        return WaitSample(main / 1e6 / elapsed, total / 1e6 / elapsed)


def _core_times(cores: frozenset[int]) -> tuple[int, int] | None:
    """(steal, all) jiffies summed over ``cores`` from ``/proc/stat`` (steal is the 8th time field)."""
    steal = total = 0
    found = False
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or not line[3].isdigit():
                    continue
                fields = line.split()
                if int(fields[0][3:]) in cores:
                    times = [int(x) for x in fields[1:9]]
                    steal += times[7]
                    total += sum(times)
                    found = True
    except (OSError, ValueError, IndexError):
        return None
    return (steal, total) if found else None


class StealSampler:
    """The share of ``cores``' time the hypervisor ran something else (steal), since the previous sample:
    a shared virtual machine that is slower by the minute shows here, not in our own figures."""

    def __init__(self, cores: frozenset[int]) -> None:
        self._cores = cores
        self._last = _core_times(cores)

    def sample(self) -> float | None:
        cur = _core_times(self._cores)
        last, self._last = self._last, cur
        if cur is None or last is None or cur[1] <= last[1]:
            return None
        return 100.0 * (cur[0] - last[0]) / (cur[1] - last[1])
