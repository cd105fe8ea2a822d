"""What ``voicegw bench`` measured, as plain data: per-step records, medians over runs, the targets.

Pure functions only (no sockets, no processes), so the bench's judgement is unit-tested: how a step
is classified, where a step search stops, how runs are combined, what the CPU projection is and
whether each of the issue's targets is met.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from typing import Any, Literal

from loadtest.runner import Criteria

Status = Literal["sustained", "failed", "generator-limited"]
Verdict = Literal["met", "not met", "generator-limited", "not measured"]

# A server this busy is the bottleneck, whatever the generator's lateness says.
SATURATED_FRACTION = 0.9
# A scenario whose single-call latency exceeds this has a constant delay built in (e.g. resampler filters):
# its steps are judged on the latency it adds above that floor.
FLOOR_THRESHOLD_MS = 5.0


def criteria_for_floor(floor_ms: float, call_s: float, base: Criteria | None = None) -> Criteria:
    """The step criteria for a scenario with a constant latency ``floor_ms`` measured at light load.

    A fixed delay is not a capacity limit: p99 may be ``floor_ms`` above the usual bound, and the audio
    still in flight when the caller hangs up (``floor_ms`` of it per call of ``call_s``) does not count
    as lost. Below ``FLOOR_THRESHOLD_MS`` the usual criteria apply unchanged.
    """
    base = base or Criteria()
    if floor_ms <= FLOOR_THRESHOLD_MS:
        return base
    in_flight = floor_ms / 1000.0 / call_s
    return replace(
        base,
        max_p99_ms=base.max_p99_ms + floor_ms,
        min_return_ratio=base.min_return_ratio - in_flight,
    )


@dataclass(kw_only=True)
class HoldFigures:
    """What the processes did over one step's hold window (every call streaming): CPU, RSS at its end,
    who waited for a core and how late each event loop ran."""

    server_cpu_percent: float  # % of one core, server process and its children
    server_rss_mb: float  # at the end of the hold window
    generator_cpu_percent: float
    simulator_cpu_percent: float = 0.0  # the provider simulator shares the generator's core
    # Why a step failed when CPU % does not say (since the fifth session; None in older files or
    # without schedstat): run-queue wait in ms per second of the server's event loop(s), the
    # generator's loop and the simulator's threads, and the hypervisor's steal over every core.
    loop_wait_ms_per_s: float | None = None
    generator_wait_ms_per_s: float | None = None
    simulator_wait_ms_per_s: float | None = None
    steal_percent: float | None = None
    # Event-loop lag p99 over the hold window, a histogram bucket's upper bound (``gateway/loop_lag.py``):
    # the relaying simulator's (``GET /_sim/lag``; None without one) and the gateway's
    # (``voicegw_event_loop_lag_seconds``; None with several workers, or unreadable).
    simulator_lateness_p99_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    # The gateway's longest tick, as the lower bound of its bucket: its loop ran at least this late
    # once. A single stall (one pause of the loop) fails a step's p99 while its lag p99 stays low.
    loop_lag_max_ms: float | None = None
    # Kernel (system) time within server and generator CPU %, % of one core (since the thirteenth
    # session; None in older files): on loopback over half of a relaying process's CPU, which no
    # change to its Python code can reach.
    server_system_percent: float | None = None
    generator_system_percent: float | None = None
    # With ``--cpu-budget`` (since the fifteenth session): ms per second the server's workers, summed,
    # were held back by their CPU quota. Well above zero means the budget, not the code, set the pace.
    server_throttled_ms_per_s: float | None = None
    # With several workers (since the fifteenth session): the largest share of the calls' connections
    # one worker held at the hold's end (0.5 is an even split between two: the kernel's SO_REUSEPORT
    # hash decides), and the busiest worker's CPU %, against its core or its budget.
    busiest_worker_call_share: float | None = None
    busiest_worker_cpu_percent: float | None = None


@dataclass(kw_only=True)
class StepRecord(HoldFigures):
    """One concurrency step of one run. CPU, RSS, added latency and generator lateness are taken over
    the hold window (every call streaming, ramp and settling excluded); lost audio and failed calls
    over the whole run. Stored flat: the hold window's figures sit beside the step's own."""

    calls: int
    status: Status
    reasons: list[str]
    return_ratio: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    latency_samples: int
    jitter_mean_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    idle_rss_mb: float  # after start-up and warm-up, before the first step
    failed_calls: int = 0
    refused_calls: int = 0
    top_errors: list[tuple[str, int]] = field(default_factory=list)
    load_before: float = 0.0  # 1-minute load average
    load_after: float = 0.0
    # Whole run, ramp included (the latency and lateness fields above cover the hold window only,
    # since the fourth session; older result files judged the whole run and lack these two).
    latency_p99_run_ms: float | None = None
    lateness_p99_run_ms: float | None = None
    # Why an earlier attempt at this step was measured again (``search_steps``); empty when none was.
    retried_after: list[str] = field(default_factory=list)

    @property
    def cpu_ms_per_call_s(self) -> float:
        """Milliseconds of server CPU per second of one live call."""
        return self.server_cpu_percent * 10.0 / self.calls if self.calls else 0.0

    @property
    def kb_per_call(self) -> float:
        """RSS growth per live call over the idle process."""
        return max(0.0, self.server_rss_mb - self.idle_rss_mb) * 1024.0 / self.calls if self.calls else 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu_ms_per_call_s"] = round(self.cpu_ms_per_call_s, 3)
        data["kb_per_call"] = round(self.kb_per_call, 1)
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}


def classify(
    reasons: Sequence[str],
    generator_late: bool,
    server_cpu_percent: float,
    server_cores: float,
    *,
    lost_or_failed: bool = False,
    lateness_p99_ms: float = 0.0,
) -> Status:
    """Sustained when nothing failed. A failing step is blamed on the generator only if the generator was
    late and the server still had CPU to spare; a saturated server failed on its own. Lost audio or failed
    calls are the gateway's unless the generator was more than a frame late: a late generator delays
    frames, it neither drops them nor breaks calls."""
    if not reasons:
        return "sustained"
    if lost_or_failed and lateness_p99_ms <= MAX_USABLE_LATENESS_MS:
        return "failed"
    saturated = server_cpu_percent >= SATURATED_FRACTION * 100.0 * server_cores
    if generator_late and not saturated:
        return "generator-limited"
    return "failed"


def simulator_saturated(
    reasons: Sequence[str], simulator_lateness_p99_ms: float | None, max_ms: float
) -> bool:
    """Whether a step that failed may have failed on the relaying simulator: its own event loop's lag
    p99 above ``max_ms`` (the generator's lateness limit). Only a step failing on other grounds is
    explained by it: a late simulator delays the echo (its delay counts in the added latency) but,
    unlike a late generator, never lightens the load the gateway carried, so a step sustained
    despite it stands."""
    return bool(reasons) and simulator_lateness_p99_ms is not None and simulator_lateness_p99_ms > max_ms


def lag_p99_ms(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The p99 of what a cumulative histogram (bucket upper bound in seconds -> count) gained between two
    scrapes, as the upper bound of the bucket it falls in (ms; None: no ticks, or beyond the last bound)."""
    bounds = sorted(after)
    gained = [after[b] - before.get(b, 0.0) for b in bounds]
    if not gained or gained[-1] <= 0:
        return None
    for bound, count in zip(bounds, gained, strict=True):
        if count >= 0.99 * gained[-1]:
            return None if bound == float("inf") else bound * 1000.0
    return None


def lag_max_floor_ms(before: dict[float, float], after: dict[float, float]) -> float | None:
    """How late the longest tick between two scrapes of a cumulative histogram was at least (ms): the
    largest bucket bound that not every new tick fell within (0 when all did; None: no ticks)."""
    bounds = sorted(after)
    gained = {b: after[b] - before.get(b, 0.0) for b in bounds}
    total = gained[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    return max((b * 1000.0 for b in bounds if gained[b] < total), default=0.0)


async def search_steps(
    steps: Sequence[int], measure: Callable[[int], Awaitable[StepRecord]], retries: int = 1
) -> list[StepRecord]:
    """Measures ``steps`` in order until one fails, or until the generator is so late that even the CPU
    figures stop meaning anything (see ``cpu_usable``). A mildly generator-limited step does not end the
    search: its CPU per call feeds the projection, and a later sustained step still counts.

    A step that would end the search for the generator's lateness is measured again, up to ``retries``
    times: it showed nothing about the gateway, and one stall of the load side (seen: 65 ms late p99 at
    25 relayed calls, the generator at 10 % of its core) would otherwise void a whole run. The step's
    record says why it was retried; a failed step is never measured again."""
    records: list[StepRecord] = []
    for calls in steps:
        record = await measure(calls)
        voided: list[str] = []
        while _load_side_stall(record) and len(voided) < retries:
            voided.append(f"{record.status}: " + "; ".join(record.reasons))
            record = await measure(calls)
        record.retried_after = voided
        records.append(record)
        if not cpu_usable(record.status, record.lateness_p99_ms, record.return_ratio):
            break
    return records


def _load_side_stall(record: StepRecord) -> bool:
    return record.status == "generator-limited" and not cpu_usable(
        record.status, record.lateness_p99_ms, record.return_ratio
    )


# A generator later than one frame (p99) may deliver fewer than 50 frames per second per call within the
# hold window, so the server's CPU per call-second would read low.
MAX_USABLE_LATENESS_MS = 20.0
MIN_USABLE_RETURN_RATIO = 0.99


def cpu_usable(status: Status, lateness_p99_ms: float, return_ratio: float) -> bool:
    """Whether a step's server CPU per call is a fair figure: sustained, or generator-limited while the
    generator still delivered every frame within a frame's time."""
    if status == "sustained":
        return True
    return (
        status == "generator-limited"
        and lateness_p99_ms <= MAX_USABLE_LATENESS_MS
        and return_ratio >= MIN_USABLE_RETURN_RATIO
    )


def max_sustained(records: Sequence[StepRecord]) -> int:
    """The highest sustained step below the first failed one. A generator-limited step on the way
    was not judged (the load generator, not the gateway, was late), so it neither counts nor ends
    the gateway's measured capacity; a later step it did sustain does."""
    best = 0
    for r in records:
        if r.status == "failed":
            break
        if r.status == "sustained":
            best = r.calls
    return best


def stopped_by(records: Sequence[StepRecord]) -> Status | Literal["end of steps"]:
    """What ended the measured capacity: the first step above ``max_sustained`` not sustained."""
    best = max_sustained(records)
    return next((r.status for r in records if r.calls > best and r.status != "sustained"), "end of steps")


# -- combining runs -----------------------------------------------------------------------------------

MEDIAN_FIGURES = (
    "return_ratio",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "jitter_mean_ms",
    "lateness_p99_ms",
    "server_cpu_percent",
    "server_rss_mb",
    "generator_cpu_percent",
    "simulator_cpu_percent",
    "cpu_ms_per_call_s",
    "kb_per_call",
)
# Medians over the runs that recorded them (older result files did not).
OPTIONAL_MEDIAN_FIGURES = (
    "simulator_lateness_p99_ms",
    "loop_lag_p99_ms",
    "loop_wait_ms_per_s",
    "generator_wait_ms_per_s",
    "simulator_wait_ms_per_s",
    "steal_percent",
    "server_system_percent",
    "generator_system_percent",
    "server_throttled_ms_per_s",
    "busiest_worker_call_share",
    "busiest_worker_cpu_percent",
)


@dataclass(frozen=True)
class StepMedian:
    """One step's figures as the median over the runs that reached it."""

    calls: int
    runs: int
    statuses: tuple[Status, ...]
    figures: dict[str, float]
    load_before: float
    load_after: float

    @property
    def status(self) -> Status:
        """The most common status over runs; ties go to the worse one (failed, then generator-limited)."""
        order: tuple[Status, ...] = ("failed", "generator-limited", "sustained")
        return max(order, key=lambda s: (self.statuses.count(s), -order.index(s)))

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "runs": self.runs,
            "status": self.status,
            "statuses": list(self.statuses),
            **{k: round(v, 3) for k, v in self.figures.items()},
            "load_before": round(self.load_before, 2),
            "load_after": round(self.load_after, 2),
        }


def combine_runs(runs: Sequence[Sequence[StepRecord]]) -> list[StepMedian]:
    by_calls: dict[int, list[StepRecord]] = {}
    for records in runs:
        for r in records:
            by_calls.setdefault(r.calls, []).append(r)
    out = []
    for calls in sorted(by_calls):
        records = by_calls[calls]
        figures = {
            name: statistics.median(float(getattr(r, name)) for r in records) for name in MEDIAN_FIGURES
        }
        for name in OPTIONAL_MEDIAN_FIGURES:
            recorded = [float(v) for r in records if (v := getattr(r, name)) is not None]
            if recorded:
                figures[name] = statistics.median(recorded)
        out.append(
            StepMedian(
                calls=calls,
                runs=len(records),
                statuses=tuple(r.status for r in records),
                figures=figures,
                load_before=max(r.load_before for r in records),
                load_after=max(r.load_after for r in records),
            )
        )
    return out


def median_max_sustained(runs: Sequence[Sequence[StepRecord]]) -> int:
    """The median over runs of each run's highest sustained step (a measured step, never interpolated)."""
    return int(statistics.median_low([max_sustained(r) for r in runs])) if runs else 0


@dataclass(frozen=True)
class Projection:
    """1 core (or ``cores``) divided by the server CPU per call at the largest step with usable CPU figures:
    the capacity this machine's gateway would reach if the generator kept up and CPU were the only limit."""

    calls: int
    at_step: int
    cpu_ms_per_call_s: float
    cores: float  # under ``--cpu-budget``, the servers' budget (e.g. 0.4, 0.8), not whole cores
    from_clean_step: bool
    from_usable_step: bool
    # From the two largest clean steps: idle CPU (timers, writer, health sync) plus a marginal cost per call.
    # Per-call CPU falls as the idle share is spread over more calls, so this one is usually higher.
    marginal_calls: int | None = None
    marginal_cpu_ms_per_call_s: float | None = None
    fixed_cpu_percent: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "projected_calls": self.calls,
            "at_step": self.at_step,
            "cpu_ms_per_call_s": round(self.cpu_ms_per_call_s, 3),
            "cores": self.cores,
            "from_clean_step": self.from_clean_step,
            "from_usable_step": self.from_usable_step,
            "marginal_projected_calls": self.marginal_calls,
            "marginal_cpu_ms_per_call_s": _round(self.marginal_cpu_ms_per_call_s),
            "fixed_cpu_percent": _round(self.fixed_cpu_percent),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


MIN_MARGINAL_SHARE = 0.25  # below this share of the average cost per call, a marginal cost is noise


def project_capacity(steps: Sequence[StepMedian], cores: float) -> Projection | None:
    """From the largest step whose CPU figures are usable (``cpu_usable``), else the first step."""
    usable = [
        s for s in steps if cpu_usable(s.status, s.figures["lateness_p99_ms"], s.figures["return_ratio"])
    ]
    pick = usable[-1] if usable else (steps[0] if steps else None)
    if pick is None or pick.figures["cpu_ms_per_call_s"] <= 0:
        return None
    per_call = pick.figures["cpu_ms_per_call_s"]
    clean = pick.status == "sustained"
    projection = Projection(int(cores * 1000.0 / per_call), pick.calls, per_call, cores, clean, bool(usable))
    if len(usable) < 2:
        return projection
    low, high = usable[-2], usable[-1]
    slope = (high.figures["server_cpu_percent"] - low.figures["server_cpu_percent"]) / (
        high.calls - low.calls
    )
    if slope * 10.0 < MIN_MARGINAL_SHARE * per_call:
        # Each extra call "costing" a small fraction of the average call (or nothing): the two steps'
        # CPU differs by less than the host's noise (the ninth session's (a): 0.03 against 0.70 ms).
        return projection
    fixed = max(0.0, high.figures["server_cpu_percent"] - slope * high.calls)
    return replace(
        projection,
        marginal_calls=int((100.0 * cores - fixed) / slope),
        marginal_cpu_ms_per_call_s=slope * 10.0,
        fixed_cpu_percent=fixed,
    )


# -- targets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioSummary:
    """What the targets need from one scenario."""

    key: str
    steps: tuple[StepMedian, ...]
    max_sustained: int
    stopped_by: str
    projection: Projection | None

    def step(self, calls: int) -> StepMedian | None:
        return next((s for s in self.steps if s.calls == calls), None)

    def largest_clean(self) -> StepMedian | None:
        clean = [s for s in self.steps if s.status == "sustained"]
        return clean[-1] if clean else None


@dataclass(frozen=True)
class TargetCheck:
    target: str
    verdict: Verdict
    evidence: str

    def to_json(self) -> dict[str, str]:
        return {"target": self.target, "verdict": self.verdict, "evidence": self.evidence}


def _projection_text(s: ScenarioSummary) -> str:
    p = s.projection
    if p is None:
        return "no CPU projection"
    where = f"at {p.at_step} calls"
    if not p.from_clean_step:
        where += (
            ", a generator-limited step that still delivered every frame"
            if p.from_usable_step
            else ", a step whose CPU figure is doubtful"
        )
    text = (
        f"PROJECTION {p.calls} calls on {p.cores:g} core(s) "
        f"({p.cpu_ms_per_call_s:.2f} ms CPU per call-second {where})"
    )
    if p.marginal_calls is not None and p.marginal_cpu_ms_per_call_s is not None:
        text += (
            f", {p.marginal_calls} from the marginal cost ({p.marginal_cpu_ms_per_call_s:.2f} ms per "
            f"call-second over {p.fixed_cpu_percent or 0.0:.0f} % idle CPU)"
        )
    return text


def check_capacity(s: ScenarioSummary | None, target_calls: int, label: str) -> TargetCheck:
    """``target_calls`` sustained: met when measured; generator-limited when the generator stopped the search
    below it (the projection says what the gateway alone might do); not met when the gateway failed."""
    name = f"{label}: >= {target_calls} concurrent calls sustained"
    if s is None or not s.steps:
        return TargetCheck(name, "not measured", "scenario not run")
    measured = f"measured max sustained {s.max_sustained} (limited by: {s.stopped_by})"
    evidence = f"{measured}; {_projection_text(s)}"
    failed = [step.calls for step in s.steps if step.status == "failed"]
    if failed:
        evidence += f"; the gateway failed at {failed[0]} calls"
    if s.max_sustained >= target_calls:
        return TargetCheck(name, "met", evidence)
    if failed and failed[0] <= target_calls:
        return TargetCheck(name, "not met", evidence)
    if s.stopped_by == "generator-limited":
        return TargetCheck(name, "generator-limited", evidence)
    if s.stopped_by == "end of steps":
        return TargetCheck(name, "not measured", f"steps ended below the target; {evidence}")
    return TargetCheck(name, "not met", evidence)


def check_cpu_ratio(
    s: ScenarioSummary | None, baseline: ScenarioSummary | None, max_ratio: float
) -> TargetCheck:
    name = f"(a): CPU per call <= {max_ratio}x baseline's"
    if s is None or baseline is None:
        return TargetCheck(name, "not measured", "scenario or baseline not run")
    common = [
        (a, b)
        for a in s.steps
        for b in baseline.steps
        if a.calls == b.calls and a.status == "sustained" and b.status == "sustained"
    ]
    if not common:
        return TargetCheck(name, "not measured", "no concurrency step sustained by both")
    a, b = common[-1]
    ours, theirs = a.figures["cpu_ms_per_call_s"], b.figures["cpu_ms_per_call_s"]
    ratio = ours / theirs if theirs else float("inf")
    evidence = f"at {a.calls} calls: {ours:.2f} vs {theirs:.2f} ms CPU per call-second = {ratio:.2f}x"
    return TargetCheck(name, "met" if ratio <= max_ratio else "not met", evidence)


def check_p99_at(s: ScenarioSummary | None, calls: int, max_p99_ms: float, label: str) -> TargetCheck:
    name = f"{label}: p99 added latency <= {max_p99_ms:g} ms at {calls} calls"
    if s is None:
        return TargetCheck(name, "not measured", "scenario not run")
    step = s.step(calls)
    if step is None:
        verdict: Verdict = "generator-limited" if s.stopped_by == "generator-limited" else "not met"
        if s.stopped_by == "end of steps":
            verdict = "not measured"
        return TargetCheck(name, verdict, f"step {calls} not reached (limited by: {s.stopped_by})")
    p99 = step.figures["latency_p99_ms"]
    evidence = f"p99 {p99:.1f} ms at {calls} calls (step {step.status})"
    if p99 <= max_p99_ms:
        return TargetCheck(name, "met", evidence)
    return TargetCheck(
        name, "generator-limited" if step.status == "generator-limited" else "not met", evidence
    )


def cpu_per_call_at(steps: Sequence[StepMedian], calls: float) -> float | None:
    """CPU per call-second at ``calls``, linear between the two usable steps around it (None outside)."""
    usable = [
        (s.calls, s.figures["cpu_ms_per_call_s"])
        for s in steps
        if cpu_usable(s.status, s.figures["lateness_p99_ms"], s.figures["return_ratio"])
    ]
    for (c0, v0), (c1, v1) in pairwise(usable):
        if c0 <= calls <= c1:
            return v0 + (v1 - v0) * (calls - c0) / (c1 - c0)
    return next((v for c, v in usable if c == calls), None)


def matched_load_scaling(a: ScenarioSummary, d: ScenarioSummary, workers: int) -> str | None:
    """(d) against (a) at the same load per worker. CPU per call falls as a process carries more calls
    (its idle work spreads thinner), so comparing (d)'s largest usable step with (a)'s compares a
    lightly loaded pair of workers with a busy single one. Matched per worker, the ratio isolates what a
    second worker costs each call (shared caches, the shared listening port); ``workers`` x that
    efficiency is the scaling, assuming each worker's cost falls with load as (a)'s does."""
    if d.projection is None or not d.projection.from_usable_step:
        return None
    per_worker = d.projection.at_step / workers
    theirs = cpu_per_call_at(a.steps, per_worker)
    ours = d.projection.cpu_ms_per_call_s
    if theirs is None or ours <= 0:
        return None
    efficiency = theirs / ours
    return (
        f"at equal load per worker: (d) {ours:.2f} ms CPU per call-second at {d.projection.at_step} "
        f"calls ({per_worker:g} per worker) vs (a) {theirs:.2f} at {per_worker:g} calls, "
        f"PROJECTION {workers} x {efficiency:.2f} = {workers * efficiency:.2f}x"
    )


def check_scaling(
    a: ScenarioSummary | None,
    d: ScenarioSummary | None,
    factor: float,
    workers: int,
    cpu_budget: float | None = None,
) -> TargetCheck:
    """(d)'s measured capacity over (a)'s. Under a CPU budget both ran with the same budget per worker,
    so the ratio is still a measured one; the budget is named in the evidence."""
    name = f"(d): {workers} workers >= {factor}x (a)"
    if a is None or d is None or not a.steps or not d.steps:
        return TargetCheck(name, "not measured", "scenario not run")
    measured = f" = {d.max_sustained / a.max_sustained:.2f}x" if a.max_sustained else ""
    budget = f", every worker capped at {cpu_budget:g} core" if cpu_budget is not None else ""
    parts = [
        f"measured max sustained {d.max_sustained} vs {a.max_sustained}{measured}{budget} "
        f"(searches stopped: {d.stopped_by} / {a.stopped_by})"
    ]
    if a.projection and d.projection:
        ratio = d.projection.calls / a.projection.calls if a.projection.calls else 0.0
        parts.append(f"PROJECTION {d.projection.calls} vs {a.projection.calls} = {ratio:.2f}x")
    matched = matched_load_scaling(a, d, workers)
    if matched:
        parts.append(matched)
    evidence = "; ".join(parts)
    # A search that failed measured the gateway's capacity; one cut short (by the generator, or by the
    # end of the steps) measured only a floor of it. So (d) met the target if it carried the factor
    # times a capacity (a) failed above, however its own search ended; and missed it if it failed
    # below the factor times a floor of (a)'s. Anything else compares a floor with a floor.
    met = a.max_sustained > 0 and d.max_sustained >= factor * a.max_sustained
    if met and a.stopped_by == "failed":
        return TargetCheck(name, "met", evidence)
    if not met and d.stopped_by == "failed" and a.max_sustained > 0:
        return TargetCheck(name, "not met", evidence)
    if "generator-limited" in (a.stopped_by, d.stopped_by):
        return TargetCheck(name, "generator-limited", evidence)
    return TargetCheck(name, "not measured", f"a search ended before failing; {evidence}")


def check_memory(scenarios: Sequence[ScenarioSummary], max_kb: float) -> TargetCheck:
    name = f"memory <= {max_kb:g} KB RSS per live call"
    figures = []
    for s in scenarios:
        step = s.largest_clean() or (s.steps[-1] if s.steps else None)
        if step is not None:
            figures.append((s.key, step.calls, step.figures["kb_per_call"]))
    if not figures:
        return TargetCheck(name, "not measured", "no gateway scenario measured")
    evidence = "; ".join(f"({k}) {kb:.0f} KB at {calls} calls" for k, calls, kb in figures)
    worst = max(kb for _, _, kb in figures)
    return TargetCheck(name, "met" if worst <= max_kb else "not met", evidence)


def check_webhook(p99_ms: float | None, rate: float, max_p99_ms: float, achieved_rate: float) -> TargetCheck:
    name = f"webhook -> TwiML p99 <= {max_p99_ms:g} ms at {rate:g} set-ups/s"
    if p99_ms is None:
        return TargetCheck(name, "not measured", "webhook test not run")
    evidence = f"p99 {p99_ms:.1f} ms (achieved {achieved_rate:.1f} set-ups/s)"
    return TargetCheck(name, "met" if p99_ms <= max_p99_ms else "not met", evidence)
