"""CPU/RSS sampling of a real child process (and its children) through /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from loadtest.procstat import ProcSampler, StealSampler, connections_per_process

SPIN = "import time\\nend = time.time() + 2\\nwhile time.time() < end: pass"
BUSY_PARENT = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "{SPIN}"])
time.sleep(2)
child.wait()
"""


def test_samples_children_cpu_and_rss() -> None:
    proc = subprocess.Popen([sys.executable, "-c", BUSY_PARENT])
    try:
        time.sleep(0.3)  # let the busy child start
        sampler = ProcSampler((proc.pid,))
        time.sleep(0.5)
        with_children = sampler.sample()
        alone = ProcSampler((proc.pid,), include_children=False)
        time.sleep(0.5)
        parent_only = alone.sample()
    finally:
        proc.kill()
        proc.wait()
    # The spinning child shows up only when children are included (loose: the machine may be shared).
    assert with_children.cpu_percent > parent_only.cpu_percent + 5
    assert with_children.rss_mb > parent_only.rss_mb > 1


def test_vanished_process_reads_as_zero() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    sample = ProcSampler((proc.pid,)).sample()
    assert sample.cpu_percent == 0.0 and sample.rss_mb == 0.0


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="the kernel keeps no schedstat")
def test_waits_show_two_processes_sharing_one_core() -> None:
    """Two spinners pinned to one core each wait about half the time; one alone barely waits."""
    core = min(os.sched_getaffinity(0))
    spin = [sys.executable, "-c", SPIN.replace("\\n", "\n")]
    procs = [subprocess.Popen(spin, preexec_fn=lambda: os.sched_setaffinity(0, {core})) for _ in range(2)]
    try:
        time.sleep(0.2)
        sampler = ProcSampler((procs[0].pid,))
        time.sleep(0.8)
        shared = sampler.sample()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert shared.main_wait_ms_per_s is not None and shared.all_wait_ms_per_s is not None
    # Loose (the machine may be shared): waiting a fair share of each second, never more than all of it.
    assert 150 < shared.main_wait_ms_per_s <= shared.all_wait_ms_per_s < 1100


def test_steal_is_a_share_or_unknown() -> None:
    sampler = StealSampler(frozenset(os.sched_getaffinity(0)))
    time.sleep(0.1)
    steal = sampler.sample()
    assert steal is None or 0.0 <= steal <= 100.0
    assert StealSampler(frozenset({10_000})).sample() is None  # no such core


# Each call has the kernel zero 64 KB into a buffer made once: on a fast host, getppid() and stat()
# took so little kernel time beside the interpreter's own that the share sat at the test's bound.
SYSCALLS = (
    "import os, time\\nfd, buf = os.open('/dev/zero', os.O_RDONLY), bytearray(1 << 16)\\n"
    "end = time.time() + 2\\nwhile time.time() < end: os.readv(fd, [buf])"
)


def test_system_time_is_told_apart_from_user_time() -> None:
    """A loop of system calls spends much of its CPU in the kernel; a pure spinner next to none."""
    spin = subprocess.Popen([sys.executable, "-c", SPIN.replace("\\n", "\n")])
    calls = subprocess.Popen([sys.executable, "-c", SYSCALLS.replace("\\n", "\n")])
    try:
        time.sleep(0.3)
        spinning, calling = ProcSampler((spin.pid,)), ProcSampler((calls.pid,))
        time.sleep(0.8)
        spun, called = spinning.sample(), calling.sample()
    finally:
        for p in (spin, calls):
            p.kill()
            p.wait()
    # Loose: the machine may be shared, and clock ticks are coarse (10 ms).
    assert 0.0 <= spun.system_percent < 0.25 * spun.cpu_percent
    assert 0.25 * called.cpu_percent < called.system_percent <= called.cpu_percent


def test_connections_to_a_port_are_counted_per_process_holding_them() -> None:
    """The accepted (server) ends count, for the process that holds them; the clients' ends and the
    listener do not."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [listener.accept()[0] for _ in clients]
        try:
            assert connections_per_process((os.getpid(),), port) == {os.getpid(): 3}
            accepted.pop().close()
            assert connections_per_process((os.getpid(),), port) == {os.getpid(): 2}
        finally:
            for s in clients + accepted:
                s.close()
    assert connections_per_process((2**22 + 1,), port) == {2**22 + 1: 0}  # a process that is gone
