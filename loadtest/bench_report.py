"""Writing ``voicegw bench`` results: ``<date>.json`` (everything), ``<date>.md`` (tables, targets) and
small PNG plots under ``<date>/``. Rendering works from the JSON document alone, so a results file can
be re-rendered (and tested) without re-running the bench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

PLOTS = (
    ("latency_p99.png", "latency_p99_ms", "p99 added latency (ms)"),
    ("cpu_per_call.png", "cpu_ms_per_call_s", "server CPU per call (ms per call-second)"),
    ("rss_per_call.png", "kb_per_call", "RSS per live call (KB)"),
)

_STEP_COLUMNS = (
    ("calls", "calls", "{:d}"),
    ("status", "status", "{}"),
    ("return_ratio", "frames back", "{:.4f}"),
    ("latency_p50_ms", "p50 ms", "{:.1f}"),
    ("latency_p95_ms", "p95 ms", "{:.1f}"),
    ("latency_p99_ms", "p99 ms", "{:.1f}"),
    ("latency_max_ms", "max ms", "{:.1f}"),
    ("jitter_mean_ms", "jitter ms", "{:.2f}"),
    ("lateness_p99_ms", "gen. late p99 ms", "{:.1f}"),
    ("simulator_lateness_p99_ms", "sim. late p99 <= ms", "{:g}"),
    ("loop_lag_p99_ms", "loop lag p99 <= ms", "{:g}"),
    ("server_cpu_percent", "server CPU %", "{:.0f}"),
    ("server_system_percent", "of which sys %", "{:.0f}"),
    ("cpu_ms_per_call_s", "CPU ms/call-s", "{:.2f}"),
    ("server_rss_mb", "RSS MB", "{:.0f}"),
    ("kb_per_call", "KB/call", "{:.0f}"),
    ("generator_cpu_percent", "gen. CPU %", "{:.0f}"),
    ("generator_system_percent", "of which sys %", "{:.0f}"),
    ("simulator_cpu_percent", "sim. CPU %", "{:.0f}"),
    ("loop_wait_ms_per_s", "loop wait ms/s", "{:.0f}"),
    ("generator_wait_ms_per_s", "gen. wait ms/s", "{:.0f}"),
    ("simulator_wait_ms_per_s", "sim. wait ms/s", "{:.0f}"),
    ("steal_percent", "steal %", "{:.1f}"),
    ("server_throttled_ms_per_s", "throttled ms/s", "{:.0f}"),
    ("busiest_worker_call_share", "busiest worker's calls", "{:.0%}"),
    ("busiest_worker_cpu_percent", "busiest worker CPU %", "{:.0f}"),
    ("load_before", "load before", "{:.2f}"),
    ("load_after", "load after", "{:.2f}"),
)


def _cell(fmt: str, value: Any) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _waits(step: dict[str, Any]) -> str:
    """What the cores did meanwhile, where recorded: who waited for a core, how late the gateway's loop
    ran, and the hypervisor's steal."""
    waits = [
        f"{label} {step[key]:.0f}"
        for key, label in (
            ("loop_wait_ms_per_s", "gateway loop"),
            ("generator_wait_ms_per_s", "generator"),
            ("simulator_wait_ms_per_s", "simulator"),
        )
        if step.get(key) is not None
    ]
    parts = ["waited for a core, ms/s: " + ", ".join(waits)] if waits else []
    if step.get("loop_lag_p99_ms") is not None:
        parts.append(f"gateway loop lag p99 <= {step['loop_lag_p99_ms']:g} ms")
    if step.get("loop_lag_max_ms"):
        parts.append(f"its longest tick > {step['loop_lag_max_ms']:g} ms")
    if step.get("steal_percent") is not None:
        parts.append(f"steal {step['steal_percent']:.1f} %")
    return " (" + "; ".join(parts) + ")" if parts else ""


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _budget_rule(options: dict[str, Any]) -> str:
    """How ``--cpu-budget`` capped the servers, if it did."""
    budget, quota = options.get("cpu_budget"), options.get("cpu_quota_per_worker")
    if budget is None or quota is None:
        return ""
    return (
        f". **Every server capped at {budget:g} of a core per worker** (a cgroup CPU quota of "
        f"{quota['quota_us']} µs per {quota['period_us']} µs, one cgroup per worker; throttled ms/s is "
        "how long per second the workers, summed, waited out their quota; each worker's cgroup weighs 100 "
        "times the default, so it has its share of a core when it wants it). (d)'s two workers are pinned "
        "one per core, the first where (a)'s only one runs, the second beside the load generator, which "
        "gets the rest of the machine. (d) over (a) compares equal budgets; whole-core targets are not "
        "judged"
    )


