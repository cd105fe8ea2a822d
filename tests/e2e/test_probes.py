"""Active probes: a provider nobody calls still shows on the board that it failed and recovered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loadtest.carriers.telnyx_api import TelnyxApi
from providers.simulators.deepgram import DeepgramSimulator
from storage.provision import provision
from tests.e2e.conftest import RunningGateway, make_settings, start_gateway, stop_gateway


@pytest.fixture
async def probed(
    tmp_path: Path, telnyx_api: TelnyxApi
) -> AsyncIterator[tuple[RunningGateway, DeepgramSimulator]]:
    sim = DeepgramSimulator()
    await sim.start()
    settings, creds = make_settings(tmp_path, telnyx_api.base_url, probe_s=0.5)
    gw, runner = await start_gateway(settings, creds, telnyx_api)
    await provision(
        gw.ctx.db,
        {
            "platform_providers": [
                {"provider": "deepgram", "api_key": "dg", "config": {"base_url": sim.http_url}}
            ]
        },
        gw.ctx.box,
        now=int(time.time()),
    )
    yield gw, sim
    await stop_gateway(gw, runner)
    await sim.stop()


async def _board(gw: RunningGateway) -> dict[str, object]:
    board = gw.ctx.selector.board.as_json(time.monotonic())
    return board["providers"].get("deepgram", {}).get("default", {})  # type: ignore[no-any-return]


async def test_probe_records_failure_then_recovery(probed: tuple[RunningGateway, DeepgramSimulator]) -> None:
    gw, sim = probed
    sim.faults.refuse_handshake = True
    sim.faults.refuse_status = 503
    for _ in range(50):
        entry = await _board(gw)
        if entry.get("last_error"):
            break
        await asyncio.sleep(0.1)
    assert "probe" in str(entry["last_error"])
    sim.faults.reset()
    for _ in range(80):
        entry = await _board(gw)
        if entry.get("latency_ms") is not None:
            break
        await asyncio.sleep(0.1)
    assert entry["latency_ms"] is not None, entry
    assert sim.records and sim.records[-1].ended_by == "client"  # connect, then a clean close
