"""``voicegw bench``'s own logic: step classification and search, medians, projection, targets, rendering,
process pinning and clean-up, the webhook probe and the simulators' relay mode. No long runs here."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import WSMsgType

from loadtest.baseline import BaselineServer
from loadtest.bench import (
    DEFAULT_STEPS,
    SCENARIOS,
    TARGET_A_CALLS,
    TARGET_B_CALLS,
    TARGET_B_P99_CALLS,
    TARGET_C_CALLS,
    BenchEnv,
    BenchOptions,
    ScenarioData,
    assemble,
    hold_window,
    measure_step,
    measure_webhooks,
    rejudge,
    relay_tenant,
    start_server,
    step_record,
    summarise_profile,
    warm_up,
)
from loadtest.bench_procs import Processes
from loadtest.bench_report import PLOTS, _waits, render_markdown, write_results
from loadtest.bench_results import (
    HoldFigures,
    ScenarioSummary,
    Status,
    StepMedian,
    StepRecord,
    check_capacity,
    check_cpu_ratio,
    check_memory,
    check_p99_at,
    check_scaling,
    check_webhook,
    classify,
    combine_runs,
    cpu_per_call_at,
    cpu_usable,
    criteria_for_floor,
    lag_max_floor_ms,
    lag_p99_ms,
    matched_load_scaling,
    max_sustained,
    median_max_sustained,
    project_capacity,
    search_steps,
    simulator_saturated,
    stopped_by,
)
from loadtest.carriers.plan import CallResult, Credentials
from loadtest.cli import _steps, register
from loadtest.runner import Criteria, LoadConfig, LoadReport, Timeline
from loadtest.stats import Summary
from loadtest.timehist import RunHistograms
from providers.base import MULAW_8000, PCM16_16000
from providers.deepgram.protocol import CONVERSE_PATH
from providers.simulators.deepgram import DeepgramSimulator
from providers.simulators.scripted_agent import convert_audio


def step(
    calls: int, status: str = "sustained", cpu: float = 50.0, p99: float = 3.0, **kw: float
) -> StepRecord:
    figures: dict[str, Any] = {
        "return_ratio": 1.0,
        "latency_p50_ms": 1.0,
        "latency_p95_ms": 2.0,
        "latency_p99_ms": p99,
        "latency_max_ms": p99 * 2,
        "latency_samples": 100,
        "jitter_mean_ms": 0.5,
        "lateness_p99_ms": 1.0,
        "lateness_max_ms": 2.0,
        "server_cpu_percent": cpu,
        "server_rss_mb": 100.0,
        "idle_rss_mb": 80.0,
        "generator_cpu_percent": 40.0,
    } | kw
    reasons = [] if status == "sustained" else [f"{status} for a reason"]
    return StepRecord(calls=calls, status=cast(Status, status), reasons=reasons, **figures)


def summary(key: str, runs: list[list[StepRecord]], cores: int = 1) -> ScenarioSummary:
    steps = tuple(combine_runs(runs))
    return ScenarioSummary(
        key, steps, median_max_sustained(runs), stopped_by(runs[0]), project_capacity(steps, cores)
    )


# -- judgement ------------------------------------------------------------------------------------------


def test_classify_blames_the_generator_only_when_the_server_had_cpu_to_spare() -> None:
    assert classify([], generator_late=False, server_cpu_percent=99, server_cores=1) == "sustained"
    assert (
        classify(["p99"], generator_late=True, server_cpu_percent=60, server_cores=1) == "generator-limited"
    )
    assert classify(["p99"], generator_late=True, server_cpu_percent=95, server_cores=1) == "failed"
    assert (
        classify(["p99"], generator_late=True, server_cpu_percent=150, server_cores=2) == "generator-limited"
    )
    assert classify(["ratio"], generator_late=False, server_cpu_percent=10, server_cores=1) == "failed"
    # Lost audio is the gateway's unless the generator was more than a frame late.
    lost = {"lost_or_failed": True}
    assert classify(["ratio"], True, 50, 1, **lost, lateness_p99_ms=6.0) == "failed"
    assert classify(["ratio"], True, 50, 1, **lost, lateness_p99_ms=30.0) == "generator-limited"


def test_step_figures_per_call() -> None:
    r = step(200, cpu=80.0, server_rss_mb=100.0, idle_rss_mb=80.0)
    assert r.cpu_ms_per_call_s == pytest.approx(4.0)  # 0.8 core-seconds per second over 200 calls
    assert r.kb_per_call == pytest.approx(20 * 1024 / 200)
    assert r.to_json()["cpu_ms_per_call_s"] == 4.0


async def test_search_goes_on_while_cpu_figures_are_usable_and_stops_at_a_failure() -> None:
    seen: list[int] = []

    async def measure(calls: int) -> StepRecord:
        seen.append(calls)
        if calls == 500:
            return step(calls, "failed")
        return step(calls, "generator-limited" if calls >= 300 else "sustained")

    records = await search_steps([100, 200, 300, 400, 500, 600], measure)
    assert seen == [100, 200, 300, 400, 500]
    assert max_sustained(records) == 200
    assert stopped_by(records) == "generator-limited"  # what ended the measured capacity
    assert stopped_by(records[:2]) == "end of steps"


def test_a_generator_limited_step_does_not_hide_a_later_sustained_one() -> None:
    records = [step(200), step(300, "generator-limited"), step(450), step(600, "failed"), step(800)]
    assert max_sustained(records) == 450  # 300 was not judged; 800 came after the failure
    assert stopped_by(records) == "failed"
    assert max_sustained([step(100, "generator-limited"), step(200)]) == 200


async def test_search_stops_when_the_generator_is_too_late_for_cpu_figures() -> None:
    async def measure(calls: int) -> StepRecord:
        return step(calls, "generator-limited", lateness_p99_ms=25.0 if calls >= 300 else 8.0)

    records = await search_steps([100, 200, 300, 400], measure)
    assert [r.calls for r in records] == [100, 200, 300]
    assert max_sustained(records) == 0
    assert not cpu_usable("generator-limited", 8.0, 0.95)  # frames missing: not usable either
    assert not cpu_usable("failed", 1.0, 1.0) and cpu_usable("sustained", 99.0, 0.5)


async def test_a_load_side_stall_is_measured_again_once() -> None:
    """One stall of the generator at a light step would void the whole run; the step is measured
    again, and says so. A step still stalled, or a failed one, ends the search as before."""
    seen: list[int] = []

    async def measure(calls: int) -> StepRecord:
        seen.append(calls)
        stalled = (calls == 25 and seen.count(25) == 1) or calls == 200
        if calls == 300:
            return step(calls, "failed")
        return step(calls, "generator-limited", lateness_p99_ms=65.0) if stalled else step(calls)

    records = await search_steps([25, 50, 200, 300], measure)
    assert seen == [25, 25, 50, 200, 200]
    assert [r.status for r in records] == ["sustained", "sustained", "generator-limited"]
    assert records[0].retried_after == ["generator-limited: generator-limited for a reason"]
    assert records[1].retried_after == [] and len(records[2].retried_after) == 1
    seen.clear()
    assert [r.status for r in await search_steps([300, 400], measure)] == ["failed"] and seen == [300]


def test_criteria_for_a_constant_latency_floor() -> None:
    assert criteria_for_floor(2.0, 12.0) == Criteria()
    c = criteria_for_floor(60.0, 12.0)
    assert c.max_p99_ms == pytest.approx(80.0)
    assert c.min_return_ratio == pytest.approx(0.999 - 0.005)
    assert c.max_generator_lateness_p99_ms == Criteria().max_generator_lateness_p99_ms


def test_hold_window_skips_ramp_and_settling() -> None:
    assert hold_window(2.0, 10.0) == (3.0, 9.0)
    assert hold_window(1.0, 2.0) == (1.5, 1.5)
    assert hold_window(2.0, 12.0, settle_s=3.0) == (5.0, 9.0)  # a capped worker's ramp backlog drained


# -- combining runs and the projection -----------------------------------------------------------------


def test_medians_over_runs_and_majority_status() -> None:
    runs = [
        [step(100, cpu=40), step(200, cpu=80, p99=9.0)],
        [step(100, cpu=50), step(200, "failed", cpu=90)],
        [step(100, cpu=60), step(200, cpu=85, p99=7.0), step(300, "failed")],
    ]
    steps = combine_runs(runs)
    assert [s.calls for s in steps] == [100, 200, 300]
    assert steps[0].figures["server_cpu_percent"] == 50.0 and steps[0].runs == 3
    assert steps[1].figures["latency_p99_ms"] == 7.0
    assert steps[1].status == "sustained"  # 2 of 3
    assert median_max_sustained(runs) == 200  # per run: 200, 100, 200
    tie = StepMedian(10, 2, ("sustained", "failed"), {}, 0.0, 0.0)
    assert tie.status == "failed"  # ties go to the worse verdict


def test_waits_are_medians_over_the_runs_that_recorded_them() -> None:
    older = step(100)  # a result file from before waits were recorded
    recorded = [[step(100, simulator_wait_ms_per_s=w)] for w in (40.0, 90.0)]
    steps = combine_runs([[older], *recorded])
    assert steps[0].figures["simulator_wait_ms_per_s"] == 65.0
    assert "loop_wait_ms_per_s" not in combine_runs([[older]])[0].figures


def test_projection_uses_the_largest_step_with_usable_cpu_figures() -> None:
    steps = combine_runs([[step(100, cpu=40), step(200, cpu=80), step(300, "failed", cpu=100)]])
    p = project_capacity(steps, cores=1)
    assert p is not None and p.at_step == 200 and p.from_clean_step
    assert p.calls == 250  # 1000 ms / 4 ms per call-second
    assert p.marginal_calls == 250  # 40 % + 0.4 %/call: no idle CPU here
    idle = project_capacity(combine_runs([[step(100, cpu=30), step(200, cpu=50), step(300, "failed")]]), 1)
    assert idle is not None and idle.fixed_cpu_percent == pytest.approx(10.0)
    assert idle.marginal_calls == 450 and idle.calls == 400  # (100 - 10) / 0.2 vs 1000 / 2.5
    flat = [step(25, cpu=3), step(1000, cpu=80), step(1200, cpu=80.5), step(1600, "failed")]
    noise = project_capacity(combine_runs([flat]), cores=1)
    assert noise is not None and noise.calls == 1490 and noise.marginal_calls is None  # not ~37,000
    p2 = project_capacity(combine_runs([[step(50, "failed", cpu=50)]]), cores=2)
    assert p2 is not None and not p2.from_clean_step and not p2.from_usable_step and p2.calls == 200
    limited = [step(100, cpu=40), step(200, "generator-limited", cpu=70, lateness_p99_ms=9.0)]
    p3 = project_capacity(combine_runs([limited]), cores=1)
    assert p3 is not None and p3.at_step == 200 and p3.from_usable_step and not p3.from_clean_step


# -- targets --------------------------------------------------------------------------------------------


def test_capacity_verdicts() -> None:
    met = summary("a", [[step(800), step(1000, "failed")]])
    assert check_capacity(met, 800, "(a)").verdict == "met"
    limited = summary("a", [[step(200), step(300, "generator-limited")]])
    check = check_capacity(limited, 800, "(a)")
    assert check.verdict == "generator-limited" and "PROJECTION" in check.evidence
    assert check_capacity(summary("a", [[step(200), step(300, "failed")]]), 800, "(a)").verdict == "not met"
    assert check_capacity(summary("a", [[step(10)]]), 800, "(a)").verdict == "not measured"
    assert check_capacity(None, 800, "(a)").verdict == "not measured"


def test_ratio_latency_scaling_memory_and_webhook_verdicts() -> None:
    a = summary("a", [[step(100, cpu=60), step(200, cpu=120 * 0.8), step(300, "failed")]])
    base = summary("baseline", [[step(100, cpu=40), step(200, cpu=80), step(300, "generator-limited")]])
    cpu = check_cpu_ratio(a, base, 1.25)
    assert cpu.verdict == "met" and "at 200 calls" in cpu.evidence  # 4.8 vs 4.0 ms = 1.2x
    assert check_cpu_ratio(a, None, 1.25).verdict == "not measured"

    b = summary("b", [[step(300, p99=4.0), step(450, "failed")]])
    assert check_p99_at(b, 300, 5.0, "(b)").verdict == "met"
    assert check_p99_at(summary("b", [[step(300, p99=6.0)]]), 300, 5.0, "(b)").verdict == "not met"
    short = summary("b", [[step(100), step(200, "generator-limited")]])
    assert check_p99_at(short, 300, 5.0, "(b)").verdict == "generator-limited"

    d = summary("d", [[step(200, cpu=100), step(400, cpu=200), step(600, "failed")]], cores=2)
    scaling = check_scaling(a, d, 1.8, 2)
    assert scaling.verdict == "met" and "PROJECTION" in scaling.evidence  # 400 >= 1.8 x 200, both failed
    # A search the generator cut short measured a floor of (d)'s capacity: enough when the floor already
    # reaches the factor, nothing when it does not.
    d_floor = summary(
        "d", [[step(200, cpu=100), step(400, cpu=200), step(600, "generator-limited")]], cores=2
    )
    assert check_scaling(a, d_floor, 1.8, 2).verdict == "met"  # 400 >= 1.8 x 200, and (a) failed at 300
    d_short = summary(
        "d", [[step(200, cpu=100), step(300, cpu=150), step(400, "generator-limited")]], cores=2
    )
    assert check_scaling(a, d_short, 1.8, 2).verdict == "generator-limited"  # 300 < 360: the generator
    # ... and a (d) that failed below 1.8 x a floor of (a)'s capacity missed it, whatever (a) could do.
    a_floor = summary("a", [[step(100), step(200), step(300, "generator-limited")]])
    d_failed = summary("d", [[step(200), step(300), step(400, "failed")]], cores=2)
    assert check_scaling(a_floor, d_failed, 1.8, 2).verdict == "not met"
    assert check_scaling(a_floor, d_floor, 1.8, 2).verdict == "generator-limited"  # two floors

    mem = check_memory([summary("a", [[step(100, server_rss_mb=90.0)]])], 150.0)
    assert mem.verdict == "met" and "102 KB" in mem.evidence
    assert check_memory([summary("c", [[step(100, server_rss_mb=100.0)]])], 150.0).verdict == "not met"

    assert check_webhook(8.0, 50, 10.0, 49.9).verdict == "met"
    assert check_webhook(12.0, 50, 10.0, 49.9).verdict == "not met"
    assert check_webhook(None, 50, 10.0, 0.0).verdict == "not measured"


def test_scaling_is_also_projected_at_equal_load_per_worker() -> None:
    """Two workers at 400 calls carry 200 each: compared with (a) at 200, not with (a) at its busiest."""
    a = summary("a", [[step(100, cpu=20), step(200, cpu=30), step(400, cpu=50), step(600, "failed")]])
    assert cpu_per_call_at(a.steps, 150) == pytest.approx(1.75)  # between 2.0 at 100 and 1.5 at 200
    assert cpu_per_call_at(a.steps, 50) is None and cpu_per_call_at(a.steps, 500) is None  # 600 failed
    limited = {"lateness_p99_ms": 8.0}  # generator-limited, CPU figures still usable
    d = summary("d", [[step(200, cpu=40), step(400, "generator-limited", cpu=60, **limited)]], cores=2)
    assert d.projection is not None and d.projection.at_step == 400
    matched = matched_load_scaling(a, d, workers=2)
    assert matched is not None and "(200 per worker)" in matched and "2 x 1.00 = 2.00x" in matched
    check = check_scaling(a, d, 1.8, 2)
    assert check.verdict == "generator-limited" and matched in check.evidence  # evidence, not a verdict
    busier = summary("d", [[step(400, "generator-limited", cpu=75, **limited)]], cores=2)
    assert "2 x 0.80 = 1.60x" in str(matched_load_scaling(a, busier, workers=2))


# -- rendering ------------------------------------------------------------------------------------------


def _document(opts: BenchOptions | None = None) -> dict[str, Any]:
    opts = opts or BenchOptions(runs=1)
    data = {sc.key: ScenarioData(sc, opts.server_cores(sc)) for sc in SCENARIOS[:3]}
    data["baseline"].runs.append([step(50, cpu=20), step(100, cpu=40), step(150, "generator-limited")])
    waits = {"loop_wait_ms_per_s": 12.0, "simulator_wait_ms_per_s": 250.0, "steal_percent": 0.4}
    data["a"].runs.append([step(50, cpu=30), step(100, cpu=60), step(150, "failed", cpu=95, **waits)])
    data["b"].errors.append("run 1: RuntimeError: warm-up calls never reached the provider simulator")
    for d in data.values():
        d.loads.append({"run": 1, "before": [0.5, 0.4, 0.3], "after": [0.9, 0.5, 0.3]})
    data["a"].criteria.append({"run": 1, "latency_floor_ms": 60.0, **Criteria(max_p99_ms=80.0).__dict__})
    data["a"].profile = {
        "calls": 100,
        "seconds": 9,
        **summarise_profile("main;loop;send 30\nmain;loop;parse 10\n"),
    }
    webhook = {
        "rate_per_s": 50.0,
        "achieved_rate_per_s": 49.9,
        "requests": 500,
        "answers": {"200 stream": 500},
        "round_trip_ms": {"count": 500, "mean": 3.0, "p50": 2.5, "p95": 5.0, "p99": 7.5, "max": 9.0},
        "load_before": [0.5],
        "load_after": [0.6],
    }
    machine = {
        "nproc": 2,
        "cpu_model": "Test CPU",
        "python": "3.11",
        "platform": "linux",
        "aiohttp": "3",
        "uvloop": "0.2",
        "load_average": [0.1, 0.1, 0.1],
    }
    return assemble(opts, machine, data, [webhook | {"baseline": webhook}], time.time())


def test_document_and_markdown(tmp_path: Path) -> None:
    doc = _document()
    orjson.dumps(doc)  # JSON-serialisable as is
    targets = {t["target"]: t["verdict"] for t in doc["targets"]}
    assert targets["(a) echo: >= 800 concurrent calls sustained"] == "not met"
    assert targets["webhook -> TwiML p99 <= 10 ms at 50 set-ups/s"] == "met"
    scenarios = doc["scenarios"]
    assert scenarios["a"]["ratios_to_baseline"][1] == {
        "calls": 100,
        "cpu_ms_per_call_s": 1.5,
        "latency_p50_ms": 1.0,
        "latency_p99_ms": 1.0,
        "kb_per_call": 1.0,
        "jitter_mean_ms": 1.0,
    }
    md = render_markdown(doc, "2026-01-01")
    assert "## Targets" in md and "**not met**" in md and "PROJECTION" in md
    assert "## (a) gateway, in-process echo provider" in md and "| 100 | sustained |" in md
    assert "Constant latency floor" in md and "warm-up calls never reached" in md
    assert "`send`" in md and "(2026-01-01/latency_p99.png)" in md
    assert "| 1 | baseline |" in md
    assert "| loop wait ms/s |" in md and "| 250 | 0.4 |" in md  # recorded waits and steal
    assert "(waited for a core, ms/s: gateway loop 12, simulator 250; steal 0.4 %)" in md

    path = write_results(doc, tmp_path)
    assert path.name.endswith(".md") and (tmp_path / f"{doc['date']}.json").exists()
    for name, _, _ in PLOTS:
        png = tmp_path / str(doc["date"]) / name
        assert png.exists() and png.stat().st_size < 60_000


def test_rejudge_keeps_measurements_and_reapplies_rules() -> None:
    doc = orjson.loads(orjson.dumps(_document()))
    doc["scenarios"]["a"]["runs"][0][2]["status"] = "sustained"  # as if an older rule had said so
    again = rejudge(doc)
    assert again["scenarios"]["a"]["runs"][0][2]["status"] == "failed"
    assert again["finished_at"] == doc["finished_at"] and "rejudged_at" in again
    assert again["machine"]["load_average_after"] == doc["machine"]["load_average_after"]
    assert [t["verdict"] for t in again["targets"]] == [t["verdict"] for t in _document()["targets"]]
    assert "re-judged" in render_markdown(again)
    named = rejudge(orjson.loads(orjson.dumps(_document() | {"name": "2026-01-01-evening"})))
    assert named["name"] == "2026-01-01-evening"  # written back to its own file, not the date's


def test_rejudge_command_rewrites_the_file_it_was_given(tmp_path: Path) -> None:
    """`voicegw bench --rejudge F.json` rewrites F.json and F.md, never the date's results beside it."""
    source = tmp_path / "evening.json"
    source.write_bytes(orjson.dumps(_document()))  # an older file, whatever name it carries inside
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", "--rejudge", str(source)])
    assert args.func(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evening", "evening.json", "evening.md"]
    assert "re-judged" in (tmp_path / "evening.md").read_text()


def test_profile_summary() -> None:
    p = summarise_profile("a;b;c (x.py:1) 3\na;b;c (x.py:2) 3\na;b 2\na;d 2\nnot a line\n")
    assert p["samples"] == 10
    assert p["own_percent"][0] == ["c (x.py)", 60.0]  # lines of one function add up
    assert p["inclusive_percent"][0] == ["b", 80.0]  # "a" is in every sample: the start-up chain


def test_steps_argument() -> None:
    assert _steps("50,100, 200") == (50, 100, 200)
    for bad in ("100,50", "0,10", "a,b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _steps(bad)


def test_every_target_call_count_is_a_default_step() -> None:
    """A target between two steps would be judged at the step below it."""
    assert {TARGET_A_CALLS, TARGET_B_CALLS, TARGET_B_P99_CALLS, TARGET_C_CALLS} <= set(DEFAULT_STEPS)
    assert list(DEFAULT_STEPS) == sorted(set(DEFAULT_STEPS))


def test_relay_tenant_has_no_fallback() -> None:
    tenant = relay_tenant("http://127.0.0.1:9")
    ws = tenant["workspaces"][0]
    assert ws["strategy"]["fallback_enabled"] is False
    assert {a["voice_config"].get("audio_format") for a in ws["agents"]} == {None, "pcm16_16000"}


# -- processes ------------------------------------------------------------------------------------------


def test_children_are_pinned_and_stopped_with_their_own_children(tmp_path: Path) -> None:
    def group(pgid: int) -> list[str]:
        found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True, check=False)
        return found.stdout.split()

    with Processes(tmp_path) as procs:
        child = procs.spawn("sh", ["sh", "-c", "sleep 30 & sleep 30"], [0], dict(os.environ), tmp_path)
        assert os.sched_getaffinity(child.pid) == {0}
        deadline = time.monotonic() + 5.0
        while len(group(child.pid)) < 3 and time.monotonic() < deadline:  # sh and its two sleeps
            time.sleep(0.05)
        members = group(child.pid)
        assert len(members) == 3
    assert child.popen.poll() is not None
    deadline = time.monotonic() + 5.0
    while group(child.pid) and time.monotonic() < deadline:  # reaped by init a moment later
        time.sleep(0.05)
    assert group(child.pid) == []


async def test_a_step_with_two_workers_says_how_the_calls_split_between_them(tmp_path: Path) -> None:
    """(d)'s hold figures: the largest share of the calls one worker held (half or more) and the
    busiest worker's CPU; a one-process server has neither."""
    (d,) = (sc for sc in SCENARIOS if sc.key == "d")
    env = BenchEnv.create(tmp_path)
    opts = BenchOptions(ramp_s=0.5, duration_s=2.0)
    with Processes(tmp_path) as procs:
        server = await start_server(d, env, procs, "t-d2")
        await warm_up(server, env)
        record = await measure_step(server, env, 12, opts, 0.0, Criteria())
    assert record.return_ratio > 0.99
    assert record.busiest_worker_call_share is not None and 0.5 <= record.busiest_worker_call_share <= 1.0
    assert record.busiest_worker_cpu_percent is not None and record.busiest_worker_cpu_percent > 0


async def test_a_relay_scenario_with_the_simulator_in_this_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default placement: the gateway (its own process) relays through a simulator served by the
    bench's own event loop; the warm-up calls reach it and come back, and it logs no line per session."""
    (relay,) = (sc for sc in SCENARIOS if sc.key == "b")
    env = BenchEnv.create(tmp_path)
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    with Processes(tmp_path) as procs:
        server = await start_server(relay, env, procs, "t-b")
        try:
            assert server.simulator is None and server.local_simulator is not None
            floor_ms = await warm_up(server, env)  # raises unless the simulator saw the sessions
            assert 0 < floor_ms < 100
            assert server.local_simulator.sessions_started >= 2
        finally:
            assert server.local_simulator is not None
            await server.local_simulator.stop()
    assert not [r for r in caplog.records if r.name == "aiohttp.access"]


# -- network probes -------------------------------------------------------------------------------------


async def test_webhook_probe_against_the_baseline() -> None:
    creds = Credentials(twilio_auth_token="tok")
    async with BaselineServer() as server:
        result = await measure_webhooks(server.url, creds, "+15550001111", rate=50.0, duration_s=0.2)
    assert result["requests"] == 10 and result["answers"] == {"200 stream": 10}
    assert result["round_trip_ms"]["count"] == 10


async def _relay_round_trip(
    in_out: dict[str, object], frame: bytes, output: dict[str, object] | None = None
) -> bytes:
    sim = DeepgramSimulator()
    sim.script.relay = True
    await sim.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(sim.ws_url + CONVERSE_PATH, headers={"Authorization": "Token k"}) as ws,
        ):
            settings = {
                "type": "Settings",
                "audio": {"input": in_out, "output": output or in_out},
                "agent": {"listen": {}, "think": {}, "speak": {}},
            }
            await ws.send_str(orjson.dumps(settings).decode())
            while (await ws.receive_json()).get("type") != "SettingsApplied":
                pass
            await ws.send_bytes(frame)
            while True:
                msg = await ws.receive(timeout=2.0)
                if msg.type is WSMsgType.BINARY:
                    assert (sim.sessions_started, sim.sessions_active) == (1, 1)  # the bench's warm-up check
                    return bytes(msg.data)
    finally:
        await sim.stop()