def render_markdown(doc: dict[str, Any], plots_dir: str | None = None) -> str:
    """The human summary: machine, targets with evidence, one table per scenario, ratios, plots."""
    m, o = doc["machine"], doc["options"]
    out = [
        f"# voicegw bench — {doc['date']}",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), Python {m['python']}, "
        f"aiohttp {m['aiohttp']}, uvloop {m['uvloop']}. Load average before {m['load_average']}, "
        f"after {m['load_average_after']} (other jobs shared this machine).",
        "",
        f"Server pinned to core {o['server_core']} (scenario (d): both cores); load generator and "
        f"provider simulator on core {o['generator_core']}"
        + (
            " (the simulator in the generator's own event loop: its CPU counts in gen. CPU %)"
            if o.get("simulator_in_process")
            else ""
        )
        + f". Steps {o['steps']}, calls ramped in over "
        f"{o['ramp_s']:g} s, "
        f"held {o['duration_s']:g} s"
        + (f" and judged from {o['settle_s']:g} s after the ramp" if o.get("settle_s", 1.0) != 1.0 else "")
        + f"; figures are medians of {o['runs']} run(s)"
        + (" (QUICK smoke test: tiny steps, not a measurement)" if o["quick"] else "")
        + (
            f". Verdicts re-judged from the stored measurements on {doc['rejudged_at']}"
            if "rejudged_at" in doc
            else ""
        )
        + _budget_rule(o)
        + ". A step is sustained when ≥ "
        f"{doc['criteria']['min_return_ratio'] * 100:g} % of frames come back, p99 added latency ≤ "
        f"{doc['criteria']['max_p99_ms']:g} ms and no call fails; a failing step is **generator-limited** "
        "when the generator's own lateness p99 exceeds "
        f"{doc['criteria']['max_generator_lateness_p99_ms']:g} ms while the server still had CPU to "
        "spare (then the gateway was not shown to fail). "
        + _pass_rule(doc)
        + " Likewise when a failing step had the relaying "
        "simulator, on the generator's core, late by the same limit (its event loop's lag p99, a bucket "
        "bound as for the gateway's below; a late "
        "simulator delays the echo but does not lighten the load, so it never voids a sustained step). "
        "The search goes on past generator-limited steps while their CPU figures stay usable, and "
        "stops at a failed step; max sustained is the highest "
        "sustained step below the first failed one. CPU is sampled from /proc over "
        "the hold window (server process and its children), and added latency and generator lateness "
        "are judged over the same window (every call streaming; the ramp's set-up burst excluded, its "
        "whole-run p99s are in the JSON); of which sys % is the part of that CPU spent in the kernel "
        "(system time: on loopback a socket write also runs the peer's TCP receive); lost frames and "
        "failed calls count over the whole run; KB/call = (RSS - idle RSS) / calls. Wait ms/s is "
        "run-queue wait over the hold window "
        "(/proc/<pid>/task/<tid>/schedstat): how long per second the server's event loop, the "
        "generator's loop or the simulator's threads were ready to run but had no core; the simulator "
        "shares the generator's core, and its delays count as added latency. Loop lag p99 is how late the "
        "gateway's own 5 ms timer ran (voicegw_event_loop_lag_seconds, a bucket's upper bound; one worker "
        "only): every frame waited at least that long in the gateway. Steal % is the share of every "
        "core's time the hypervisor gave to someone else.",
        "",
        "## Targets",
        "",
    ]
    out += _table(
        ["target", "verdict", "evidence"],
        [[t["target"], f"**{t['verdict']}**", t["evidence"]] for t in doc["targets"]],
    )
    out += [
        "",
        "PROJECTION = 1 core (2 for (d); under a CPU budget, the servers' budget) / server CPU per call "
        "at the largest step whose CPU figure is usable (sustained, or generator-limited with the "
        "generator's lateness p99 <= 20 ms and >= 99 % of frames back: the gateway still handled every "
        "frame); the marginal variant subtracts the idle CPU and divides the rest by the CPU each extra "
        "call adds between the two largest usable steps (left out when that is under a quarter of the "
        "average call's: the steps differed by less than the noise). Both are extrapolations, not "
        "measurements; latency usually degrades before a core is 100 % busy.",
        "",
    ]
    for key, s in doc["scenarios"].items():
        out += [f"## ({key}) {s['title']}" if key != "baseline" else f"## {s['title']}", ""]
        if s.get("number"):
            out.append(f"Dialled number {s['number']}, {s['workers']} worker(s), cores {s['server_cores']}.")
        proj = s.get("projection")
        summary = (
            f"Max sustained (median of runs): **{s['max_sustained']}** calls "
            f"(per run {s['max_sustained_per_run']}; limited by: {s['stopped_by']})."
        )
        if proj:
            summary += (
                f" CPU PROJECTION: ~{proj['projected_calls']} calls on {proj['cores']} core(s) "
                f"({proj['cpu_ms_per_call_s']:.2f} ms CPU per call-second at {proj['at_step']} calls"
                + ("" if proj["from_clean_step"] else ", a generator-limited step")
                + ")"
                + (
                    f"; from the marginal cost ({proj['marginal_cpu_ms_per_call_s']:.2f} ms per "
                    f"call-second over {proj['fixed_cpu_percent']:.0f} % idle CPU): "
                    f"~{proj['marginal_projected_calls']} calls"
                    if proj.get("marginal_projected_calls") is not None
                    else ""
                )
                + "."
            )
        out += [summary, ""]
        loads = "; ".join(f"run {x['run']}: {x['before']} → {x.get('after')}" for x in s["load"])
        if loads:
            out += [f"Load average (1/5/15 min) before → after: {loads}.", ""]
        floors = [c for c in s.get("criteria", []) if c["max_p99_ms"] != doc["criteria"]["max_p99_ms"]]
        if floors:
            c = floors[0]
            out += [
                f"**Constant latency floor**: {c['latency_floor_ms']:.0f} ms added at 2 calls "
                f"(run {c['run']}), so steps here are judged on what load adds above it: p99 <= "
                f"{c['max_p99_ms']:.0f} ms, frames back >= {c['min_return_ratio']:.4f} (audio still in "
                "flight at hang-up is not lost). The absolute figures are in the table.",
                "",
            ]
        rows = [[_cell(fmt, step.get(name)) for name, _, fmt in _STEP_COLUMNS] for step in s["steps"]]
        if rows:
            out += _table([label for _, label, _ in _STEP_COLUMNS], rows)
            out.append("")
        if s["ratios_to_baseline"]:
            out += ["Ratio to the baseline at the same step (gateway / baseline):", ""]
            out += _table(
                ["calls", "CPU/call", "p50", "p99", "KB/call", "jitter"],
                [
                    [str(r["calls"])]
                    + [
                        _cell("{:.2f}x", r[k])
                        for k in (
                            "cpu_ms_per_call_s",
                            "latency_p50_ms",
                            "latency_p99_ms",
                            "kb_per_call",
                            "jitter_mean_ms",
                        )
                    ]
                    for r in s["ratios_to_baseline"]
                ],
            )
            out.append("")
        for err in s["errors"]:
            out += [f"Error: `{err.splitlines()[0]}`", ""]
        failures = [
            f"{step['calls']} calls (run {i + 1}): " + "; ".join(step["reasons"]) + _waits(step)
            for i, run in enumerate(s["runs"])
            for step in run
            if step["reasons"]
        ]
        if failures:
            out += ["Why steps were not sustained:", ""] + [f"- {f}" for f in failures] + [""]
        retried = [
            f"{step['calls']} calls (run {i + 1}) measured again after: " + " / ".join(step["retried_after"])
            for i, run in enumerate(s["runs"])
            for step in run
            if step.get("retried_after")
        ]
        if retried:
            out += ["Steps measured again (the generator stalled):", ""] + [f"- {r}" for r in retried] + [""]
    wh = doc["webhook"]
    out += ["## Webhook → TwiML", ""]
    if wh["runs"]:
        header = ["run", "server", "rate/s", "requests", "answers", "p50 ms", "p95 ms", "p99 ms", "max ms"]
        rows = [
            [
                str(i + 1),
                server,
                f"{w['achieved_rate_per_s']:.1f}",
                str(w["requests"]),
                str(w["answers"]),
                *(f"{w['round_trip_ms'][k]:.1f}" for k in ("p50", "p95", "p99", "max")),
                f"{w['load_before']} → {w['load_after']}",
            ]
            for i, run in enumerate(wh["runs"])
            for server, w in (("gateway", run), ("baseline", run.get("baseline")))
            if w is not None
        ]
        out += _table([*header, "load before → after"], rows)
        out.append("")
    else:
        out += ["Not run.", ""]
    out += _frame_cost(doc.get("frame_cost") or {})
    profiles = {k: s["profile"] for k, s in doc["scenarios"].items() if s.get("profile")}
    if profiles:
        out += [
            "## Profile hot spots (py-spy, separate unmeasured step)",
            "",
            "Python-level sampling of the gateway process (idle samples dropped). Own time in "
            "`Runner.run (asyncio/runners.py)` is native code under the event loop: uvloop/libuv callbacks, "
            "socket syscalls and C-extension work (aiohttp's frame reader, orjson) that py-spy cannot "
            "see into.",
            "",
        ]
        for key, p in profiles.items():
            if "error" in p:
                out += [f"({key}): {p['error']}", ""]
                continue
            out += [
                f"({key}) {p['calls']} calls, {p['samples']} samples over {p['seconds']} s; own time:",
                "",
            ]
            out += _table(["function", "own %"], [[f"`{n}`", f"{v:.1f}"] for n, v in p["own_percent"]])
            out += ["", "Inclusive:", ""]
            out += _table(
                ["function", "incl. %"], [[f"`{n}`", f"{v:.1f}"] for n, v in p["inclusive_percent"]]
            )
            out.append("")
    if plots_dir is not None:
        out += ["## Plots", ""] + [f"![{label}]({plots_dir}/{name})" for name, _, label in PLOTS] + [""]
    stem = doc.get("name") or doc["date"]
    out.append(f"Raw figures: [{stem}.json]({stem}.json)")
    return "\n".join(out) + "\n"


