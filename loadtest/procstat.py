"""CPU and RSS of a process (and its direct children, e.g. SO_REUSEPORT workers) from /proc (Linux);
how long its threads waited for a core, how much of a core the hypervisor took (steal), and how many
of a port's connections each process holds."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    """Since the previous sample: CPU % (of one core) and run-queue wait in ms per second of wall time,
    how long threads were ready to run but had no core (``main`` counts each process's main thread: the
    event loop in the gateway, the generator and the simulators; ``all`` every thread; None where the
    kernel keeps no schedstat). RSS is the current one."""

    cpu_percent: float
    rss_mb: float
    main_wait_ms_per_s: float | None = None
    all_wait_ms_per_s: float | None = None
    # The part of cpu_percent spent in the kernel (system time): on loopback a socket write runs the
    # peer's TCP receive too, so this is most of what a relaying process costs beyond its own code.
    system_percent: float = 0.0


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields after the ")" that ends comm start at field 3 (state); utime/stime are fields 14/15.
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    """``pid``'s direct children as they are now (none when it is gone)."""
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
            out += child_pids(pid)
    return out


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


def _gained(
    now: Mapping[int, tuple[float, float]], last: Mapping[int, tuple[float, float]]
) -> tuple[float, float]:
    """How much each of a pair of per-process counters grew, summed over the processes. A process first
    seen now started after the previous sample: all of its counts are new."""
    first = second = 0.0
    for pid, (a, b) in now.items():
        was_a, was_b = last.get(pid, (0.0, 0.0))
        first += a - was_a
        second += b - was_b
    return first, second


class ProcSampler:
    """``sample()`` gives the CPU % used and the run-queue wait since the previous sample, and the
    current RSS, summed over ``pids`` and their direct children (re-discovered each time, so workers
    forked later count).

    CPU % is of one core (two busy cores read 200 %). A vanished process reads as zero. Why the wait
    matters: a process pinned beside another busy one (the simulator beside the generator, the gateway's
    loop beside its storage threads) delays audio by exactly this, yet its CPU % looks modest.
    """

    def __init__(self, pids: tuple[int, ...], include_children: bool = True) -> None:
        self.pids = pids
        self._include_children = include_children
        self._last_wall = time.monotonic()
        self._last_cpu, self._last_waits = self._read()

    def _read(self) -> tuple[dict[int, tuple[float, float]], dict[int, tuple[int, int]]]:
        cpu, waits = {}, {}
        for pid in _with_children(self.pids, self._include_children):
            seconds = _cpu_seconds(pid)
            if seconds is None:
                continue
            cpu[pid] = seconds
            waited = _waits_ns(pid)
            if waited is not None:
                waits[pid] = waited
        return cpu, waits

    def sample(self) -> ProcSample:
        now = time.monotonic()
        cpu, waits = self._read()
        elapsed = now - self._last_wall
        last_cpu, last_waits = self._last_cpu, self._last_waits
        self._last_wall, self._last_cpu, self._last_waits = now, cpu, waits
        if elapsed <= 0:
            return ProcSample(0.0, sum(_rss_kb(pid) for pid in cpu) / 1024)
        user, system = _gained(cpu, last_cpu)
        main_wait = all_wait = None
        if waits:
            main_ns, all_ns = _gained(waits, last_waits)
            main_wait, all_wait = main_ns / 1e6 / elapsed, all_ns / 1e6 / elapsed
        rss_mb = sum(_rss_kb(pid) for pid in cpu) / 1024
        return ProcSample(
            100.0 * (user + system) / elapsed, rss_mb, main_wait, all_wait, 100.0 * system / elapsed
        )


# -- host steal -----------------------------------------------------------------------------------------


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


def _established_inodes(port: int) -> set[int]:
    """Socket inodes of established TCP connections whose local port is ``port`` (IPv4 and IPv6)."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split()
                    # local address "0100007F:1F90", state "01" (ESTABLISHED), inode in field 10
                    if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(int(fields[9]))
        except OSError:
            continue
    return inodes


def connections_per_process(pids: tuple[int, ...], port: int) -> dict[int, int]:
    """How many established connections to local ``port`` each process holds: with SO_REUSEPORT
    workers, how the kernel's hash split the calls among them."""
    inodes = _established_inodes(port)
    held: dict[int, int] = {}
    for pid in pids:
        count = 0
        try:
            with os.scandir(f"/proc/{pid}/fd") as fds:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        link = os.readlink(fd.path)
                        if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                            count += 1
        except OSError:
            pass
        held[pid] = count
    return held
