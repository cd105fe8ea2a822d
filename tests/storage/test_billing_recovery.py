"""Billing the calls a crash left open (recover() closes them, bill_recovered_calls bills them) and
the calls whose billing failed when they ended (bill_failed_calls)."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from storage import calls
from storage.billing import (
    BILLING_FAILED_EVENT,
    BillableCall,
    bill_call,
    bill_failed_calls,
    bill_recovered_calls,
)
from storage.db import Database
from storage.recovery import recover
from tests.storage.billing_fixtures import (
    add_event,
    at,
    dec,
    make_call,
    make_workspace,
    periods,
    set_platform_provider,
    usage_rows,
)

T0 = at("UTC", 2024, 5, 10, 9, 0)
RESTART = T0 + 3600


async def test_crashed_calls_are_billed_from_start_to_last_event(db: Database) -> None:
    await set_platform_provider(db, "acme", 0.10)
    tenant = await make_workspace(db, tier="starter")
    talking = await make_call(db, tenant, started_at=T0)
    await add_event(db, talking, "answered", T0 + 2)
    await add_event(db, talking, "provider_connected", T0 + 95)  # last sign of life: 95 s in
    ringing = await make_call(db, tenant, started_at=T0 + 10, status="ringing")  # never answered
    done = await make_call(db, tenant, started_at=T0, status="completed")  # finished, not ours

    recovered = await recover(db, RESTART)
    assert sorted(c.id for c in recovered) == sorted([talking, ringing])

    assert await bill_recovered_calls(db, RESTART) == 2
    assert await usage_rows(db, talking) == {
        "call_minutes": (D("1.5833"), D("0.1"), D("0.15833"), D("20"), D("0.189996")),
    }
    assert await usage_rows(db, ringing) == {"call_minutes": (D("0"), D("0.1"), D("0"), D("20"), D("0"))}
    assert await usage_rows(db, done) == {}
    row = await db.fetchone("SELECT status, duration_seconds, cost_total FROM calls WHERE id = ?", (talking,))
    assert row is not None and (row[0], row[1], dec(row[2])) == ("failed", 95, D("0.189996"))
    [period] = await periods(db, tenant.workspace_id)
    assert period.subtotal == D("0.189996")

    assert await bill_recovered_calls(db, RESTART + 60) == 0  # idempotent


async def test_recovery_billing_races_a_late_flush_safely(db: Database) -> None:
    await set_platform_provider(db, "acme", 0.10)
    tenant = await make_workspace(db, tier="starter")
    call_id = await make_call(db, tenant, started_at=T0)
    await add_event(db, call_id, "answered", T0 + 60)
    await recover(db, RESTART)
    late = BillableCall(call_id, tenant.workspace_id, "acme", T0, T0 + 60, 60, {})
    billed, result = await asyncio.gather(bill_recovered_calls(db, RESTART), bill_call(db, late))
    assert billed + (not result.already_billed) == 1
    [period] = await periods(db, tenant.workspace_id)
    assert period.subtotal == D("0.12")


async def test_calls_whose_billing_failed_are_billed_from_their_ended_event(db: Database) -> None:
    await set_platform_provider(db, "acme", 0.10)
    tenant = await make_workspace(db, tier="starter")
    call_id = await make_call(db, tenant, started_at=T0, status="completed")
    finish = calls.finish_call_stmt(call_id, "completed", 120, T0 + 120, "acme", None, None)
    ended = calls.insert_event_stmt(
        call_id,
        "ended",
        {"duration_seconds": 120, "provider": "acme", "usage": {"audio_in_ms": 120000.0}},
        T0 + 120,
    )
    failed = calls.insert_event_stmt(call_id, BILLING_FAILED_EVENT, {"attempts": 3}, T0 + 121)
    for stmt in (finish, ended, failed):
        await db.execute(stmt.sql, stmt.params)
    billed_elsewhere = await make_call(db, tenant, started_at=T0, status="completed")

    assert await bill_failed_calls(db, RESTART) == 1
    assert await usage_rows(db, call_id) == {
        "call_minutes": (D("2"), D("0.1"), D("0.2"), D("20"), D("0.24")),
    }
    assert await usage_rows(db, billed_elsewhere) == {}
    # The writer may flush the call's closing row (cost unknown) after the re-bill: it keeps the cost.
    await db.execute(finish.sql, finish.params)
    row = await db.fetchone("SELECT cost_total FROM calls WHERE id = ?", (call_id,))
    assert row is not None and dec(row[0]) == D("0.24")
    assert await bill_failed_calls(db, RESTART + 60) == 0  # idempotent