def _frame_cost(costs: dict[str, Any]) -> list[str]:
    """The counted per-frame costs: figures to compare across days, which the timed ones are not."""
    if not costs:
        return []
    out = [
        "## Cost per frame (counted, not timed)",
        "",
        "A real `voicegw serve` carrying a few calls of each scenario's kind (`loadtest/frame_cost.py`). "
        "Instructions: user space under callgrind, 4 calls, a window with no call taken off, per caller "
        "frame carried in and back. System calls: `strace -c` on every thread, 20 calls; reads per caller "
        "frame, writes per frame sent back, event-loop waits per caller frame, and the rest per second. "
        "Both repeat within a few per cent whatever the host's speed.",
        "",
    ]
    rows = []
    for key, c in costs.items():
        ins, sys_ = c.get("instructions", {}), c.get("syscalls", {})
        rows.append(
            [
                f"({key})",
                f"{ins['instructions_per_frame']:,}" if "instructions_per_frame" in ins else "-",
                f"{ins['idle_instructions_per_s']:,}" if "idle_instructions_per_s" in ins else "-",
                *(
                    f"{sys_[k]:.2f}" if k in sys_ else "-"
                    for k in ("reads_per_frame", "writes_per_frame", "waits_per_frame")
                ),
                f"{sys_['other_per_s']:.0f}" if "other_per_s" in sys_ else "-",
            ]
        )
    header = ["scenario", "instructions/frame", "idle instructions/s", "reads/frame", "writes/frame"]
    out += _table([*header, "waits/frame", "other syscalls/s"], rows)
    skipped = [
        f"- ({key}) {what}: {r['skipped']}"
        for key, c in costs.items()
        for what, r in c.items()
        if "skipped" in r
    ]
    return [*out, "", *([*skipped, ""] if skipped else [])]


