"""Per-workspace billing report: one row per billing period, figures exact (``Decimal``).

Without a period, each workspace's ``current`` period; with ``YYYY-MM``, the periods covering
that month in each workspace's own timezone. Breakdown sums are taken from the usage rows, the
invoice figures (subtotal, fee, total) from the period row they must agree with.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from storage.billing_calendar import parse_label, period_label, workspace_zone
from storage.billing_pricing import (
    CALL_MINUTES,
    MINUTES_QUANTUM,
    OVERAGE_MINUTES,
    ZERO,
    TierPricing,
    stored_decimal,
)
from storage.billing_rates import tier_pricing
from storage.db import Executor
from storage.models import BillingPeriod, columns, field_names, from_row

_DAY_S = 86_400
_IN_CHUNK = 500
_PERCENT_QUANTUM = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class ReportRow:
    workspace_id: str
    workspace_name: str
    period: str  # YYYY-MM, local month of the period
    period_id: str
    status: str
    period_start: int
    period_end: int
    minutes: Decimal  # call minutes billed
    included_minutes: Decimal  # the tier's allowance now (0: none)
    overage_minutes: Decimal  # minutes charged at the tier's price_per_minute
    cost: Decimal  # sum of total_cost: provider costs and overage, before markup
    markup: Decimal  # sum of final_cost - total_cost
    subtotal: Decimal  # billing_periods.subtotal = sum of final_cost
    subscription_fee: Decimal
    total: Decimal  # billing_periods.total_amount = subtotal + subscription_fee
    limit: Decimal | None  # usage_limit_monthly now (None: no limit)
    limit_used_pct: Decimal | None  # subtotal / limit in percent, 1 decimal


@dataclass(slots=True)
class _Sums:
    minutes: Decimal = ZERO
    overage: Decimal = ZERO
    cost: Decimal = ZERO
    final: Decimal = ZERO


async def _usage_sums(db: Executor, period_ids: list[str]) -> dict[str, _Sums]:
    sums: dict[str, _Sums] = defaultdict(_Sums)
    for i in range(0, len(period_ids), _IN_CHUNK):
        chunk = period_ids[i : i + _IN_CHUNK]
        rows = await db.fetchall(
            "SELECT billing_period_id, resource_type, quantity, total_cost, final_cost FROM usage_records"
            f" WHERE billing_period_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for period_id, resource_type, quantity, total_cost, final_cost in rows:
            s = sums[period_id]
            if resource_type == CALL_MINUTES:
                s.minutes += stored_decimal(quantity, MINUTES_QUANTUM)
            elif resource_type == OVERAGE_MINUTES:
                s.overage += stored_decimal(quantity, MINUTES_QUANTUM)
            s.cost += stored_decimal(total_cost)
            s.final += stored_decimal(final_cost)
    return sums


async def billing_report(
    db: Executor, workspace_id: str | None = None, period: str | None = None
) -> list[ReportRow]:
    """Report rows ordered by workspace name, then period start. Bad ``period`` → ValueError."""
    where: list[str] = []
    params: list[Any] = []
    if workspace_id is not None:
        where.append("p.workspace_id = ?")
        params.append(workspace_id)
    if period is None:
        where.append("p.status = 'current'")
    else:
        year, month = parse_label(period)
        # Local month starts are within a day of the UTC one, whatever the zone.
        utc_start = int(datetime(year, month, 1, tzinfo=UTC).timestamp())
        where.append("p.period_start > ? AND p.period_start < ?")
        params += [utc_start - _DAY_S, utc_start + _DAY_S]
    rows = await db.fetchall(
        f"SELECT {columns(BillingPeriod, 'p')}, w.name, w.timezone, w.subscription_tier,"
        " s.usage_limit_monthly FROM billing_periods p JOIN workspaces w ON w.id = p.workspace_id"
        " LEFT JOIN workspace_billing_settings s ON s.workspace_id = p.workspace_id"
        f" WHERE {' AND '.join(where)} ORDER BY w.name, p.workspace_id, p.period_start",
        params,
    )
    n = len(field_names(BillingPeriod))
    selected = []
    for row in rows:
        values = tuple(row)
        bp = from_row(BillingPeriod, values)
        name, timezone, tier_name, limit = values[n:]
        label = period_label(workspace_zone(timezone), bp.period_start)
        if period is None or label == period:
            selected.append((bp, name, tier_name, limit, label))

    sums = await _usage_sums(db, [bp.id for bp, *_ in selected])
    tiers: dict[str, TierPricing | None] = {}
    report = []
    for bp, name, tier_name, limit_value, label in selected:
        if tier_name not in tiers:
            tiers[tier_name] = await tier_pricing(db, tier_name)
        tier = tiers[tier_name]
        s = sums.get(bp.id, _Sums())
        subtotal = stored_decimal(bp.subtotal)
        limit = None if limit_value is None else stored_decimal(limit_value)
        used_pct = None
        if limit is not None and limit > 0:
            used_pct = (subtotal * 100 / limit).quantize(_PERCENT_QUANTUM, rounding=ROUND_HALF_UP)
        report.append(
            ReportRow(
                workspace_id=bp.workspace_id,
                workspace_name=name,
                period=label,
                period_id=bp.id,
                status=bp.status or "current",
                period_start=bp.period_start,
                period_end=bp.period_end,
                minutes=s.minutes,
                included_minutes=tier.included_minutes if tier is not None else ZERO,
                overage_minutes=s.overage,
                cost=s.cost,
                markup=s.final - s.cost,
                subtotal=subtotal,
                subscription_fee=stored_decimal(bp.subscription_fee),
                total=stored_decimal(bp.total_amount),
                limit=limit,
                limit_used_pct=used_pct,
            )
        )
    return report