async def test_relay_sends_each_caller_frame_straight_back() -> None:
    frame = bytes(range(160))
    assert await _relay_round_trip({"encoding": "mulaw", "sample_rate": 8000}, frame) == frame
    pcm = bytes(640)
    assert await _relay_round_trip({"encoding": "linear16", "sample_rate": 16000}, pcm) == pcm


async def test_relay_converts_when_the_output_format_differs() -> None:
    """Settings with different input and output formats get each frame back re-encoded, as the
    scripted simulator would hear and answer it."""
    mulaw, pcm16 = {"encoding": "mulaw", "sample_rate": 8000}, {"encoding": "linear16", "sample_rate": 16000}
    frame = bytes(range(160))
    expected = np.frombuffer(convert_audio(frame, MULAW_8000, PCM16_16000), dtype="<i2")
    got = np.frombuffer(await _relay_round_trip(mulaw, frame, output=pcm16), dtype="<i2")
    # Equal but for the last bit or two: libsoxr's 16-bit output for the same input moved by up to 2
    # after unrelated imports in this process (memory layout, presumably), so exact bytes would flake.
    assert got.shape == expected.shape == (320,)
    assert int(np.abs(got.astype(np.int32) - expected).max()) <= 2


async def test_simulator_reports_how_late_its_own_loop_ran() -> None:
    """The relaying simulator's lateness (``GET /_sim/lag``): cumulative buckets like the gateway's
    metric, small while idle; a blocked loop shows once, in the window it happened in."""
    sim = DeepgramSimulator()
    await sim.start()

    async def buckets(http: aiohttp.ClientSession) -> dict[float, float]:
        async with http.get(sim.http_url + "/_sim/lag") as resp:
            return {float(b): float(n) for b, n in (await resp.json())["buckets"]}

    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(sim.http_url + "/_sim/lag") as resp:
                assert resp.status == 404  # not measured unless asked (the tests' scripted simulators)
            sim.watch_loop_lag()
            await asyncio.sleep(0.1)
            idle = await buckets(http)
            time.sleep(0.06)  # noqa: ASYNC251 - blocks the loop on purpose: the next tick is ~60 ms late
            await asyncio.sleep(0.05)
            blocked = await buckets(http)
            await asyncio.sleep(0.1)
            after = await buckets(http)
    finally:
        await sim.stop()
    assert idle[float("inf")] >= 10 and lag_p99_ms({}, idle) is not None and lag_p99_ms({}, idle) <= 20
    assert blocked[0.05] == blocked[float("inf")] - 1  # one tick between 50 and 100 ms late
    assert after[0.05] - blocked[0.05] == after[float("inf")] - blocked[float("inf")]  # not reported twice


