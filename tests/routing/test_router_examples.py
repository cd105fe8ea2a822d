"""Worked examples of route(): each filter's recorded reason, tie-breaks and the documented choices."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from routing.health import HealthBoard, HealthPolicy
from routing.model import (
    AgentInfo,
    CallContext,
    Decision,
    HealthView,
    PlatformProvider,
    ProviderHealth,
    RoutingSnapshot,
    Strategy,
    WorkspaceProvider,
)
from routing.router import route

MONDAY_10AM = datetime(2024, 6, 3, 10, 0)


def plat(name: str, priority: int = 0, cost: float | None = None, **kw: Any) -> PlatformProvider:
    return PlatformProvider(
        name, kw.get("has_key", True), {}, priority, kw.get("is_enabled", True), cost_per_unit=cost
    )


def snap(
    platform: Sequence[PlatformProvider] = (),
    workspace: Sequence[WorkspaceProvider] = (),
    strategy: Strategy | None = None,
    agent_provider: str = "elevenlabs",
    others: Sequence[str] = ("deepgram", "openai", "vapi", "retell", "bolna"),
    health: HealthView | None = None,
    caller: str = "+14155550100",
    when: datetime = MONDAY_10AM,
) -> RoutingSnapshot:
    agent = AgentInfo("agent-1", agent_provider, {"voice_id": "v", "providers": {n: {} for n in others}})
    return RoutingSnapshot(
        platform, workspace, strategy, agent, health or HealthView(), CallContext(caller, when, "us")
    )


def names(decision: Decision) -> list[str]:
    return [c.provider for c in decision.candidates]


def test_each_filter_records_its_reason() -> None:
    decision = route(
        snap(
            platform=[
                plat("elevenlabs"),
                plat("deepgram", is_enabled=False),
                plat("openai", has_key=False),
                plat("vapi"),
                plat("retell"),
                plat("bolna"),
                plat("playht"),
            ],
            workspace=[
                WorkspaceProvider("vapi", True, False, {}, is_enabled=False),
                WorkspaceProvider("retell", False, False, {}, True),
            ],
            others=("deepgram", "openai", "vapi", "retell"),
        )
    )
    assert names(decision) == ["elevenlabs"]
    assert dict(decision.skipped) == {
        "deepgram": "disabled on platform",
        "openai": "no usable key: platform key missing",
        "vapi": "disabled for workspace",
        "retell": "no usable key: workspace brings its own key but none is stored",
        "bolna": "no voice_config for provider",
        "playht": "unknown provider",
    }


def test_health_filters_are_per_region() -> None:
    health = HealthView(
        {
            ("deepgram", "us"): ProviderHealth(status="down", breaker="open"),
            ("openai", "us"): ProviderHealth(status="down"),
            ("vapi", "us"): ProviderHealth(status="degraded", breaker="half_open", trial_busy=True),
            ("retell", "us"): ProviderHealth(status="degraded", breaker="half_open"),
            ("elevenlabs", "eu"): ProviderHealth(status="down", breaker="open"),
        }
    )
    platform = [plat(n) for n in ("elevenlabs", "deepgram", "openai", "vapi", "retell")]
    decision = route(snap(platform=platform, health=health))
    assert names(decision) == ["elevenlabs", "retell"]
    assert decision.candidates[1].needs_trial and not decision.candidates[0].needs_trial
    assert dict(decision.skipped) == {
        "deepgram": "breaker open (local)",
        "openai": "down (local)",
        "vapi": "breaker half-open, trial in progress",
    }


def test_byo_key_routes_with_workspace_key_even_without_platform_row() -> None:
    decision = route(snap(workspace=[WorkspaceProvider("elevenlabs", False, True, {}, True)]))
    assert [(c.provider, c.key_source) for c in decision.candidates] == [("elevenlabs", "workspace")]


def test_platform_key_needs_a_platform_row() -> None:
    decision = route(snap(workspace=[WorkspaceProvider("elevenlabs", True, False, {}, True)]))
    assert decision.candidates == ()
    assert decision.skipped == (("elevenlabs", "no usable key: not configured on the platform"),)


def test_echo_is_keyless_and_runs_for_an_agent_on_echo_with_no_rows() -> None:
    decision = route(snap(agent_provider="echo"))
    assert [(c.provider, c.key_source) for c in decision.candidates] == [("echo", "none")]


def test_echo_is_not_a_silent_fallback_without_a_voice_config_entry() -> None:
    platform = [plat("elevenlabs"), plat("echo", priority=9, has_key=False)]
    assert ("echo", "no voice_config for provider") in route(snap(platform=platform)).skipped
    opted_in = route(snap(platform=platform, others=("echo",)))
    assert [(c.provider, c.key_source) for c in opted_in.candidates] == [
        ("elevenlabs", "platform"),
        ("echo", "none"),
    ]


def test_specific_priority_ascending_then_unranked_byo() -> None:
    decision = route(
        snap(
            platform=[plat("elevenlabs", 5), plat("deepgram", 2), plat("openai", 0), plat("vapi", 2)],
            workspace=[WorkspaceProvider("retell", False, True, {}, True)],
        )
    )
    assert names(decision) == ["elevenlabs", "openai", "deepgram", "vapi", "retell"]
    assert decision.candidates[4].reason == "fallback by priority unranked"
    assert decision.strategy == "specific"


def test_specific_without_fallback_never_substitutes_another_provider() -> None:
    platform = [plat("elevenlabs", is_enabled=False), plat("deepgram")]
    decision = route(snap(platform=platform, strategy=Strategy("specific", {}, False)))
    assert decision.candidates == ()
    assert ("deepgram", "fallback disabled") in decision.skipped


def test_cost_workspace_override_wins_and_unknown_cost_sorts_last() -> None:
    decision = route(
        snap(
            platform=[plat("elevenlabs", cost=0.10), plat("deepgram", cost=0.05), plat("openai")],
            workspace=[WorkspaceProvider("elevenlabs", True, False, {"cost_per_unit": 0.01}, True)],
            strategy=Strategy("cost_optimized", {}, True),
        )
    )
    assert names(decision) == ["elevenlabs", "deepgram", "openai"]
    assert [c.score for c in decision.candidates] == [0.01, 0.05, None]


def test_cost_tie_prefers_agents_provider() -> None:
    decision = route(
        snap(
            platform=[plat("deepgram", 0, 0.05), plat("elevenlabs", 9, 0.05)],
            strategy=Strategy("cost_optimized", {}, False),
        )
    )
    assert names(decision) == ["elevenlabs"]


def test_quality_first_orders_status_then_error_rate_then_latency() -> None:
    health = HealthView(
        {
            ("elevenlabs", "us"): ProviderHealth(status="degraded", latency_ms=50.0),
            ("deepgram", "us"): ProviderHealth(error_rate=0.1, latency_ms=50.0),
            ("openai", "us"): ProviderHealth(latency_ms=400.0),
            ("vapi", "us"): ProviderHealth(latency_ms=90.0),
        }
    )
    decision = route(
        snap(
            platform=[plat(n) for n in ("elevenlabs", "deepgram", "openai", "vapi", "retell")],
            health=health,
            strategy=Strategy("quality_first", {}, True),
        )
    )
    assert names(decision) == ["vapi", "openai", "retell", "deepgram", "elevenlabs"]


def test_auto_prefers_healthy_agent_provider_but_not_a_failing_one() -> None:
    platform = [plat("elevenlabs", cost=0.2), plat("deepgram", cost=0.1)]
    fine = HealthView({("elevenlabs", "us"): ProviderHealth(latency_ms=300.0)})
    decision = route(snap(platform=platform, health=fine, strategy=Strategy("auto", {}, True)))
    assert names(decision) == ["elevenlabs", "deepgram"]
    failing = HealthView({("elevenlabs", "us"): ProviderHealth(status="degraded", error_rate=0.4)})
    decision = route(snap(platform=platform, health=failing, strategy=Strategy("auto", {}, True)))
    assert names(decision) == ["deepgram", "elevenlabs"]


def test_custom_rule_order_then_fallback_and_unconfigured_names() -> None:
    config = {
        "rules": [
            {"caller_prefix": "+44", "providers": ["openai"]},
            {"time_window": "09:00-17:00", "days": ["mon"], "providers": ["vapi", "deepgram", "bolna"]},
        ],
        "default": ["openai"],
    }
    platform = [plat("elevenlabs", 1), plat("deepgram", 0), plat("openai", 2), plat("vapi", 3)]
    decision = route(snap(platform=platform, strategy=Strategy("custom", config, True)))
    assert names(decision) == ["vapi", "deepgram", "elevenlabs", "openai"]
    assert decision.strategy == "custom (rules[1])"
    assert ("bolna", "named by rules[1] but not configured") in decision.skipped
    evening = route(
        snap(platform=platform, strategy=Strategy("custom", config, False), when=MONDAY_10AM.replace(hour=20))
    )
    assert names(evening) == ["openai"]
    assert evening.strategy == "custom (default order)"


def test_custom_without_fallback_pins_the_rules_first_provider() -> None:
    config = {"rules": [{"agent_id": "agent-1", "providers": ["vapi", "deepgram"]}]}
    platform = [plat("vapi", is_enabled=False), plat("deepgram")]
    decision = route(snap(platform=platform, strategy=Strategy("custom", config, False)))
    assert decision.candidates == ()


def test_custom_invalid_config_degrades_to_specific() -> None:
    decision = route(
        snap(platform=[plat("elevenlabs")], strategy=Strategy("custom", {"rules": "nope"}, True))
    )
    assert names(decision) == ["elevenlabs"]
    assert decision.strategy.startswith("specific (custom config invalid: rules:")


def test_breaker_tripped_on_the_board_removes_provider_from_route() -> None:
    board = HealthBoard(HealthPolicy(cooldown_s=1.0))
    board.observe_error("elevenlabs", "us", "auth", now=10.0)
    platform = [plat("elevenlabs"), plat("deepgram")]
    decision = route(snap(platform=platform, health=board.view(10.5)))
    assert names(decision) == ["deepgram"]
    assert ("elevenlabs", "breaker open (local)") in decision.skipped
    half_open = route(snap(platform=platform, health=board.view(11.0)))
    assert names(half_open) == ["elevenlabs", "deepgram"]
    assert half_open.candidates[0].needs_trial


def test_explain_is_json_ready() -> None:
    explained = route(snap(platform=[plat("elevenlabs"), plat("bolna")])).explain()
    assert explained == {
        "strategy": "specific",
        "candidates": [
            {
                "provider": "elevenlabs",
                "key_source": "platform",
                "reason": "agent's voice provider",
                "score": None,
                "needs_trial": False,
            },
            {
                "provider": "bolna",
                "key_source": "platform",
                "reason": "fallback by priority 0",
                "score": None,
                "needs_trial": False,
            },
        ],
        "skipped": [],
    }
