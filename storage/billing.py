"""Usage billing: what the gateway calls at call setup and at call end (see docs/billing.md).

- ``check_call_allowed(db, workspace_id, now_s)`` — at the webhook: one round trip, two indexed
  lookups; refuses with ``usage_limit_reached`` when the workspace has a ``usage_limit_monthly``
  and its current period's spend (``subtotal``, the sum of usage ``final_cost``) has reached it.
- ``bill_call(db, call)`` — once the call is over and its media socket gone (never on the audio
  path; the ``calls`` row must already be committed). In ONE transaction, serialized per
  workspace: picks the period (rolling over months as needed, ``storage.billing_periods``),
  prices the call (``storage.billing_pricing``, prices from ``storage.billing_rates``), writes one
  ``usage_records`` row per charge, adds their ``final_cost`` to the period's subtotal, sets
  ``calls.cost_total``, and applies the workspace's limits: the usage alert fires once per
  period when spend reaches ``alert_threshold_percentage`` of the limit (a ``billing_alert`` call
  event on that call plus a log line); reaching the limit with ``auto_pause_on_limit`` pauses
  the workspace's ``live`` agents (a ``billing_auto_pause`` event). Idempotent by call id: a call
  already billed returns its rows with ``already_billed=True`` and changes nothing.
  Pricing (details in ``storage.billing_pricing`` and docs/billing.md): provider usage
  (``call_minutes``, ``ai_tokens``, ``transcription``) is charged at the provider's unit cost plus
  the platform markup; the tier's included minutes are a platform allowance consumed by every
  call minute of the period, and minutes past it add an ``overage_minutes`` row at the tier's
  ``price_per_minute`` with no markup (it is already a list price).
- ``bill_recovered_calls(db, now_s)`` — after ``storage.recovery.recover``: bills the calls it
  closed, from their recorded start and last event (minutes only: usage facts died with the
  process).
- ``bill_failed_calls(db, now_s)`` — bills calls whose billing failed at their end
  (``billing_failed`` event), with the usage facts of their ``ended`` event.
- ``close_periods`` and ``billing_report`` are re-exported from their modules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from decimal import Decimal

import orjson

from storage.billing_periods import (
    BillingWorkspace,
    close_periods,
    load_workspace,
    lock_workspace,
    period_for_usage,
)
from storage.billing_pricing import (
    MINUTES_QUANTUM,
    ZERO,
    Charge,
    billed_minutes,
    money,
    price_call,
    stored_decimal,
)
from storage.billing_rates import load_rates
from storage.billing_report import ReportRow, billing_report
from storage.db import Database, Executor, Row
from storage.ids import new_id
from storage.ids import now_s as wall_clock_s
from storage.models import BillingPeriod, UsageRecord, columns, dump_json, field_names, from_row
from storage.recovery import RECOVERED_EVENT, RECOVERED_STATUS

log = logging.getLogger(__name__)

__all__ = [
    "BillResult",
    "BillableCall",
    "LimitCheck",
    "ReportRow",
    "UnknownCall",
    "bill_call",
    "bill_failed_calls",
    "bill_recovered_calls",
    "billing_report",
    "check_call_allowed",
    "close_periods",
]

USAGE_LIMIT_REACHED = "usage_limit_reached"
ALERT_EVENT = "billing_alert"
AUTO_PAUSE_EVENT = "billing_auto_pause"
DEFAULT_ALERT_THRESHOLD_PERCENTAGE = Decimal(80)


class UnknownCall(LookupError):
    """``bill_call`` for a call (or workspace) the database does not have."""


@dataclass(frozen=True, slots=True)
class LimitCheck:
    allowed: bool
    reason: str | None  # "usage_limit_reached" when refused
    used: Decimal  # spend of the current period so far (its subtotal)
    limit: Decimal | None  # usage_limit_monthly; None: no limit


@dataclass(frozen=True, slots=True)
class BillableCall:
    """A finished call as the gateway saw it. ``usage`` holds provider-reported facts:
    ``input_tokens``, ``output_tokens``, ``characters`` (billed) and ``audio_in_ms``,
    ``audio_out_ms`` (informational)."""

    call_id: str
    workspace_id: str
    provider: str
    started_at: int
    ended_at: int
    duration_seconds: int
    usage: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BillResult:
    cost_total: float  # the call's final cost (sum of its rows' final_cost), for calls.cost_total
    records: list[UsageRecord]
    alert: bool  # this call fired the period's usage alert
    paused_agents: int  # agents this call's limit crossing paused
    already_billed: bool  # nothing was written: the call had been billed before


# ---------------------------------------------------------------- call setup

_LIMIT_AND_SPEND = """
SELECT (SELECT usage_limit_monthly FROM workspace_billing_settings WHERE workspace_id = ?) AS usage_limit,
       (SELECT subtotal FROM billing_periods
        WHERE workspace_id = ? AND status = 'current' AND period_end > ?) AS spend