def _report(p99_ms: float, lateness_ms: float = 0.5) -> LoadReport:
    """One call streaming 10 s with every frame equally late and a constant added latency."""
    config = LoadConfig(url="http://x", calls=1, credentials=Credentials(twilio_auth_token="t"))
    call = CallResult(carrier="twilio", call_sid="CA1", audio_s_sent=10.0, audio_s_received=10.0)
    histograms = RunHistograms.starting(0.0)
    for k in range(500):
        histograms.lateness.record(k * 0.02, lateness_ms)
    for t in range(100):
        histograms.latency.record(t / 10, p99_ms)
    return LoadReport(
        config=config,
        wall_s=10.0,
        results=[call],
        timeline=Timeline(),
        latency=Summary(),
        playout_latency=Summary(),
        lateness=Summary(),
        jitter_mean_ms=0.0,
        jitter_max_ms=0.0,
        histograms=histograms,
    )


def _hold(figures: dict[str, float]) -> dict[str, float]:
    return {"server_rss_mb": 100.0, "generator_cpu_percent": 50.0, "simulator_cpu_percent": 30.0} | figures


def test_loop_lag_p99_is_read_from_what_the_histogram_gained() -> None:
    inf = float("inf")
    before = {0.001: 90.0, 0.005: 100.0, 0.02: 100.0, inf: 100.0}
    after = {0.001: 1000.0, 0.005: 2085.0, 0.02: 2100.0, inf: 2100.0}  # 2000 new ticks, 15 over 5 ms
    assert lag_p99_ms(before, after) == 5.0
    assert lag_p99_ms(before, after | {0.005: 2000.0}) == 20.0  # 100 over 5 ms: p99 in the next bucket
    assert lag_p99_ms(after, after) is None  # no ticks in the window
    assert lag_p99_ms({}, {0.001: 0.0, inf: 100.0}) is None  # beyond the last bound: unknown


