"""ProbePlan: which providers are due for an active probe."""

from __future__ import annotations

import pytest

from routing.health import HealthBoard, HealthPolicy
from routing.model import HealthView, ProviderHealth
from routing.probes import ProbePlan

A, B, C = ("elevenlabs", "us"), ("deepgram", "us"), ("openai", "us")


def test_never_probed_targets_are_due_in_order_up_to_the_tick_limit() -> None:
    plan = ProbePlan(interval_s=30.0, max_per_tick=2)
    assert plan.due([A, B, C, A], HealthView(), now=0.0) == [A, B]


def test_least_recently_probed_first_and_interval_respected() -> None:
    plan = ProbePlan(interval_s=30.0, max_per_tick=3)
    plan.mark_probed(*A, now=0.0)
    plan.mark_probed(*B, now=10.0)
    assert plan.due([A, B, C], HealthView(), now=20.0) == [C]
    assert plan.due([A, B, C], HealthView(), now=40.0) == [C, A, B]


def test_open_breakers_busy_trials_and_live_traffic_are_skipped() -> None:
    view = HealthView(
        {
            A: ProviderHealth(status="down", breaker="open"),
            B: ProviderHealth(status="degraded", breaker="half_open", trial_busy=True),
            C: ProviderHealth(idle_s=5.0),
        }
    )
    assert ProbePlan(interval_s=30.0, max_per_tick=5).due([A, B, C], view, now=100.0) == []


def test_half_open_provider_is_due_so_the_probe_can_be_the_trial() -> None:
    board = HealthBoard(HealthPolicy(cooldown_s=1.0))
    board.observe_error(*A, "auth", now=0.0)
    plan = ProbePlan(interval_s=0.5, max_per_tick=5)
    assert plan.due([A], board.view(0.6), now=0.6) == []  # open
    assert plan.due([A], board.view(1.0), now=1.0) == [A]  # half-open, idle 1.0 s
    assert board.try_acquire_trial(*A, now=1.0)
    assert plan.due([A], board.view(1.0), now=1.0) == []  # the probe holds the trial


def test_unlisted_targets_are_forgotten() -> None:
    plan = ProbePlan(interval_s=30.0)
    plan.mark_probed(*A, now=0.0)
    plan.due([B], HealthView(), now=1.0)
    assert plan.due([A], HealthView(), now=2.0) == [A]


def test_bad_settings_rejected() -> None:
    with pytest.raises(ValueError):
        ProbePlan(interval_s=0)
    with pytest.raises(ValueError):
        ProbePlan(max_per_tick=0)
