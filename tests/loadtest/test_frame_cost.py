"""The per-frame counts' parsing and reporting (loadtest/frame_cost.py). Running them needs valgrind
and a minute per scenario, so the suite checks what turns the tools' output into figures; the
system-call count itself runs for real in tests/e2e/test_hot_path_syscalls.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from loadtest.bench import BenchOptions, assemble, machine_info, rejudge
from loadtest.bench_report import render_markdown, write_results
from loadtest.frame_cost import FRAME_ENTRY, parse_callgrind, parse_strace_summary, syscalls_per_frame

# A callgrind dump in its documented format, cut down: names are compressed to "(id)" after their
# first use, under fn= (the function) and cfn= (a callee), and "calls=" follows the cfn it counts.
CALLGRIND = f"""# callgrind format
version: 1
desc: Trigger: dump load
events: Ir
fn=(1) uv_run
0 10
cfn=(2) CPyDef_media____CarrierStream____process
calls=30 0
0 900
fn=(2)
0 20
cfn=(3) {FRAME_ENTRY}
calls=25 0
0 500
fn=(4) CPyDef_other
cfn=(3)
calls=5 0
0 100
cfn=(2)
calls=7 0
0 50
totals: 123456
"""

STRACE = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 60.00    0.060000           6     10100           write
 30.00    0.030000           3     10050           read
  5.00    0.005000           2      1500           epoll_pwait
  4.00    0.004000         100        40         3 futex
  1.00    0.001000           1        20           getpid
------ ----------- ----------- --------- --------- ----------------
100.00    0.100000           4     21710         3 total
"""


def test_callgrind_totals_and_calls_to_the_frame_entry() -> None:
    assert parse_callgrind(CALLGRIND) == (123456, 30)  # 25 + 5: calls from every caller, by id too


def test_strace_summary_and_per_frame_figures() -> None:
    counts = parse_strace_summary(STRACE)
    assert counts == {"write": 10100, "read": 10050, "epoll_pwait": 1500, "futex": 40, "getpid": 20}
    assert syscalls_per_frame(counts, frames_in=10000, frames_out=10000, window_s=4.0) == {
        "reads_per_frame": 1.005,
        "writes_per_frame": 1.01,
        "waits_per_frame": 0.15,
        "other_per_s": 15.0,
    }


def _costs() -> dict[str, Any]:
    instructions = {"calls": 4, "window_s": 4.0, "frames": 824, "instructions_per_frame": 49_408}
    syscalls = {"reads_per_frame": 1.0, "writes_per_frame": 1.0, "waits_per_frame": 0.2, "other_per_s": 31.0}
    return {
        "b": {"instructions": instructions | {"idle_instructions_per_s": 2_680_000}, "syscalls": syscalls},
        "c": {"instructions": {"skipped": "valgrind is not installed"}, "syscalls": syscalls},
    }


def test_the_counts_are_reported_and_survive_a_rejudge(tmp_path: Path) -> None:
    doc = assemble(BenchOptions(runs=1), machine_info(), {}, [], time.time(), frame_cost=_costs())
    md = render_markdown(doc)
    assert "## Cost per frame (counted, not timed)" in md
    assert "| (b) | 49,408 | 2,680,000 | 1.00 | 1.00 | 0.20 | 31 |" in md
    assert "| (c) | - | - | 1.00 | 1.00 | 0.20 | 31 |" in md
    assert "- (c) instructions: valgrind is not installed" in md
    again = rejudge(orjson.loads(orjson.dumps(doc)))
    assert again["frame_cost"] == doc["frame_cost"]
    write_results(doc, tmp_path)  # a run of the counts alone has no plots to draw
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".md"]
    assert "## Plots" not in (tmp_path / f"{doc['date']}.md").read_text()
    named = render_markdown(doc | {"name": "2026-01-01-evening"})
    assert named.endswith("Raw figures: [2026-01-01-evening.json](2026-01-01-evening.json)\n")


def test_the_counts_run_by_default_or_when_asked_for_alone() -> None:
    assert BenchOptions().counts_frame_cost()
    assert not BenchOptions(only=("a",)).counts_frame_cost()
    assert not BenchOptions.quick_mode().counts_frame_cost()
    assert BenchOptions.quick_mode(only=("cost",)).counts_frame_cost()
    assert not BenchOptions(frame_cost=False).counts_frame_cost()
