"""Property tests of route(): filters never let an ineligible provider through, and every
strategy's order holds, over random snapshots. The oracles below restate the documented rules
independently of the implementation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from routing_gen import REGION, snapshots

from providers.registry import KNOWN_PROVIDERS
from routing.model import KEYLESS_PROVIDERS, CallContext, RoutingSnapshot, Strategy
from routing.router import UNRANKED_PRIORITY, auto_score, route

SETTINGS = settings(max_examples=120, deadline=None)
_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def strategy_of(snap: RoutingSnapshot) -> Strategy:
    return snap.strategy or Strategy("specific", {}, True)


def with_fallback(snap: RoutingSnapshot, enabled: bool) -> RoutingSnapshot:
    return replace(snap, strategy=replace(strategy_of(snap), fallback_enabled=enabled))


def universe(snap: RoutingSnapshot) -> set[str]:
    return (
        {p.provider for p in snap.platform}
        | {w.provider for w in snap.workspace}
        | {snap.agent.voice_provider}
    )


def oracle_eligible(snap: RoutingSnapshot) -> dict[str, str]:
    """provider → key source, for every provider that passes the documented filters."""
    plat = {p.provider: p for p in snap.platform}
    ws = {w.provider: w for w in snap.workspace}
    out = {}
    for name in universe(snap):
        p, w = plat.get(name), ws.get(name)
        if name not in KNOWN_PROVIDERS or (p and not p.is_enabled) or (w and not w.is_enabled):
            continue
        if name in KEYLESS_PROVIDERS:
            key = "none"
        elif w is not None and not w.uses_platform_key:
            if not w.has_own_key:
                continue
            key = "workspace"
        else:
            if p is None or not p.has_key:
                continue
            key = "platform"
        if name != snap.agent.voice_provider and name not in snap.agent.voice_config["providers"]:
            continue
        h = snap.health.get(name, REGION)
        if h.breaker == "open" or (h.breaker == "half_open" and h.trial_busy) or h.status == "down":
            continue
        out[name] = key
    return out


def priority(snap: RoutingSnapshot, name: str) -> int:
    return next((p.priority for p in snap.platform if p.provider == name), UNRANKED_PRIORITY)


def cost(snap: RoutingSnapshot, name: str) -> float | None:
    for w in snap.workspace:
        v = w.config.get("cost_per_unit") if w.provider == name else None
        if isinstance(v, float | int) and not isinstance(v, bool):
            return float(v)
    return next((p.cost_per_unit for p in snap.platform if p.provider == name), None)


def _as_list(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _minute(text: str) -> int:
    hh, mm = text.strip().split(":")
    return int(hh) * 60 + int(mm)


def oracle_select(config: Mapping[str, Any], call: CallContext, agent_id: str) -> Sequence[str] | None:
    minute = call.local_time.hour * 60 + call.local_time.minute
    for rule in config.get("rules", []):
        ok = True
        if "agent_id" in rule:
            ok &= agent_id in _as_list(rule["agent_id"])
        if "days" in rule:
            ok &= call.local_time.weekday() in {_DAYS.index(d.lower()[:3]) for d in rule["days"]}
        if "time_window" in rule:
            start, end = (_minute(t) for t in rule["time_window"].replace("\u2013", "-").split("-"))
            ok &= start <= minute < end if start < end else (minute >= start or minute < end)
        if "caller_prefix" in rule:
            digits = call.caller_number.lstrip("+")
            ok &= any(digits.startswith(p.lstrip("+")) for p in _as_list(rule["caller_prefix"]))
        if ok:
            return rule["providers"]
    return config.get("default")


def assert_specific_order(snap: RoutingSnapshot, names: list[str]) -> None:
    agent = snap.agent.voice_provider
    if agent in names:
        assert names[0] == agent
    rest = [n for n in names if n != agent]
    keys = [(priority(snap, n), n) for n in rest]
    assert keys == sorted(keys)


@SETTINGS
@given(snapshots())
def test_candidates_are_exactly_the_eligible_providers(snap: RoutingSnapshot) -> None:
    decision = route(snap)
    names = [c.provider for c in decision.candidates]
    eligible = oracle_eligible(snap)
    assert len(names) == len(set(names))
    for c in decision.candidates:
        assert eligible.get(c.provider) == c.key_source
        assert c.needs_trial == (snap.health.get(c.provider, REGION).breaker == "half_open")
    if strategy_of(snap).fallback_enabled:
        assert set(names) == set(eligible)
    else:
        assert len(names) <= 1
    skipped = [p for p, _ in decision.skipped]
    for name in universe(snap):
        assert (name in names) + skipped.count(name) == 1, name
    assert route(snap) == decision  # deterministic


@SETTINGS
@given(snapshots())
def test_order_obeys_strategy(snap: RoutingSnapshot) -> None:
    snap = with_fallback(snap, True)
    strategy = strategy_of(snap)
    decision = route(snap)
    names = [c.provider for c in decision.candidates]
    eligible = oracle_eligible(snap)
    if strategy.name == "specific":
        assert_specific_order(snap, names)
    elif strategy.name == "cost_optimized":
        keys = [(cost(snap, n) is None, cost(snap, n) or 0.0) for n in names]
        assert keys == sorted(keys)
        assert [c.score for c in decision.candidates] == [cost(snap, n) for n in names]
    elif strategy.name == "quality_first":
        hs = [snap.health.get(n, REGION) for n in names]
        rank = {"healthy": 0, "degraded": 1}
        qkeys = [
            (rank[h.status], h.error_rate, h.latency_ms if h.latency_ms is not None else math.inf) for h in hs
        ]
        assert qkeys == sorted(qkeys)
    elif strategy.name == "auto":
        scores = [c.score for c in decision.candidates]
        assert all(s is not None for s in scores)
        assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
        known = [k for n in names if (k := cost(snap, n)) is not None]
        cheapest = min(known) if known else None
        for c in decision.candidates:
            h = snap.health.get(c.provider, REGION)
            agent = c.provider == snap.agent.voice_provider
            assert c.score == auto_score(h, cost(snap, c.provider), cheapest, agent)
    else:
        selected = oracle_select(strategy.config, snap.call, snap.agent.agent_id)
        if selected is None:
            assert_specific_order(snap, names)
        else:
            head = [p for p in selected if p in eligible]
            assert names[: len(head)] == head
            assert_specific_order(snap, names[len(head) :])


@SETTINGS
@given(snapshots())
def test_without_fallback_at_most_the_first_choice(snap: RoutingSnapshot) -> None:
    full = [c.provider for c in route(with_fallback(snap, True)).candidates]
    only = [c.provider for c in route(with_fallback(snap, False)).candidates]
    strategy = strategy_of(snap)
    pinned: str | None = None
    if strategy.name == "specific":
        pinned = snap.agent.voice_provider
    elif strategy.name == "custom":
        selected = oracle_select(strategy.config, snap.call, snap.agent.agent_id)
        pinned = selected[0] if selected else snap.agent.voice_provider
    if pinned is None:
        assert only == full[:1]
    else:
        assert only == ([pinned] if full[:1] == [pinned] else [])
