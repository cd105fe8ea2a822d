"""Retell adapter ↔ Retell simulator over real sockets (legacy audio WebSocket, ``web`` protocol)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from providers.base import (
    MULAW_8000,
    PCM16_16000,
    Audio,
    AudioOut,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    ProviderContext,
    ProviderError,
    Transcript,
)
from providers.retell import client, protocol
from providers.simulators.retell import RetellSimulator
from providers.simulators.scripted_agent import EventLog, dominant_frequency, say, utterance_frames

KEY = "sim-retell-key"


@pytest.fixture
async def sim() -> AsyncIterator[RetellSimulator]:
    s = RetellSimulator(api_key=KEY)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ctx_for(sim: RetellSimulator, http: aiohttp.ClientSession, **overrides: object) -> ProviderContext:
    fields: dict[str, object] = {
        "call_id": "call-1",
        "provider": "retell",
        "http": http,
        "api_key": KEY,
        "config": {"base_url": sim.http_url},
        "voice_config": {"agent_id": "agent_sim"},
        "caller_number": "+15550001111",
        "called_number": "+15550002222",
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


async def test_registers_call_and_streams_mulaw(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "hi"), Transcript("agent", "hello")]
    session = await client.connect(ctx_for(sim, http, history=history))
    try:
        assert session.input_format == MULAW_8000 and session.output_format == MULAW_8000
        body = sim.registrations[0]
        assert body["agent_id"] == "agent_sim"
        assert body["audio_websocket_protocol"] == "web"
        assert body["audio_encoding"] == "mulaw" and body["sample_rate"] == 8000
        assert body["from_number"] == "+15550001111" and body["to_number"] == "+15550002222"
        assert body["retell_llm_dynamic_variables"] == {"conversation_history": "user: hi\nagent: hello"}
        assert sim.records[0].handshake["query"] == {"enable_update": "true"}
    finally:
        await session.close()


async def test_pcm_caller_gets_pcm_session(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http, preferred_format=PCM16_16000))
    try:
        assert session.input_format == PCM16_16000
        assert sim.registrations[0]["audio_encoding"] == "s16le"
        assert sim.registrations[0]["sample_rate"] == 16000
    finally:
        await session.close()


async def test_greeting_first(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.role == "agent" and e.text == "greeting")
        await settle(log)
        greeting = audio_of(log)
        assert abs(len(greeting) - MULAW_8000.bytes_for_ms(400)) <= 160
        assert abs(dominant_frequency(greeting, MULAW_8000) - 440) < 20
        assert session.usage.audio_out_ms == pytest.approx(400, abs=20)
    finally:
        await session.close()
        await log.stop()


async def test_caller_first_echo_and_transcripts(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        await asyncio.sleep(0.1)
        assert not log.of_type(AudioOut)
        await say(session, utterance_frames(700, 600, MULAW_8000), MULAW_8000)
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "echo 1")
        await settle(log)
        echo = audio_of(log)
        assert abs(dominant_frequency(echo, MULAW_8000) - 700) < 20
        assert 500 <= MULAW_8000.ms_for_bytes(len(echo)) <= 800
        user = [e for e in log.of_type(Transcript) if e.role == "user"]
        assert user and user[0].text.startswith("utterance 1")
        assert session.usage.audio_in_ms == pytest.approx(1100, abs=40)
    finally:
        await session.close()
        await log.stop()


async def test_barge_in_clears_and_no_stale_audio(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
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
        assert after, "the echo should follow the interruption"
        assert all(abs(dominant_frequency(chunk, MULAW_8000) - 900) < 30 for chunk in after)
        assert sim.records[0].interruptions == 1
    finally:
        await session.close()
        await log.stop()


async def test_provider_hangup_after_farewell(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    sim.script.hangup_after = 1
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
    hangup = await log.wait_for(lambda e: isinstance(e, Hangup))
    assert isinstance(hangup, Hangup) and hangup.reason == "assistant-ended-call"
    await asyncio.wait_for(log.ended.wait(), 1)
    last_audio = [e for e in log.events if isinstance(e, AudioOut)][-1]
    assert abs(dominant_frequency(last_audio.audio.raw, MULAW_8000) - 660) < 30
    await session.close()


async def test_client_close_is_prompt_and_idempotent(
    sim: RetellSimulator, http: aiohttp.ClientSession
) -> None:
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
    assert sim.sessions_active == 0 and sim.records[0].ended_by == "client"
    await session.send_audio(Audio(MULAW_8000, raw=b"\xff" * 160))  # after close: dropped, no error


async def test_error_mid_call_is_failure(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.error_after_s = 0.2
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert (
        isinstance(failure, Failure) and failure.kind is ErrorKind.PROVIDER_DOWN and "1011" in failure.message
    )
    await session.close()


async def test_abrupt_close_with_code(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.close_after_s = 0.1
    sim.faults.close_code = 1001
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and "1001" in failure.message
    await session.close()


async def test_expiry_is_normal_end(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.expire_after_s = 0.1
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    hangup = await log.wait_for(lambda e: isinstance(e, Hangup))
    assert isinstance(hangup, Hangup) and hangup.reason == "exceeded-max-duration"
    await session.close()


async def test_handshake_timeout(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.handshake_delay_s = 0.8
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, connect_timeout=0.2))
    assert err.value.kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, ErrorKind.AUTH), (429, ErrorKind.QUOTA), (503, ErrorKind.PROVIDER_DOWN), (400, ErrorKind.CONFIG)],
)
async def test_refusals_are_classified(
    sim: RetellSimulator, http: aiohttp.ClientSession, status: int, kind: ErrorKind
) -> None:
    sim.faults.refuse_handshake = True
    sim.faults.refuse_status = status
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http))
    assert err.value.kind is kind


async def test_bad_key_unknown_agent_and_refused_port(
    sim: RetellSimulator, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, api_key="wrong"))
    assert err.value.kind is ErrorKind.AUTH and "wrong" not in str(err.value)
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, voice_config={"agent_id": "nope"}))
    assert err.value.kind is ErrorKind.CONFIG
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, voice_config={}))
    assert err.value.kind is ErrorKind.CONFIG
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, config={"base_url": "http://127.0.0.1:9"}))
    assert err.value.kind is ErrorKind.PROVIDER_DOWN


async def test_keepalive_ping_is_answered(
    sim: RetellSimulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "PING_INTERVAL_S", 0.0)
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    await say(session, utterance_frames(700, 40, MULAW_8000, silence_ms=0), MULAW_8000)
    await asyncio.sleep(0.1)
    assert protocol.PING in sim.records[0].messages
    assert not sim.records[0].violations
    await session.close()
    await log.stop()


async def test_strict_simulator_rejects_malformed_input(
    sim: RetellSimulator, http: aiohttp.ClientSession
) -> None:
    url = sim.http_url + protocol.REGISTER_PATH
    auth = {"Authorization": f"Bearer {KEY}"}
    good = {
        "agent_id": "agent_sim",
        "audio_websocket_protocol": "web",
        "audio_encoding": "mulaw",
        "sample_rate": 8000,
    }
    for bad in (
        {**good, "sample_rate": 16000},
        {**good, "audio_encoding": "opus"},
        {"agent_id": "agent_sim"},
    ):
        async with http.post(url, json=bad, headers=auth) as resp:
            assert resp.status == 400
    async with http.post(url, json=good) as resp:
        assert resp.status == 401
    async with http.post(url, json=good, headers=auth) as resp:
        call_id = (await resp.json())["call_id"]
    async with http.ws_connect(f"{sim.ws_url}/audio-websocket/{call_id}") as ws:
        await ws.send_str('{"hello": 1}')
        msg = await ws.receive()
        while msg.type is aiohttp.WSMsgType.BINARY:
            msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1003
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(f"{sim.ws_url}/audio-websocket/{call_id}")
    assert err.value.status == 404


async def test_tcp_drop_without_close_frame(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.close_after_s = 0.1
    sim.faults.close_code = 1006
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and failure.kind is ErrorKind.PROVIDER_DOWN
    await asyncio.wait_for(log.ended.wait(), 1)
    await session.close()


async def test_barge_in_after_all_audio_was_sent(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    """Retell judges by play-out, so the phone buffer must still be flushed."""
    sim.script.greeting_ms = 3000
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "greeting")
        await settle(log)
        assert MULAW_8000.ms_for_bytes(len(audio_of(log))) == pytest.approx(3000, abs=20)
        await say(session, utterance_frames(900, 300, MULAW_8000), MULAW_8000)
        await log.wait_for(lambda e: isinstance(e, Interrupt))
    finally:
        await session.close()
        await log.stop()
