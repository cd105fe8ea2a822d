"""Plain snapshot types the router reads and the decision it returns.

They are independent of storage: the gateway builds them from DB rows (``platform_provider_configs``,
``workspace_provider_configs``, ``workspace_provider_strategies``, ``voice_agents``) and from the
health board, so ``route()`` can stay a pure function that tests can feed with anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

StrategyName = Literal["auto", "cost_optimized", "quality_first", "specific", "custom"]
STRATEGY_NAMES: frozenset[str] = frozenset({"auto", "cost_optimized", "quality_first", "specific", "custom"})

KeySource = Literal["platform", "workspace", "none"]
HealthStatus = Literal["healthy", "degraded", "down"]
BreakerState = Literal["closed", "open", "half_open"]

KEYLESS_PROVIDERS: frozenset[str] = frozenset({"echo"})
"""Providers that need no API key (the built-in ``echo``); they route with ``key_source='none'``."""


# --------------------------------------------------------------------------------------------
# Configuration snapshots
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlatformProvider:
    """One ``platform_provider_configs`` row (the platform's own key and failover priority)."""

    provider: str
    has_key: bool
    config: Mapping[str, Any]
    priority: int
    is_enabled: bool
    cost_per_unit: float | None


@dataclass(frozen=True, slots=True)
class WorkspaceProvider:
    """One ``workspace_provider_configs`` row; ``config["cost_per_unit"]`` overrides the platform cost."""

    provider: str
    uses_platform_key: bool
    has_own_key: bool
    config: Mapping[str, Any]
    is_enabled: bool


@dataclass(frozen=True, slots=True)
class Strategy:
    """The workspace's ``workspace_provider_strategies`` row."""

    name: StrategyName
    config: Mapping[str, Any]
    fallback_enabled: bool


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """The voice agent answering the call.

    ``voice_config`` holds the settings for the agent's own ``voice_provider``; settings for any
    other provider it may fail over to live under ``voice_config["providers"][name]``.
    """

    agent_id: str
    voice_provider: str
    voice_config: Mapping[str, Any]

    def voice_config_for(self, provider: str) -> Mapping[str, Any] | None:
        """The agent's settings for ``provider``; ``None`` when the agent cannot run on it.

        The agent's own provider always has settings: its ``providers`` entry when present,
        else the top-level ``voice_config``.
        """
        per_provider = self.voice_config.get("providers")
        entry = per_provider.get(provider) if isinstance(per_provider, Mapping) else None
        if isinstance(entry, Mapping):
            return entry
        if provider == self.voice_provider:
            return self.voice_config
        return None


@dataclass(frozen=True, slots=True)
class CallContext:
    """Facts about the call that custom rules match on. ``local_time`` is in the workspace's zone."""

    caller_number: str
    local_time: datetime
    region: str = "default"


# --------------------------------------------------------------------------------------------
# Health snapshot (produced by routing.health.HealthBoard.view)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """What the health board knows about one provider in one region at one instant.

    ``trial_busy`` is true while a half-open breaker's single trial is leased to some call;
    ``source`` says whether the worst fact came from this process or another gateway's row.
    """

    status: HealthStatus = "healthy"
    breaker: BreakerState = "closed"
    error_rate: float = 0.0
    samples: int = 0
    latency_ms: float | None = None
    first_audio_ms: float | None = None
    last_error: str | None = None
    trial_busy: bool = False
    idle_s: float | None = None
    source: Literal["local", "remote"] = "local"


UNKNOWN_HEALTH = ProviderHealth()
"""No observations yet: assumed healthy, latency unknown."""


@dataclass(frozen=True, slots=True)
class HealthView:
    """Immutable health snapshot keyed by ``(provider, region)``."""

    entries: Mapping[tuple[str, str], ProviderHealth] = field(default_factory=dict)

    def get(self, provider: str, region: str) -> ProviderHealth:
        return self.entries.get((provider, region), UNKNOWN_HEALTH)


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """Everything ``route()`` needs. ``strategy=None`` means ``specific`` with fallback."""

    platform: Sequence[PlatformProvider]
    workspace: Sequence[WorkspaceProvider]
    strategy: Strategy | None
    agent: AgentInfo
    health: HealthView
    call: CallContext


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """One provider to try, in order.

    ``needs_trial``: the provider's breaker is half-open; the session must win
    ``HealthBoard.try_acquire_trial`` before connecting and skip it otherwise.
    """

    provider: str
    key_source: KeySource
    reason: str
    score: float | None
    needs_trial: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The ordered candidates, the providers left out with why, and the strategy applied."""

    candidates: tuple[Candidate, ...]
    skipped: tuple[tuple[str, str], ...]
    strategy: str

    def explain(self) -> dict[str, Any]:
        """JSON-ready record of the decision (for a ``call_events`` row)."""
        return {
            "strategy": self.strategy,
            "candidates": [
                {
                    "provider": c.provider,
                    "key_source": c.key_source,
                    "reason": c.reason,
                    "score": c.score,
                    "needs_trial": c.needs_trial,
                }
                for c in self.candidates
            ],
            "skipped": [{"provider": p, "why": why} for p, why in self.skipped],
        }
