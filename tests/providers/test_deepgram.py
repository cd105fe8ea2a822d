"""Deepgram Voice Agent adapter ↔ Deepgram simulator over real sockets."""

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
from providers.deepgram import client
from providers.simulators.deepgram import DeepgramSimulator
from providers.simulators.scripted_agent import EventLog, dominant_frequency, say, utterance_frames

KEY = "dg-key"


@pytest.fixture
async def sim() -> AsyncIterator[DeepgramSimulator]:
    s = DeepgramSimulator()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ctx_for(sim: DeepgramSimulator, http: aiohttp.ClientSession, **overrides: object) -> ProviderContext:
    fields: dict[str, object] = {
        "call_id": "call-1",
        "provider": "deepgram",
        "http": http,
        "api_key": KEY,
        "config": {"base_url": sim.http_url, "tools": {"lookup_order": {"status": "shipped"}}},
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


# -- handshake --------------------------------------------------------------------------------------


async def test_settings_mulaw_passthrough(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "hi"), Transcript("agent", "hello")]
    session = await client.connect(ctx_for(sim, http, history=history))
    try:
        assert session.input_format == MULAW_8000 and session.output_format == MULAW_8000
        handshake = sim.records[0].handshake
        assert handshake["headers"]["Authorization"] == f"Token {KEY}"
        settings = handshake["settings"]
        assert settings["audio"] == {
            "input": {"encoding": "mulaw", "sample_rate": 8000},
            "output": {"encoding": "mulaw", "sample_rate": 8000, "container": "none"},
        }
        agent = settings["agent"]
        assert agent["think"]["prompt"] == "Be brief."
        assert [f["name"] for f in agent["think"]["functions"]] == ["lookup_order", "end_call"]
        assert agent["context"]["messages"] == [
            {"type": "History", "role": "user", "content": "hi"},
            {"type": "History", "role": "assistant", "content": "hello"},
        ]
        assert "greeting" not in agent  # resumed call: no fresh greeting unless resume_message is set
        await session.send_audio(Audio(MULAW_8000, raw=b"\xff" * 160))
        await wait_until(lambda: sim.records[0].audio_bytes == 160)
    finally:
        await session.close()


async def test_forced_linear16(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    config = {"base_url": sim.http_url, "audio_format": "pcm16_16000"}
    session = await client.connect(ctx_for(sim, http, config=config))
    log = EventLog(session)
    try:
        assert session.input_format == PCM16_16000 and session.output_format == PCM16_16000
        assert sim.records[0].handshake["settings"]["audio"]["input"] == {
            "encoding": "linear16",
            "sample_rate": 16000,
        }
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        await asyncio.sleep(0.2)
        assert abs(dominant_frequency(audio_of(log), PCM16_16000) - 440) < 20
    finally:
        await session.close()
        await log.stop()


async def test_bad_forced_format_is_config(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    with pytest.raises(ProviderError) as info:
        await client.connect(
            ctx_for(sim, http, config={"base_url": sim.http_url, "audio_format": "mulaw_44100"})
        )
    assert info.value.kind is ErrorKind.CONFIG


@pytest.mark.parametrize(
    ("status", "kind"), [(401, ErrorKind.AUTH), (429, ErrorKind.QUOTA), (503, ErrorKind.PROVIDER_DOWN)]
)
async def test_refused_upgrade_is_classified(
    sim: DeepgramSimulator, http: aiohttp.ClientSession, status: int, kind: ErrorKind
) -> None:
    sim.faults.refuse_handshake = True
    sim.faults.refuse_status = status
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http))
    assert info.value.kind is kind


async def test_missing_or_wrong_key_is_auth(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.api_keys = {KEY}
    for key in (None, "other"):
        with pytest.raises(ProviderError) as info:
            await client.connect(ctx_for(sim, http, api_key=key))
        assert info.value.kind is ErrorKind.AUTH


async def test_handshake_timeout(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.handshake_delay_s = 1.0
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await client.connect(ctx_for(sim, http, connect_timeout=0.3))
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 0.9


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xff" * 160, "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"),
        ('{"type":"KeepAlive"}', "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS"),
        ("{not json", "UNPARSABLE_CLIENT_MESSAGE"),
        (
            '{"type":"Settings","audio":{"input":{"encoding":"mulaw","sample_rate":8000.0},'
            '"output":{"encoding":"mulaw","sample_rate":8000}},"agent":{"listen":{},"think":{},"speak":{}}}',
            "INVALID_SETTINGS",
        ),
        (
            '{"type":"Settings","audio":{"input":{"encoding":"ulaw","sample_rate":8000},'
            '"output":{"encoding":"mulaw","sample_rate":8000}},"agent":{"listen":{},"think":{},"speak":{}}}',
            "INVALID_SETTINGS",
        ),
    ],
)
async def test_strict_simulator_rejects_bad_first_message(
    sim: DeepgramSimulator, http: aiohttp.ClientSession, frame: bytes | str, code: str
) -> None:
    url = f"{sim.ws_url}/v1/agent/converse"
    async with http.ws_connect(url, headers={"Authorization": f"Token {KEY}"}) as ws:
        assert orjson.loads((await ws.receive()).data)["type"] == "Welcome"
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        error = orjson.loads((await ws.receive()).data)
        assert error["type"] == "Error" and error["code"] == code
        await ws.receive()
        assert ws.close_code == 1008


