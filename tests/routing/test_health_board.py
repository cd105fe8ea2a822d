"""HealthBoard examples: circuit breaker, EWMA, windowed error rate, rows and merge, JSON view."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import ErrorKind
from routing.health import HealthBoard, HealthPolicy

P, R = "deepgram", "us"
POLICY = HealthPolicy(window_s=10.0, bucket_s=1.0, cooldown_s=1.0, trial_timeout_s=0.5, remote_ttl_s=5.0)


def board(node: str = "node-a") -> HealthBoard:
    return HealthBoard(POLICY, node_id=node)


def fail(b: HealthBoard, n: int, now: float, kind: str = "provider_down") -> None:
    for _ in range(n):
        b.observe_error(P, R, kind, now)


def succeed(b: HealthBoard, n: int, now: float) -> None:
    for _ in range(n):
        b.observe_connect(P, R, 100.0, now)


# ------------------------------------------------------------------ breaker


def test_no_trip_below_minimum_sample() -> None:
    b = board()
    fail(b, 4, now=0.0)
    h = b.view(0.0).get(P, R)
    assert (h.breaker, h.status, h.samples, h.error_rate) == ("closed", "healthy", 4, 1.0)
    fail(b, 1, now=0.1)
    h = b.view(0.1).get(P, R)
    assert (h.breaker, h.status) == ("open", "down")


def test_trips_at_half_failures_over_minimum_sample() -> None:
    b = board()
    succeed(b, 3, now=0.0)
    fail(b, 2, now=0.0)
    h = b.view(0.0).get(P, R)
    assert (h.breaker, h.status, h.error_rate) == ("closed", "degraded", 0.4)
    fail(b, 1, now=0.0)
    assert b.view(0.0).get(P, R).breaker == "open"


@pytest.mark.parametrize("kind", [ErrorKind.AUTH, ErrorKind.QUOTA, "auth", "quota"])
def test_auth_and_quota_trip_at_once(kind: str) -> None:
    b = board()
    succeed(b, 10, now=0.0)
    b.observe_error(P, R, kind, now=0.0, message="401 invalid key")
    h = b.view(0.0).get(P, R)
    assert (h.breaker, h.status) == ("open", "down")
    assert h.last_error == f"{kind}: 401 invalid key"


def test_workspace_key_auth_error_never_trips_the_shared_breaker() -> None:
    b = board()
    for _ in range(10):
        b.observe_error(P, R, "auth", now=0.0, key_source="workspace")
    h = b.view(0.0).get(P, R)
    assert (h.breaker, h.samples, h.last_error) == ("closed", 0, "auth")


def test_config_errors_are_not_the_providers_fault() -> None:
    b = board()
    fail(b, 10, now=0.0, kind="config")
    h = b.view(0.0).get(P, R)
    assert (h.breaker, h.samples, h.last_error) == ("closed", 0, "config")


def test_unknown_error_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown error kind 'boom'"):
        board().observe_error(P, R, "boom", now=0.0)


def test_half_open_grants_exactly_one_trial() -> None:
    b = board()
    fail(b, 1, now=0.0, kind="auth")
    assert not b.try_acquire_trial(P, R, now=0.5)  # still cooling down
    assert b.view(1.0).get(P, R).breaker == "half_open"
    assert b.view(1.0).get(P, R).status == "degraded"
    assert b.try_acquire_trial(P, R, now=1.0)
    assert not b.try_acquire_trial(P, R, now=1.1)  # concurrent calls are refused
    assert b.view(1.1).get(P, R).trial_busy
    assert b.try_acquire_trial(P, R, now=1.6)  # lease lapsed without an outcome
    b.release_trial(P, R)
    assert b.try_acquire_trial(P, R, now=1.7)


def test_trial_success_closes_and_clears_the_window() -> None:
    b = board()
    fail(b, 5, now=0.0)
    assert b.try_acquire_trial(P, R, now=1.0)
    b.observe_connect(P, R, 80.0, now=1.2)
    h = b.view(1.2).get(P, R)
    assert (h.breaker, h.status, h.samples, h.error_rate) == ("closed", "healthy", 1, 0.0)
    assert b.try_acquire_trial(P, R, now=1.3) and b.try_acquire_trial(P, R, now=1.3)


def test_trial_failure_reopens_for_another_cooldown() -> None:
    b = board()
    fail(b, 5, now=0.0)
    assert b.try_acquire_trial(P, R, now=1.0)
    b.observe_error(P, R, "timeout", now=1.2)
    assert b.view(1.2).get(P, R).breaker == "open"
    assert not b.try_acquire_trial(P, R, now=2.1)
    assert b.try_acquire_trial(P, R, now=2.2)


def test_clean_end_is_evidence_not_an_extra_outcome() -> None:
    b = board()
    succeed(b, 1, now=0.0)
    b.observe_success(P, R, now=0.2)
    assert b.view(0.2).get(P, R).samples == 1
    fail(b, 5, now=0.3)
    assert b.try_acquire_trial(P, R, now=1.3)
    b.observe_success(P, R, now=1.4)  # a call that outlived the trip ended fine
    assert b.view(1.4).get(P, R).breaker == "closed"


def test_every_call_dropping_reaches_the_trip_rate() -> None:
    b = board()
    for i in range(3):
        b.observe_connect(P, R, 100.0, now=i * 0.1)
        b.observe_drop(P, R, now=i * 0.1 + 0.05)
    h = b.view(0.3).get(P, R)
    assert (h.error_rate, h.breaker) == (0.5, "open")


def test_drop_counts_as_failure_but_never_trips_alone() -> None:
    b = board()
    b.observe_drop(P, R, now=0.0)
    h = b.view(0.0).get(P, R)
    assert (h.breaker, h.samples, h.error_rate) == ("closed", 1, 1.0)
    assert h.last_error is not None and h.last_error.startswith("drop")


def test_closed_or_unknown_provider_always_admits() -> None:
    b = board()
    assert b.try_acquire_trial("never-seen", R, now=0.0)
    succeed(b, 1, now=0.0)
    assert all(b.try_acquire_trial(P, R, now=0.0) for _ in range(5))


# ------------------------------------------------------------------ latency and window


def test_ewma_latency() -> None:
    b = board()
    b.observe_connect(P, R, 100.0, now=0.0)
    assert b.view(0.0).get(P, R).latency_ms == 100.0
    b.observe_connect(P, R, 200.0, now=0.0)
    assert b.view(0.0).get(P, R).latency_ms == pytest.approx(125.0)  # 0.25*200 + 0.75*100
    b.observe_first_audio(P, R, 800.0, now=0.0)
    b.observe_first_audio(P, R, 400.0, now=0.0)
    assert b.view(0.0).get(P, R).first_audio_ms == pytest.approx(700.0)
    assert b.view(0.0).get(P, R).samples == 2  # first audio is not an outcome


def test_slow_connects_degrade() -> None:
    b = board()
    b.observe_connect(P, R, 2500.0, now=0.0)
    assert b.view(0.0).get(P, R).status == "degraded"
    b2 = board()
    b2.observe_first_audio(P, R, 3500.0, now=0.0)
    assert b2.view(0.0).get(P, R).status == "degraded"


def test_error_rate_forgets_outcomes_older_than_the_window() -> None:
    b = board()
    fail(b, 3, now=0.5)
    succeed(b, 3, now=5.5)
    assert b.view(9.9).get(P, R).error_rate == 0.5
    h = b.view(10.5).get(P, R)  # the bucket holding the failures has left the 10 s window
    assert (h.samples, h.error_rate) == (3, 0.0)
    assert b.view(100.0).get(P, R).samples == 0


def test_window_memory_is_bounded() -> None:
    b = board()
    for i in range(5000):
        b.observe_connect(P, R, 100.0, now=i * 0.37)
    window = b._tracks[(P, R)].window
    assert len(window._ids) == len(window._good) == len(window._bad) == 10


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        HealthPolicy(window_s=1.0, bucket_s=5.0)
    with pytest.raises(ValueError):
        HealthPolicy(latency_alpha=0.0)


# ------------------------------------------------------------------ rows and merge


def test_to_rows_matches_provider_health_status_columns() -> None:
    b = board()
    b.observe_connect(P, R, 123.4, now=100.0)
    fail(b, 1, now=101.0, kind="auth")
    [row] = b.to_rows(now_wall_s=1_700_000_010, now=101.5)
    details = json.loads(row.pop("details"))
    assert row == {
        "provider": P,
        "region": R,
        "status": "down",
        "last_check": 1_700_000_009,  # wall time of the latest observation, 9.5 truncated
        "error_rate": 0.5,
        "avg_latency": 123,
    }
    assert details == {
        "node": "node-a",
        "breaker": "open",
        "samples": 2,
        "first_audio_ms": None,
        "last_error": "auth",
        "open_until": 1_700_000_010.5,
    }


def test_remote_open_row_makes_provider_down_until_it_expires() -> None:
    a, b = board("node-a"), board("node-b")
    fail(a, 1, now=50.0, kind="quota")
    rows = a.to_rows(now_wall_s=1000, now=50.2)
    assert b.merge_rows(rows, now=7.0, now_wall_s=1000) == 1
    h = b.view(7.0).get(P, R)
    assert (h.status, h.breaker, h.source) == ("down", "open", "remote")
    assert h.last_error == "node-a: quota"
    assert not b.try_acquire_trial(P, R, now=7.0)
    assert b.view(7.7).get(P, R).status == "down"
    assert b.view(7.85).get(P, R).status == "healthy"  # open_until (wall 1000.8) has passed
    assert b.to_rows(now_wall_s=1000, now=7.0) == []  # floors are never re-published


def test_own_newer_observation_supersedes_a_remote_row() -> None:
    b = board("node-b")
    row = {"provider": P, "region": R, "status": "down", "last_check": 1000, "details": '{"node":"node-a"}'}
    b.merge_rows([row], now=10.0, now_wall_s=1001)
    assert b.view(10.0).get(P, R).status == "down"
    b.observe_connect(P, R, 90.0, now=10.5)
    assert b.view(10.5).get(P, R).status == "healthy"


def test_older_own_observation_does_not_supersede() -> None:
    b = board("node-b")
    b.observe_connect(P, R, 90.0, now=5.0)
    row = {"provider": P, "region": R, "status": "degraded", "last_check": 1000, "details": None}
    assert b.merge_rows([row], now=10.0, now_wall_s=1002) == 1  # observed at mono 8.0 > 5.0
    h = b.view(10.0).get(P, R)
    assert (h.status, h.source) == ("degraded", "remote")
    assert b.view(13.0).get(P, R).status == "healthy"  # last_check + remote_ttl_s passed


def test_merge_ignores_own_stale_and_malformed_rows() -> None:
    b = board("node-b")
    rows: list[dict[str, Any]] = [
        {"provider": P, "region": R, "status": "down", "last_check": 1000, "details": '{"node":"node-b"}'},
        {"provider": P, "region": R, "status": "down", "last_check": 990, "details": "{}"},  # stale
        {"provider": P, "region": R, "status": "sideways", "last_check": 1000},
        {"provider": P, "status": "down", "last_check": 1000},
        {"provider": P, "region": R, "status": "down", "last_check": "soon"},
        {"provider": P, "region": R, "status": "down", "last_check": 1000, "details": "{not json"},
        {"provider": P, "region": R, "status": "down", "last_check": float("nan")},
    ]
    assert b.merge_rows(rows, now=10.0, now_wall_s=1000) == 0
    assert b.view(10.0).get(P, R).status == "healthy"


def test_newest_row_wins_and_ties_keep_the_worse() -> None:
    b = board("node-z")

    def row(node: str, status: str, at: int) -> dict[str, object]:
        return {"provider": P, "region": R, "status": status, "last_check": at, "details": {"node": node}}

    b.merge_rows([row("a", "down", 1000), row("c", "degraded", 1000)], now=10.0, now_wall_s=1000)
    assert b.view(10.0).get(P, R).status == "down"
    b.merge_rows([row("c", "healthy", 999)], now=10.0, now_wall_s=1000)  # older: ignored
    assert b.view(10.0).get(P, R).status == "down"
    b.merge_rows([row("c", "degraded", 1001)], now=11.0, now_wall_s=1001)
    assert b.view(11.0).get(P, R).status == "degraded"
    b.merge_rows([row("a", "healthy", 1002)], now=12.0, now_wall_s=1002)
    assert b.view(12.0).get(P, R).status == "healthy"


def test_unreported_errors_are_not_evidence() -> None:
    b = board()
    b.observe_error(P, R, "config", now=1.0)
    b.observe_error(P, R, "auth", now=1.0, key_source="workspace")
    assert b.to_rows(now_wall_s=1000, now=1.0) == []
    row = {"provider": P, "region": R, "status": "down", "last_check": 999, "details": {"node": "a"}}
    b.merge_rows([row], now=2.0, now_wall_s=1000)
    assert b.view(2.0).get(P, R).status == "down"


def test_remote_numbers_fill_in_when_we_have_no_evidence() -> None:
    b = board("node-b")
    row = {
        "provider": P,
        "region": R,
        "status": "degraded",
        "last_check": 1000,
        "error_rate": 0.3,
        "avg_latency": 450,
        "details": {"node": "a"},
    }
    b.merge_rows([row], now=10.0, now_wall_s=1000)
    h = b.view(10.0).get(P, R)
    assert (h.error_rate, h.latency_ms, h.samples) == (0.3, 450.0, 0)
    odd = {**row, "last_check": 1001, "error_rate": float("nan"), "avg_latency": -5}
    b.merge_rows([odd], now=11.0, now_wall_s=1001)
    h = b.view(11.0).get(P, R)
    assert (h.status, h.error_rate, h.latency_ms) == ("degraded", 0.0, None)


# ------------------------------------------------------------------ JSON view


def test_as_json_lists_every_provider_and_region() -> None:
    b = board()
    b.observe_connect(P, R, 100.0, now=0.0)
    b.observe_error("vapi", "eu", "auth", now=0.0, message="bad key")
    body = b.as_json(now=0.25)
    assert body["node"] == "node-a"
    assert body["providers"][P][R] == {
        "status": "healthy",
        "breaker": "closed",
        "source": "local",
        "error_rate": 0.0,
        "samples": 1,
        "latency_ms": 100.0,
        "first_audio_ms": None,
        "last_error": None,
        "last_error_age_s": None,
        "trial_busy": False,
        "retry_in_s": None,
    }
    vapi = body["providers"]["vapi"]["eu"]
    assert (vapi["status"], vapi["breaker"], vapi["retry_in_s"], vapi["last_error"]) == (
        "down",
        "open",
        0.8,
        "auth: bad key",
    )
    assert vapi["last_error_age_s"] == 0.2
    json.dumps(body)


# ------------------------------------------------------------------ random sequences

_EVENTS = st.tuples(
    st.sampled_from(
        ["connect", "success", "drop", "retryable", "timeout", "provider_down", "auth", "config"]
    ),
    st.floats(min_value=0.0, max_value=0.7),  # time step
    st.integers(0, 3),  # concurrent try_acquire_trial calls after the event
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_EVENTS, max_size=60))
def test_breaker_invariants_over_random_sequences(events: list[tuple[str, float, int]]) -> None:
    b = board()
    now = 0.0
    for kind, step, callers in events:
        now += step
        before = b.view(now).get(P, R).breaker
        if kind == "connect":
            b.observe_connect(P, R, 100.0, now)
        elif kind == "success":
            b.observe_success(P, R, now)
        elif kind == "drop":
            b.observe_drop(P, R, now)
        else:
            b.observe_error(P, R, kind, now)
        h = b.view(now).get(P, R)
        assert 0.0 <= h.error_rate <= 1.0
        assert (h.status == "down") == (h.breaker == "open")
        if before == "closed" and h.breaker == "open" and kind != "auth":  # tripped by the rate rule
            assert h.samples >= POLICY.min_samples and h.error_rate >= POLICY.trip_error_rate
        grants = [b.try_acquire_trial(P, R, now) for _ in range(callers)]
        if h.breaker == "closed":
            assert all(grants)
        else:
            assert sum(grants) <= 1
