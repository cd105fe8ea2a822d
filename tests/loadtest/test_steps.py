"""Stepped concurrency: stop at the first step that is not sustained; a late generator is flagged."""

from __future__ import annotations

from dataclasses import replace

from loadtest.carriers.plan import CallResult, Credentials
from loadtest.runner import Criteria, LoadConfig, LoadReport, Timeline, run_steps
from loadtest.stats import Summary
from loadtest.timehist import RunHistograms


def _report(config: LoadConfig, p99: float, ratio: float, lateness_p99: float = 0.5) -> LoadReport:
    result = CallResult(carrier="twilio", call_sid="CA1", audio_s_sent=10.0, audio_s_received=10.0 * ratio)
    return LoadReport(
        config=config,
        wall_s=1.0,
        results=[result],
        timeline=Timeline(),
        latency=Summary(count=100, p50=p99 / 2, p95=p99, p99=p99, max=p99),
        playout_latency=Summary(),
        lateness=Summary(count=100, p99=lateness_p99, max=lateness_p99),
        jitter_mean_ms=0.0,
        jitter_max_ms=0.0,
        histograms=RunHistograms.starting(0.0),
    )


async def test_steps_stop_at_first_failure() -> None:
    async def fake_run(config: LoadConfig) -> LoadReport:
        return _report(config, p99=config.calls / 10, ratio=1.0 if config.calls < 300 else 0.99)

    base = LoadConfig(url="http://x", calls=0, credentials=Credentials(twilio_auth_token="t"))
    result = await run_steps(base, [50, 100, 200, 300, 400], run=fake_run)
    assert [s.calls for s in result.steps] == [50, 100, 200, 300]
    assert result.max_sustained == 200  # p99 of exactly 20 ms still counts as sustained
    assert not result.steps[-1].sustained


async def test_generator_lateness_makes_step_inconclusive() -> None:
    """Late beside a failure, or later than a frame, the generator leaves the step unjudged."""
    for p99, lateness in ((25.0, 12.0), (5.0, 30.0)):

        async def fake_run(config: LoadConfig, p99: float = p99, lateness: float = lateness) -> LoadReport:
            return _report(config, p99=p99, ratio=1.0, lateness_p99=lateness)

        base = LoadConfig(url="http://x", calls=0, credentials=Credentials(twilio_auth_token="t"))
        result = await run_steps(base, [10, 20], criteria=Criteria(), run=fake_run)
        (step,) = result.steps
        assert step.generator_limited and not step.sustained
        assert any("generator" in r for r in step.reasons)


async def test_a_pass_stands_with_the_generator_late_within_a_frame() -> None:
    async def fake_run(config: LoadConfig) -> LoadReport:
        return _report(config, p99=5.0, ratio=1.0, lateness_p99=12.0)

    base = LoadConfig(url="http://x", calls=0, credentials=Credentials(twilio_auth_token="t"))
    result = await run_steps(base, [10, 20], criteria=Criteria(), run=fake_run)
    assert [s.sustained for s in result.steps] == [True, True] and result.max_sustained == 20
    assert not any(s.generator_limited or s.reasons for s in result.steps)


def test_ratio_to_baseline() -> None:
    from loadtest.runner import ratio_to_baseline

    base = LoadConfig(url="http://x", calls=1, credentials=Credentials(twilio_auth_token="t"))
    gateway, baseline = _report(base, p99=6.0, ratio=1.0), _report(base, p99=2.0, ratio=1.0)
    ratios = ratio_to_baseline(gateway, baseline)
    assert ratios["added_latency_p99_ms"] == {"gateway": 6.0, "baseline": 2.0, "ratio": 3.0}
    assert ratios["return_ratio"]["ratio"] == 1.0
    assert ratios["server_cpu_mean_percent"]["ratio"] is None  # no pid sampled: undefined, not zero


def test_a_report_restricted_to_the_hold_window() -> None:
    """The ramp's set-up burst (late frames, slow first replies) is outside the bench's hold window."""
    started = 1000.0
    histograms = RunHistograms.starting(started)
    for offset in (0.0, 1.0):  # call 2 streams a second later, as during a ramp
        # frame k due at start + k * 20 ms: 50 ms late during the first second of the run, then 1 ms
        for k in range(250):
            due = offset + k * 0.02
            histograms.lateness.record(started + due, 50.0 if due < 1.0 else 1.0)
    for at, latency in [(0.5, 80.0), (1.5, 3.0), (2.5, 4.0), (6.0, 90.0)]:
        histograms.latency.record(started + at, latency)
    report = _report(LoadConfig(url="http://x", calls=2), p99=80.0, ratio=1.0)
    report = replace(report, histograms=histograms)
    held = report.in_window(1.0, 4.0)
    assert held.latency.count == 2 and held.latency.max == 4.0
    assert held.lateness.max == 1.0
    assert held.lateness.count == 50 * 4 + 50 * 4  # both calls' frames due in [1, 5) s
    assert report.lateness.p99 == 0.5  # the whole-run figures are left as they were
