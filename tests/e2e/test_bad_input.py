"""Bad input from carriers: each gets a specific status or close code, a log line, and loses no row."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time

import aiohttp
import orjson
import pytest

from gateway.security import mint_stream_token
from loadtest.carriers.markup import Refusal, StreamTarget, parse_answer
from loadtest.carriers.signing import telnyx_private_key, telnyx_signature, twilio_signature
from tests.e2e.conftest import TWILIO_TOKEN, RunningGateway

SILENCE_B64 = base64.b64encode(b"\xff" * 160).decode()


async def answer_twilio(gw: RunningGateway, to: str = "+15550001111", **extra: str) -> StreamTarget | Refusal:
    form = {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "CallSid": "CA" + secrets.token_hex(16),
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15557654321",
        "To": to,
        **extra,
    }
    url = gw.url + "/twilio/voice"
    headers = {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, form)}
    async with gw.http.post(url, data=form, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return parse_answer(await resp.text())


def start_msg(target: StreamTarget, stream_sid: str = "MZ" + "1" * 32, **params: str) -> str:
    custom = {**target.parameters, **params}
    return orjson.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream_sid,
                "callSid": "CA" + "2" * 32,
                "tracks": ["inbound"],
                "customParameters": custom,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    ).decode()


def media_msg(payload: str = SILENCE_B64, stream_sid: str = "MZ" + "1" * 32, seq: int = 2) -> str:
    return orjson.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(seq - 1),
                "timestamp": str(seq * 20),
                "payload": payload,
            },
        }
    ).decode()


async def _close_code(ws: aiohttp.ClientWebSocketResponse, wait_s: float = 5.0) -> int | None:
    while True:
        msg = await asyncio.wait_for(ws.receive(), wait_s)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code
        if msg.type is aiohttp.WSMsgType.ERROR:
            return ws.close_code


async def _connected(gw: RunningGateway, path: str = "/twilio/media") -> aiohttp.ClientWebSocketResponse:
    ws = await gw.http.ws_connect(gw.url.replace("http", "ws") + path)
    await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    return ws


async def _started(gw: RunningGateway) -> tuple[aiohttp.ClientWebSocketResponse, StreamTarget]:
    target = await answer_twilio(gw)
    assert isinstance(target, StreamTarget)
    ws = await _connected(gw)
    await ws.send_str(start_msg(target))
    return ws, target


@pytest.mark.parametrize(
    "frame,code",
    [
        ("{not json", 4400),
        ('{"event":"start"}', 4400),
        ('{"event":"media","media":{"payload":"////"}}', 4425),
        ('{"event":"dtmf","dtmf":{"digit":"1"}}', 4425),
    ],
)
async def test_bad_frames_before_start(gateway: RunningGateway, frame: str, code: int) -> None:
    ws = await _connected(gateway)
    await ws.send_str(frame)
    assert await _close_code(ws) == code


async def test_binary_frame_is_refused(gateway: RunningGateway) -> None:
    ws = await _connected(gateway)
    await ws.send_bytes(b"\x00\x01")
    assert await _close_code(ws) == 4415


@pytest.mark.parametrize("token", ["", "garbage", "FORGED"])
async def test_start_with_missing_or_forged_token(
    gateway: RunningGateway, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = await answer_twilio(gateway)
    assert isinstance(target, StreamTarget)
    if token == "FORGED":
        token = mint_stream_token(
            b"not-the-secret" * 3, target.parameters["call_id"], "twilio", 60, time.time()
        )
    ws = await _connected(gateway)
    with caplog.at_level(logging.WARNING):
        await ws.send_str(start_msg(target, token=token))
        assert await _close_code(ws) == 4401
    assert "stream token" in caplog.text


async def test_expired_token(gateway: RunningGateway) -> None:
    target = await answer_twilio(gateway)
    assert isinstance(target, StreamTarget)
    call_id = target.parameters["call_id"]
    old = mint_stream_token(gateway.ctx.token_secret, call_id, "twilio", 60, time.time() - 120)
    ws = await _connected(gateway)
    await ws.send_str(start_msg(target, token=old))
    assert await _close_code(ws) == 4401


async def test_token_for_other_carrier_is_refused(gateway: RunningGateway) -> None:
    target = await answer_twilio(gateway)
    assert isinstance(target, StreamTarget)
    ws = await gateway.http.ws_connect(gateway.url.replace("http", "ws") + "/telnyx/media")
    await ws.send_str(
        orjson.dumps(
            {
                "event": "start",
                "sequence_number": "1",
                "stream_id": "S1",
                "start": {
                    "call_control_id": "v3:x",
                    "custom_parameters": target.parameters,
                    "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                },
            }
        ).decode()
    )
    assert await _close_code(ws) == 4401


async def test_second_socket_for_same_call_is_refused(gateway: RunningGateway) -> None:
    ws, target = await _started(gateway)
    second = await _connected(gateway)
    await second.send_str(start_msg(target))
    assert await _close_code(second) == 4409
    await ws.send_str(media_msg())
    await ws.close()


@pytest.mark.parametrize(
    "frame_factory,code",
    [
        (lambda: media_msg(stream_sid="MZ" + "9" * 32), 4403),
        (lambda: media_msg(payload="!!!notbase64!!!"), 4422),
        (lambda: '{"event":"bogus","streamSid":"MZ' + "1" * 32 + '"}', 4405),
    ],
)
async def test_bad_frames_mid_call_close_the_call_cleanly(
    gateway: RunningGateway, frame_factory, code: int
) -> None:  # type: ignore[no-untyped-def]
    ws, target = await _started(gateway)
    for seq in range(2, 12):
        await ws.send_str(media_msg(seq=seq))
    await ws.send_str(frame_factory())
    assert await _close_code(ws) == code
    call_id = target.parameters["call_id"]
    await _closed_and_billed(gateway, call_id)
    events = await gateway.rows("SELECT event_type FROM call_events WHERE call_id = ?", (call_id,))
    assert "error" in [e["event_type"] for e in events]


async def _closed_and_billed(gw: RunningGateway, call_id: str) -> dict[str, object]:
    for _ in range(100):
        rows = await gw.rows("SELECT * FROM calls WHERE id = ?", (call_id,))
        if rows and rows[0]["ended_at"] is not None:
            usage = await gw.rows("SELECT * FROM usage_records WHERE call_id = ?", (call_id,))
            assert usage, "the call must be billed"
            return rows[0]
        await asyncio.sleep(0.05)
    raise AssertionError("call row never closed")


async def test_oversize_frame(gateway: RunningGateway) -> None:
    ws, _ = await _started(gateway)
    await ws.send_str(media_msg(payload="A" * (gateway.ctx.settings.max_frame_bytes + 10)))
    assert await _close_code(ws) == 1009


async def test_broken_framing_closes_1002_and_the_call_is_billed(gateway: RunningGateway) -> None:
    ws, target = await _started(gateway)
    await ws.send_str(media_msg(seq=2))
    transport = ws._response.connection.transport  # type: ignore[union-attr]
    transport.write(bytes([0xC1, 0x81]) + b"\0\0\0\0x")  # RSV1 set: no extension was negotiated
    assert await _close_code(ws) == 1002
    call_id = target.parameters["call_id"]
    await _closed_and_billed(gateway, call_id)
    sql = "SELECT event_type, event_data FROM call_events WHERE call_id = ?"
    events = await gateway.rows(sql, (call_id,))
    assert any(e["event_type"] == "error" and "reserved bits" in e["event_data"] for e in events)


async def test_message_flood(gateway: RunningGateway) -> None:
    ws, target = await _started(gateway)
    for seq in range(2, gateway.ctx.settings.max_messages_per_s + 50):
        await ws.send_str(media_msg(seq=seq))
    assert await _close_code(ws) == 4429
    await _closed_and_billed(gateway, target.parameters["call_id"])


async def test_socket_vanishing_mid_call_still_closes_and_bills(gateway: RunningGateway) -> None:
    ws, target = await _started(gateway)
    for seq in range(2, 30):
        await ws.send_str(media_msg(seq=seq))
    ws._response.connection.transport.abort()  # type: ignore[union-attr]  # gone: no close frame at all
    call = await _closed_and_billed(gateway, target.parameters["call_id"])
    assert call["status"] == "completed"


async def test_start_never_sent_times_out(tmp_path, telnyx_api) -> None:  # type: ignore[no-untyped-def]
    from tests.e2e.conftest import make_settings, start_gateway, stop_gateway

    settings, creds = make_settings(tmp_path, telnyx_api.base_url, start_timeout_s=1.0)
    gw, runner = await start_gateway(settings, creds, telnyx_api)
    try:
        ws = await _connected(gw)
        assert await _close_code(ws, wait_s=5.0) == 4408
    finally:
        await stop_gateway(gw, runner)


async def test_webhook_bad_signature_is_403(gateway: RunningGateway) -> None:
    form = {"CallSid": "CA1", "From": "+1", "To": "+15550001111"}
    async with gateway.http.post(
        gateway.url + "/twilio/voice", data=form, headers={"X-Twilio-Signature": "bm9wZQ=="}
    ) as resp:
        assert resp.status == 403


async def test_telnyx_webhook_stale_or_forged_signature_is_403(gateway: RunningGateway) -> None:
    body = b"CallSid=v3%3Ax&From=%2B1&To=%2B15550002222"
    key = telnyx_private_key(gateway.credentials.telnyx_private_key or "")
    stale = str(int(time.time()) - 1000)
    for ts, sig in (
        (stale, telnyx_signature(key, stale, body)),
        (str(int(time.time())), base64.b64encode(b"\x00" * 64).decode()),
    ):
        async with gateway.http.post(
            gateway.url + "/telnyx/voice",
            data=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "telnyx-timestamp": ts,
                "telnyx-signature-ed25519": sig,
            },
        ) as resp:
            assert resp.status == 403


async def test_unknown_number_is_refused_politely(gateway: RunningGateway) -> None:
    answer = await answer_twilio(gateway, to="+15559999999")
    assert isinstance(answer, Refusal)
    assert "not in service" in answer.text
