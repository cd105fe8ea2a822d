"""Many simulated calls against one gateway: ramp, sample, summarise; and stepped-concurrency search."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import numpy as np

from loadtest.audio import AudioSource, ToneBursts
from loadtest.carriers.call import place_call
from loadtest.carriers.plan import CallPlan, CallResult, Carrier, Credentials
from loadtest.carriers.telnyx_api import TelnyxApi
from loadtest.codec import Encoding
from loadtest.pacer import Pacer
from loadtest.procstat import ProcSampler
from loadtest.stats import Summary
from loadtest.timehist import RunHistograms, TimeHistogram

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadConfig:
    """One load run: ``calls`` calls started evenly over ``ramp_s``, each streaming ``duration_s``."""

    url: str
    calls: int
    ramp_s: float = 0.0
    duration_s: float = 30.0
    carrier: Carrier = "twilio"
    to: str = "+15550100001"
    from_: str = "+15550199999"
    credentials: Credentials = field(default_factory=Credentials.from_env)
    gateway_pids: tuple[int, ...] = ()
    telnyx_api_port: int = 0
    telnyx_encoding: Encoding = "PCMU"
    audio: AudioSource = field(default_factory=ToneBursts)
    tick_s: float = 0.002
    sample_interval_s: float = 1.0
    drain_s: float = 0.5


PROGRESS_WINDOW_S = 10.0


@dataclass(frozen=True)
class Progress:
    """A snapshot for the progress line."""

    elapsed_s: float
    placed: int
    live: int
    ended: int
    frames_sent: int
    frames_returned: int
    p99_ms: float  # added latency over the last PROGRESS_WINDOW_S seconds


@dataclass
class Timeline:
    """Per-sample series (``t`` in seconds since the run started)."""

    t: list[float] = field(default_factory=list)
    live_calls: list[int] = field(default_factory=list)
    gateway_cpu: list[float] = field(default_factory=list)
    gateway_rss_mb: list[float] = field(default_factory=list)
    generator_cpu: list[float] = field(default_factory=list)


@dataclass
class LoadReport:
    """Everything a load run measured; ``to_json`` is what ``report.json`` holds."""

    config: LoadConfig
    wall_s: float
    results: list[CallResult]
    timeline: Timeline
    latency: Summary
    playout_latency: Summary
    lateness: Summary
    jitter_mean_ms: float
    jitter_max_ms: float
    histograms: RunHistograms  # over run time: latencies by burst arrival, lateness by frame due time
    telnyx_hangups: int = 0

    def in_window(self, start_s: float, length_s: float) -> LoadReport:
        """This report with added latency and generator lateness restricted to what happened
        ``start_s`` … ``start_s + length_s`` after the run began (e.g. the bench's hold window,
        once every call streams: the same window its CPU figures come from), in whole seconds of
        run time (the histograms' slots). Lost audio and failed calls still count over the whole run."""
        end_s = start_s + length_s
        return replace(
            self,
            latency=self.histograms.latency.summary(start_s, end_s),
            lateness=self.histograms.lateness.summary(start_s, end_s),
        )

    @property
    def placed(self) -> int:
        return len(self.results)

    @property
    def refused(self) -> int:
        return sum(r.refused for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.results)

    @property
    def frames_sent(self) -> int:
        return sum(r.frames_sent for r in self.results)

    @property
    def frames_returned(self) -> float:
        """Returned audio in 20 ms frame equivalents (the gateway may re-chunk)."""
        return sum(r.audio_s_received for r in self.results) / 0.020

    @property
    def return_ratio(self) -> float:
        sent = sum(r.audio_s_sent for r in self.results)
        return sum(r.audio_s_received for r in self.results) / sent if sent else 0.0

    def gateway_cpu(self) -> Summary:
        return Summary.of(self.timeline.gateway_cpu)

    def top_errors(self, limit: int = 10) -> list[tuple[str, int]]:
        counts = Counter(e for r in self.results for e in r.errors)
        return counts.most_common(limit)

    def to_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "config": {
                "url": cfg.url,
                "calls": cfg.calls,
                "ramp_s": cfg.ramp_s,
                "duration_s": cfg.duration_s,
                "carrier": cfg.carrier,
                "to": cfg.to,
                "telnyx_encoding": cfg.telnyx_encoding,
                "gateway_pids": list(cfg.gateway_pids),
                "tick_s": cfg.tick_s,
            },
            "wall_s": round(self.wall_s, 3),
            "calls": {"placed": self.placed, "refused": self.refused, "failed": self.failed},
            "frames": {
                "sent": self.frames_sent,
                "returned": round(self.frames_returned, 1),
                "return_ratio": round(self.return_ratio, 6),
            },
            "added_latency_ms": self.latency.to_json(),
            "playout_latency_ms": self.playout_latency.to_json(),
            "jitter_ms": {"mean": round(self.jitter_mean_ms, 3), "max": round(self.jitter_max_ms, 3)},
            "generator_lateness_ms": self.lateness.to_json(),
            "bursts": {
                "sent": sum(r.bursts_sent for r in self.results),
                "lost": sum(r.bursts_lost for r in self.results),
                "answered": sum(r.bursts_answered for r in self.results),
                "spurious": sum(r.spurious_onsets for r in self.results),
            },
            "marks": {
                "received": sum(r.marks_received for r in self.results),
                "echoed_played": sum(r.marks_echoed_played for r in self.results),
                "echoed_cleared": sum(r.marks_echoed_cleared for r in self.results),
                "clears": sum(r.clears_received for r in self.results),
            },
            "ended_by": dict(Counter(r.ended_by or "unknown" for r in self.results)),
            "telnyx_rest_hangups": self.telnyx_hangups,
            "gateway": {
                "cpu_percent": self.gateway_cpu().to_json(),
                "rss_mb_max": round(max(self.timeline.gateway_rss_mb, default=0.0), 1),
            },
            "generator_cpu_percent": Summary.of(self.timeline.generator_cpu).to_json(),
            "timeline": {
                "t": [round(x, 3) for x in self.timeline.t],
                "live_calls": self.timeline.live_calls,
                "gateway_cpu": [round(x, 1) for x in self.timeline.gateway_cpu],
                "gateway_rss_mb": [round(x, 1) for x in self.timeline.gateway_rss_mb],
                "generator_cpu": [round(x, 1) for x in self.timeline.generator_cpu],
            },
            "added_latency_over_time": self.histograms.latency.to_json(),
            "generator_lateness_over_time": self.histograms.lateness.to_json(),
            "top_errors": [[e, n] for e, n in self.top_errors()],
        }