async def test_invalid_settings_from_adapter_is_config(
    sim: DeepgramSimulator, http: aiohttp.ClientSession
) -> None:
    # The simulator decodes only linear16/mulaw, so an A-law session gets INVALID_SETTINGS: this
    # exercises the adapter's handling of an Error before SettingsApplied.
    with pytest.raises(ProviderError) as info:
        await client.connect(
            ctx_for(sim, http, config={"base_url": sim.http_url, "audio_format": "alaw_8000"})
        )
    assert info.value.kind is ErrorKind.CONFIG and "INVALID_SETTINGS" in info.value.message


# -- turns ------------------------------------------------------------------------------------------


async def test_greeting_first(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    try:
        assert sim.records[0].handshake["settings"]["agent"]["greeting"] == "Hi there!"
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.role == "agent")
        await asyncio.sleep(0.2)
        greeting = audio_of(log)
        assert abs(len(greeting) - MULAW_8000.bytes_for_ms(400)) <= 160
        assert abs(dominant_frequency(greeting, MULAW_8000) - 440) < 20
        assert session.usage.audio_out_ms == pytest.approx(400, abs=20)
    finally:
        await session.close()
        await log.stop()


async def test_caller_first_echo(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    voice = {"speak_first": False}
    session = await client.connect(ctx_for(sim, http, voice_config=voice))
    log = EventLog(session)
    try:
        assert "greeting" not in sim.records[0].handshake["settings"]["agent"]
        await asyncio.sleep(0.1)
        assert not log.of_type(AudioOut)
        await say(session, utterance_frames(700, 600, MULAW_8000), MULAW_8000)
        await log.wait_for(lambda e: isinstance(e, Transcript) and e.text == "echo 1")
        await asyncio.sleep(0.3)
        echo = audio_of(log)
        assert abs(dominant_frequency(echo, MULAW_8000) - 700) < 20
        assert 500 <= MULAW_8000.ms_for_bytes(len(echo)) <= 800
        assert Transcript("user", "utterance 1") in log.events
        assert not log.of_type(Interrupt)  # nothing was playing when the caller started
    finally:
        await session.close()
        await log.stop()


async def test_barge_in(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    session = await client.connect(ctx_for(sim, http))
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
    finally:
        await session.close()
        await log.stop()


async def test_function_call_round_trip(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.tool_after = 1
    session = await client.connect(ctx_for(sim, http, voice_config={"speak_first": False}))
    log = EventLog(session)
    try:
        await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
        call = await log.wait_for(lambda e: isinstance(e, ToolCall))
        assert call == ToolCall("lookup_order", "fc_1", {"order_id": "A-17"}, {"status": "shipped"})
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        assert sim.records[0].tool_results == [
            {
                "type": "FunctionCallResponse",
                "id": "fc_1",
                "name": "lookup_order",
                "content": '{"status":"shipped"}',
            }
        ]
    finally:
        await session.close()
        await log.stop()


async def test_end_call_function_is_hangup(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.hangup_after = 1
    session = await client.connect(ctx_for(sim, http, voice_config={"speak_first": False}))
    log = EventLog(session)
    try:
        await say(session, utterance_frames(700, 300, MULAW_8000), MULAW_8000)
        hangup = await log.wait_for(lambda e: isinstance(e, Hangup))
        assert hangup == Hangup("agent_end_call")
        last_audio = log.of_type(AudioOut)[-1]
        assert abs(dominant_frequency(last_audio.audio.raw, MULAW_8000) - 660) < 30
        await wait_until(lambda: bool(sim.records[0].tool_results))
        assert sim.records[0].tool_results[0]["name"] == "end_call"
    finally:
        await session.close()
        await log.stop()


async def test_caller_close_closes_provider_socket(
    sim: DeepgramSimulator, http: aiohttp.ClientSession
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


async def test_keepalive_only_when_idle(
    sim: DeepgramSimulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "KEEPALIVE_INTERVAL_S", 0.1)
    session = await client.connect(ctx_for(sim, http, voice_config={"speak_first": False}))
    record = sim.records[0]
    try:
        for _ in range(20):  # 400 ms of continuous audio: no KeepAlive needed
            await session.send_audio(Audio(MULAW_8000, raw=b"\xff" * 160))
            await asyncio.sleep(0.02)
        assert not [m for m in record.messages if m["type"] == "KeepAlive"]
        await asyncio.sleep(0.35)  # idle: a KeepAlive about every 100 ms
        assert 2 <= len([m for m in record.messages if m["type"] == "KeepAlive"]) <= 4
    finally:
        await session.close()


async def test_idle_timeout_is_retryable_failure(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.idle_timeout_s = 0.2
    session = await client.connect(ctx_for(sim, http, voice_config={"speak_first": False}))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and failure.kind is ErrorKind.RETRYABLE
    assert "CLIENT_MESSAGE_TIMEOUT" in failure.message
    await asyncio.wait_for(log.ended.wait(), 1)
    await session.close()


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("error_after_s", ErrorKind.PROVIDER_DOWN), ("close_after_s", ErrorKind.PROVIDER_DOWN)],
)
async def test_failure_mid_call(
    sim: DeepgramSimulator, http: aiohttp.ClientSession, fault: str, kind: ErrorKind
) -> None:
    sim.faults.update({fault: 0.2})
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and failure.kind is kind and failure.fatal
    await asyncio.wait_for(log.ended.wait(), 1)
    assert len(log.of_type(Failure)) == 1
    await session.close()
