"""A CPU budget for a server under test: a cgroup CPU quota, so one small machine can measure scaling.

Why: the load generator needs about as much CPU per call as the gateway it drives, so on a 2-core
machine two workers given two whole cores cannot be driven to their capacity ((d) in ``voicegw bench``).
Capping every server at the same fraction of a core per worker leaves the generator room, and (d)'s
capacity over (a)'s is then measured at equal CPU budgets instead of projected.

The quota is the kernel's CFS bandwidth control: cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` and
``cpu.cfs_period_us``. A capped process runs its quota, then waits out the rest of the period, so the
period is kept short (a few ms) and the same for every server, (a) and (d) alike. Each worker has a
cgroup of its own, weighted to get its share when it wants it, and is pinned to a core of its own.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.procstat import child_pids

MIN_QUOTA_US = 1000  # the kernel refuses a shorter quota (EINVAL)
MIN_PERIOD_US = 2500  # ≤ 1.5 ms waited per period at a 0.4-core budget
# The budget's share of a core is the server's first, when it wants it: against the default weight of
# everything else (the load generator), 100 times the default (v1 ``cpu.shares`` 1024, v2
# ``cpu.weight`` 100), so a worker waits for a core only when its quota is spent.
PRIORITY_FACTOR = 100
# How long to wait for workers: a forked one to appear, a killed one to leave its cgroup (a moment
# after its parent saw it go).
SETTLE_S = 5.0
SYSTEM_ROOT = Path("/")  # where /proc and /sys are (tests point it at a tree of their own)


class CpuBudgetUnavailable(RuntimeError):
    """No writable cgroup with the cpu controller here (not root, or a container without it)."""


@dataclass(frozen=True)
class CpuQuota:
    quota_us: int
    period_us: int

    @property
    def cores(self) -> float:
        return self.quota_us / self.period_us


def quota_for(cores: float) -> CpuQuota:
    """``cores`` (a fraction of one) of CPU time per period, on the shortest period the kernel allows
    for it: the shorter the period, the shorter each wait once the quota is spent."""
    if not 0.0 < cores <= 1.0:
        raise ValueError(f"a CPU budget is a fraction of one core in (0, 1], got {cores}")
    period = max(MIN_PERIOD_US, math.ceil(MIN_QUOTA_US / cores))
    return CpuQuota(round(cores * period), period)


@dataclass(frozen=True)
class CpuCgroup:
    """One cgroup of our own with a CPU quota; ``wrap`` starts a command inside it, ``remove`` deletes it."""

    path: Path
    version: int  # 1 or 2
    quota: CpuQuota

    @classmethod
    def create(cls, name: str, quota: CpuQuota) -> CpuCgroup:
        """Under this process's own cgroup; CpuBudgetUnavailable says why not."""
        parent, version = _cpu_hierarchy(SYSTEM_ROOT)
        path = parent / name
        try:
            path.mkdir(exist_ok=True)
            if version == 2:
                if not (path / "cpu.max").exists():
                    # The parent hands the cpu controller down only when asked (and only when it holds no
                    # processes itself, cgroup v2's rule: then the kernel refuses, and we say so).
                    (parent / "cgroup.subtree_control").write_text("+cpu")
                (path / "cpu.max").write_text(f"{quota.quota_us} {quota.period_us}")
                (path / "cpu.weight").write_text(str(100 * PRIORITY_FACTOR))
            else:
                # Period first: the quota must fit the kernel's checks against the period in force.
                (path / "cpu.cfs_period_us").write_text(str(quota.period_us))
                (path / "cpu.cfs_quota_us").write_text(str(quota.quota_us))
                (path / "cpu.shares").write_text(str(1024 * PRIORITY_FACTOR))
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise CpuBudgetUnavailable(f"cannot set a CPU quota in {path}: {exc}") from exc
        return cls(path, version, quota)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run by a shell that first joins this cgroup, so everything it forks is capped too.

        A shell, not a ``preexec_fn``: Python between fork and exec is unsafe while the bench has threads."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *argv]

    def move(self, pid: int) -> None:
        """``pid`` with all its threads into this cgroup (what it forks later follows it)."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        """Seconds the group has spent throttled (waiting out its quota) since it was created."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_usec":  # v2
                return int(value) / 1e6
            if key == "throttled_time":  # v1, nanoseconds
                return int(value) / 1e9
        return 0.0

    def remove(self) -> None:
        """Deletes the cgroup once its processes are gone (call after stopping them)."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@dataclass(frozen=True)
class ServerBudget:
    """``cores_per_worker`` for each worker of one server, each in a cgroup of its own.

    One cgroup per worker, not one for the server: a group's quota is handed to CPUs in slices
    (``sched_cfs_bandwidth_slice_us``, 5 ms by default) longer than a short period, so two workers on
    two CPUs sharing one group's quota would not share it evenly. The parent of ``--workers N`` runs in
    the first worker's group (it only waits on its children)."""

    groups: tuple[CpuCgroup, ...]

    @classmethod
    def create(cls, name: str, cores_per_worker: float, workers: int) -> ServerBudget:
        quota = quota_for(cores_per_worker)
        groups: list[CpuCgroup] = []
        try:
            for n in range(1, workers + 1):
                groups.append(CpuCgroup.create(f"{name}-w{n}", quota))
        except CpuBudgetUnavailable:
            cls(tuple(groups)).remove()
            raise
        return cls(tuple(groups))

    @property
    def cores(self) -> float:
        return sum(g.quota.cores for g in self.groups)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return self.groups[0].wrap(argv)

    def place_workers(self, parent_pid: int, cores: Sequence[int]) -> None:
        """Worker n into group n, pinned to the n-th of ``cores``, once the server's parent has forked
        them all (a single-process server is already in its group, on its core). Pinned, so that (d)'s
        first worker runs where (a)'s only one does and the second has a core of its own, shared only
        with what its weight puts behind it; RuntimeError when the workers are not all there soon."""
        if len(self.groups) == 1:
            return
        deadline = time.monotonic() + SETTLE_S
        while len(pids := child_pids(parent_pid)) < len(self.groups):
            if time.monotonic() > deadline:
                raise RuntimeError(f"pid {parent_pid} has {len(pids)} of {len(self.groups)} workers")
            time.sleep(0.05)
        if len(pids) > len(self.groups):
            raise RuntimeError(f"pid {parent_pid} has {len(pids)} children, not {len(self.groups)} workers")
        for n, (group, pid) in enumerate(zip(self.groups, sorted(pids), strict=True)):
            group.move(pid)
            for tid in Path(f"/proc/{pid}/task").iterdir():  # every thread it has started
                os.sched_setaffinity(int(tid.name), {cores[n % len(cores)]})

    def throttled_s(self) -> float:
        return sum(g.throttled_s() for g in self.groups)

    def remove(self) -> None:
        for group in self.groups:
            group.remove()


def _cpu_hierarchy(root: Path) -> tuple[Path, int]:
    """This process's own cgroup in the hierarchy that has the cpu controller, and that hierarchy's
    version: v1's ``cpu`` mount if there is one (a v1 controller is absent from v2), else the v2 mount."""
    mounts = (root / "proc/self/mounts").read_text().splitlines()
    own = _own_cgroups((root / "proc/self/cgroup").read_text())
    for line in mounts:
        _, where, kind, options, *_ = line.split()
        if kind == "cgroup" and "cpu" in options.split(","):
            return _under(root, where, own.get("cpu", "/")), 1
    for line in mounts:
        _, where, kind, *_ = line.split()
        if kind == "cgroup2":
            mount = _under(root, where, "/")
            if "cpu" in (mount / "cgroup.controllers").read_text().split():
                return _under(root, where, own.get("", "/")), 2
    raise CpuBudgetUnavailable("no cgroup hierarchy with the cpu controller is mounted")


def _own_cgroups(text: str) -> dict[str, str]:
    """``/proc/self/cgroup``: controller -> path (v2's single line under the key "")."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            out[controller] = path
    return out


def _under(root: Path, mount: str, path: str) -> Path:
    return root / mount.lstrip("/") / path.lstrip("/")
