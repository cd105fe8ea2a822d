"""Calls end to end over real sockets: fake carrier → voicegw → echo provider → back, rows in SQLite."""

from __future__ import annotations

import orjson
import pytest

from loadtest.carriers.call import place_call
from loadtest.carriers.plan import CallPlan
from tests.e2e.conftest import RunningGateway

TWILIO_NUMBER = "+15550001111"
TELNYX_NUMBER = "+15550002222"


async def _call(gw: RunningGateway, plan: CallPlan):  # type: ignore[no-untyped-def]
    return await place_call(gw.http, gw.url, plan, credentials=gw.credentials, telnyx_api=gw.telnyx_api)


async def _events(gw: RunningGateway, call_id: str) -> list[tuple[str, dict[str, object]]]:
    rows = await gw.rows(
        "SELECT event_type, event_data FROM call_events WHERE call_id = ? ORDER BY id", (call_id,)
    )
    return [
        (str(r["event_type"]), orjson.loads(str(r["event_data"])) if r["event_data"] else {}) for r in rows
    ]


async def _wait_call_closed(gw: RunningGateway, call_id: str) -> dict[str, object]:
    import asyncio

    for _ in range(100):
        rows = await gw.rows("SELECT * FROM calls WHERE id = ?", (call_id,))
        if rows and rows[0]["ended_at"] is not None:
            return rows[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_id} never closed: {rows}")


@pytest.mark.parametrize("carrier,number", [("twilio", TWILIO_NUMBER), ("telnyx", TELNYX_NUMBER)])
async def test_echo_call_round_trip_and_rows(gateway: RunningGateway, carrier: str, number: str) -> None:
    result = await _call(gateway, CallPlan(carrier=carrier, to=number, duration_s=3.0))  # type: ignore[arg-type]
    assert not result.errors, result.errors
    assert result.call_id
    assert result.frames_sent >= 140
    assert result.return_ratio > 0.95, (result.audio_s_sent, result.audio_s_received)
    assert result.bursts_answered, "tone bursts must come back"
    assert result.histograms is not None and result.histograms.latency.summary().max < 100

    call = await _wait_call_closed(gateway, result.call_id)
    assert call["status"] == "completed"
    assert call["voice_provider_used"] == "echo"
    assert call["provider_call_sid"] == result.call_sid
    assert 3 <= int(call["duration_seconds"]) <= 5  # type: ignore[arg-type]
    kinds = [kind for kind, _ in await _events(gateway, result.call_id)]
    for expected in ("initiated", "answered", "provider_connected", "ended"):
        assert expected in kinds, kinds
    usage = await gateway.rows("SELECT * FROM usage_records WHERE call_id = ?", (result.call_id,))
    assert [u["resource_type"] for u in usage].count("call_minutes") == 1
    minutes = next(u for u in usage if u["resource_type"] == "call_minutes")
    assert abs(float(minutes["quantity"]) - int(call["duration_seconds"]) / 60) < 1e-4  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["PCMA", "L16"])
async def test_telnyx_inbound_codec_decoded_by_start_format(gateway: RunningGateway, encoding: str) -> None:
    result = await _call(
        gateway, CallPlan(carrier="telnyx", to=TELNYX_NUMBER, duration_s=2.0, telnyx_encoding=encoding)
    )  # type: ignore[arg-type]
    assert not result.errors, result.errors
    assert result.bursts_answered, "tone must survive decode → μ-law → carrier"
    events = dict(await _events(gateway, result.call_id or ""))
    assert events["provider_connected"]["passthrough"] is False


async def test_twilio_passthrough_does_no_transcoding(gateway: RunningGateway) -> None:
    before = gateway.ctx.stats.frames.transcoded
    result = await _call(gateway, CallPlan(carrier="twilio", to=TWILIO_NUMBER, duration_s=1.5))
    assert not result.errors
    assert result.frames_received > 0
    assert gateway.ctx.stats.frames.transcoded == before
    events = dict(await _events(gateway, result.call_id or ""))
    assert events["provider_connected"]["passthrough"] is True


async def test_barge_in_sends_clear_and_records_interruption(gateway: RunningGateway) -> None:
    result = await _call(
        gateway, CallPlan(carrier="twilio", to=TWILIO_NUMBER, duration_s=2.0, dtmf=((1.0, "*"),))
    )
    assert not result.errors
    assert result.clears_received == 1
    kinds = [k for k, _ in await _events(gateway, result.call_id or "")]
    assert "dtmf" in kinds and "interruption" in kinds


@pytest.mark.parametrize("carrier,number", [("twilio", TWILIO_NUMBER), ("telnyx", TELNYX_NUMBER)])
async def test_provider_hangup_drains_then_ends_carrier_leg(
    gateway: RunningGateway, carrier: str, number: str
) -> None:
    result = await _call(
        gateway, CallPlan(carrier=carrier, to=number, duration_s=6.0, dtmf=((1.0, "#"),), hangup=False)
    )  # type: ignore[arg-type]
    assert result.ended_by in ("gateway", "gateway-rest"), (result.ended_by, result.errors)
    if carrier == "telnyx":
        assert gateway.telnyx_api.hangups == 1
    call = await _wait_call_closed(gateway, result.call_id or "")
    assert call["status"] == "completed"
    assert int(call["duration_seconds"]) <= 3  # type: ignore[arg-type]
    events = await _events(gateway, result.call_id or "")
    assert ("provider_hangup", {"provider": "echo", "reason": "agent_goodbye"}) in events
    assert "agent: Goodbye." in str(call["transcription"])


async def test_max_call_duration_ends_the_call(tmp_path, telnyx_api) -> None:  # type: ignore[no-untyped-def]
    from tests.e2e.conftest import make_settings, start_gateway, stop_gateway

    settings, creds = make_settings(tmp_path, telnyx_api.base_url, max_call_s=1.5)
    gw, runner = await start_gateway(settings, creds, telnyx_api)
    try:
        result = await _call(gw, CallPlan(to=TWILIO_NUMBER, duration_s=8.0, hangup=False))
        assert result.ended_by == "gateway"
        call = await _wait_call_closed(gw, result.call_id or "")
        assert call["status"] == "completed" and int(call["duration_seconds"]) <= 4  # type: ignore[arg-type]
        ended = [d for k, d in await _events(gw, result.call_id or "") if k == "ended"]
        assert ended[0]["reason"] == "max_duration"
    finally:
        await stop_gateway(gw, runner)


async def test_silent_carrier_is_ended_by_the_idle_timeout(tmp_path, telnyx_api) -> None:  # type: ignore[no-untyped-def]
    from tests.e2e.conftest import make_settings, start_gateway, stop_gateway
    from tests.e2e.test_bad_input import _close_code, _started

    settings, creds = make_settings(tmp_path, telnyx_api.base_url, idle_timeout_s=1.0)
    gw, runner = await start_gateway(settings, creds, telnyx_api)
    try:
        ws, target = await _started(gw)  # start, then nothing at all
        assert await _close_code(ws, wait_s=5.0) == 4408
        call = await _wait_call_closed(gw, target.parameters["call_id"])
        assert call["status"] == "completed"
        ended = [d for k, d in await _events(gw, target.parameters["call_id"]) if k == "ended"]
        assert ended[0]["reason"] == "carrier_idle_timeout"
    finally:
        await stop_gateway(gw, runner)
