"""``route(snapshot) -> Decision``: the ordered providers to try for one call, and why.

Two stages, as in LiteLLM's router: filters remove providers that cannot serve the call (each
recorded in ``Decision.skipped`` with the reason), then the workspace's strategy orders the rest.

Filters, in this order (the first that applies is the recorded reason):

1. unknown provider name (not in ``providers.registry``);
2. platform row present but disabled (the platform's kill switch wins even over a BYO key);
3. workspace row present but disabled;
4. no usable key: the workspace brings its own key but has none stored, or the platform key is
   used and the platform has no row/key. Keyless providers (``KEYLESS_PROVIDERS``) skip this
   check and route with ``key_source='none'``;
5. the agent cannot run on it: a provider other than the agent's own ``voice_provider`` needs a
   ``voice_config["providers"][name]`` entry. This holds for ``echo`` too: an empty entry opts
   in, so enabling ``echo`` on the platform never silently turns it into every agent's fallback;
6. breaker open, or half-open with its single trial already leased to another call;
7. status ``down`` (locally derived, or adopted from another gateway's row).

Which providers are considered at all: those with a platform row, those with a workspace row,
and the agent's own ``voice_provider`` (so an agent on ``echo`` works with no rows at all).

Strategies (``strategy=None`` means ``specific`` with fallback):

- ``specific``: the agent's provider, then the rest by platform ``priority`` ASCENDING (0 before
  1: the lower number is tried first), ties by name; providers with no platform row come last.
- ``cost_optimized``: cheapest first; cost is the workspace ``config["cost_per_unit"]`` override
  else the platform ``cost_per_unit``; unknown cost sorts last; ties: agent's provider, priority.
- ``quality_first``: healthy before degraded, then lower windowed error rate, then lower connect
  latency (unknown last), then the agent's provider, then priority.
- ``auto``: descending score (see ``auto_score``), ties: agent's provider, priority.
- ``custom``: the first matching rule's provider list (``routing.rules``), else its default order,
  else ``specific``; with fallback the remaining providers follow in ``specific`` order.

``fallback_enabled=False`` yields at most one candidate: for the ranking strategies (``auto``,
``cost_optimized``, ``quality_first``) the best eligible provider; for ``specific`` and ``custom``
only the named first choice (the agent's provider, the rule's first provider) or nothing, since
those strategies exist to pin a provider.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from providers.registry import KNOWN_PROVIDERS
from routing.model import (
    KEYLESS_PROVIDERS,
    Candidate,
    Decision,
    KeySource,
    PlatformProvider,
    ProviderHealth,
    RoutingSnapshot,
    Strategy,
    WorkspaceProvider,
)
from routing.rules import parse_custom_config

UNRANKED_PRIORITY = 2**31
"""Priority given to providers with no platform row (workspace-only BYO): after every ranked one."""

DEFAULT_STRATEGY = Strategy("specific", {}, True)

# auto_score weights; see auto_score's docstring.
AUTO_W_RELIABILITY = 0.5
AUTO_W_SPEED = 0.3
AUTO_W_CHEAPNESS = 0.2
AUTO_DEGRADED_PENALTY = 0.2
AUTO_AGENT_BONUS = 0.25
AUTO_LATENCY_REF_MS = 1000.0


@dataclass(frozen=True, slots=True)
class _Eligible:
    provider: str
    key_source: KeySource
    health: ProviderHealth
    priority: int
    cost: float | None
    is_agents: bool


def route(snapshot: RoutingSnapshot, known: frozenset[str] = KNOWN_PROVIDERS) -> Decision:
    """Order the providers to try for this call; pure, never raises on odd snapshot data."""
    strategy = snapshot.strategy or DEFAULT_STRATEGY
    platform = {p.provider: p for p in snapshot.platform}
    workspace = {w.provider: w for w in snapshot.workspace}
    agent_provider = snapshot.agent.voice_provider

    eligible: list[_Eligible] = []
    skipped: list[tuple[str, str]] = []
    for name in _universe(platform, workspace, agent_provider):
        result = _check(snapshot, name, platform.get(name), workspace.get(name), known)
        if isinstance(result, str):
            skipped.append((name, result))
        else:
            eligible.append(result)

    ordered, label, pinned = _order(strategy, eligible, snapshot, skipped)
    if not strategy.fallback_enabled:
        first = ordered[:1]
        if pinned is not None and first and first[0].provider != pinned:
            first = []
        skipped.extend((c.provider, "fallback disabled") for c in ordered if c not in first)
        ordered = first
    return Decision(tuple(ordered), tuple(skipped), label)


def _universe(
    platform: Mapping[str, PlatformProvider], workspace: Mapping[str, WorkspaceProvider], agent_provider: str
) -> list[str]:
    return list(dict.fromkeys([*platform, *workspace, agent_provider]))


def _check(
    snapshot: RoutingSnapshot,
    name: str,
    plat: PlatformProvider | None,
    ws: WorkspaceProvider | None,
    known: frozenset[str],
) -> _Eligible | str:
    """The eligible provider, or the reason it is filtered out."""
    if name not in known:
        return "unknown provider"
    if plat is not None and not plat.is_enabled:
        return "disabled on platform"
    if ws is not None and not ws.is_enabled:
        return "disabled for workspace"
    key_source: KeySource
    if name in KEYLESS_PROVIDERS:
        key_source = "none"
    elif ws is not None and not ws.uses_platform_key:
        if not ws.has_own_key:
            return "no usable key: workspace brings its own key but none is stored"
        key_source = "workspace"
    elif plat is None:
        return "no usable key: not configured on the platform"
    elif not plat.has_key:
        return "no usable key: platform key missing"
    else:
        key_source = "platform"
    if snapshot.agent.voice_config_for(name) is None:
        return "no voice_config for provider"
    health = snapshot.health.get(name, snapshot.call.region)
    if health.breaker == "open":
        return f"breaker open ({health.source})"
    if health.breaker == "half_open" and health.trial_busy:
        return "breaker half-open, trial in progress"
    if health.status == "down":
        return f"down ({health.source})"
    return _Eligible(
        provider=name,
        key_source=key_source,
        health=health,
        priority=plat.priority if plat is not None else UNRANKED_PRIORITY,
        cost=_cost(plat, ws),
        is_agents=name == snapshot.agent.voice_provider,
    )


def _cost(plat: PlatformProvider | None, ws: WorkspaceProvider | None) -> float | None:
    """Workspace override, else platform cost; anything not a finite non-negative number is unknown."""
    override = ws.config.get("cost_per_unit") if ws is not None else None
    for raw in (override, plat.cost_per_unit if plat is not None else None):
        if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw) and raw >= 0:
            return float(raw)
    return None


def _candidate(e: _Eligible, reason: str, score: float | None = None) -> Candidate:
    return Candidate(e.provider, e.key_source, reason, score, needs_trial=e.health.breaker == "half_open")


def _priority_key(e: _Eligible) -> tuple[int, str]:
    return (e.priority, e.provider)


def _order(
    strategy: Strategy, eligible: list[_Eligible], snapshot: RoutingSnapshot, skipped: list[tuple[str, str]]
) -> tuple[list[Candidate], str, str | None]:
    """(ordered candidates, strategy label, pinned first choice or None)."""
    name = strategy.name
    if name == "cost_optimized":
        return _cost_optimized(eligible), name, None
    if name == "quality_first":
        return _quality_first(eligible), name, None
    if name == "auto":
        return _auto(eligible), name, None
    if name == "custom":
        return _custom(strategy, eligible, snapshot, skipped)
    return _specific(eligible), "specific", snapshot.agent.voice_provider


def _specific(eligible: Iterable[_Eligible]) -> list[Candidate]:
    ranked = sorted(eligible, key=lambda e: (not e.is_agents, *_priority_key(e)))
    return [
        _candidate(e, "agent's voice provider" if e.is_agents else f"fallback by priority {_prio(e)}")
        for e in ranked
    ]


def _prio(e: _Eligible) -> str:
    return "unranked" if e.priority == UNRANKED_PRIORITY else str(e.priority)


def _cost_optimized(eligible: Iterable[_Eligible]) -> list[Candidate]:
    ranked = sorted(
        eligible, key=lambda e: (e.cost is None, e.cost or 0.0, not e.is_agents, *_priority_key(e))
    )
    return [
        _candidate(e, f"cost {e.cost:g}/unit" if e.cost is not None else "cost unknown", e.cost)
        for e in ranked
    ]


_STATUS_RANK = {"healthy": 0, "degraded": 1, "down": 2}


def _quality_first(eligible: Iterable[_Eligible]) -> list[Candidate]:
    def key(e: _Eligible) -> tuple[int, float, float, bool, int, str]:
        h = e.health
        latency = h.latency_ms if h.latency_ms is not None else math.inf
        return (_STATUS_RANK[h.status], h.error_rate, latency, not e.is_agents, *_priority_key(e))

    return [_candidate(e, _quality_reason(e.health)) for e in sorted(eligible, key=key)]


def _quality_reason(h: ProviderHealth) -> str:
    latency = f"{h.latency_ms:.0f} ms" if h.latency_ms is not None else "latency unknown"
    return f"{h.status}, error rate {h.error_rate:.0%}, {latency}"


def auto_score(health: ProviderHealth, cost: float | None, cheapest: float | None, is_agents: bool) -> float:
    """The ``auto`` strategy's score (higher is better)::

        score = 0.5 * (1 - error_rate)
              + 0.3 * 1 / (1 + latency_ms / 1000)      # unknown latency counts as 1000 ms → 0.15
              + 0.2 * cheapest_cost / cost             # among candidates; unknown cost → 0.5 → 0.1
              - 0.2   if status is degraded
              + 0.25  if it is the agent's voice provider and status is healthy

    Without the bonus a score lies in [-0.2, 1.0]. The bonus makes the agent's own provider win
    unless another is clearly better (e.g. ~50 points less error rate), which ``specific`` pins.
    """
    latency = health.latency_ms if health.latency_ms is not None else AUTO_LATENCY_REF_MS
    speed = 1.0 / (1.0 + max(latency, 0.0) / AUTO_LATENCY_REF_MS)
    if cost is None or cheapest is None:
        cheapness = 0.5
    elif cost <= 0.0:
        cheapness = 1.0
    else:
        cheapness = cheapest / cost
    score = (
        AUTO_W_RELIABILITY * (1.0 - health.error_rate) + AUTO_W_SPEED * speed + AUTO_W_CHEAPNESS * cheapness
    )
    if health.status == "degraded":
        score -= AUTO_DEGRADED_PENALTY
    if is_agents and health.status == "healthy":
        score += AUTO_AGENT_BONUS
    return score


def _auto(eligible: list[_Eligible]) -> list[Candidate]:
    known_costs = [e.cost for e in eligible if e.cost is not None]
    cheapest = min(known_costs) if known_costs else None
    scored = [(auto_score(e.health, e.cost, cheapest, e.is_agents), e) for e in eligible]
    scored.sort(key=lambda se: (-se[0], not se[1].is_agents, *_priority_key(se[1])))
    return [_candidate(e, f"auto score {s:.3f} ({_quality_reason(e.health)})", s) for s, e in scored]


def _custom(
    strategy: Strategy, eligible: list[_Eligible], snapshot: RoutingSnapshot, skipped: list[tuple[str, str]]
) -> tuple[list[Candidate], str, str | None]:
    try:
        config = parse_custom_config(strategy.config)
    except ValueError as exc:  # validated at provisioning; still never fail a live call over it
        return _specific(eligible), f"specific (custom config invalid: {exc})", snapshot.agent.voice_provider
    selected = config.select(snapshot.call, snapshot.agent.agent_id)
    if selected is None:
        return _specific(eligible), "custom (no rule matched; specific)", snapshot.agent.voice_provider
    why, order = selected
    by_name = {e.provider: e for e in eligible}
    considered = {p for p, _ in skipped} | set(by_name)
    skipped.extend((p, f"named by {why} but not configured") for p in order if p not in considered)
    listed = [_candidate(by_name[p], f"{why}, choice {i + 1}") for i, p in enumerate(order) if p in by_name]
    rest = _specific(e for e in eligible if e.provider not in order)
    return listed + rest, f"custom ({why})", order[0]