"""


async def check_call_allowed(db: Executor, workspace_id: str, now_s: int) -> LimitCheck:
    """May this workspace take a new call now? A period that has ended counts as spend 0."""
    row = await db.fetchone(_LIMIT_AND_SPEND, (workspace_id, workspace_id, int(now_s)))
    limit = None if row is None or row["usage_limit"] is None else stored_decimal(row["usage_limit"])
    used = ZERO if row is None else stored_decimal(row["spend"])
    if limit is not None and used >= limit:
        return LimitCheck(False, USAGE_LIMIT_REACHED, used, limit)
    return LimitCheck(True, None, used, limit)


# ---------------------------------------------------------------- call end

_USAGE_FIELDS = field_names(UsageRecord)
_INSERT_USAGE = (
    f"INSERT INTO usage_records ({columns(UsageRecord)}) VALUES ({', '.join('?' * len(_USAGE_FIELDS))})"
)
_INSERT_EVENT = (
    "INSERT INTO call_events (id, call_id, event_type, event_data, timestamp) VALUES (?, ?, ?, ?, ?)"
)


def _validate(call: BillableCall) -> None:
    if call.duration_seconds < 0:
        raise ValueError(f"call {call.call_id}: duration_seconds must be >= 0, got {call.duration_seconds}")
    if call.ended_at < call.started_at:
        raise ValueError(
            f"call {call.call_id}: ended_at {call.ended_at} is before started_at {call.started_at}"
        )


async def _existing_records(tx: Executor, call_id: str) -> list[UsageRecord]:
    rows = await tx.fetchall(
        f"SELECT {columns(UsageRecord)} FROM usage_records WHERE call_id = ? ORDER BY id", (call_id,)
    )
    return [from_row(UsageRecord, row) for row in rows]


async def _load_call_workspace(tx: Executor, call: BillableCall) -> BillingWorkspace:
    row = await tx.fetchone("SELECT workspace_id FROM calls WHERE id = ?", (call.call_id,))
    if row is None:
        raise UnknownCall(f"call {call.call_id} not found (is its calls row committed?)")
    if row[0] != call.workspace_id:
        raise ValueError(f"call {call.call_id} belongs to workspace {row[0]}, not {call.workspace_id}")
    workspace = await load_workspace(tx, call.workspace_id)
    if workspace is None:
        raise UnknownCall(f"workspace {call.workspace_id} not found")
    return workspace


def _record(charge: Charge, call: BillableCall, period: BillingPeriod, created_at: int) -> UsageRecord:
    return UsageRecord(
        id=new_id(),
        workspace_id=call.workspace_id,
        call_id=call.call_id,
        resource_type=charge.resource_type,
        provider=charge.provider,
        quantity=float(charge.quantity),
        unit_cost=float(charge.unit_cost),
        total_cost=float(charge.total_cost),
        markup_percentage=float(charge.markup_percentage),
        final_cost=float(charge.final_cost),
        billing_period_id=period.id,
        created_at=created_at,
    )


@dataclass(frozen=True, slots=True)
class _LimitOutcome:
    alert: bool
    paused_agent_ids: list[str]
    limit_reached: bool


async def _apply_limits(
    tx: Executor,
    call: BillableCall,
    period_id: str,
    spend_before: Decimal,
    spend: Decimal,
    alert_sent: bool,
    now_s: int,
) -> _LimitOutcome:
    row = await tx.fetchone(
        "SELECT usage_limit_monthly, alert_threshold_percentage, auto_pause_on_limit"
        " FROM workspace_billing_settings WHERE workspace_id = ?",
        (call.workspace_id,),
    )
    if row is None or row[0] is None:
        return _LimitOutcome(False, [], False)
    limit = stored_decimal(row[0])
    threshold_pct = DEFAULT_ALERT_THRESHOLD_PERCENTAGE if row[1] is None else stored_decimal(row[1])
    threshold = money(limit * threshold_pct / 100)
    facts = {"billing_period_id": period_id, "spend": float(spend), "limit": float(limit)}

    alert = not alert_sent and spend >= threshold
    if alert:
        data = dump_json({**facts, "threshold_percentage": float(threshold_pct)})
        await tx.execute(_INSERT_EVENT, (new_id(), call.call_id, ALERT_EVENT, data, now_s))
        await tx.execute(
            "UPDATE gw_billing_period_state SET alert_sent_at = ? WHERE billing_period_id = ?",
            (now_s, period_id),
        )

    paused: list[str] = []
    if spend >= limit and row[2]:
        paused = [
            r[0]
            for r in await tx.fetchall(
                "UPDATE voice_agents SET status = 'paused', updated_at = ?"
                " WHERE workspace_id = ? AND status = 'live' RETURNING id",
                (now_s, call.workspace_id),
            )
        ]
        if paused:
            await tx.execute(
                _INSERT_EVENT,
                (
                    new_id(),
                    call.call_id,
                    AUTO_PAUSE_EVENT,
                    dump_json({**facts, "paused_agent_ids": sorted(paused)}),
                    now_s,
                ),
            )
    return _LimitOutcome(alert, paused, spend_before < limit <= spend)


async def bill_call(db: Database, call: BillableCall, *, now_s: int | None = None) -> BillResult:
    """Bills a finished call exactly once (see the module docstring). ``now_s`` (default: the
    clock) stamps the rows written; the call's ``ended_at`` (at most ``now_s``) picks the period.

    Raises ValueError for impossible input, UnknownCall when the call or workspace is missing;
    nothing is written then.
    """
    _validate(call)
    now = wall_clock_s() if now_s is None else int(now_s)
    async with db.transaction() as tx:
        await lock_workspace(tx, call.workspace_id)
        existing = await _existing_records(tx, call.call_id)
        if existing:
            cost = sum((stored_decimal(r.final_cost) for r in existing), ZERO)
            return BillResult(float(cost), existing, alert=False, paused_agents=0, already_billed=True)

        workspace = await _load_call_workspace(tx, call)
        # A call "ending" in the future (a skewed clock) must not finalize the open period early.
        period, _ = await period_for_usage(tx, workspace, min(call.ended_at, now), now)
        state = await tx.fetchone(
            "SELECT minutes_used, alert_sent_at FROM gw_billing_period_state WHERE billing_period_id = ?",
            (period.id,),
        )
        minutes_before = ZERO if state is None else stored_decimal(state[0], MINUTES_QUANTUM)
        alert_sent = state is not None and state[1] is not None

        rates = await load_rates(tx, call.workspace_id, call.provider, workspace.subscription_tier)
        charges = price_call(
            provider=call.provider,
            duration_seconds=call.duration_seconds,
            usage=call.usage,
            rates=rates,
            minutes_used_before=minutes_before,
        )
        records = [_record(charge, call, period, now) for charge in charges]
        await tx.executemany(_INSERT_USAGE, [tuple(getattr(r, n) for n in _USAGE_FIELDS) for r in records])

        cost = sum((c.final_cost for c in charges), ZERO)
        spend_before = stored_decimal(period.subtotal)
        spend = spend_before + cost
        fee = stored_decimal(period.subscription_fee)
        await tx.execute(
            "UPDATE billing_periods SET subtotal = ?, total_amount = ? WHERE id = ?",
            (float(spend), float(spend + fee), period.id),
        )
        minutes_after = minutes_before + billed_minutes(call.duration_seconds)
        await tx.execute(
            "INSERT INTO gw_billing_period_state (billing_period_id, minutes_used) VALUES (?, ?)"
            " ON CONFLICT (billing_period_id) DO UPDATE SET minutes_used = excluded.minutes_used",
            (period.id, float(minutes_after)),
        )
        await tx.execute("UPDATE calls SET cost_total = ? WHERE id = ?", (float(cost), call.call_id))
        limits = await _apply_limits(tx, call, period.id, spend_before, spend, alert_sent, now)

    if limits.alert:
        log.warning(
            "workspace %s: usage alert: spend %s reached the alert threshold (period %s, call %s)",
            call.workspace_id,
            spend,
            period.id,
            call.call_id,
        )
    if limits.limit_reached:
        log.warning(
            "workspace %s: usage limit reached: spend %s (period %s)", call.workspace_id, spend, period.id
        )
    if limits.paused_agent_ids:
        log.warning(
            "workspace %s: auto-paused %d live agent(s) at the usage limit",
            call.workspace_id,
            len(limits.paused_agent_ids),
        )
    return BillResult(
        float(cost),
        records,
        alert=limits.alert,
        paused_agents=len(limits.paused_agent_ids),
        already_billed=False,
    )


# ---------------------------------------------------------------- after a crash

_UNBILLED_RECOVERED = """
SELECT c.id, c.workspace_id, c.voice_provider_used, c.started_at, c.ended_at, c.duration_seconds
FROM calls c
WHERE c.status = ?
  AND EXISTS (SELECT 1 FROM call_events e WHERE e.call_id = c.id AND e.event_type = ?)
  AND NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.call_id = c.id)
