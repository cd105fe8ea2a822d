"""Builders for the billing tests: tenants, prices and calls inserted with plain SQL.

The databases themselves come from tests/storage/conftest.py (``backend``, ``db``: SQLite and
PostgreSQL, fresh per test)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from storage.billing import BillableCall, BillResult, bill_call
from storage.db import Database
from storage.ids import new_id
from storage.models import dump_json

CREATED = 1_700_000_000


def at(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Epoch seconds of a local wall time, e.g. ``at("America/New_York", 2024, 1, 31, 23, 30)``."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(zone)).timestamp())


# ---------------------------------------------------------------- builders


@dataclass(frozen=True)
class Tenant:
    workspace_id: str
    phone_number_id: str
    agent_ids: list[str]


async def make_workspace(
    db: Database,
    *,
    name: str | None = None,
    tier: str = "starter",
    timezone: str = "UTC",
    status: str = "active",
    limit: float | None = None,
    threshold: float | None = None,
    auto_pause: bool = False,
    live_agents: int = 1,
    draft_agents: int = 0,
) -> Tenant:
    user_id, workspace_id, number_id = new_id(), new_id(), new_id()
    await db.execute(
        "INSERT INTO client_users (id, email, name, password_hash, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, f"{user_id}@example.com", "Owner", "x", CREATED, CREATED),
    )
    await db.execute(
        "INSERT INTO workspaces (id, name, owner_id, status, subscription_tier, timezone, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (workspace_id, name or f"ws-{workspace_id[-6:]}", user_id, status, tier, timezone, CREATED, CREATED),
    )
    await db.execute(
        "INSERT INTO phone_numbers (id, workspace_id, phone_number, provider, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (number_id, workspace_id, f"+1555{uuid.uuid4().int % 10**7:07d}", "twilio", CREATED),
    )
    agents = []
    for status_, count in (("live", live_agents), ("draft", draft_agents)):
        for _ in range(count):
            agent_id = new_id()
            await db.execute(
                "INSERT INTO voice_agents (id, workspace_id, phone_number_id, name, config, voice_provider,"
                " voice_config, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (agent_id, workspace_id, number_id, "agent", "{}", "acme", "{}", status_, CREATED, CREATED),
            )
            agents.append(agent_id)
    if limit is not None or threshold is not None or auto_pause:
        await db.execute(
            "INSERT INTO workspace_billing_settings (workspace_id, usage_limit_monthly,"
            " alert_threshold_percentage, auto_pause_on_limit, updated_at) VALUES (?, ?, ?, ?, ?)",
            (workspace_id, limit, 80.0 if threshold is None else threshold, int(auto_pause), CREATED),
        )
    return Tenant(workspace_id, number_id, agents)


async def set_platform_provider(
    db: Database, provider: str, cost_per_unit: float | None, config: dict[str, object] | None = None
) -> None:
    await db.execute(
        "INSERT INTO platform_provider_configs (provider, api_key_encrypted, config, cost_per_unit,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        (provider, "enc", None if config is None else dump_json(config), cost_per_unit, CREATED, CREATED),
    )


async def set_workspace_provider(
    db: Database,
    workspace_id: str,
    provider: str,
    *,
    uses_platform_key: bool = True,
    config: dict[str, object] | None = None,
) -> None:
    await db.execute(
        "INSERT INTO workspace_provider_configs (id, workspace_id, provider, uses_platform_key, config,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            new_id(),
            workspace_id,
            provider,
            int(uses_platform_key),
            None if config is None else dump_json(config),
            CREATED,
            CREATED,
        ),
    )


async def set_markup(db: Database, value: str) -> None:
    """``value`` is the JSON text stored, e.g. ``"12.5"``."""
    await db.execute(
        "UPDATE platform_settings SET value = ? WHERE key = 'pricing_markup_percentage'", (value,)
    )


async def make_call(
    db: Database, tenant: Tenant, *, started_at: int, status: str = "in-progress", provider: str = "acme"
) -> str:
    call_id = new_id()
    await db.execute(
        "INSERT INTO calls (id, workspace_id, agent_id, phone_number_id, caller_number, direction, status,"
        " voice_provider_used, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            call_id,
            tenant.workspace_id,
            tenant.agent_ids[0],
            tenant.phone_number_id,
            "+15550000000",
            "inbound",
            status,
            provider,
            started_at,
        ),
    )
    return call_id


async def add_event(db: Database, call_id: str, event_type: str, ts: int) -> None:
    await db.execute(
        "INSERT INTO call_events (id, call_id, event_type, event_data, timestamp) VALUES (?, ?, ?, ?, ?)",
        (new_id(), call_id, event_type, None, ts),
    )


def dec(value: float | None) -> Decimal:
    """A stored REAL as the exact decimal it represents (shortest repr)."""
    return Decimal(repr(float(value or 0)))


async def bill(
    db: Database,
    tenant: Tenant,
    *,
    seconds: int,
    ended_at: int,
    usage: dict[str, float] | None = None,
    provider: str = "acme",
    now_s: int | None = None,
) -> tuple[str, BillResult]:
    """Inserts a call that lasted ``seconds`` up to ``ended_at`` and bills it."""
    call_id = await make_call(db, tenant, started_at=ended_at - seconds, provider=provider)
    result = await bill_call(
        db,
        BillableCall(
            call_id=call_id,
            workspace_id=tenant.workspace_id,
            provider=provider,
            started_at=ended_at - seconds,
            ended_at=ended_at,
            duration_seconds=seconds,
            usage=usage or {},
        ),
        now_s=ended_at if now_s is None else now_s,
    )
    return call_id, result


async def usage_rows(db: Database, call_id: str) -> dict[str, tuple[Decimal, ...]]:
    """resource_type → (quantity, unit_cost, total_cost, markup_percentage, final_cost)."""
    rows = await db.fetchall(
        "SELECT resource_type, quantity, unit_cost, total_cost, markup_percentage, final_cost"
        " FROM usage_records WHERE call_id = ?",
        (call_id,),
    )
    return {r[0]: tuple(dec(v) for v in tuple(r)[1:]) for r in rows}


@dataclass(frozen=True)
class Period:
    id: str
    start: int
    end: int
    subtotal: Decimal
    fee: Decimal
    total: Decimal
    status: str


async def periods(db: Database, workspace_id: str) -> list[Period]:
    """The workspace's billing periods, oldest first, money as exact decimals."""
    rows = await db.fetchall(
        "SELECT id, period_start, period_end, subtotal, subscription_fee, total_amount, status"
        " FROM billing_periods WHERE workspace_id = ? ORDER BY period_start",
        (workspace_id,),
    )
    return [Period(r[0], int(r[1]), int(r[2]), dec(r[3]), dec(r[4]), dec(r[5]), r[6]) for r in rows]


async def sum_final_cost(db: Database, period_id: str) -> Decimal:
    rows = await db.fetchall("SELECT final_cost FROM usage_records WHERE billing_period_id = ?", (period_id,))
    return sum((dec(r[0]) for r in rows), Decimal(0))


async def events(db: Database, event_type: str) -> list[tuple[str, str | None]]:
    rows = await db.fetchall(
        "SELECT call_id, event_data FROM call_events WHERE event_type = ? ORDER BY id", (event_type,)
    )
    return [(r[0], r[1]) for r in rows]
