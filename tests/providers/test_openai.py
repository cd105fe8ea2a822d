"""OpenAI Realtime adapter ↔ OpenAI simulator over real sockets (GA and beta dialects)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp
import orjson
import pytest

from providers.base import (
    MULAW_8000,
    PCM16_24000,
    Audio,
    AudioOut,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    Notice,
    ProviderContext,
    ProviderError,
    ToolCall,
    Transcript,
)
from providers.openai import client
from providers.simulators.openai import OpenAISimulator
from providers.simulators.scripted_agent import EventLog, dominant_frequency, say, utterance_frames

KEY = "sk-sim"


class Heard50Ms:
    """A playback clock saying the caller heard 50 ms of every item."""

    def played_ms(self, item_id: str) -> int:
        return 50


@pytest.fixture
async def sim() -> AsyncIterator[OpenAISimulator]:
    s = OpenAISimulator()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ctx_for(
    sim: OpenAISimulator,
    http: aiohttp.ClientSession,
    config: Mapping[str, object] | None = None,
    **overrides: object,
) -> ProviderContext:
    fields: dict[str, object] = {
        "call_id": "call-1",
        "provider": "openai",
        "http": http,
        "api_key": KEY,
        "config": {
            "base_url": sim.http_url,
            "tools": {"lookup_order": {"status": "shipped"}},
            **(config or {}),
        },
        "voice_config": {"prompt": "Be brief.", "first_message": "Hi there!"},
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


def sent_types(sim: OpenAISimulator) -> list[str]:
    return [m["type"] for m in sim.records[0].messages]


# -- handshake --------------------------------------------------------------------------------------


async def test_ga_session_pcmu_passthrough(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "hi"), Transcript("agent", "hello")]
    voice = {"prompt": "Be brief.", "resume_message": "Sorry, where were we?"}
    session = await client.connect(ctx_for(sim, http, history=history, voice_config=voice))
    try:
        assert session.input_format == MULAW_8000 and session.output_format == MULAW_8000
        handshake = sim.records[0].handshake
        assert (
            handshake["headers"]["Authorization"] == f"Bearer {KEY}"
            and "OpenAI-Beta" not in handshake["headers"]
        )
        assert handshake["query"] == {"model": "gpt-realtime"}
        s = handshake["session"]
        assert s["type"] == "realtime" and s["instructions"] == "Be brief."
        assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        assert s["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        assert [t["name"] for t in s["tools"]] == ["lookup_order", "end_call"]
        await wait_until(lambda: len(sim.records[0].messages) >= 4)
        items = [m["item"] for m in sim.records[0].messages if m["type"] == "conversation.item.create"]
        assert items == [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
        ]
        assert sim.records[0].messages[-1]["response"] == {
            "instructions": "Say exactly: Sorry, where were we?"
        }
        await session.send_audio(Audio(MULAW_8000, b64="//////////8="))
        await wait_until(lambda: sim.records[0].audio_bytes == 8)
    finally:
        await session.close()


async def test_beta_dialect_and_forced_pcm(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    config = {"dialect": "beta", "audio_format": "pcm16_24000"}
    session = await client.connect(ctx_for(sim, http, config))
    log = EventLog(session)
    try:
        assert session.input_format == PCM16_24000
        handshake = sim.records[0].handshake
        assert handshake["headers"]["OpenAI-Beta"] == "realtime=v1"
        assert handshake["session"]["input_audio_format"] == "pcm16"
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.role == "agent")  # beta transcript name
        greeting = audio_of(log)
        assert abs(dominant_frequency(greeting, PCM16_24000) - 440) < 20
    finally:
        await session.close()
        await log.stop()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "realtime", "input_audio_format": "g711_ulaw"}, "unknown_parameter"),  # beta field on GA
        ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "invalid_value"),  # no session.type
        ({"type": "realtime", "audio": {"input": {"format": {"type": "g711_ulaw"}}}}, "invalid_value"),
    ],
)
async def test_strict_simulator_rejects_bad_session_update(
    sim: OpenAISimulator, http: aiohttp.ClientSession, body: dict[str, object], code: str
) -> None:
    url = f"{sim.ws_url}/v1/realtime?model=gpt-realtime"
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert orjson.loads((await ws.receive()).data)["type"] == "session.created"
        await ws.send_str(orjson.dumps({"type": "session.update", "session": body}).decode())
        error = orjson.loads((await ws.receive()).data)
        assert error["type"] == "error" and error["error"]["code"] == code


async def test_rejected_session_update_is_config(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, {"audio_format": "alaw_8000"}))
    assert info.value.kind is ErrorKind.CONFIG  # the simulator refuses A-law sessions
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, {"audio_format": "pcm16_16000"}))
    assert info.value.kind is ErrorKind.CONFIG  # not an OpenAI format at all


@pytest.mark.parametrize(
    ("status", "kind"), [(401, ErrorKind.AUTH), (429, ErrorKind.QUOTA), (503, ErrorKind.PROVIDER_DOWN)]
)
async def test_refused_upgrade_is_classified(
    sim: OpenAISimulator, http: aiohttp.ClientSession, status: int, kind: ErrorKind
) -> None:
    sim.faults.refuse_handshake = True
    sim.faults.refuse_status = status
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http))
    assert info.value.kind is kind


async def test_missing_key_is_auth(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, api_key=None))
    assert info.value.kind is ErrorKind.AUTH


async def test_handshake_timeout(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.handshake_delay_s = 1.0
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, connect_timeout=0.3))
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 0.9


# -- turns ------------------------------------------------------------------------------------------


async def test_greeting_first(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        first = await log.wait_for(lambda e: isinstance(e, Transcript))
        assert first == Transcript("agent", "greeting")
        greeting = audio_of(log)
        assert abs(len(greeting) - MULAW_8000.bytes_for_ms(400)) <= 160
        assert abs(dominant_frequency(greeting, MULAW_8000) - 440) < 20
        assert sim.records[0].messages[-1]["response"]["instructions"].endswith("Hi there!")
        await wait_until(lambda: session.usage.output_tokens == 10)
        assert session.usage.input_tokens == 20
    finally:
        await session.close()
        await log.stop()


async def test_caller_first_echo(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http, {"speak_first": False}))
    log = EventLog(session)
    try:
        assert "response.create" not in sent_types(sim)
        await say(session, utterance_frames(700, 600, MULAW_8000), MULAW_8000)
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "echo 1")
        echo = audio_of(log)
        assert abs(dominant_frequency(echo, MULAW_8000) - 700) < 20
        assert 500 <= MULAW_8000.ms_for_bytes(len(echo)) <= 800
        assert Transcript("user", "utterance 1") in log.events
        assert not log.of_type(Interrupt)
    finally:
        await session.close()
        await log.stop()


async def test_barge_in_truncates_what_was_heard(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    session = await client.connect(ctx_for(sim, http, playback=Heard50Ms()))
    log = EventLog(session)
    try:
        greeting = await log.wait_for(lambda e: isinstance(e, AudioOut))
        assert isinstance(greeting, AudioOut)
        await say(session, utterance_frames(900, 500, MULAW_8000), MULAW_8000)
        interrupt = await log.wait_for(lambda e: isinstance(e, Interrupt))
        cut = log.events.index(interrupt)
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "echo 1")
        after = [e for e in log.events[cut:] if isinstance(e, AudioOut)]
        assert after and all(e.item_id != greeting.item_id for e in after)
        truncate = next(m for m in sim.records[0].messages if m["type"] == "conversation.item.truncate")
        assert truncate["item_id"] == greeting.item_id and truncate["audio_end_ms"] == 50
        assert not sim.records[0].violations  # the simulator accepted the truncate
    finally:
        await session.close()
        await log.stop()


async def test_function_call_round_trip(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    sim.script.tool_after = 1
    session = await client.connect(ctx_for(sim, http, {"speak_first": False}))
    log = EventLog(session)
    try:
        await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
        call = await log.wait_for(lambda e: isinstance(e, ToolCall))
        assert isinstance(call, ToolCall)
        assert call == ToolCall("lookup_order", call.call_id, {"order_id": "A-17"}, {"status": "shipped"})
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        assert sim.records[0].tool_results == [
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"status":"shipped"}'}
        ]
        assert sent_types(sim)[-2:] == ["conversation.item.create", "response.create"]
    finally:
        await session.close()
        await log.stop()


async def test_end_call_tool_is_hangup(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    sim.script.hangup_after = 1
    session = await client.connect(ctx_for(sim, http, {"speak_first": False}))
    log = EventLog(session)
    try:
        await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
        hangup = await log.wait_for(lambda e: isinstance(e, Hangup))
        assert hangup == Hangup("agent_end_call")
        assert abs(dominant_frequency(log.of_type(AudioOut)[-1].audio.raw, MULAW_8000) - 660) < 30
        await wait_until(lambda: bool(sim.records[0].tool_results))
        assert sent_types(sim)[-1] == "conversation.item.create"  # no response.create after goodbye
    finally:
        await session.close()
        await log.stop()


async def test_caller_close_closes_provider_socket(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
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


async def test_session_expired_is_retryable_and_fatal(
    sim: OpenAISimulator, http: aiohttp.ClientSession
) -> None:
    sim.faults.expire_after_s = 0.2
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and failure.kind is ErrorKind.RETRYABLE and failure.fatal
    assert "session_expired" in failure.message
    await asyncio.wait_for(log.ended.wait(), 1)
    assert len(log.of_type(Failure)) == 1
    await session.close()


async def test_server_error_then_drop(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.error_after_s = 0.2
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    await asyncio.wait_for(log.ended.wait(), 2)
    failures = log.of_type(Failure)
    assert (
        failures[0].kind is ErrorKind.PROVIDER_DOWN and not failures[0].fatal
    )  # "most errors are recoverable"
    assert failures[-1].fatal and "1011" in failures[-1].message
    await session.close()


async def test_benign_error_is_notice(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http, {"speak_first": False}))
    assert isinstance(session, client.OpenAISession)
    log = EventLog(session)
    try:
        await session._send_str('{"type":"response.cancel"}')
        notice = await log.wait_for(lambda e: isinstance(e, Notice))
        assert isinstance(notice, Notice) and notice.details["code"] == "response_cancel_not_active"
        assert not log.of_type(Failure)
    finally:
        await session.close()
        await log.stop()
