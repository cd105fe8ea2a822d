"""``voicegw serve`` as a real process: health endpoints, metrics, workers, and drain on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.bench_procs import free_port
from loadtest.carriers.call import place_call
from loadtest.carriers.plan import CallPlan
from loadtest.cli import register
from tests.e2e.serve_process import ServeProcess, spawn_serve


async def test_health_ready_metrics(served: ServeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/health") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with http.get(served.url + "/ready") as resp:
            assert resp.status == 200
        result = await place_call(
            http, served.url, CallPlan(to="+15550001111", duration_s=1.0), credentials=served.credentials
        )
        assert not result.errors and result.frames_received > 0
        async with http.get(served.url + "/metrics") as resp:
            text = await resp.text()
        assert resp.status == 200
        for name in (
            "voicegw_live_calls",
            "voicegw_frames_in_total",
            "voicegw_frames_out_total",
            "voicegw_calls_total",
            "voicegw_provider_connect_seconds_bucket",
            "voicegw_writer_queue_depth",
            "voicegw_frames_dropped_total",
            "voicegw_event_loop_lag_seconds_bucket",
            'voicegw_gc_pause_seconds_bucket{generation="2"',
            "voicegw_python_allocated_blocks",
        ):
            assert name in text, name
        # The loop-lag timer has been ticking (200 a second) for as long as the call lasted.
        families = {f.name: f for f in text_string_to_metric_families(text)}
        lag = families["voicegw_event_loop_lag_seconds"].samples
        assert next(s.value for s in lag if s.name.endswith("_count")) >= 100
        async with http.get(served.url + "/health/providers") as resp:
            board = await resp.json()
        assert "echo" in board["providers"]


@pytest.mark.parametrize("carrier", ["twilio", "telnyx"])
async def test_loadtest_defaults_reach_the_demo_agent(
    served: ServeProcess, carrier: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make serve`, then `voicegw loadtest --url … --calls N`: no --to needed, nothing refused."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    secrets = ["--twilio-auth-token", "serve-test-token"]
    secrets += ["--telnyx-private-key", str(served.credentials.telnyx_private_key)]
    argv = ["loadtest", "--url", served.url, "--calls", "2", "--duration", "1", "--carrier", carrier]
    args = parser.parse_args([*argv, *secrets])
    assert await asyncio.to_thread(args.func, args) == 0
    printed = capsys.readouterr().out
    assert "calls placed / refused / failed  2 / 0 / 0" in printed, printed
    ratio = next(line for line in printed.splitlines() if line.startswith("return ratio"))
    assert float(ratio.split()[-2]) > 95, printed  # the echo came back


async def test_sigterm_drains_live_calls_then_exits_zero(served: ServeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        calls = [
            asyncio.create_task(
                place_call(
                    http,
                    served.url,
                    CallPlan(to="+15550001111", duration_s=2.0),
                    credentials=served.credentials,
                )
            )
            for _ in range(3)
        ]
        await asyncio.sleep(0.8)  # calls are live
        served.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with http.get(served.url + "/ready") as resp:
            assert resp.status == 503
        refused = await place_call(
            http, served.url, CallPlan(to="+15550001111", duration_s=1.0), credentials=served.credentials
        )
        assert refused.http_status == 503
        results = await asyncio.gather(*calls)
    for r in results:
        assert not r.errors, r.errors
        assert r.ended_by == "carrier"  # they finished on their own within the drain deadline
    assert await asyncio.wait_for(served.proc.wait(), 15) == 0
    with sqlite3.connect(served.db) as conn:
        rows = conn.execute("SELECT status, ended_at FROM calls WHERE status != 'failed'").fetchall()
    assert len(rows) == 3 and all(status == "completed" and ended for status, ended in rows)


async def test_drain_deadline_ends_remaining_calls_cleanly(tmp_path: Path) -> None:
    sp = await spawn_serve(tmp_path, env={"VOICEGW_DRAIN_SECONDS": "1"})
    async with aiohttp.ClientSession() as http:
        call = asyncio.create_task(
            place_call(
                http,
                sp.url,
                CallPlan(to="+15550001111", duration_s=20.0, hangup=False),
                credentials=sp.credentials,
            )
        )
        await asyncio.sleep(1.0)
        sp.proc.send_signal(signal.SIGTERM)
        result = await asyncio.wait_for(call, 15)
    assert result.ended_by == "gateway"
    assert await asyncio.wait_for(sp.proc.wait(), 15) == 0
    with sqlite3.connect(sp.db) as conn:
        ((status, reason_rows),) = conn.execute(
            "SELECT c.status, (SELECT count(*) FROM call_events e WHERE e.call_id = c.id"
            " AND e.event_data LIKE '%gateway_shutdown%') FROM calls c"
        ).fetchall()
        billed = conn.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    assert status == "completed" and reason_rows == 1 and billed >= 1


def _names(pid: int) -> tuple[str, list[str]]:
    """A process's title (its command line) and the names of its threads, from /proc."""
    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().strip()
    return title, sorted(p.read_text().strip() for p in Path(f"/proc/{pid}/task").glob("*/comm"))


def _children(pid: int) -> list[int]:
    return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names are read from /proc")
async def test_processes_and_threads_are_named_for_operators(served: ServeProcess) -> None:
    port = served.url.rsplit(":", 1)[1]
    title, threads = _names(served.proc.pid)
    assert title == f"voicegw serve :{port}"
    assert {"voicegw", "vgw-db-writer", "vgw-db-reader", "vgw-db-checkpt"} <= set(threads)
    # Only the loop thread carries the process's name (threads inherit it: ours are renamed; numpy's
    # OpenBLAS pool, started at import before the naming, keeps the interpreter's).
    assert threads.count("voicegw") == 1


async def test_two_workers_share_the_port(tmp_path: Path) -> None:
    sp = await spawn_serve(tmp_path, "--workers", "2")
    try:
        if sys.platform.startswith("linux"):
            port = sp.url.rsplit(":", 1)[1]
            assert _names(sp.proc.pid)[0] == f"voicegw serve :{port} parent of 2 workers"
            workers = [_names(pid) for pid in _children(sp.proc.pid)]
            assert sorted(title for title, _ in workers) == [
                f"voicegw serve :{port} worker {n}/2" for n in (1, 2)
            ]
            loops = sorted(name for _, threads in workers for name in threads if name.startswith("voicegw"))
            assert loops == ["voicegw-w1", "voicegw-w2"]
        async with aiohttp.ClientSession() as http:
            plan = CallPlan(to="+15550001111", duration_s=1.0)
            results = await asyncio.gather(
                *(place_call(http, sp.url, plan, credentials=sp.credentials) for _ in range(6))
            )
        assert all(not r.errors and r.frames_received > 0 for r in results)
    finally:
        sp.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(sp.proc.wait(), 20) == 0
    with sqlite3.connect(sp.db) as conn:
        assert conn.execute("SELECT count(*) FROM calls WHERE status = 'completed'").fetchone()[0] == 6


async def test_internal_port_serves_operator_endpoints_only(tmp_path: Path) -> None:
    internal = free_port()
    sp = await spawn_serve(tmp_path, env={"VOICEGW_INTERNAL_PORT": str(internal)})
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{sp.internal_url}/metrics") as resp:
                assert resp.status == 200
            async with http.get(f"{sp.url}/metrics") as resp:
                assert resp.status == 404
    finally:
        sp.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(sp.proc.wait(), 20) == 0
