"""The life of a workspace's billing periods: open, roll over, finalize — inside a transaction.

Every function here runs inside ``db.transaction()`` after ``lock_workspace``, which serializes
all billing of one workspace: on PostgreSQL a transaction-scoped advisory lock keyed by the
workspace (gateways on several machines may bill the same workspace at once); on SQLite the
write transaction already serializes everything. Unique indexes (migration 0003) back this up:
one ``current`` period per workspace, one period per (workspace, period_start).

Rules:
- a workspace has at most one ``current`` period; usage billed at time ``t`` goes into it when
  ``t < period_end`` (also when ``t`` is before its start: late usage lands on the open invoice,
  finalized invoices never change);
- at ``t >= period_end`` the period is finalized (subtotal recomputed exactly from its usage
  rows, ``subscription_fee`` = the tier's ``monthly_fee`` now, ``total_amount`` = the sum) and
  the next one opens where it ended, month after month, so idle months still carry the fee;
  a ``cancelled`` workspace gets no next period;
- with no current period, the period of the local month containing ``t`` opens (or, when older
  periods already cover ``t``, the month after the latest one).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from decimal import Decimal

from storage.billing_calendar import month_start, next_month_start, workspace_zone
from storage.billing_pricing import ZERO, money, stored_decimal
from storage.billing_rates import tier_pricing
from storage.db import Database, Executor
from storage.ids import new_id
from storage.models import BillingPeriod, columns, field_names, from_row

log = logging.getLogger(__name__)

CURRENT = "current"
FINALIZED = "finalized"
CANCELLED_WORKSPACE = "cancelled"

# First key of pg_advisory_xact_lock(int4, int4); the migrator's single-bigint lock lives in a
# separate key space.
_BILLING_LOCK_CLASS = 0x62696C6C  # "bill"


@dataclass(frozen=True, slots=True)
class BillingWorkspace:
    """The workspace columns billing needs."""

    id: str
    status: str | None
    subscription_tier: str | None
    timezone: str | None


def workspace_lock_key(workspace_id: str) -> int:
    """A stable signed 32-bit key per workspace (a collision only serializes two workspaces)."""
    digest = hashlib.blake2b(workspace_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_workspace(tx: Executor, workspace_id: str) -> None:
    """Serializes this workspace's billing until the transaction ends."""
    if tx.dialect == "postgresql":
        key = workspace_lock_key(workspace_id)
        await tx.execute("SELECT pg_advisory_xact_lock(?, ?)", (_BILLING_LOCK_CLASS, key))


async def load_workspace(tx: Executor, workspace_id: str) -> BillingWorkspace | None:
    row = await tx.fetchone(
        "SELECT id, status, subscription_tier, timezone FROM workspaces WHERE id = ?", (workspace_id,)
    )
    return None if row is None else BillingWorkspace(*tuple(row))


async def get_current_period(tx: Executor, workspace_id: str) -> BillingPeriod | None:
    row = await tx.fetchone(
        f"SELECT {columns(BillingPeriod)} FROM billing_periods WHERE workspace_id = ? AND status = 'current'",
        (workspace_id,),
    )
    return None if row is None else from_row(BillingPeriod, row)


async def open_period(
    tx: Executor, workspace: BillingWorkspace, start: int, end: int, now_s: int
) -> BillingPeriod:
    """Inserts a ``current`` period and its state row; the tier's fee is shown from the start."""
    tier = await tier_pricing(tx, workspace.subscription_tier)
    fee = tier.monthly_fee if tier is not None else ZERO
    period = BillingPeriod(
        id=new_id(),
        workspace_id=workspace.id,
        period_start=start,
        period_end=end,
        subtotal=0.0,
        subscription_fee=float(fee),
        total_amount=float(fee),
        status=CURRENT,
        stripe_invoice_id=None,
        paid_at=None,
        created_at=now_s,
    )
    await tx.execute(
        f"INSERT INTO billing_periods ({columns(BillingPeriod)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        tuple(getattr(period, name) for name in field_names(BillingPeriod)),
    )
    await tx.execute("INSERT INTO gw_billing_period_state (billing_period_id) VALUES (?)", (period.id,))
    log.info("workspace %s: opened billing period %s [%d, %d)", workspace.id, period.id, start, end)
    return period