ProgressCallback = Callable[[Progress], None]


async def run_load(config: LoadConfig, progress: ProgressCallback | None = None) -> LoadReport:
    """Runs one load test against ``config.url`` and returns its report (never raises for call failures)."""
    _raise_fd_limit()
    plan = CallPlan(
        carrier=config.carrier,
        to=config.to,
        from_=config.from_,
        duration_s=config.duration_s,
        audio=config.audio,
        drain_s=config.drain_s,
        telnyx_encoding=config.telnyx_encoding,
    )
    results: list[CallResult] = []
    pacer = Pacer(tick_s=config.tick_s)
    gateway = ProcSampler(config.gateway_pids) if config.gateway_pids else None
    generator = ProcSampler((os.getpid(),))
    timeline = Timeline()
    started = time.monotonic()
    histograms = RunHistograms.starting(started)
    telnyx_api = TelnyxApi(port=config.telnyx_api_port) if config.carrier == "telnyx" else None
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with contextlib.AsyncExitStack() as stack:
        if telnyx_api is not None:
            await stack.enter_async_context(telnyx_api)
            log.info("fake Telnyx API on %s", telnyx_api.base_url)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        calls = asyncio.get_running_loop().create_task(
            _launch(session, config, plan, pacer, telnyx_api, histograms, results.append, started)
        )
        frozen = False
        while not calls.done():
            await asyncio.wait([calls], timeout=config.sample_interval_s)
            _sample(timeline, results, gateway, generator, started)
            if progress is not None:
                progress(_progress(results, histograms.latency, started))
            if not frozen and _all_streaming(results, config.calls):
                # The calls' long-lived objects leave the garbage collector's view: a full
                # collection over hundreds of calls paused the pacer 50-65 ms; from here on only
                # per-frame garbage is young.
                gc.freeze()
                frozen = True
                stack.callback(gc.unfreeze)
        await calls
        await pacer.aclose()
    return _summarise(config, results, timeline, histograms, started, telnyx_api)


