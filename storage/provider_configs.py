"""Provider configuration reads for the router, and the health board's rows.

The router is pure: the gateway loads ``RoutingInputs`` (platform configs, the workspace's own
configs, its strategy) and the health rows here and hands them over as snapshots. API keys stay
encrypted in these rows; ``storage.secrets.SecretBox`` decrypts one when a provider connects.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Executor
from storage.models import (
    PlatformProviderConfig,
    ProviderHealth,
    ProviderStrategy,
    WorkspaceProviderConfig,
    columns,
    from_row,
)
from storage.writer import Statement

STRATEGIES = ("auto", "cost_optimized", "quality_first", "specific", "custom")
HEALTH_STATUSES = ("healthy", "degraded", "down")


@dataclass(frozen=True, slots=True)
class RoutingInputs:
    platform: tuple[PlatformProviderConfig, ...]  # every platform config, by priority then name
    workspace: tuple[WorkspaceProviderConfig, ...]  # the workspace's own configs, by provider
    strategy: ProviderStrategy | None  # None: the workspace never chose one


async def list_platform_configs(db: Executor) -> list[PlatformProviderConfig]:
    rows = await db.fetchall(
        f"SELECT {columns(PlatformProviderConfig)} FROM platform_provider_configs ORDER BY priority, provider"
    )
    return [from_row(PlatformProviderConfig, row) for row in rows]


async def list_workspace_configs(db: Executor, workspace_id: str) -> list[WorkspaceProviderConfig]:
    rows = await db.fetchall(
        f"SELECT {columns(WorkspaceProviderConfig)} FROM workspace_provider_configs WHERE workspace_id = ?"
        " ORDER BY provider",
        (workspace_id,),
    )
    return [from_row(WorkspaceProviderConfig, row) for row in rows]


async def get_strategy(db: Executor, workspace_id: str) -> ProviderStrategy | None:
    row = await db.fetchone(
        f"SELECT {columns(ProviderStrategy)} FROM workspace_provider_strategies WHERE workspace_id = ?",
        (workspace_id,),
    )
    return None if row is None else from_row(ProviderStrategy, row)


async def load_routing_inputs(db: Executor, workspace_id: str) -> RoutingInputs:
    return RoutingInputs(
        platform=tuple(await list_platform_configs(db)),
        workspace=tuple(await list_workspace_configs(db, workspace_id)),
        strategy=await get_strategy(db, workspace_id),
    )


async def load_health(db: Executor) -> list[ProviderHealth]:
    rows = await db.fetchall(
        f"SELECT {columns(ProviderHealth)} FROM provider_health_status ORDER BY provider, region"
    )
    return [from_row(ProviderHealth, row) for row in rows]


_UPSERT_HEALTH = (
    f"INSERT INTO provider_health_status ({columns(ProviderHealth)}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (provider, region) DO UPDATE SET status = excluded.status,"
    " last_check = excluded.last_check, error_rate = excluded.error_rate,"
    " avg_latency = excluded.avg_latency, details = excluded.details"
)


def upsert_health_stmt(row: ProviderHealth) -> Statement:
    """Writes one (provider, region) health row, replacing the previous observation."""
    if row.status not in HEALTH_STATUSES:
        raise ValueError(f"status must be one of {','.join(HEALTH_STATUSES)}")
    return Statement(
        _UPSERT_HEALTH,
        (
            row.provider,
            row.region,
            row.status,
            int(row.last_check),
            None if row.error_rate is None else float(row.error_rate),
            None if row.avg_latency is None else int(row.avg_latency),
            row.details,
        ),
    )
