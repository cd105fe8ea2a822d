"""Vapi adapter ↔ Vapi simulator over real sockets (``vapi.websocket`` transport).

The JSON control messages exercised here (transcript, user-interrupted, tool-calls,
status-update) are the UNVERIFIED assumption in ``providers.vapi.protocol``, not captured Vapi
behaviour; REST creation and binary audio are documented.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from providers.base import (
    MULAW_8000,
    PCM16_16000,
    AudioOut,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    ProviderContext,
    ProviderError,
    ToolCall,
    Transcript,
)
from providers.simulators.scripted_agent import EventLog, dominant_frequency, say, utterance_frames
from providers.simulators.vapi import VapiSimulator
from providers.vapi import client, protocol

KEY = "sim-vapi-key"


@pytest.fixture
async def sim() -> AsyncIterator[VapiSimulator]:
    s = VapiSimulator(api_key=KEY)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ctx_for(sim: VapiSimulator, http: aiohttp.ClientSession, **overrides: object) -> ProviderContext:
    fields: dict[str, object] = {
        "call_id": "call-1",
        "provider": "vapi",
        "http": http,
        "api_key": KEY,
        "config": {"base_url": sim.http_url, "tools": {"lookup_order": {"status": "shipped"}}},
        "voice_config": {"assistant_id": "asst_sim"},
        "connect_timeout": 2.0,
    }
    fields.update(overrides)
    return ProviderContext(**fields)  # type: ignore[arg-type]


def audio_of(log: EventLog, after: int = 0) -> bytes:
    return b"".join(e.audio.raw for e in log.events[after:] if isinstance(e, AudioOut))


async def settle(log: EventLog, quiet_s: float = 0.25) -> None:
    """Wait until no event arrived for ``quiet_s`` (all audio of the turn is in)."""
    seen = -1
    while seen != len(log.events):
        seen = len(log.events)
        await asyncio.sleep(quiet_s)


async def test_create_call_body_is_exact(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http))
    try:
        assert session.input_format == MULAW_8000 and session.output_format == MULAW_8000
        assert sim.calls[0] == {
            "assistantId": "asst_sim",
            "transport": {
                "provider": "vapi.websocket",
                "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
            },
        }
        assert session.vapi_call_id
        assert sim.records[0].handshake["headers"] == {"authorization": False}
    finally:
        await session.close()


async def test_history_and_overrides(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "my order"), Transcript("agent", "which one?")]
    voice = {"assistant_id": "asst_sim", "assistant_overrides": {"variableValues": {"name": "Ann"}}}
    session = await client.connect(ctx_for(sim, http, history=history, voice_config=voice))
    try:
        overrides = sim.calls[0]["assistantOverrides"]
        assert overrides["variableValues"] == {
            "name": "Ann",
            "conversation_history": "user: my order\nagent: which one?",
        }
        assert overrides["firstMessageMode"] == protocol.RESUME_FIRST_MESSAGE_MODE
    finally:
        await session.close()


async def test_pcm_caller(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http, preferred_format=PCM16_16000))
    try:
        assert session.input_format == PCM16_16000
        assert sim.calls[0]["transport"]["audioFormat"] == {
            "format": "pcm_s16le",
            "container": "raw",
            "sampleRate": 16000,
        }
    finally:
        await session.close()


async def test_greeting_first(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "greeting")
        await settle(log)
        greeting = audio_of(log)
        assert abs(MULAW_8000.ms_for_bytes(len(greeting)) - 400) <= 20
        assert abs(dominant_frequency(greeting, MULAW_8000) - 440) < 20
    finally:
        await session.close()
        await log.stop()


async def test_caller_first_via_first_message_mode(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    voice = {
        "assistant_id": "asst_sim",
        "assistant_overrides": {"firstMessageMode": "assistant-waits-for-user"},
    }
    session = await client.connect(ctx_for(sim, http, voice_config=voice))
    log = EventLog(session)
    try:
        await asyncio.sleep(0.15)
        assert not log.of_type(AudioOut)
        await say(session, utterance_frames(700, 600, MULAW_8000), MULAW_8000)
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "echo 1")
        await settle(log)
        echo = audio_of(log)
        assert abs(dominant_frequency(echo, MULAW_8000) - 700) < 20
        assert 500 <= MULAW_8000.ms_for_bytes(len(echo)) <= 800
        assert any(e.role == "user" and e.final for e in log.of_type(Transcript))
        assert sim.records[0].audio_bytes == MULAW_8000.bytes_for_ms(1100)
    finally:
        await session.close()
        await log.stop()


async def test_barge_in(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        await say(session, utterance_frames(900, 500, MULAW_8000), MULAW_8000)
        interrupt = await log.wait_for(lambda e: isinstance(e, Interrupt))
        cut = log.events.index(interrupt)
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "echo 1")
        await settle(log)
        after = [e.audio.raw for e in log.events[cut:] if isinstance(e, AudioOut)]
        assert after and all(abs(dominant_frequency(c, MULAW_8000) - 900) < 30 for c in after)
    finally:
        await session.close()
        await log.stop()


async def test_tool_call_answered_from_config(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    sim.script.tool_after = 1
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
        call = await log.wait_for(lambda e: isinstance(e, ToolCall))
        assert isinstance(call, ToolCall)
        assert call.name == "lookup_order" and call.arguments == {"order_id": "A-17"}
        assert call.result == {"status": "shipped"}
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "echo 1")
        record = sim.records[0]
        assert record.tool_results[0]["tool_call_id"] == call.call_id
        assert record.tool_results[0]["content"] == '{"status":"shipped"}'
        assert not record.violations
    finally:
        await session.close()
        await log.stop()


async def test_provider_hangup(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    sim.script.hangup_after = 1
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
    hangup = await log.wait_for(lambda e: isinstance(e, Hangup))
    assert isinstance(hangup, Hangup) and hangup.reason == "assistant-ended-call"
    await asyncio.wait_for(log.ended.wait(), 1)
    assert len(log.of_type(Hangup)) == 1 and not log.of_type(Failure)
    await session.close()


async def test_client_close_sends_end_call(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    await log.wait_for(lambda e: isinstance(e, AudioOut))
    async with asyncio.timeout(1.0):
        await session.close()
        await session.close()
        await log.ended.wait()
    assert not log.of_type(Failure) and not log.of_type(Hangup)
    for _ in range(50):
        if sim.sessions_active == 0:
            break
        await asyncio.sleep(0.02)
    assert sim.sessions_active == 0
    assert {"type": "end-call"} in sim.records[0].messages and sim.records[0].ended_by == "client"


async def test_error_mid_call_is_failure(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.error_after_s = 0.2
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and "pipeline-error" in failure.message
    await asyncio.wait_for(log.ended.wait(), 1)
    assert len(log.of_type(Failure)) == 1
    await session.close()


async def test_abrupt_close(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.close_after_s = 0.1
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert (
        isinstance(failure, Failure) and failure.kind is ErrorKind.PROVIDER_DOWN and "1011" in failure.message
    )
    await session.close()


async def test_handshake_timeout(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.handshake_delay_s = 0.8
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, connect_timeout=0.2))
    assert err.value.kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, ErrorKind.AUTH), (403, ErrorKind.AUTH), (429, ErrorKind.QUOTA), (500, ErrorKind.PROVIDER_DOWN)],
)
async def test_refusals_are_classified(
    sim: VapiSimulator, http: aiohttp.ClientSession, status: int, kind: ErrorKind
) -> None:
    sim.faults.refuse_handshake = True
    sim.faults.refuse_status = status
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http))
    assert err.value.kind is kind


async def test_config_errors(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, voice_config={"assistant_id": "missing"}))
    assert err.value.kind is ErrorKind.CONFIG and "Does Not Exist" in err.value.message
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, api_key="bad-key"))
    assert err.value.kind is ErrorKind.AUTH and "bad-key" not in str(err.value)
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, voice_config={}))
    assert err.value.kind is ErrorKind.CONFIG


async def test_strict_simulator_rejects_malformed_input(
    sim: VapiSimulator, http: aiohttp.ClientSession
) -> None:
    url = sim.http_url + protocol.CALL_PATH
    auth = {"Authorization": f"Bearer {KEY}"}
    transport = {
        "provider": "vapi.websocket",
        "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
    }
    bad_bodies = [
        {
            "assistantId": "asst_sim",
            "transport": {**transport, "audioFormat": {"format": "mulaw", "sampleRate": 16000}},
        },
        {"assistantId": "asst_sim", "transport": {**transport, "audioFormat": {"format": "opus"}}},
        {"assistantId": "asst_sim", "transport": {"provider": "vapi.websocket.v2"}},
        {"assistantId": "asst_sim", "transport": transport, "phoneNumberId": "pn_1"},
        {"transport": transport},
    ]
    for bad in bad_bodies:
        async with http.post(url, json=bad, headers=auth) as resp:
            assert resp.status == 400, bad
    async with http.post(url, json={"assistantId": "asst_sim", "transport": transport}, headers=auth) as resp:
        ws_url = (await resp.json())["transport"]["websocketCallUrl"]
    async with http.ws_connect(ws_url) as ws:
        await ws.send_str("{not json")
        msg = await ws.receive()
        while msg.type is not aiohttp.WSMsgType.CLOSE:
            msg = await ws.receive()
        assert msg.data == 1007
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(ws_url)
    assert err.value.status == 404


async def test_tcp_drop_without_close_frame(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.close_after_s = 0.1
    sim.faults.close_code = 1006
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and failure.kind is ErrorKind.PROVIDER_DOWN
    await asyncio.wait_for(log.ended.wait(), 1)
    await session.close()


async def test_mute_keeps_turns_but_no_audio(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.mute = True
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "greeting")
        await settle(log)
        assert not log.of_type(AudioOut) and not log.of_type(Failure)
    finally:
        await session.close()
        await log.stop()


async def test_expiry_is_normal_end(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.expire_after_s = 0.1
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    hangup = await log.wait_for(lambda e: isinstance(e, Hangup))
    assert isinstance(hangup, Hangup) and hangup.reason == "exceeded-max-duration"
    await asyncio.wait_for(log.ended.wait(), 1)
    assert len(log.of_type(Hangup)) == 1
    await session.close()
