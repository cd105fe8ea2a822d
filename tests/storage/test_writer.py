"""The batched writer: bursts, ordering, back-pressure, locked/unavailable database, bad rows."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import orjson
import pytest

from storage import calls
from storage.db import Database, open_database
from storage.ids import new_id
from storage.tenancy import NumberRoute
from storage.writer import FlushInfo, Statement, WriteFailed, Writer, WriterClosed, WriterFull
from tests.storage.conftest import NOW, PG_DSN, Backend


async def open_calls(db: Database, route: NumberRoute, n: int) -> list[str]:
    assert route.agent is not None
    ids = [new_id() for _ in range(n)]
    async with db.transaction() as tx:
        for call_id in ids:
            stmt = calls.insert_call_stmt(
                call_id=call_id,
                workspace_id=route.workspace.id,
                agent_id=route.agent.id,
                phone_number_id=route.number.id,
                caller_number="+15551230000",
                direction="inbound",
                status="in-progress",
                voice_provider_used="echo",
                started_at=NOW,
            )
            await tx.execute(stmt.sql, stmt.params)
    return ids


async def event_count(db: Database) -> int:
    row = await db.fetchone("SELECT COUNT(*) FROM call_events")
    assert row is not None
    return int(row[0])


async def assert_all_events_in_order(db: Database, call_ids: list[str], per_call: int) -> None:
    rows = await db.fetchall("SELECT call_id, event_data FROM call_events ORDER BY id")
    seen: dict[str, list[int]] = {c: [] for c in call_ids}
    for call_id, data in rows:
        seen[call_id].append(orjson.loads(data)["seq"])
    for call_id in call_ids:
        assert seen[call_id] == list(range(per_call)), call_id  # every row once, in order


async def test_burst_of_100k_events_bounded_and_ordered(db: Database, demo: NumberRoute) -> None:
    call_ids = await open_calls(db, demo, 10)
    per_call = 10_000
    writer = Writer(db, max_batch=2000, max_queue=20_000)
    await writer.start()
    for seq in range(per_call):
        for call_id in call_ids:
            await writer.put(calls.insert_event_stmt(call_id, "media_stats", {"seq": seq}, NOW + seq // 1000))
    await writer.close()
    stats = writer.stats
    assert stats.rows_written == 100_000 and stats.failures == 0
    assert stats.max_depth <= 20_000 and writer.depth == 0
    assert stats.batches >= 50 and stats.max_flush_s >= stats.avg_flush_s > 0
    assert await event_count(db) == 100_000
    await assert_all_events_in_order(db, call_ids, per_call)


async def test_put_nowait_raises_when_full_and_put_waits(db: Database, demo: NumberRoute) -> None:
    [call_id] = await open_calls(db, demo, 1)
    writer = Writer(db, max_batch=5, max_queue=10)
    with pytest.raises(WriterClosed):
        writer.put_nowait(calls.insert_event_stmt(call_id, "x", None, NOW))
    await writer.start()
    for i in range(10):  # no await in between: the flusher cannot run, the queue fills
        writer.put_nowait(calls.insert_event_stmt(call_id, "x", {"seq": i}, NOW))
    assert writer.depth == 10
    with pytest.raises(WriterFull):
        writer.put_nowait(calls.insert_event_stmt(call_id, "x", {"seq": 10}, NOW))
    await writer.put(calls.insert_event_stmt(call_id, "x", {"seq": 10}, NOW))  # waits for room
    await writer.flush()
    assert await event_count(db) == 11 and writer.stats.max_depth == 10
    await writer.close()
    with pytest.raises(WriterClosed):
        writer.put_nowait(calls.insert_event_stmt(call_id, "x", None, NOW))
    await assert_all_events_in_order(db, [call_id], 11)


async def test_mixed_statements_commit_in_order(db: Database, demo: NumberRoute) -> None:
    assert demo.agent is not None
    flushes: list[FlushInfo] = []
    writer = Writer(db, on_flush=flushes.append)
    await writer.start()
    call_id = new_id()
    writer.put_nowait(
        calls.insert_call_stmt(
            call_id=call_id,
            workspace_id=demo.workspace.id,
            agent_id=demo.agent.id,
            phone_number_id=demo.number.id,
            caller_number="+15551230000",
            direction="inbound",
            status="ringing",
            voice_provider_used="echo",
            started_at=NOW,
        )
    )
    for i in range(3):
        writer.put_nowait(calls.insert_event_stmt(call_id, "tick", {"seq": i}, NOW + i))
    writer.put_nowait(calls.set_status_stmt(call_id, "in-progress"))
    writer.put_nowait(calls.finish_call_stmt(call_id, "completed", 3, NOW + 3, "echo", None, 0.0))
    await writer.commit(calls.insert_event_stmt(call_id, "ended", None, NOW + 3))
    call = await calls.get_call(db, call_id)
    assert call is not None and call.status == "completed" and call.duration_seconds == 3
    assert [e.event_type for e in await calls.list_events(db, call_id)] == ["tick"] * 3 + ["ended"]
    await writer.close()
    assert sum(f.rows for f in flushes) == 7 and all(f.failed == 0 for f in flushes)


async def test_rejected_statement_is_isolated(db: Database, demo: NumberRoute) -> None:
    [call_id] = await open_calls(db, demo, 1)
    writer = Writer(db)
    await writer.start()
    writer.put_nowait(calls.insert_event_stmt(call_id, "before", None, NOW))
    bad = calls.insert_event_stmt("no-such-call", "orphan", None, NOW)  # violates the foreign key
    commit_bad = asyncio.ensure_future(writer.commit(bad))
    await asyncio.sleep(0)
    writer.put_nowait(calls.insert_event_stmt(call_id, "after", None, NOW))
    with pytest.raises(WriteFailed):
        await commit_bad
    await writer.close()
    assert [e.event_type for e in await calls.list_events(db, call_id)] == ["before", "after"]
    assert writer.stats.failures == 1 and writer.stats.rows_written == 2


async def _hold_lock_sqlite(path: str, seconds: float, locked: asyncio.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    locked.set()
    await asyncio.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


async def _hold_lock_postgres(schema: str, seconds: float, locked: asyncio.Event) -> None:
    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE call_events IN ACCESS EXCLUSIVE MODE")
            locked.set()
            await asyncio.sleep(seconds / 2)
            # The writer now waits on the lock: kill its connection, as a failover or restart would.
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE NOT granted AND relation = 'call_events'::regclass"
            )
            await asyncio.sleep(seconds / 2)
    finally:
        await conn.close()


async def test_locked_or_unavailable_database_loses_and_duplicates_nothing(
    backend: Backend, db: Database, demo: NumberRoute
) -> None:
    call_ids = await open_calls(db, demo, 4)
    # A short busy timeout so SQLite reports "database is locked" and the writer must retry.
    wdb = await open_database(backend.url, busy_timeout_ms=50)
    writer = Writer(wdb, max_batch=500, max_queue=50_000, max_backoff_s=0.2)
    await writer.start()
    locked = asyncio.Event()
    if backend.dialect == "sqlite":
        holder = asyncio.create_task(_hold_lock_sqlite(backend.url, 2.0, locked))
    else:
        assert backend.schema is not None
        holder = asyncio.create_task(_hold_lock_postgres(backend.schema, 2.0, locked))
    await locked.wait()
    per_call = 2_500
    for seq in range(per_call):
        for call_id in call_ids:
            await writer.put(calls.insert_event_stmt(call_id, "tick", {"seq": seq}, NOW))
        if seq % 250 == 0:
            await asyncio.sleep(0.05)  # spread the rows over the outage
    await holder
    await writer.close()
    await wdb.close()
    assert writer.stats.retries > 0 and writer.stats.failures == 0
    assert writer.stats.rows_written == per_call * len(call_ids)
    assert await event_count(db) == per_call * len(call_ids)
    await assert_all_events_in_order(db, call_ids, per_call)


async def test_close_drains_everything(db: Database, demo: NumberRoute) -> None:
    [call_id] = await open_calls(db, demo, 1)
    writer = Writer(db, flush_interval_s=0.05, max_batch=100, max_queue=5000)
    await writer.start()
    for i in range(1234):
        writer.put_nowait(calls.insert_event_stmt(call_id, "x", {"seq": i}, NOW))
    await writer.close()
    assert await event_count(db) == 1234 and writer.depth == 0
    await writer.close()  # closing twice is harmless


def test_statement_is_frozen() -> None:
    stmt = Statement("SELECT 1", ())
    with pytest.raises(AttributeError):
        stmt.sql = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        Writer(None, max_batch=10, max_queue=5)  # type: ignore[arg-type]


async def test_bad_row_inside_a_multi_row_chunk_drops_only_itself(db: Database, demo: NumberRoute) -> None:
    [call_id] = await open_calls(db, demo, 1)
    writer = Writer(db, max_batch=1000)
    await writer.start()
    for i in range(600):  # one batch: two 256-row INSERT chunks and a remainder
        target = "no-such-call" if i == 300 else call_id
        writer.put_nowait(calls.insert_event_stmt(target, "tick", {"seq": i}, NOW))
    await writer.close()
    assert writer.stats.failures == 1 and writer.stats.rows_written == 599
    seqs = [e.data()["seq"] for e in await calls.list_events(db, call_id)]  # type: ignore[index]
    assert seqs == [i for i in range(600) if i != 300]
