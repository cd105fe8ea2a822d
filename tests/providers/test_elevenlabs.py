"""ElevenLabs adapter ↔ ElevenLabs simulator over real sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson
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
    ToolCall,
    Transcript,
)
from providers.elevenlabs import client
from providers.elevenlabs.protocol import HISTORY_VARIABLE
from providers.simulators.elevenlabs import ElevenLabsSimulator
from providers.simulators.scripted_agent import EventLog, dominant_frequency, say, utterance_frames


@pytest.fixture
async def sim() -> AsyncIterator[ElevenLabsSimulator]:
    s = ElevenLabsSimulator()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ctx_for(sim: ElevenLabsSimulator, http: aiohttp.ClientSession, **overrides: object) -> ProviderContext:
    fields: dict[str, object] = {
        "call_id": "call-1",
        "provider": "elevenlabs",
        "http": http,
        "config": {"base_url": sim.http_url, "tools": {"lookup_order": {"status": "shipped"}}},
        "voice_config": {"agent_id": "agent_sim"},
        "connect_timeout": 2.0,
    }
    fields.update(overrides)
    return ProviderContext(**fields)  # type: ignore[arg-type]


def audio_of(log: EventLog, after: int = 0) -> bytes:
    return b"".join(e.audio.raw for e in log.events[after:] if isinstance(e, AudioOut))


async def wait_until(predicate: Callable[[], bool]) -> None:
    for _ in range(100):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 1 s")


# -- handshake --------------------------------------------------------------------------------------


async def test_public_agent_mulaw_passthrough(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http))
    try:
        assert session.input_format == MULAW_8000 and session.output_format == MULAW_8000
        record = sim.records[0]
        assert record.handshake["query"] == {"agent_id": "agent_sim"}
        assert record.handshake["first_message"] == {"type": "conversation_initiation_client_data"}
        frame = Audio(MULAW_8000, b64="//////////8=")
        await session.send_audio(frame)
        await wait_until(lambda: record.audio_frames == 1)
    finally:
        await session.close()


async def test_pcm_agent_formats_read_back(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http, voice_config={"agent_id": "agent_x_pcm_16000"}))
    log = EventLog(session)
    try:
        assert session.input_format == PCM16_16000 and session.output_format == PCM16_16000
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        await asyncio.sleep(0.2)
        greeting = audio_of(log)
        assert abs(len(greeting) - PCM16_16000.bytes_for_ms(400)) <= 640
        assert abs(dominant_frequency(greeting, PCM16_16000) - 440) < 20
    finally:
        await session.close()
        await log.stop()


async def test_signed_url_flow_and_overrides(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.private_agents = True
    history = [Transcript("user", "where is my order"), Transcript("agent", "let me check")]
    voice = {"agent_id": "agent_sim", "voice_id": "v1", "language": "de", "prompt": "Be brief."}
    session = await client.connect(ctx_for(sim, http, api_key="xi-key", voice_config=voice, history=history))
    try:
        handshake = sim.records[0].handshake
        assert "conversation_signature" in handshake["query"]
        first = handshake["first_message"]
        assert first["conversation_config_override"] == {
            "agent": {"prompt": {"prompt": "Be brief."}, "language": "de"},
            "tts": {"voice_id": "v1"},
        }
        assert first["dynamic_variables"][HISTORY_VARIABLE] == "user: where is my order\nagent: let me check"
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("status", "kind"), [(401, ErrorKind.AUTH), (429, ErrorKind.QUOTA), (503, ErrorKind.PROVIDER_DOWN)]
)
async def test_refused_handshake_is_classified(
    sim: ElevenLabsSimulator, http: aiohttp.ClientSession, status: int, kind: ErrorKind
) -> None:
    sim.faults.refuse_handshake = True
    sim.faults.refuse_status = status
    for api_key in (None, "xi-key"):  # public upgrade and signed-URL REST call
        with pytest.raises(ProviderError) as info:
            await client.connect(ctx_for(sim, http, api_key=api_key))
        assert info.value.kind is kind


async def test_bad_key_unknown_agent_and_disabled_overrides(
    sim: ElevenLabsSimulator, http: aiohttp.ClientSession
) -> None:
    sim.api_keys = {"good"}
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, api_key="bad"))
    assert info.value.kind is ErrorKind.AUTH
    sim.known_agents = {"agent_sim"}
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, voice_config={"agent_id": "nope"}))
    assert info.value.kind is ErrorKind.CONFIG
    sim.overrides_enabled = False
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, voice_config={"agent_id": "agent_sim", "voice_id": "v"}))
    assert info.value.kind is ErrorKind.CONFIG and "override" in info.value.message.lower()
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, voice_config={}))
    assert info.value.kind is ErrorKind.CONFIG


async def test_handshake_timeout(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.handshake_delay_s = 1.0
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, connect_timeout=0.3))
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 0.9


async def test_unreachable_is_provider_down(http: aiohttp.ClientSession) -> None:
    ctx = ProviderContext(
        call_id="c",
        provider="elevenlabs",
        http=http,
        config={"base_url": "http://127.0.0.1:9"},
        voice_config={"agent_id": "a"},
    )
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx)
    assert info.value.kind is ErrorKind.PROVIDER_DOWN


@pytest.mark.parametrize(
    ("first", "binary"),
    [
        (b'{"type":"conversation_initiation","dynamic_variables":{}}', False),
        (b'{"dynamic_variables":{}}', False),
        (b"not json", False),
        (b'{"type":"conversation_initiation_client_data"}', True),
        (
            b'{"type":"conversation_initiation_client_data","conversation_config_override":{"bogus":{}}}',
            False,
        ),
    ],
)
async def test_strict_simulator_rejects_malformed_first_message(
    sim: ElevenLabsSimulator, http: aiohttp.ClientSession, first: bytes, binary: bool
) -> None:
    async with http.ws_connect(f"{sim.ws_url}/v1/convai/conversation?agent_id=a") as ws:
        if binary:
            await ws.send_bytes(first)
        else:
            await ws.send_str(first.decode())
        error = orjson.loads((await ws.receive()).data)
        assert error["type"] == "error" and error["error_event"]["code"] == 1008
        await ws.receive()
        assert ws.close_code == 1008


# -- turns ------------------------------------------------------------------------------------------


async def test_greeting_first_with_pings(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.ping_interval_s = 0.05
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        first = await log.wait_for(lambda e: isinstance(e, Transcript))
        assert first == Transcript("agent", "greeting")
        await asyncio.sleep(0.25)
        greeting = audio_of(log)
        assert abs(len(greeting) - MULAW_8000.bytes_for_ms(400)) <= 160
        assert abs(dominant_frequency(greeting, MULAW_8000) - 440) < 20
        assert session.usage.audio_out_ms == pytest.approx(400, abs=20)
        assert session.usage.characters == len("greeting")
        pongs = [m for m in sim.records[0].messages if m["type"] == "pong"]
        assert pongs and all(isinstance(p["event_id"], int) for p in pongs)
    finally:
        await session.close()
        await log.stop()


async def test_caller_first_echo(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    voice = {"agent_id": "agent_sim", "speak_first": False}
    session = await client.connect(ctx_for(sim, http, voice_config=voice))
    log = EventLog(session)
    try:
        assert sim.records[0].handshake["first_message"]["conversation_config_override"] == {
            "agent": {"first_message": ""}
        }
        await asyncio.sleep(0.1)
        assert not log.of_type(AudioOut)
        await say(session, utterance_frames(700, 600, MULAW_8000), MULAW_8000)
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "echo 1")
        await asyncio.sleep(0.3)
        echo = audio_of(log)
        assert abs(dominant_frequency(echo, MULAW_8000) - 700) < 20
        assert 500 <= MULAW_8000.ms_for_bytes(len(echo)) <= 800
        assert Transcript("user", "utterance 1") in log.events
        assert session.usage.audio_in_ms == pytest.approx(1100, abs=40)
    finally:
        await session.close()
        await log.stop()


async def test_barge_in_drops_stale_audio(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    sim.script.speedup = 1.0  # still sending the greeting when the caller talks over it
    session = await client.connect(ctx_for(sim, http))
    assert isinstance(session, client.ElevenLabsSession)
    log = EventLog(session)
    try:
        greeting = await log.wait_for(lambda e: isinstance(e, AudioOut))
        assert isinstance(greeting, AudioOut)
        await say(session, utterance_frames(900, 500, MULAW_8000), MULAW_8000)
        interrupt = await log.wait_for(lambda e: isinstance(e, Interrupt))
        cut = log.events.index(interrupt)
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "echo 1")
        await asyncio.sleep(0.3)
        after = [e for e in log.events[cut:] if isinstance(e, AudioOut)]
        assert after and all(e.item_id != greeting.item_id for e in after)
        assert all(abs(dominant_frequency(e.audio.raw, MULAW_8000) - 900) < 30 for e in after)
        assert session.codec.dropped_audio == 1  # the simulator's post-interruption stale chunk
    finally:
        await session.close()
        await log.stop()


async def test_tool_call_round_trip(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    sim.script.tool_after = 1
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
        call = await log.wait_for(lambda e: isinstance(e, ToolCall))
        assert isinstance(call, ToolCall)
        assert call == ToolCall("lookup_order", call.call_id, {"order_id": "A-17"}, {"status": "shipped"})
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        result = sim.records[0].tool_results[0]
        assert result == {
            "type": "client_tool_result",
            "tool_call_id": call.call_id,
            "result": '{"status":"shipped"}',
            "is_error": False,
        }
    finally:
        await session.close()
        await log.stop()


async def test_unknown_tool_gets_error_result(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    sim.script.tool_after = 1
    sim.script.tool_name = "transfer"
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        assert sim.records[0].tool_results[0]["is_error"] is True
    finally:
        await session.close()
        await log.stop()


async def test_agent_hangup_is_close_1000(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    sim.script.hangup_after = 1
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
    hangup = await log.wait_for(lambda e: isinstance(e, Hangup))
    await asyncio.wait_for(log.ended.wait(), 1)
    assert isinstance(hangup, Hangup) and not log.of_type(Failure)
    last_audio = log.of_type(AudioOut)[-1]
    assert abs(dominant_frequency(last_audio.audio.raw, MULAW_8000) - 660) < 30
    await session.close()


async def test_caller_close_closes_provider_socket(
    sim: ElevenLabsSimulator, http: aiohttp.ClientSession
) -> None:
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    await log.wait_for(lambda e: isinstance(e, AudioOut))
    async with asyncio.timeout(1.0):
        await session.close()
        await session.close()
        await log.ended.wait()
    assert not log.of_type(Failure) and not log.of_type(Hangup)
    await wait_until(lambda: sim.sessions_active == 0)
    assert sim.records[0].ended_by == "client" and sim.records[0].close_code == 1000
    await session.send_audio(Audio(MULAW_8000, raw=b"\xff" * 160))  # after close: dropped quietly


@pytest.mark.parametrize(
    ("fault", "code", "kind"),
    [
        ("error_after_s", None, ErrorKind.PROVIDER_DOWN),
        ("close_after_s", None, ErrorKind.PROVIDER_DOWN),
        ("close_after_s", 1008, ErrorKind.CONFIG),
    ],
)
async def test_failure_mid_call(
    sim: ElevenLabsSimulator, http: aiohttp.ClientSession, fault: str, code: int | None, kind: ErrorKind
) -> None:
    sim.faults.update({fault: 0.2, "close_code": code})
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and failure.kind is kind and failure.fatal
    await session.close()
    await log.stop()


async def test_max_duration_is_hangup(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.expire_after_s = 0.2
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    hangup = await log.wait_for(lambda e: isinstance(e, Hangup))
    assert hangup == Hangup("max_duration_exceeded")
    await session.close()
    await log.stop()
