"""Hypothesis generators of routing snapshots, shared by the routing property tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from providers.registry import KNOWN_PROVIDERS
from routing.model import (
    AgentInfo,
    CallContext,
    HealthView,
    PlatformProvider,
    ProviderHealth,
    RoutingSnapshot,
    Strategy,
    StrategyName,
    WorkspaceProvider,
)

NAMES = [*sorted(KNOWN_PROVIDERS), "playht"]  # one unknown name to be filtered out
KNOWN_ONLY = sorted(KNOWN_PROVIDERS)
REGION = "us"

mostly = st.sampled_from([True, True, True, True, False])  # bias towards eligible providers
costs = st.one_of(
    st.none(), st.floats(min_value=0, max_value=1, allow_nan=False), st.sampled_from([0.0, 0.05])
)


@st.composite
def platform_rows(draw: st.DrawFn) -> list[PlatformProvider]:
    names = [n for n in NAMES if draw(st.booleans())]
    return [
        PlatformProvider(
            provider=n,
            has_key=draw(mostly),
            config={},
            priority=draw(st.integers(-2, 5)),
            is_enabled=draw(mostly),
            cost_per_unit=draw(costs),
        )
        for n in names
    ]


@st.composite
def workspace_rows(draw: st.DrawFn) -> list[WorkspaceProvider]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    rows = []
    for n in names:
        override = draw(st.one_of(st.none(), costs, st.just("cheap")))
        rows.append(
            WorkspaceProvider(
                provider=n,
                uses_platform_key=draw(st.booleans()),
                has_own_key=draw(mostly),
                config={} if override is None else {"cost_per_unit": override},
                is_enabled=draw(mostly),
            )
        )
    return rows


health_entries = st.builds(
    ProviderHealth,
    status=st.sampled_from(["healthy", "healthy", "degraded", "down"]),
    breaker=st.sampled_from(["closed", "closed", "closed", "open", "half_open"]),
    error_rate=st.sampled_from([0.0, 0.1, 0.3, 0.6]),
    samples=st.integers(0, 20),
    latency_ms=st.one_of(st.none(), st.sampled_from([80.0, 250.0, 900.0, 2500.0])),
    trial_busy=st.booleans(),
)


@st.composite
def health_views(draw: st.DrawFn) -> HealthView:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    # Entries for another region must never affect a call routed in REGION.
    other = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=2))
    entries = {(n, REGION): draw(health_entries) for n in names}
    entries.update({(n, "eu"): ProviderHealth(status="down", breaker="open") for n in other})
    return HealthView(entries)


prefixes = st.sampled_from(["+1415", "1415", "+44", "1", "+1650"])
windows = st.sampled_from(["09:00-17:00", "22:00-06:00", "00:00-24:00", "12:30 - 12:31", "23:00\u201301:00"])
days = st.lists(
    st.sampled_from(["mon", "Tue", "wednesday", "thu", "fri", "sat", "sun"]), min_size=1, max_size=3
)
agent_ids = st.sampled_from(["agent-1", "agent-2"])


@st.composite
def custom_configs(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        rule: dict[str, Any] = {
            "providers": draw(st.lists(st.sampled_from(KNOWN_ONLY), unique=True, min_size=1, max_size=3))
        }
        if draw(st.booleans()):
            rule["caller_prefix"] = draw(st.one_of(prefixes, st.lists(prefixes, min_size=1, max_size=2)))
        if draw(st.booleans()):
            rule["time_window"] = draw(windows)
        if draw(st.booleans()):
            rule["days"] = draw(days)
        if draw(st.booleans()):
            rule["agent_id"] = draw(agent_ids)
        rules.append(rule)
    config: dict[str, Any] = {"rules": rules}
    if not rules or draw(st.booleans()):
        config["default"] = draw(st.lists(st.sampled_from(KNOWN_ONLY), unique=True, min_size=1, max_size=3))
    return config


@st.composite
def strategies(draw: st.DrawFn) -> Strategy | None:
    names: list[StrategyName | None] = ["auto", "cost_optimized", "quality_first", "specific", "custom", None]
    name = draw(st.sampled_from(names))
    if name is None:
        return None
    config = draw(custom_configs()) if name == "custom" else {}
    return Strategy(name, config, draw(mostly))


@st.composite
def agents(draw: st.DrawFn) -> AgentInfo:
    own = draw(st.sampled_from(NAMES))
    others = [n for n in NAMES if draw(mostly)]
    voice_config: dict[str, Any] = {"voice_id": "v1", "providers": {n: {"voice_id": n} for n in others}}
    return AgentInfo(draw(agent_ids), own, voice_config)


call_contexts = st.builds(
    CallContext,
    caller_number=st.sampled_from(["+14155550100", "+16505550199", "+442071234567", "anonymous", ""]),
    local_time=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 12, 31)),
    region=st.just(REGION),
)


@st.composite
def snapshots(draw: st.DrawFn) -> RoutingSnapshot:
    return RoutingSnapshot(
        platform=draw(platform_rows()),
        workspace=draw(workspace_rows()),
        strategy=draw(strategies()),
        agent=draw(agents()),
        health=draw(health_views()),
        call=draw(call_contexts),
    )
