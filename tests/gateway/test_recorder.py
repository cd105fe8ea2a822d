"""The call-row recorder: bounded memory while the database lags, spill to disk, nothing lost."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from gateway.recorder import CallRecorder, replay_spill_files
from storage import calls
from storage.db import Database, open_database
from storage.migrate import migrate
from storage.provision import provision_demo
from storage.secrets import SecretBox
from storage.tenancy import resolve_number
from storage.writer import Statement, Writer
from tests.storage.test_writer import open_calls

NOW = 1_800_000_000


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(str(tmp_path / "rec.db"), busy_timeout_ms=20)
    await migrate(database)
    await provision_demo(database, SecretBox(bytes(range(32))))
    yield database
    await database.close()


async def open_call(db: Database) -> str:
    route = await resolve_number(db, "+15550001111")
    assert route is not None
    [call_id] = await open_calls(db, route, 1)
    return call_id


async def seqs(db: Database, call_id: str) -> list[int]:
    rows = await db.fetchall(
        "SELECT event_data FROM call_events WHERE call_id = ? AND event_type = 'tick' ORDER BY id", (call_id,)
    )
    return [orjson.loads(r[0])["seq"] for r in rows]


async def test_long_outage_spills_to_disk_then_replays_everything_in_order(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    call_id = await open_call(db)
    writer = Writer(db, max_batch=50, max_queue=100, max_backoff_s=0.05)
    await writer.start()
    spill_dir = tmp_path / "spill"
    recorder = CallRecorder(writer, spill_dir=spill_dir, max_backlog=200)
    lock = sqlite3.connect(str(tmp_path / "rec.db"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the database is unavailable to the writer
    total, most_in_memory = 3000, 0
    for seq in range(total):
        recorder.event(call_id, "tick", {"seq": seq})
        most_in_memory = max(most_in_memory, recorder.backlog)
        if seq % 100 == 0:
            await asyncio.sleep(0.005)
    assert most_in_memory <= 200  # bounded: the rest went to disk
    assert recorder.spilled > 2000
    assert list(spill_dir.glob("recorder-*.jsonl"))
    lock.execute("COMMIT")
    lock.close()
    for _ in range(10_000):  # until the in-memory rows are in: the spill file is replaying now
        if not recorder.backlog:
            break
        await asyncio.sleep(0.001)
    assert list(spill_dir.glob("recorder-*.jsonl"))
    # A row JSON cannot carry is kept in memory meanwhile, and still written in the end.
    odd = calls.insert_event_stmt(call_id, "odd", None, NOW)
    recorder.statement(Statement(odd.sql, (*odd.params[:3], b"raw", odd.params[4])))
    await asyncio.wait_for(recorder.flush(), 30)
    assert await seqs(db, call_id) == list(range(total))  # every row once, in order
    assert await db.fetchone("SELECT 1 FROM call_events WHERE event_type = 'odd'") is not None
    assert not list(spill_dir.glob("*.jsonl"))  # replayed and removed
    assert "spilling to" in caplog.text
    # After the outage the recorder is back on the fast path.
    recorder.event(call_id, "tick", {"seq": total})
    await recorder.flush()
    assert (await seqs(db, call_id))[-1] == total and writer.depth == 0
    await writer.close()


async def test_spill_file_of_a_dead_process_is_replayed_at_start(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    call_id = await open_call(db)
    already = calls.insert_event_stmt(call_id, "tick", {"seq": 0}, NOW)
    await db.execute(already.sql, already.params)  # committed before the process died
    lines = [orjson.dumps([already.sql, already.params])]
    for seq in (1, 2):
        stmt = calls.insert_event_stmt(call_id, "tick", {"seq": seq}, NOW)
        lines.append(orjson.dumps([stmt.sql, stmt.params]))
    ended = calls.finish_call_stmt(call_id, "completed", 3, NOW + 3, "echo", None, 0.01)
    lines.append(orjson.dumps([ended.sql, ended.params]))
    lines.append(b'["INSERT INTO call_events (id, call_id')  # died mid-append
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    (spill_dir / "recorder-4242.jsonl").write_bytes(b"\n".join(lines))
    (spill_dir / "recorder-4243.jsonl").write_bytes(b'["DROP TABLE calls", []]\n')

    assert await replay_spill_files(db, spill_dir) == 3
    assert await seqs(db, call_id) == [0, 1, 2]  # the duplicate was refused, not doubled
    row = await db.fetchone("SELECT status, duration_seconds FROM calls WHERE id = ?", (call_id,))
    assert row is not None and tuple(row) == ("completed", 3)
    assert not list(spill_dir.glob("*.jsonl"))
    assert "is not a spilled row" in caplog.text  # the torn line and the foreign statement
    assert await db.fetchone("SELECT 1 FROM calls LIMIT 1") is not None