def test_one_long_tick_shows_beside_a_low_lag_p99() -> None:
    """A single stall fails a step's latency p99 while the loop's lag p99 stays low: the longest
    tick's bucket says whether the gateway's own loop stalled."""
    inf = float("inf")
    before = {0.005: 100.0, 0.02: 100.0, 0.5: 100.0, 1.0: 100.0, inf: 100.0}
    after = {0.005: 2095.0, 0.02: 2099.0, 0.5: 2099.0, 1.0: 2100.0, inf: 2100.0}  # one tick in (0.5, 1]
    assert lag_p99_ms(before, after) == 5.0 and lag_max_floor_ms(before, after) == 500.0
    assert lag_max_floor_ms(before, before | {inf: 100.0}) is None  # no ticks
    assert lag_max_floor_ms({}, {0.005: 10.0, inf: 10.0}) == 0.0  # every tick within the first bucket
    stalled = step(600, "failed", loop_lag_p99_ms=5.0, loop_lag_max_ms=500.0)
    assert "lag p99 <= 5 ms; its longest tick > 500 ms" in _waits(stalled.to_json())
    assert "longest tick" not in _waits(step(600, "failed", loop_lag_max_ms=0.0).to_json())


def test_a_late_simulator_explains_a_failure_but_never_voids_a_pass() -> None:
    assert simulator_saturated(["p99 added latency 30 ms > 20 ms"], 8.0, 5.0)
    assert not simulator_saturated([], 8.0, 5.0)  # sustained despite it: stands
    assert not simulator_saturated(["p99"], 3.0, 5.0) and not simulator_saturated(["p99"], None, 5.0)
    window = hold_window(2.0, 10.0)
    late = {"simulator_lateness_p99_ms": 9.0, "server_cpu_percent": 70.0}
    failing = step_record(300, _report(p99_ms=35.0), HoldFigures(**_hold(late)), 80.0, 1, Criteria(), window)
    assert failing.status == "generator-limited"
    assert failing.reasons[-1] == "simulator lateness p99 <= 9 ms (over 5): simulator saturated"
    passing = step_record(300, _report(p99_ms=4.0), HoldFigures(**_hold(late)), 80.0, 1, Criteria(), window)
    assert passing.status == "sustained" and passing.simulator_lateness_p99_ms == 9.0
    busy = _hold(late | {"server_cpu_percent": 95.0})
    assert step_record(
        300, _report(p99_ms=35.0), HoldFigures(**busy), 80.0, 1, Criteria(), window
    ).status == (
        "failed"  # a saturated server failed on its own, whoever else was late
    )


