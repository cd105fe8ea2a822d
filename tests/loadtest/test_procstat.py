"""CPU/RSS sampling of a real child process (and its children) through /proc."""

from __future__ import annotations

import subprocess
import sys
import time

from loadtest.procstat import ProcSampler

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
