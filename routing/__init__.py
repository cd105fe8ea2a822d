"""Choosing providers for a call: pure strategies, health board, circuit breakers.

Typical use by the gateway (all I/O stays in the gateway)::

    decision = route(RoutingSnapshot(platform, workspace, strategy, agent, board.view(now), call))
    for cand in decision.candidates:
        if not board.try_acquire_trial(cand.provider, call.region, now):
            continue                      # half-open provider whose one trial is taken
        ...connect; then board.observe_connect / observe_error(...)
"""

from routing.health import HealthBoard, HealthPolicy
from routing.model import (
    KEYLESS_PROVIDERS,
    AgentInfo,
    CallContext,
    Candidate,
    Decision,
    HealthView,
    PlatformProvider,
    ProviderHealth,
    RoutingSnapshot,
    Strategy,
    WorkspaceProvider,
)
from routing.probes import ProbePlan
from routing.router import route
from routing.rules import validate_custom_config

__all__ = [
    "KEYLESS_PROVIDERS",
    "AgentInfo",
    "CallContext",
    "Candidate",
    "Decision",
    "HealthBoard",
    "HealthPolicy",
    "HealthView",
    "PlatformProvider",
    "ProbePlan",
    "ProviderHealth",
    "RoutingSnapshot",
    "Strategy",
    "WorkspaceProvider",
    "route",
    "validate_custom_config",
]
