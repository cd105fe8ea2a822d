"""Calls and call events: statement builders for the writer, plus reads.

The hot path never awaits the database: it builds ``Statement``s here and hands them to the
``Writer``. Event data is a dict encoded once with orjson; timestamps are epoch seconds.
"""

from __future__ import annotations

from typing import Any

import orjson

from storage.db import Database, Executor
from storage.ids import new_id
from storage.models import (
    Call,
    CallEvent,
    PhoneNumber,
    VoiceAgent,
    Workspace,
    columns,
    dump_json,
    field_names,
    from_row,
)
from storage.writer import Statement

CALL_DIRECTIONS = ("inbound", "outbound")
CALL_STATUSES = ("queued", "ringing", "in-progress", "completed", "failed", "busy", "no-answer")
OPEN_CALL_STATUSES = ("ringing", "in-progress")

_INSERT_CALL = (
    "INSERT INTO calls (id, workspace_id, agent_id, phone_number_id, caller_number, caller_name,"
    " direction, status, provider_call_sid, voice_provider_used, metadata, started_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT = (
    "INSERT INTO call_events (id, call_id, event_type, event_data, timestamp) VALUES (?, ?, ?, ?, ?)"
)
_SET_STATUS = "UPDATE calls SET status = ? WHERE id = ?"
_SET_PROVIDER = "UPDATE calls SET voice_provider_used = ? WHERE id = ?"
_FINISH_CALL = (
    "UPDATE calls SET status = ?, duration_seconds = ?, ended_at = ?, voice_provider_used = ?,"
    " transcription = ?, cost_total = COALESCE(?, cost_total) WHERE id = ?"
)


def insert_call_stmt(
    *,
    call_id: str,
    workspace_id: str,
    agent_id: str,
    phone_number_id: str,
    caller_number: str,
    direction: str,
    status: str,
    voice_provider_used: str,
    started_at: int,
    provider_call_sid: str | None = None,
    caller_name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Statement:
    """The ``calls`` row a webhook writes (usually status ``ringing``), via ``Writer.commit``."""
    if direction not in CALL_DIRECTIONS:
        raise ValueError(f"direction must be one of {','.join(CALL_DIRECTIONS)}")
    if status not in CALL_STATUSES:
        raise ValueError(f"status must be one of {','.join(CALL_STATUSES)}")
    return Statement(
        _INSERT_CALL,
        (
            call_id,
            workspace_id,
            agent_id,
            phone_number_id,
            caller_number,
            caller_name,
            direction,
            status,
            provider_call_sid,
            voice_provider_used,
            None if metadata is None else dump_json(metadata),
            int(started_at),
        ),
    )


def insert_event_stmt(call_id: str, event_type: str, data: dict[str, Any] | None, ts: int) -> Statement:
    """One ``call_events`` row; its UUIDv7 id keeps the events of a call in creation order."""
    event_data = None if data is None else orjson.dumps(data).decode()
    return Statement(_INSERT_EVENT, (new_id(), call_id, event_type, event_data, int(ts)), cluster=call_id)


def set_status_stmt(call_id: str, status: str) -> Statement:
    """E.g. ``ringing`` → ``in-progress`` when the media stream starts."""
    if status not in CALL_STATUSES:
        raise ValueError(f"status must be one of {','.join(CALL_STATUSES)}")
    return Statement(_SET_STATUS, (status, call_id))


def set_voice_provider_stmt(call_id: str, provider: str) -> Statement:
    """Records the provider now serving the call (after a failover)."""
    return Statement(_SET_PROVIDER, (provider, call_id))


def finish_call_stmt(
    call_id: str,
    status: str,
    duration_seconds: int,
    ended_at: int,
    voice_provider_used: str,
    transcription: str | None,
    cost_total: float | None,
) -> Statement:
    """Closes a call: final status, duration, provider actually used, transcript and cost.

    A ``cost_total`` of None keeps what is there: billing may have set it already (a re-bill
    racing this row through the writer), and "unknown" must not erase it.
    """
    if status not in CALL_STATUSES:
        raise ValueError(f"status must be one of {','.join(CALL_STATUSES)}")
    return Statement(
        _FINISH_CALL,
        (
            status,
            int(duration_seconds),
            int(ended_at),
            voice_provider_used,
            transcription,
            None if cost_total is None else float(cost_total),
            call_id,
        ),
    )


async def get_call(db: Executor, call_id: str) -> Call | None:
    row = await db.fetchone(f"SELECT {columns(Call)} FROM calls WHERE id = ?", (call_id,))
    return None if row is None else from_row(Call, row)


async def get_call_by_sid(db: Executor, provider_call_sid: str) -> Call | None:
    """The newest call carrying this carrier call id (Twilio CallSid, Telnyx call_control_id)."""
    row = await db.fetchone(
        f"SELECT {columns(Call)} FROM calls WHERE provider_call_sid = ? ORDER BY started_at DESC, id DESC"
        " LIMIT 1",
        (provider_call_sid,),
    )
    return None if row is None else from_row(Call, row)


async def list_events(db: Executor, call_id: str) -> list[CallEvent]:
    """A call's events in the order they happened (timestamp, then UUIDv7 id)."""
    rows = await db.fetchall(
        f"SELECT {columns(CallEvent)} FROM call_events WHERE call_id = ? ORDER BY timestamp, id",
        (call_id,),
    )
    return [from_row(CallEvent, row) for row in rows]


# Claiming: exactly one media stream may serve a call, across every gateway process.
_CLAIM_CALL = "UPDATE calls SET status = 'in-progress' WHERE id = ? AND status = 'ringing' RETURNING id"


async def claim_call(db: Database, call_id: str) -> bool:
    """Moves a ``ringing`` call to ``in-progress``; False when another socket already claimed it."""
    if not call_id:
        return False
    async with db.transaction() as tx:  # a write: on SQLite only the writer connection may do it
        row = await tx.fetchone(_CLAIM_CALL, (call_id,))
    return row is not None


_CALL_SETUP = f"""
SELECT {columns(Call, "c")}, {columns(VoiceAgent, "a")},
       {columns(Workspace, "w")}, {columns(PhoneNumber, "p")}
FROM calls c
JOIN voice_agents a ON a.id = c.agent_id
JOIN workspaces w ON w.id = c.workspace_id
JOIN phone_numbers p ON p.id = c.phone_number_id
WHERE c.id = ?
"""


CallSetup = tuple[Call, VoiceAgent, Workspace, PhoneNumber]


async def load_call_setup(db: Executor, call_id: str) -> CallSetup | None:
    """A call with its agent, workspace and number (for a media socket served by another worker)."""
    row = await db.fetchone(_CALL_SETUP, (call_id,))
    if row is None:
        return None
    values = tuple(row)
    out: list[Any] = []
    start = 0
    for model in (Call, VoiceAgent, Workspace, PhoneNumber):
        n = len(field_names(model))
        out.append(from_row(model, values[start : start + n]))
        start += n
    return out[0], out[1], out[2], out[3]


_FAIL_UNANSWERED = (
    "UPDATE calls SET status = 'failed', duration_seconds = 0, ended_at = ?"
    " WHERE id = ? AND status = 'ringing'"
)


def fail_unanswered_stmt(call_id: str, ended_at: int) -> Statement:
    """Closes a call whose media stream never started; a no-op once any process claimed it."""
    return Statement(_FAIL_UNANSWERED, (int(ended_at), call_id))