def write_plots(doc: dict[str, Any], directory: Path) -> list[Path]:
    """One small PNG per figure, every scenario a line over concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure, label in PLOTS:
        fig, ax = plt.subplots(figsize=(6, 3), dpi=72)
        for key, s in doc["scenarios"].items():
            steps = s["steps"]
            if steps:
                ax.plot(
                    [x["calls"] for x in steps], [x[figure] for x in steps], "o-", markersize=3, label=key
                )
        ax.set_xlabel("concurrent calls")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = directory / name
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def write_results(doc: dict[str, Any], out: Path, plots: bool = True) -> Path:
    """Writes ``<name>.json``, the plots (in ``<name>/``) and ``<name>.md`` into ``out`` (``name``
    defaults to the date); returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    stem = doc.get("name") or doc["date"]
    (out / f"{stem}.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    plots_dir = None
    if plots and any(s["runs"] for s in doc["scenarios"].values()):  # not for `--only cost`
        write_plots(doc, out / stem)
        plots_dir = stem
    md = out / f"{stem}.md"
    md.write_text(render_markdown(doc, plots_dir), encoding="utf-8")
    return md


def _pass_rule(doc: dict[str, Any]) -> str:
    """How a late generator weighs on a step that passes; results judged before the rule had no limit
    (a late generator voided any step then; ``--rejudge`` applies the rule to them)."""
    limit = doc["criteria"].get("max_lateness_of_a_pass_p99_ms")
    if limit is None:
        return "A late generator made any step generator-limited, even one that passed."
    return (
        f"A step that passes stands with the generator late up to {limit:g} ms p99 (one frame: every "
        "frame still went out within a frame's time, so the whole load arrived, only burstier, and added "
        "latency is timed from each frame's actual send); later than that it is generator-limited too."
    )
