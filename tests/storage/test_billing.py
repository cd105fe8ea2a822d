"""bill_call and check_call_allowed on SQLite and PostgreSQL, with exact expected figures.

Prices used below: provider ``acme`` costs 0.10 per minute on the platform key; the seed's
markup is 20 %; tiers are the seed's (starter: 100 included minutes, 0.05/min after, 29.99/month;
enterprise: 2000 included minutes).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest

from storage.billing import BillableCall, UnknownCall, bill_call, check_call_allowed
from storage.db import Database, open_database
from tests.storage.billing_fixtures import (
    at,
    bill,
    dec,
    events,
    make_call,
    make_workspace,
    periods,
    set_markup,
    set_platform_provider,
    set_workspace_provider,
    sum_final_cost,
    usage_rows,
)
from tests.storage.conftest import Backend

JAN = at("UTC", 2024, 1, 10, 12, 0)


@pytest.fixture
async def acme(db: Database) -> None:
    await set_platform_provider(db, "acme", 0.10)


async def test_included_minutes_crossed_mid_call(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="starter")
    # 99.5 minutes: inside the 100 included minutes, provider cost only.
    first, r1 = await bill(db, tenant, seconds=5970, ended_at=JAN)
    assert await usage_rows(db, first) == {
        "call_minutes": (D("99.5"), D("0.1"), D("9.95"), D("20"), D("11.94")),
    }
    # 125 s = 2.0833 min: 0.5 included + 1.5833 overage at 0.05, no markup on the tier price.
    second, r2 = await bill(db, tenant, seconds=125, ended_at=JAN + 200)
    assert await usage_rows(db, second) == {
        "call_minutes": (D("2.0833"), D("0.1"), D("0.20833"), D("20"), D("0.249996")),
        "overage_minutes": (D("1.5833"), D("0.05"), D("0.079165"), D("0"), D("0.079165")),
    }
    assert (dec(r1.cost_total), dec(r2.cost_total)) == (D("11.94"), D("0.329161"))
    # Past the allowance every minute is overage.
    third, _ = await bill(db, tenant, seconds=60, ended_at=JAN + 400)
    overage = (await usage_rows(db, third))["overage_minutes"]
    assert overage == (D("1"), D("0.05"), D("0.05"), D("0"), D("0.05"))

    [period] = await periods(db, tenant.workspace_id)
    assert period.subtotal == D("12.439161") == await sum_final_cost(db, period.id)
    assert period.fee == D("29.99") and period.total == D("42.429161")
    call = await db.fetchone("SELECT cost_total FROM calls WHERE id = ?", (second,))
    assert call is not None and dec(call[0]) == D("0.329161")


async def test_markup_and_unit_costs_from_settings_and_configs(db: Database) -> None:
    await set_markup(db, "12.5")
    per_resource = {"ai_tokens": 0.000004, "transcription": 0.00003}
    await set_platform_provider(db, "acme", 0.07, {"cost_per_unit": per_resource})
    tenant = await make_workspace(db, tier="enterprise")
    usage = {"input_tokens": 1200, "output_tokens": 800, "characters": 1500, "audio_in_ms": 90000.0}
    call_id, result = await bill(db, tenant, seconds=90, ended_at=JAN, usage=usage)
    assert await usage_rows(db, call_id) == {
        "call_minutes": (D("1.5"), D("0.07"), D("0.105"), D("12.5"), D("0.118125")),
        "ai_tokens": (D("2000"), D("0.000004"), D("0.008"), D("12.5"), D("0.009")),
        "transcription": (D("1500"), D("0.00003"), D("0.045"), D("12.5"), D("0.050625")),
    }
    assert dec(result.cost_total) == D("0.17775")
    assert [r.resource_type for r in result.records] == ["call_minutes", "ai_tokens", "transcription"]

    # The workspace's own override wins: a number prices call minutes, the rest stays.
    other = await make_workspace(db, tier="enterprise")
    await set_workspace_provider(db, other.workspace_id, "acme", config={"cost_per_unit": 0.05})
    call_id, _ = await bill(db, other, seconds=90, ended_at=JAN, usage={"input_tokens": 1000})
    rows = await usage_rows(db, call_id)
    assert rows["call_minutes"] == (D("1.5"), D("0.05"), D("0.075"), D("12.5"), D("0.084375"))
    assert rows["ai_tokens"] == (D("1000"), D("0.000004"), D("0.004"), D("12.5"), D("0.0045"))


async def test_own_key_pays_no_platform_provider_cost(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="starter")
    await set_workspace_provider(db, tenant.workspace_id, "acme", uses_platform_key=False)
    call_id, result = await bill(db, tenant, seconds=120, ended_at=JAN)
    assert await usage_rows(db, call_id) == {"call_minutes": (D("2"), D("0"), D("0"), D("20"), D("0"))}
    assert result.cost_total == 0.0


async def test_unknown_provider_costs_nothing_but_counts_minutes(db: Database) -> None:
    tenant = await make_workspace(db, tier="enterprise")
    call_id, result = await bill(db, tenant, seconds=61, ended_at=JAN, provider="nobody")
    assert await usage_rows(db, call_id) == {"call_minutes": (D("1.0167"), D("0"), D("0"), D("20"), D("0"))}
    assert result.cost_total == 0.0


async def test_subtotal_is_the_exact_sum_of_final_costs(db: Database, acme: None) -> None:
    await set_platform_provider(db, "drift", 0.0123)
    tenant = await make_workspace(db, tier="enterprise")
    for i in range(25):
        await bill(db, tenant, seconds=17 + 37 * i, ended_at=JAN + 1000 * i, provider="drift")
    [period] = await periods(db, tenant.workspace_id)
    assert period.subtotal == D("2.83515") == await sum_final_cost(db, period.id)
    state = await db.fetchone(
        "SELECT minutes_used FROM gw_billing_period_state WHERE billing_period_id = ?", (period.id,)
    )
    assert state is not None and dec(state[0]) == D("192.0833")


async def test_many_tenths_add_up_without_float_drift(db: Database) -> None:
    """Ten 0.1s add up to 0.9999999999999999 in floats; the stored subtotal must be exactly 1."""
    await set_markup(db, "0")
    await set_platform_provider(db, "tenth", 1.0)
    tenant = await make_workspace(db, tier="enterprise")
    for i in range(10):
        await bill(db, tenant, seconds=6, ended_at=JAN + 10 * i, provider="tenth")
    [period] = await periods(db, tenant.workspace_id)
    assert period.subtotal == D("1") == await sum_final_cost(db, period.id)
    assert sum([0.1] * 10) != 1.0  # the drift this guards against


async def test_billing_twice_is_a_no_op(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="starter")
    call_id, first = await bill(db, tenant, seconds=90, ended_at=JAN)
    again = await bill_call(db, BillableCall(call_id, tenant.workspace_id, "acme", JAN - 90, JAN, 90, {}))
    assert again.already_billed and not first.already_billed
    assert again.cost_total == first.cost_total == 0.18
    assert sorted(r.id for r in again.records) == sorted(r.id for r in first.records)
    [period] = await periods(db, tenant.workspace_id)
    assert period.subtotal == D("0.18")


async def test_concurrent_billing_bills_each_call_once(db: Database, backend: Backend, acme: None) -> None:
    """Several "gateway processes" (separate connections) race to bill the same calls."""
    others = [await open_database(backend.url) for _ in range(3)]
    try:
        tenant = await make_workspace(db, tier="starter")
        call_ids = [await make_call(db, tenant, started_at=JAN + i) for i in range(4)]
        calls = [BillableCall(c, tenant.workspace_id, "acme", JAN, JAN + 60, 60, {}) for c in call_ids]
        results = await asyncio.gather(*(bill_call(conn, call) for call in calls for conn in (db, *others)))
    finally:
        for conn in others:
            await conn.close()
    assert sum(not r.already_billed for r in results) == 4
    assert {r.cost_total for r in results} == {0.12}
    [period] = await periods(db, tenant.workspace_id)
    assert period.subtotal == D("0.48") == await sum_final_cost(db, period.id)
    count = await db.fetchone(
        "SELECT COUNT(*) FROM usage_records WHERE workspace_id = ?", (tenant.workspace_id,)
    )
    assert count is not None and count[0] == 4


async def test_bad_input_is_refused_and_writes_nothing(db: Database, acme: None) -> None:
    tenant = await make_workspace(db)
    call_id = await make_call(db, tenant, started_at=JAN)
    with pytest.raises(ValueError, match="duration_seconds"):
        await bill_call(db, BillableCall(call_id, tenant.workspace_id, "acme", JAN, JAN, -1, {}))
    with pytest.raises(ValueError, match="input_tokens"):
        await bill_call(
            db,
            BillableCall(
                call_id, tenant.workspace_id, "acme", JAN, JAN + 5, 5, {"input_tokens": float("nan")}
            ),
        )
    with pytest.raises(UnknownCall):
        await bill_call(db, BillableCall("no-such-call", tenant.workspace_id, "acme", JAN, JAN + 5, 5, {}))
    other = await make_workspace(db)
    with pytest.raises(ValueError, match="belongs to workspace"):
        await bill_call(db, BillableCall(call_id, other.workspace_id, "acme", JAN, JAN + 5, 5, {}))
    for table in ("usage_records", "billing_periods"):
        row = await db.fetchone(f"SELECT COUNT(*) FROM {table}")
        assert row is not None and row[0] == 0


# ---------------------------------------------------------------- limits


async def test_limit_refuses_new_calls_until_next_period(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="enterprise", limit=0.5)
    check = await check_call_allowed(db, tenant.workspace_id, JAN)
    assert (check.allowed, check.reason, check.used, check.limit) == (True, None, D("0"), D("0.5"))
    for i in range(2):  # 2 x 0.24
        await bill(db, tenant, seconds=120, ended_at=JAN + 200 * i)
    check = await check_call_allowed(db, tenant.workspace_id, JAN + 500)
    assert (check.allowed, check.reason, check.used, check.limit) == (True, None, D("0.48"), D("0.5"))
    await bill(db, tenant, seconds=120, ended_at=JAN + 600)
    check = await check_call_allowed(db, tenant.workspace_id, JAN + 700)
    assert (check.allowed, check.reason, check.used, check.limit) == (
        False,
        "usage_limit_reached",
        D("0.72"),
        D("0.5"),
    )
    # February: the January spend no longer counts.
    check = await check_call_allowed(db, tenant.workspace_id, at("UTC", 2024, 2, 1))
    assert (check.allowed, check.used) == (True, D("0"))


async def test_no_limit_always_allows(db: Database, acme: None) -> None:
    tenant = await make_workspace(db)
    await bill(db, tenant, seconds=600, ended_at=JAN)
    check = await check_call_allowed(db, tenant.workspace_id, JAN + 1)
    assert (check.allowed, check.reason, check.used, check.limit) == (True, None, D("1.2"), None)
    unknown = await check_call_allowed(db, "no-such-workspace", JAN)
    assert (unknown.allowed, unknown.used, unknown.limit) == (True, D("0"), None)


async def test_alert_is_recorded_once_per_period(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="enterprise", limit=1.0, threshold=50)
    results = [await bill(db, tenant, seconds=120, ended_at=JAN + 200 * i) for i in range(5)]  # 0.24 each
    assert [r.alert for _, r in results] == [False, False, True, False, False]  # 0.72 >= 0.50
    [(call_id, data)] = await events(db, "billing_alert")
    assert call_id == results[2][0]
    assert data is not None and '"spend":0.72' in data and '"threshold_percentage":50.0' in data
    # A new period alerts again.
    _, feb = await bill(db, tenant, seconds=300, ended_at=at("UTC", 2024, 2, 2))  # 0.60
    assert feb.alert and len(await events(db, "billing_alert")) == 2


async def test_auto_pause_at_the_limit(db: Database, acme: None) -> None:
    tenant = await make_workspace(
        db, tier="enterprise", limit=0.5, auto_pause=True, live_agents=2, draft_agents=1
    )
    results = [await bill(db, tenant, seconds=120, ended_at=JAN + 200 * i) for i in range(4)]
    assert [r.paused_agents for _, r in results] == [0, 0, 2, 0]
    statuses = await db.fetchall(
        "SELECT status FROM voice_agents WHERE workspace_id = ? ORDER BY status", (tenant.workspace_id,)
    )
    assert [r[0] for r in statuses] == ["draft", "paused", "paused"]
    [(call_id, data)] = await events(db, "billing_auto_pause")
    assert call_id == results[2][0] and data is not None and '"paused_agent_ids"' in data
    assert not (await check_call_allowed(db, tenant.workspace_id, JAN + 1000)).allowed


async def test_limit_without_auto_pause_pauses_nothing(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="enterprise", limit=0.1, auto_pause=False)
    _, result = await bill(db, tenant, seconds=120, ended_at=JAN)
    assert result.paused_agents == 0 and result.alert
    row = await db.fetchone("SELECT status FROM voice_agents WHERE workspace_id = ?", (tenant.workspace_id,))
    assert row is not None and row[0] == "live"