async def _launch(
    session: aiohttp.ClientSession,
    config: LoadConfig,
    plan: CallPlan,
    pacer: Pacer,
    telnyx_api: TelnyxApi | None,
    histograms: RunHistograms,
    on_placed: Callable[[CallResult], None],
    started: float,
) -> None:
    """Starts calls on an absolute ramp schedule (one task per call, none per frame)."""
    tasks: list[asyncio.Task[CallResult]] = []
    interval = config.ramp_s / config.calls if config.calls else 0.0
    loop = asyncio.get_running_loop()
    for i in range(config.calls):
        delay = started + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(
            loop.create_task(
                place_call(
                    session,
                    config.url,
                    plan,
                    credentials=config.credentials,
                    pacer=pacer,
                    telnyx_api=telnyx_api,
                    on_placed=on_placed,
                    histograms=histograms,
                )
            )
        )
    await asyncio.gather(*tasks)


def _sample(
    timeline: Timeline,
    results: list[CallResult],
    gateway: ProcSampler | None,
    generator: ProcSampler,
    started: float,
) -> None:
    timeline.t.append(time.monotonic() - started)
    timeline.live_calls.append(
        sum(1 for r in results if r.ended_at is None and r.media_started_at is not None)
    )
    if gateway is not None:
        g = gateway.sample()
        timeline.gateway_cpu.append(g.cpu_percent)
        timeline.gateway_rss_mb.append(g.rss_mb)
    timeline.generator_cpu.append(generator.sample().cpu_percent)


def _progress(results: list[CallResult], latency: TimeHistogram, started: float) -> Progress:
    elapsed = time.monotonic() - started
    recent = latency.summary(max(0.0, elapsed - PROGRESS_WINDOW_S))
    ended = sum(1 for r in results if r.ended_at is not None)
    return Progress(
        elapsed_s=elapsed,
        placed=len(results),
        live=len(results) - ended,
        ended=ended,
        frames_sent=sum(r.frames_sent for r in results),
        frames_returned=round(sum(r.audio_s_received for r in results) / 0.020),
        p99_ms=recent.p99,
    )


def _summarise(
    config: LoadConfig,
    results: list[CallResult],
    timeline: Timeline,
    histograms: RunHistograms,
    started: float,
    telnyx_api: TelnyxApi | None,
) -> LoadReport:
    jitters = [r.jitter_ms for r in results if r.frames_received > 1]
    return LoadReport(
        config=config,
        wall_s=time.monotonic() - started,
        results=results,
        timeline=timeline,
        latency=histograms.latency.summary(),
        playout_latency=histograms.playout.summary(),
        lateness=histograms.lateness.summary(),
        jitter_mean_ms=float(np.mean(jitters)) if jitters else 0.0,
        jitter_max_ms=max(jitters, default=0.0),
        histograms=histograms,
        telnyx_hangups=telnyx_api.hangups if telnyx_api is not None else 0,
    )


def _all_streaming(results: list[CallResult], calls: int) -> bool:
    """Every call placed and past its set-up (streaming or already over)."""
    return len(results) == calls and all(
        r.media_started_at is not None or r.ended_at is not None for r in results
    )


def _raise_fd_limit() -> None:
    """Hundreds of calls need more sockets than the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- stepped concurrency -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Criteria:
    """When a step counts as sustained. A step that fails while the generator ran late (lateness p99
    over ``max_generator_lateness_p99_ms``) is inconclusive, not failed. A step that passes stands
    while the generator's lateness p99 is within ``max_lateness_of_a_pass_p99_ms`` (one frame): every
    frame still went out within a frame's time, so the gateway carried the whole load, only burstier,
    and added latency is timed from each frame's actual send. Beyond a frame, frames may fall out of
    the window and the load would read lighter than it was."""

    min_return_ratio: float = 0.999
    max_p99_ms: float = 20.0
    max_generator_lateness_p99_ms: float = 5.0
    max_lateness_of_a_pass_p99_ms: float = 20.0


@dataclass(frozen=True)
class StepOutcome:
    calls: int
    report: LoadReport
    sustained: bool
    reasons: tuple[str, ...]
    generator_limited: bool


@dataclass(frozen=True)
class StepsResult:
    steps: tuple[StepOutcome, ...]

    @property
    def max_sustained(self) -> int:
        """The highest concurrency sustained before the first failing step (0 if none)."""
        best = 0
        for step in self.steps:
            if not step.sustained:
                break
            best = step.calls
        return best


def judge(report: LoadReport, criteria: Criteria) -> tuple[bool, tuple[str, ...], bool]:
    """(sustained, reasons it was not, generator-limited) for one step's report."""
    reasons = step_reasons(report, criteria)
    late = lateness_reasons(report.lateness.p99, reasons, criteria)
    return not (reasons or late), (*reasons, *late), bool(late)


