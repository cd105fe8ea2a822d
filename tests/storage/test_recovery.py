"""Recovery after a simulated crash: open calls are closed from their last event."""

from __future__ import annotations

from storage import calls
from storage.db import Database
from storage.ids import new_id
from storage.recovery import recover
from storage.tenancy import NumberRoute
from storage.writer import Statement
from tests.storage.conftest import NOW


async def run(db: Database, *stmts: Statement) -> None:
    async with db.transaction() as tx:
        for stmt in stmts:
            await tx.execute(stmt.sql, stmt.params)


async def start_call(db: Database, route: NumberRoute, status: str, started_at: int) -> str:
    assert route.agent is not None
    call_id = new_id()
    await run(
        db,
        calls.insert_call_stmt(
            call_id=call_id,
            workspace_id=route.workspace.id,
            agent_id=route.agent.id,
            phone_number_id=route.number.id,
            caller_number="+15551230000",
            direction="inbound",
            status=status,
            voice_provider_used="echo",
            started_at=started_at,
        ),
    )
    return call_id


async def test_recover_closes_open_calls_from_their_last_event(db: Database, demo: NumberRoute) -> None:
    talking = await start_call(db, demo, "in-progress", NOW)
    await run(
        db,
        calls.insert_event_stmt(talking, "answered", None, NOW + 2),
        calls.insert_event_stmt(talking, "provider_connected", None, NOW + 30),
    )
    ringing = await start_call(db, demo, "ringing", NOW + 10)  # no events at all
    finished = await start_call(db, demo, "in-progress", NOW)
    await run(db, calls.finish_call_stmt(finished, "completed", 5, NOW + 5, "echo", None, 0.0))

    recovered = await recover(db, NOW + 600)

    assert [(r.id, r.previous_status, r.started_at, r.ended_at, r.duration_seconds) for r in recovered] == [
        (talking, "in-progress", NOW, NOW + 30, 30),
        (ringing, "ringing", NOW + 10, NOW + 10, 0),
    ]
    assert all(r.workspace_id == demo.workspace.id and r.voice_provider_used == "echo" for r in recovered)
    call = await calls.get_call(db, talking)
    assert call is not None
    assert (call.status, call.ended_at, call.duration_seconds) == ("failed", NOW + 30, 30)
    events = await calls.list_events(db, talking)
    assert events[-1].event_type == "recovered" and events[-1].timestamp == NOW + 600
    assert events[-1].data() == {"previous_status": "in-progress"}
    untouched = await calls.get_call(db, finished)
    assert untouched is not None and untouched.status == "completed"
    assert await recover(db, NOW + 700) == []  # nothing left open


async def test_recover_spares_recently_active_calls(db: Database, demo: NumberRoute) -> None:
    quiet = await start_call(db, demo, "in-progress", NOW)
    busy = await start_call(db, demo, "in-progress", NOW)
    await run(db, calls.insert_event_stmt(busy, "tick", None, NOW + 590))
    recovered = await recover(db, NOW + 600, stale_after_s=60)
    assert [r.id for r in recovered] == [quiet]
    still_open = await calls.get_call(db, busy)
    assert still_open is not None and still_open.status == "in-progress"


async def test_recover_on_a_shared_database_closes_only_this_nodes_recent_calls(
    db: Database, demo: NumberRoute
) -> None:
    assert demo.agent is not None

    async def call_of(node: str, started_at: int) -> str:
        call_id = new_id()
        await run(
            db,
            calls.insert_call_stmt(
                call_id=call_id,
                workspace_id=demo.workspace.id,
                agent_id=demo.agent.id,  # type: ignore[union-attr]
                phone_number_id=demo.number.id,
                caller_number="+15551230000",
                direction="inbound",
                status="in-progress",
                voice_provider_used="echo",
                started_at=started_at,
                metadata={"node": node},
            ),
        )
        return call_id

    mine = await call_of("gw-a", NOW + 500)
    theirs_live = await call_of("gw-b", NOW + 500)
    theirs_dead = await call_of("gw-b", NOW - 5000)
    recovered = await recover(db, NOW + 600, stale_after_s=3660, node_id="gw-a")
    assert sorted(r.id for r in recovered) == sorted([mine, theirs_dead])
    still_open = await calls.get_call(db, theirs_live)
    assert still_open is not None and still_open.status == "in-progress"