ORDER BY c.ended_at, c.id
"""


def _recovered_billable(row: Row) -> BillableCall:
    start = int(row["started_at"])
    end = start if row["ended_at"] is None else max(start, int(row["ended_at"]))
    seconds = end - start if row["duration_seconds"] is None else max(0, int(row["duration_seconds"]))
    return BillableCall(
        call_id=row["id"],
        workspace_id=row["workspace_id"],
        provider=row["voice_provider_used"],
        started_at=start,
        ended_at=end,
        duration_seconds=seconds,
        usage={},
    )


BILLING_FAILED_EVENT = "billing_failed"  # the gateway gave up billing a call at its end
_UNBILLED_FAILED = """
SELECT c.id, c.workspace_id, c.voice_provider_used, c.started_at, c.ended_at, c.duration_seconds,
  (SELECT e.event_data FROM call_events e
   WHERE e.call_id = c.id AND e.event_type = 'ended' ORDER BY e.id DESC LIMIT 1) AS ended_data
FROM calls c
WHERE EXISTS (SELECT 1 FROM call_events e WHERE e.call_id = c.id AND e.event_type = ?)
  AND NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.call_id = c.id)
ORDER BY c.ended_at, c.id
"""


def _failed_billable(row: Row) -> BillableCall:
    """The call as the gateway would have billed it: usage from its ``ended`` event when there."""
    call = _recovered_billable(row)
    ended = orjson.loads(row["ended_data"]) if row["ended_data"] else {}
    usage = ended.get("usage") if isinstance(ended, dict) else None
    if not isinstance(usage, dict):
        return call
    return replace(call, usage={k: float(v) for k, v in usage.items() if isinstance(v, int | float)})


async def bill_failed_calls(db: Database, now_s: int) -> int:
    """Bills calls whose billing failed when they ended (``billing_failed`` event, no usage rows).

    Run at start-up and by ``voicegw billing bill-recovered``; idempotent like ``bill_call``.
    """
    rows = await db.fetchall(_UNBILLED_FAILED, (BILLING_FAILED_EVENT,))
    return await _bill_each(
        db,
        [_failed_billable(r) for r in rows],
        now_s,
        "billed %d call(s) whose billing had failed when they ended",
    )


async def bill_recovered_calls(db: Database, now_s: int) -> int:
    """Bills every call ``recover()`` closed and nobody billed yet; returns how many it billed.

    Safe to run again, and concurrently with a late ``bill_call`` for the same call.
    """
    rows = await db.fetchall(_UNBILLED_RECOVERED, (RECOVERED_STATUS, RECOVERED_EVENT))
    return await _bill_each(
        db, [_recovered_billable(r) for r in rows], now_s, "billed %d call(s) recovered after a crash"
    )


async def _bill_each(db: Database, billable: list[BillableCall], now_s: int, message: str) -> int:
    billed = 0
    for call in billable:
        result = await bill_call(db, call, now_s=now_s)
        billed += not result.already_billed
    if billed:
        log.warning(message, billed)
    return billed
