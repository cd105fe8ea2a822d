"""Writer throughput: call_events rows/s through ``storage.writer.Writer`` (SQLite by default).

    .venv/bin/python tests/bench/bench_writer.py [--rows 300000] [--batch 2000] [--db URL]

Producers build statements the way the gateway does (``insert_event_stmt``: UUIDv7 id, orjson
event data) and ``await writer.put`` them; the clock runs from the first put until ``close()``
has committed the last row. Prints rows/s end to end, the writer's own flush figures and the
machine load (``os.getloadavg``) so figures can be compared fairly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage import calls
from storage.db import open_database
from storage.ids import new_id, now_s
from storage.provision import provision_demo
from storage.secrets import SecretBox
from storage.tenancy import resolve_number
from storage.writer import Writer


async def bench(url: str, rows: int, batch: int, n_calls: int) -> None:
    db = await open_database(url)
    await provision_demo(db, SecretBox(os.urandom(32)))
    route = await resolve_number(db, "+15550001111")
    assert route is not None and route.agent is not None
    call_ids = [new_id() for _ in range(n_calls)]
    async with db.transaction() as tx:
        for call_id in call_ids:
            stmt = calls.insert_call_stmt(
                call_id=call_id,
                workspace_id=route.workspace.id,
                agent_id=route.agent.id,
                phone_number_id=route.number.id,
                caller_number="+15551230000",
                direction="inbound",
                status="in-progress",
                voice_provider_used="echo",
                started_at=now_s(),
            )
            await tx.execute(stmt.sql, stmt.params)
    writer = Writer(db, max_batch=batch, max_queue=max(100_000, batch))
    await writer.start()
    ts = now_s()
    started = time.perf_counter()
    for seq in range(rows):
        await writer.put(
            calls.insert_event_stmt(call_ids[seq % n_calls], "media_stats", {"seq": seq, "frames": 50}, ts)
        )
    produced = time.perf_counter() - started
    await writer.close()
    elapsed = time.perf_counter() - started
    stats = writer.stats
    await db.close()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"backend={db.dialect} rows={rows} batch={batch} calls={n_calls}")
    print(f"end-to-end: {rows / elapsed:,.0f} rows/s ({elapsed:.2f} s; producer done after {produced:.2f} s)")
    print(
        f"flushes: {stats.batches}, avg {stats.avg_flush_s * 1000:.1f} ms,"
        f" max {stats.max_flush_s * 1000:.1f} ms, retries {stats.retries}, max depth {stats.max_depth}"
    )
    print(f"load average (1/5/15 min): {load} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument(
        "--db",
        default=None,
        help="database URL (default: a fresh SQLite file; a PostgreSQL schema must exist)",
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the gateway does")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args.db or str(Path(tmp) / "bench.db"), args.rows, args.batch, args.calls))


if __name__ == "__main__":
    main()