async def period_subtotal(tx: Executor, period_id: str) -> Decimal:
    """Exact sum of the period's usage ``final_cost``s."""
    rows = await tx.fetchall("SELECT final_cost FROM usage_records WHERE billing_period_id = ?", (period_id,))
    return sum((stored_decimal(row[0]) for row in rows), ZERO)


async def finalize_period(tx: Executor, workspace: BillingWorkspace, period: BillingPeriod) -> None:
    subtotal = await period_subtotal(tx, period.id)
    running = stored_decimal(period.subtotal)
    if subtotal != running:
        log.error(
            "billing period %s: running subtotal %s != sum of usage %s; invoicing the sum",
            period.id,
            running,
            subtotal,
        )
    tier = await tier_pricing(tx, workspace.subscription_tier)
    fee = tier.monthly_fee if tier is not None else ZERO
    await tx.execute(
        "UPDATE billing_periods SET status = 'finalized', subtotal = ?, subscription_fee = ?,"
        " total_amount = ? WHERE id = ? AND status = 'current'",
        (float(subtotal), float(fee), float(money(subtotal + fee)), period.id),
    )
    log.info(
        "workspace %s: finalized billing period %s: usage %s + fee %s = %s",
        workspace.id,
        period.id,
        subtotal,
        fee,
        money(subtotal + fee),
    )


async def roll_forward(
    tx: Executor, workspace: BillingWorkspace, at_s: int, now_s: int
) -> tuple[BillingPeriod | None, list[str]]:
    """Finalizes current periods that ended by ``at_s`` and opens their successors.

    Returns the period now current (None: none, or a cancelled workspace) and the ids finalized.
    """
    zone = workspace_zone(workspace.timezone)
    period = await get_current_period(tx, workspace.id)
    finalized: list[str] = []
    while period is not None and at_s >= period.period_end:
        await finalize_period(tx, workspace, period)
        finalized.append(period.id)
        if workspace.status == CANCELLED_WORKSPACE:
            return None, finalized
        start = period.period_end
        period = await open_period(tx, workspace, start, next_month_start(zone, start), now_s)
    return period, finalized


async def period_for_usage(
    tx: Executor, workspace: BillingWorkspace, at_s: int, now_s: int
) -> tuple[BillingPeriod, list[str]]:
    """The period usage at ``at_s`` is billed into (opened if needed), and the ids finalized."""
    period, finalized = await roll_forward(tx, workspace, at_s, now_s)
    if period is not None:
        return period, finalized
    zone = workspace_zone(workspace.timezone)
    start = month_start(zone, at_s)
    row = await tx.fetchone(
        "SELECT MAX(period_end) FROM billing_periods WHERE workspace_id = ?", (workspace.id,)
    )
    latest_end = None if row is None or row[0] is None else int(row[0])
    if latest_end is not None and start < latest_end:
        start = latest_end
    return await open_period(tx, workspace, start, next_month_start(zone, start), now_s), finalized


async def close_periods(db: Database, now_s: int) -> list[str]:
    """Finalizes every ``current`` period that ended by ``now_s`` and opens the next ones (the
    ``voicegw billing close-periods`` cron job). Idempotent; returns the ids finalized now."""
    rows = await db.fetchall(
        "SELECT DISTINCT workspace_id FROM billing_periods WHERE status = 'current' AND period_end <= ?"
        " ORDER BY workspace_id",
        (int(now_s),),
    )
    finalized: list[str] = []
    for row in rows:
        async with db.transaction() as tx:
            await lock_workspace(tx, row[0])
            workspace = await load_workspace(tx, row[0])
            if workspace is not None:
                finalized += (await roll_forward(tx, workspace, int(now_s), int(now_s)))[1]
    return finalized