def test_a_late_generator_voids_a_pass_only_beyond_a_frame() -> None:
    """Steal or a busy core can make the generator late at any load; a step it still drove within a
    frame's time, and that passed, was carried by the gateway. Beside a failure, lateness over 5 ms
    makes the step inconclusive as before."""
    window, calm = hold_window(2.0, 10.0), HoldFigures(**_hold({"server_cpu_percent": 40.0}))

    def record(p99_ms: float, lateness_ms: float) -> StepRecord:
        return step_record(300, _report(p99_ms, lateness_ms), calm, 80.0, 1, Criteria(), window)

    within = record(4.0, lateness_ms=12.0)
    assert within.status == "sustained" and within.reasons == [] and within.lateness_p99_ms > 5
    beyond = record(4.0, lateness_ms=30.0)
    assert beyond.status == "generator-limited" and beyond.reasons[0].startswith("generator lateness p99 30")
    failing = record(35.0, lateness_ms=12.0)
    assert failing.status == "generator-limited" and len(failing.reasons) == 2
    assert record(35.0, lateness_ms=1.0).status == "failed"


def test_rejudge_applies_the_lateness_rule_to_older_verdicts() -> None:
    """A pass that an older rule voided for generator lateness within a frame is sustained on re-judge."""
    doc = orjson.loads(orjson.dumps(_document()))
    first = doc["scenarios"]["a"]["runs"][0][0]
    first |= {"status": "generator-limited", "lateness_p99_ms": 9.0}
    first["reasons"] = ["generator lateness p99 9.0 ms: load generator saturated"]
    again = rejudge(doc)["scenarios"]["a"]["runs"][0][0]
    assert again["status"] == "sustained" and again["reasons"] == []


def test_convert_audio_changes_format_only_when_needed() -> None:
    frame = bytes([0xFF]) * 160  # μ-law silence
    assert convert_audio(frame, MULAW_8000, MULAW_8000) is frame
    assert len(convert_audio(frame, MULAW_8000, PCM16_16000)) in range(600, 641)


def test_simulate_rejects_relay_where_unimplemented() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", "vapi", "--relay"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "relay" in done.stderr


async def test_relay_refuses_bad_settings_like_the_scripted_simulator() -> None:
    sim = DeepgramSimulator()
    sim.script.relay = True
    await sim.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(sim.ws_url + CONVERSE_PATH, headers={"Authorization": "Token k"}) as ws,
        ):
            assert (await ws.receive_json())["type"] == "Welcome"
            await ws.send_bytes(b"\xff" * 160)  # audio before Settings
            error = await ws.receive_json()
            assert error["type"] == "Error" and error["code"] == "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"
            assert (await ws.receive()).type is WSMsgType.CLOSE and ws.close_code == 1008
    finally:
        await sim.stop()
    assert sim.records[0].ended_by == "error"
