"""Start-up recovery: calls a crash left open are closed from their last recorded event.

A call still ``ringing`` or ``in-progress`` when the gateway starts has no live session: it is
marked ``failed``, ``ended_at`` = its last ``call_events`` timestamp (or ``started_at`` when it
has none), ``duration_seconds`` = ended_at - started_at, and a ``recovered`` event is added, all
in one transaction. The returned ``RecoveredCall``s carry what billing needs to charge them.

With several gateways on one PostgreSQL, a starting node must not close calls another node is
serving: pass ``stale_after_s`` so only calls quiet for that long are recovered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from storage.calls import finish_call_stmt, insert_event_stmt
from storage.db import Database

log = logging.getLogger(__name__)

RECOVERED_STATUS = "failed"
RECOVERED_EVENT = "recovered"


@dataclass(frozen=True, slots=True)
class RecoveredCall:
    id: str
    workspace_id: str
    agent_id: str
    phone_number_id: str
    voice_provider_used: str
    previous_status: str
    started_at: int
    ended_at: int
    duration_seconds: int


_OPEN_CALLS = """
SELECT c.id, c.workspace_id, c.agent_id, c.phone_number_id, c.voice_provider_used, c.status,
       c.started_at, c.transcription, c.cost_total, c.metadata,
       (SELECT MAX(e.timestamp) FROM call_events e WHERE e.call_id = c.id) AS last_event
FROM calls c
WHERE c.status IN ('ringing', 'in-progress')
ORDER BY c.started_at, c.id
"""


async def recover(
    db: Database, now_s: int, *, stale_after_s: int = 0, node_id: str | None = None
) -> list[RecoveredCall]:
    """Closes open calls whose last activity is at least ``stale_after_s`` old; returns them.

    With ``node_id`` (several gateways on one PostgreSQL), a call whose ``metadata.node`` names
    this node is ours and closed at once; another node's call only once ``stale_after_s`` old,
    since that node may still be serving it.
    """
    recovered: list[RecoveredCall] = []
    async with db.transaction() as tx:
        for row in await tx.fetchall(_OPEN_CALLS):
            started_at = int(row["started_at"])
            last_event = row["last_event"]
            ended_at = started_at if last_event is None else max(started_at, int(last_event))
            ours = node_id is not None and _node_of(row["metadata"]) == node_id
            if not ours and now_s - ended_at < stale_after_s:
                continue
            call = RecoveredCall(
                id=row["id"],
                workspace_id=row["workspace_id"],
                agent_id=row["agent_id"],
                phone_number_id=row["phone_number_id"],
                voice_provider_used=row["voice_provider_used"],
                previous_status=row["status"],
                started_at=started_at,
                ended_at=ended_at,
                duration_seconds=ended_at - started_at,
            )
            finish = finish_call_stmt(
                call.id,
                RECOVERED_STATUS,
                call.duration_seconds,
                ended_at,
                call.voice_provider_used,
                row["transcription"],
                row["cost_total"],
            )
            event = insert_event_stmt(
                call.id, RECOVERED_EVENT, {"previous_status": call.previous_status}, now_s
            )
            await tx.execute(finish.sql, finish.params)
            await tx.execute(event.sql, event.params)
            recovered.append(call)
    if recovered:
        log.warning("recovered %d call(s) left open by a previous run", len(recovered))
    return recovered


def _node_of(metadata: str | None) -> str | None:
    """The gateway node that created a call (``calls.metadata.node``), if it says."""
    try:
        value = orjson.loads(metadata) if metadata else None
    except orjson.JSONDecodeError:
        return None
    return value.get("node") if isinstance(value, dict) else None
