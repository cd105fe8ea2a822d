"""Monthly periods in the workspace's timezone: boundaries, rollover, close_periods, late usage."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from storage.billing import close_periods
from storage.billing_calendar import month_start, next_month_start, period_label, workspace_zone
from storage.db import Database
from tests.storage.billing_fixtures import at, bill, make_workspace, periods, set_platform_provider

NY = "America/New_York"
HOUR, DAY = 3600, 86400


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


@pytest.fixture
async def acme(db: Database) -> None:
    await set_platform_provider(db, "acme", 0.10)


@pytest.mark.parametrize(
    ("zone", "at_s", "start", "end"),
    [
        ("UTC", utc(2024, 2, 29, 23, 59, 59), utc(2024, 2, 1), utc(2024, 3, 1)),
        (NY, utc(2024, 2, 1, 4, 59, 59), utc(2024, 1, 1, 5), utc(2024, 2, 1, 5)),  # Jan 31 23:59:59 EST
        (NY, utc(2024, 2, 1, 5), utc(2024, 2, 1, 5), utc(2024, 3, 1, 5)),
        (NY, utc(2024, 3, 15), utc(2024, 3, 1, 5), utc(2024, 4, 1, 4)),  # DST starts Mar 10
        (NY, utc(2024, 11, 15), utc(2024, 11, 1, 4), utc(2024, 12, 1, 5)),  # DST ends Nov 3
        ("Asia/Kolkata", utc(2024, 1, 31, 18, 29), utc(2023, 12, 31, 18, 30), utc(2024, 1, 31, 18, 30)),
        ("Australia/Sydney", utc(2024, 4, 10), utc(2024, 3, 31, 13), utc(2024, 4, 30, 14)),  # DST ends Apr 7
        ("Not/AZone", utc(2024, 5, 5), utc(2024, 5, 1), utc(2024, 6, 1)),  # unknown zone: UTC
    ],
)
def test_month_boundaries(zone: str, at_s: int, start: int, end: int) -> None:
    tz = workspace_zone(zone)
    assert (month_start(tz, at_s), next_month_start(tz, at_s)) == (start, end)
    assert period_label(tz, start) == datetime.fromtimestamp(at_s, tz).strftime("%Y-%m")


async def test_rollover_at_a_new_york_month_end(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="starter", timezone=NY)
    await bill(db, tenant, seconds=600, ended_at=at(NY, 2024, 1, 31, 23, 30))  # 04:30 UTC on Feb 1
    await bill(db, tenant, seconds=60, ended_at=utc(2024, 2, 1, 3))  # still January in New York
    [jan] = await periods(db, tenant.workspace_id)
    assert (jan.start, jan.end, jan.status) == (utc(2024, 1, 1, 5), utc(2024, 2, 1, 5), "current")
    assert jan.subtotal == D("1.32")

    await bill(db, tenant, seconds=120, ended_at=at(NY, 2024, 2, 1, 0, 30))
    jan, feb = await periods(db, tenant.workspace_id)
    assert (jan.status, jan.subtotal, jan.fee, jan.total) == ("finalized", D("1.32"), D("29.99"), D("31.31"))
    assert (feb.start, feb.end, feb.status, feb.subtotal) == (
        utc(2024, 2, 1, 5),
        utc(2024, 3, 1, 5),
        "current",
        D("0.24"),
    )


async def test_idle_months_are_finalized_with_the_fee_across_dst(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="professional", timezone=NY)
    await bill(db, tenant, seconds=600, ended_at=at(NY, 2024, 1, 20))
    await bill(db, tenant, seconds=60, ended_at=at(NY, 2024, 4, 15))
    jan, feb, mar, apr = await periods(db, tenant.workspace_id)
    assert [p.status for p in (jan, feb, mar, apr)] == ["finalized"] * 3 + ["current"]
    assert [(p.subtotal, p.fee, p.total) for p in (jan, feb, mar)] == [
        (D("1.2"), D("99.99"), D("101.19")),
        (D("0"), D("99.99"), D("99.99")),
        (D("0"), D("99.99"), D("99.99")),
    ]
    assert (mar.start, mar.end) == (utc(2024, 3, 1, 5), utc(2024, 4, 1, 4))
    assert mar.end - mar.start == 31 * DAY - HOUR  # the DST hour is skipped
    assert [p.end for p in (jan, feb, mar)] == [p.start for p in (feb, mar, apr)]  # contiguous
    assert apr.subtotal == D("0.12")


async def test_close_periods_is_idempotent_and_opens_the_next(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="starter", timezone=NY)
    await bill(db, tenant, seconds=300, ended_at=at(NY, 2024, 11, 20))
    [nov] = await periods(db, tenant.workspace_id)
    assert nov.end - nov.start == 30 * DAY + HOUR  # DST ended Nov 3

    assert await close_periods(db, utc(2024, 12, 1, 4, 59, 59)) == []  # 23:59:59 EST, Nov 30
    assert await close_periods(db, utc(2024, 12, 1, 5)) == [nov.id]
    assert await close_periods(db, utc(2024, 12, 1, 5)) == []
    nov, dec_ = await periods(db, tenant.workspace_id)
    assert (nov.status, nov.subtotal, nov.fee, nov.total) == ("finalized", D("0.6"), D("29.99"), D("30.59"))
    assert (dec_.start, dec_.end, dec_.status, dec_.fee) == (
        utc(2024, 12, 1, 5),
        utc(2025, 1, 1, 5),
        "current",
        D("29.99"),
    )

    # A late call that ended in November (e.g. billed after a crash) lands on the open invoice.
    await bill(db, tenant, seconds=60, ended_at=at(NY, 2024, 11, 30, 12), now_s=utc(2024, 12, 2))
    nov, dec_ = await periods(db, tenant.workspace_id)
    assert (nov.subtotal, dec_.subtotal) == (D("0.6"), D("0.12"))


async def test_cancelled_workspace_gets_no_next_period(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="starter")
    await bill(db, tenant, seconds=60, ended_at=utc(2024, 1, 5))
    await db.execute("UPDATE workspaces SET status = 'cancelled' WHERE id = ?", (tenant.workspace_id,))
    [jan_id] = await close_periods(db, utc(2024, 3, 1))
    [jan] = await periods(db, tenant.workspace_id)
    assert (jan.id, jan.status, jan.total) == (jan_id, "finalized", D("30.11"))


async def test_a_call_ending_in_the_future_does_not_close_the_period(db: Database, acme: None) -> None:
    tenant = await make_workspace(db, tier="starter")
    await bill(db, tenant, seconds=60, ended_at=utc(2024, 3, 5), now_s=utc(2024, 1, 20))  # skewed clock
    [jan] = await periods(db, tenant.workspace_id)
    assert (jan.start, jan.status, jan.subtotal) == (utc(2024, 1, 1), "current", D("0.12"))