def step_reasons(report: LoadReport, criteria: Criteria) -> tuple[str, ...]:
    """Why the gateway's side of a step was not sustained: audio lost, added latency, calls failed or
    refused (the generator's lateness is weighed apart, by ``lateness_reasons``)."""
    reasons = []
    if report.return_ratio < criteria.min_return_ratio:
        reasons.append(f"return ratio {report.return_ratio:.4f} < {criteria.min_return_ratio}")
    if report.latency.count == 0:
        reasons.append("no latency samples")
    elif report.latency.p99 > criteria.max_p99_ms:
        reasons.append(f"p99 added latency {report.latency.p99:.1f} ms > {criteria.max_p99_ms} ms")
    if report.failed:
        reasons.append(f"{report.failed} calls failed")
    if report.refused:
        reasons.append(f"{report.refused} calls refused")
    return tuple(reasons)


GENERATOR_LATE = "generator lateness p99"  # how the reason below begins (a re-judge replaces it)


def lateness_reasons(
    lateness_p99_ms: float, other_reasons: Sequence[str], criteria: Criteria
) -> tuple[str, ...]:
    """The generator's lateness as a reason the step was not sustained, when it is one: beside another
    reason (then the step may have failed on the generator), or alone when beyond a frame."""
    if lateness_p99_ms <= criteria.max_generator_lateness_p99_ms:
        return ()
    if not other_reasons and lateness_p99_ms <= criteria.max_lateness_of_a_pass_p99_ms:
        return ()
    return (f"{GENERATOR_LATE} {lateness_p99_ms:.1f} ms: load generator saturated",)


async def run_steps(
    config: LoadConfig,
    steps: Sequence[int],
    criteria: Criteria = Criteria(),
    run: Callable[[LoadConfig], Awaitable[LoadReport]] = run_load,
    on_step: Callable[[StepOutcome], None] | None = None,
) -> StepsResult:
    """Runs ``steps`` concurrency levels in order, stopping after the first that is not sustained."""
    outcomes: list[StepOutcome] = []
    for calls in steps:
        report = await run(replace(config, calls=calls))
        sustained, reasons, generator_limited = judge(report, criteria)
        outcome = StepOutcome(calls, report, sustained, reasons, generator_limited)
        outcomes.append(outcome)
        if on_step is not None:
            on_step(outcome)
        if not sustained:
            break
    return StepsResult(tuple(outcomes))


def ratio_to_baseline(report: LoadReport, baseline: LoadReport) -> dict[str, dict[str, float | None]]:
    """Each headline figure of ``report`` next to the baseline's and as a ratio (None when undefined).

    Run both at the same concurrency on the same machine: the ratio removes what the network, aiohttp
    and JSON cost anyway, leaving what the gateway itself adds.
    """

    def figures(r: LoadReport) -> dict[str, float]:
        return {
            "added_latency_p50_ms": r.latency.p50,
            "added_latency_p99_ms": r.latency.p99,
            "playout_latency_p99_ms": r.playout_latency.p99,
            "jitter_mean_ms": r.jitter_mean_ms,
            "return_ratio": r.return_ratio,
            "server_cpu_mean_percent": r.gateway_cpu().mean,
            "server_rss_max_mb": max(r.timeline.gateway_rss_mb, default=0.0),
        }

    ours, theirs = figures(report), figures(baseline)
    return {
        name: {
            "gateway": ours[name],
            "baseline": theirs[name],
            "ratio": ours[name] / theirs[name] if theirs[name] else None,
        }
        for name in ours
    }
