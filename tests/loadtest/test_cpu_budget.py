"""``voicegw bench --cpu-budget``: the quota arithmetic, finding the cpu hierarchy (v1 and v2), a real
cgroup capping a real busy process, and a real two-worker gateway with one capped cgroup per worker.

The real-cgroup tests need root and a cpu controller; elsewhere they skip and say which of the two
is missing."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from gateway import cli
from loadtest import cpu_budget
from loadtest.bench import SCENARIOS, BenchEnv, BenchOptions, evaluate_targets, start_server, warm_up
from loadtest.bench_procs import Processes
from loadtest.bench_report import render_markdown
from loadtest.cpu_budget import (
    CpuBudgetUnavailable,
    CpuCgroup,
    CpuQuota,
    ServerBudget,
    _cpu_hierarchy,
    _own_cgroups,
    quota_for,
)
from loadtest.procstat import ProcSampler, child_pids
from tests.loadtest.test_bench import _document, step, summary


def test_quota_keeps_the_period_short_and_the_quota_legal() -> None:
    assert quota_for(0.4) == CpuQuota(1000, 2500)  # 1 ms of CPU, then at most 1.5 ms waited
    assert quota_for(1.0) == CpuQuota(2500, 2500)
    assert quota_for(0.1) == CpuQuota(1000, 10_000)  # the kernel refuses a quota under 1 ms
    assert quota_for(0.35).cores == pytest.approx(0.35, abs=0.001)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="fraction of one core"):
            quota_for(bad)


def _fake_root(tmp_path: Path, mounts: str, own: str) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mounts").write_text(mounts)
    (tmp_path / "proc/self/cgroup").write_text(own)
    return tmp_path


def test_a_v1_cpu_mount_is_found_under_this_process_own_cgroup(tmp_path: Path) -> None:
    root = _fake_root(
        tmp_path,
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
        "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"
        "cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0\n",
        "5:cpuset:/\n4:cpu,cpuacct:/user.slice\n0::/user.slice/session-1.scope\n",
    )
    assert _cpu_hierarchy(root) == (root / "sys/fs/cgroup/cpu,cpuacct/user.slice", 1)


def test_v2_is_used_when_it_holds_the_cpu_controller(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n", "0::/bench.scope\n")
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert _cpu_hierarchy(root) == (root / "sys/fs/cgroup/bench.scope", 2)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(CpuBudgetUnavailable, match="no cgroup hierarchy with the cpu controller"):
        _cpu_hierarchy(root)


def test_v2_asks_the_parent_for_the_controller_and_writes_cpu_max(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel makes ``cpu.max`` appear once the parent enables ``+cpu``; here a plain directory
    stands in, so the file is written where the kernel would have made it."""
    root = _fake_root(tmp_path, "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "0::/\n")
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpu memory\n")
    monkeypatch.setattr(cpu_budget, "SYSTEM_ROOT", root)
    group = CpuCgroup.create("g", quota_for(0.5))
    assert group.version == 2
    assert (root / "sys/fs/cgroup/cgroup.subtree_control").read_text() == "+cpu"
    assert (group.path / "cpu.max").read_text() == "1250 2500"
    assert (group.path / "cpu.weight").read_text() == "10000"  # its share first, when it wants it
    (group.path / "cpu.stat").write_text("usage_usec 10\nthrottled_usec 250000\n")
    assert group.throttled_s() == pytest.approx(0.25)


# -- on this machine's own cgroups ------------------------------------------------------------------------


def _budget_or_skip(name: str, cores: float, workers: int) -> ServerBudget:
    if os.geteuid() != 0:
        pytest.skip("setting a CPU quota needs root (cgroup files are root's)")
    try:
        return ServerBudget.create(f"voicegw-test-{os.getpid()}-{name}", cores, workers)
    except CpuBudgetUnavailable as exc:
        pytest.skip(f"no CPU quota here: {exc}")


def test_a_budget_caps_a_busy_process_and_goes_away_after_it(tmp_path: Path) -> None:
    budget = _budget_or_skip("busy", 0.25, 1)
    with Processes(tmp_path) as procs:
        spin = [sys.executable, "-c", "while True: pass"]
        child = procs.spawn("spin", spin, [0], dict(os.environ), tmp_path, budget)
        sampler = ProcSampler((child.pid,), include_children=False)
        time.sleep(1.5)
        used = sampler.sample().cpu_percent / 100.0
        throttled = budget.throttled_s()
        assert f"/{budget.groups[0].path.name}" in Path(f"/proc/{child.pid}/cgroup").read_text()
    # A busy loop left alone takes a whole core; capped, a quarter (start-up included, so a little less).
    assert 0.1 < used < 0.4, used
    assert throttled > 0.5
    assert not budget.groups[0].path.exists()  # removed with the process


def test_a_budget_whose_process_never_starts_is_removed(tmp_path: Path) -> None:
    budget = _budget_or_skip("nostart", 0.5, 1)
    with Processes(tmp_path) as procs, pytest.raises(FileNotFoundError):
        procs.spawn("nowhere", ["true"], [0], dict(os.environ), tmp_path / "missing", budget)  # no cwd
    assert not budget.groups[0].path.exists()


def _workers_and_their_cpu_cgroups(parent: int) -> tuple[list[int], list[str]]:
    workers = sorted(child_pids(parent))
    owns = [_own_cgroups(Path(f"/proc/{pid}/cgroup").read_text()) for pid in workers]
    return workers, [own.get("cpu", own.get("", "")) for own in owns]  # v1's cpu hierarchy, else v2's


def _affinities(pid: int) -> set[int]:
    return set().union(*(os.sched_getaffinity(int(t.name)) for t in Path(f"/proc/{pid}/task").iterdir()))


async def test_each_gateway_worker_gets_a_budget_of_its_own(tmp_path: Path) -> None:
    """(d) under ``--cpu-budget``: the parent forks two workers, and each ends up in its own cgroup and
    on its own core."""
    _budget_or_skip("probe", 0.5, 1).remove()
    (d,) = (sc for sc in SCENARIOS if sc.key == "d")
    env = BenchEnv.create(tmp_path)
    with Processes(tmp_path) as procs:
        server = await start_server(d, env, procs, "t-d", cpu_budget=0.5)
        assert server.budget is not None and server.budget.cores == pytest.approx(1.0)
        workers, groups = _workers_and_their_cpu_cgroups(server.main.pid)
        assert len(workers) == 2
        assert [g.rsplit("/", 1)[1] for g in groups] == [g.path.name for g in server.budget.groups]
        assert [_affinities(pid) for pid in workers] == [{0}, {1}]  # every thread, a core per worker
        await warm_up(server, env)  # capped workers still carry calls
        paths = [g.path for g in server.budget.groups]
    assert not any(p.exists() for p in paths)


def test_bench_refuses_a_budget_it_cannot_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a machine without the cpu controller the bench stops before starting anything: exit code 2
    and the reason."""
    root = _fake_root(tmp_path, "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "0::/\n")
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("memory pids\n")
    monkeypatch.setattr(cpu_budget, "SYSTEM_ROOT", root)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--quick", "--only", "a", "--cpu-budget", "0.5"]) == 2
    assert "--cpu-budget: no cgroup hierarchy with the cpu controller is mounted" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()  # nothing written


# -- judging under a budget ---------------------------------------------------------------------------------


def test_under_a_budget_only_ratios_and_memory_are_judged() -> None:
    a = summary("a", [[step(300, cpu=30), step(400, cpu=39), step(450, "failed")]])
    d = summary("d", [[step(600, cpu=60), step(800, cpu=78), step(1000, "failed")]], cores=2)
    base = summary("baseline", [[step(400, cpu=40), step(450, "failed")]])
    verdicts = {t.target: t for t in evaluate_targets({"a": a, "d": d, "baseline": base}, 3.0, 50.0, 0.4)}
    capacity = verdicts["(a) echo: >= 800 concurrent calls sustained"]
    assert capacity.verdict == "not measured" and "capped at 0.4 core per worker" in capacity.evidence
    assert "measured max sustained 400" in capacity.evidence  # what was measured is still said
    assert verdicts["webhook -> TwiML p99 <= 10 ms at 50 set-ups/s"].verdict == "not measured"
    scaling = verdicts["(d): 2 workers >= 1.8x (a)"]
    assert (
        scaling.verdict == "met" and "800 vs 400 = 2.00x, every worker capped at 0.4 core" in scaling.evidence
    )
    assert verdicts["(a): CPU per call <= 1.25x baseline's"].verdict == "met"


def test_the_report_says_how_the_servers_were_capped() -> None:
    doc = _document(BenchOptions(runs=1, cpu_budget=0.4, settle_s=3.0))
    assert doc["options"]["cpu_quota_per_worker"] == {"quota_us": 1000, "period_us": 2500}
    assert doc["scenarios"]["a"]["server_cpu_cores"] == 0.4
    md = render_markdown(doc)
    assert "Every server capped at 0.4 of a core per worker" in md and "1000 µs per 2500 µs" in md
    assert "(d)'s two workers are pinned one per core" in md and "| throttled ms/s |" in md
    assert "judged from 3 s after the ramp" in md
    assert "Every server capped" not in (plain := render_markdown(_document())) and "judged from" not in plain
