"""Bolna adapter ↔ Bolna simulator over real sockets, in both of Bolna's dialects.

``twilio``: Twilio Media Streams JSON, μ-law passthrough. ``default``: web JSON with init/ack,
PCM16 16 kHz in / 24 kHz out. Bolna has no tool calls on this socket (tools run server-side).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from providers.base import (
    MULAW_8000,
    PCM16_16000,
    PCM16_24000,
    Audio,
    AudioFormat,
    AudioOut,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    Mark,
    ProviderContext,
    ProviderError,
    Transcript,
)
from providers.bolna import client, protocol
from providers.simulators.bolna import BolnaSimulator
from providers.simulators.scripted_agent import EventLog, dominant_frequency, say, utterance_frames

AGENTS = {"twilio": "agent-twilio", "default": "agent-web"}
IN_FORMAT = {"twilio": MULAW_8000, "default": PCM16_16000}
OUT_FORMAT = {"twilio": MULAW_8000, "default": PCM16_24000}
dialects = pytest.mark.parametrize("dialect", ["twilio", "default"])


@pytest.fixture
async def sim() -> AsyncIterator[BolnaSimulator]:
    s = BolnaSimulator()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ctx_for(
    sim: BolnaSimulator, http: aiohttp.ClientSession, dialect: str = "twilio", **overrides: object
) -> ProviderContext:
    fields: dict[str, object] = {
        "call_id": "call-1",
        "provider": "bolna",
        "http": http,
        "config": {"base_url": sim.http_url},
        "voice_config": {"agent_id": AGENTS[dialect], "io_provider": dialect},
        "caller_number": "+15550001111",
        "connect_timeout": 2.0,
    }
    fields.update(overrides)
    return ProviderContext(**fields)  # type: ignore[arg-type]


def audio_of(log: EventLog, after: int = 0) -> bytes:
    return b"".join(e.audio.raw for e in log.events[after:] if isinstance(e, AudioOut))


async def settle(log: EventLog, quiet_s: float = 0.25) -> None:
    """Wait until no event arrived for ``quiet_s`` (the simulator sends no turn-end message)."""
    seen = -1
    while seen != len(log.events):
        seen = len(log.events)
        await asyncio.sleep(quiet_s)


async def test_twilio_dialect_impersonates_twilio(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "hello")]
    session = await client.connect(ctx_for(sim, http, history=history))
    try:
        assert session.input_format == MULAW_8000 and session.output_format == MULAW_8000
        await asyncio.sleep(0.05)
        record = sim.records[0]
        assert record.messages[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        start = record.handshake["start"]
        assert start["streamSid"].startswith("MZ") and start["callSid"].startswith("CA")
        assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        assert start["customParameters"]["conversation_history"] == "user: hello"
        assert start["customParameters"]["caller_number"] == "+15550001111"
    finally:
        await session.close()


def test_twilio_media_reuses_carrier_base64() -> None:
    codec = protocol.TwilioDialect("MZ1", "CA1", {})
    codec.opening()  # connected (unnumbered), start = sequenceNumber 1
    frame = Audio(MULAW_8000, b64="//////////8=")
    first = codec.media(frame)
    second = codec.media(frame)
    assert not frame.has_raw  # never decoded
    assert '"payload":"//////////8="' in first
    assert '"timestamp":"0"' in first and '"chunk":"1"' in first
    assert '"chunk":"2"' in second and '"sequenceNumber":"3"' in second


async def test_web_dialect_init_ack(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http, "default"))
    try:
        assert session.input_format == PCM16_16000 and session.output_format == PCM16_24000
        init = sim.records[0].handshake["init"]
        assert init["call_id"] == "call-1" and init["caller_number"] == "+15550001111"
        assert sim.records[0].messages[0]["type"] == "init"
    finally:
        await session.close()


@dialects
async def test_greeting_first_with_marks(
    sim: BolnaSimulator, http: aiohttp.ClientSession, dialect: str
) -> None:
    session = await client.connect(ctx_for(sim, http, dialect))
    log = EventLog(session, echo_marks=True)
    try:
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        await settle(log)
        fmt = OUT_FORMAT[dialect]
        greeting = audio_of(log)
        assert abs(fmt.ms_for_bytes(len(greeting)) - 400) <= 20
        assert abs(dominant_frequency(greeting, fmt) - 440) < 20
        marks = [e.name for e in log.of_type(Mark)]
        per_chunk = 1 if dialect == "twilio" else 2  # the web dialect pre- and post-marks each chunk
        assert len(marks) == per_chunk * len(log.of_type(AudioOut))
        assert sim.records[0].marks_echoed == marks and not sim.records[0].violations
        assert session.usage.audio_out_ms == pytest.approx(400, abs=20)
    finally:
        await session.close()
        await log.stop()


@dialects
async def test_caller_first_echo(sim: BolnaSimulator, http: aiohttp.ClientSession, dialect: str) -> None:
    sim.script.greeting_first = False
    session = await client.connect(ctx_for(sim, http, dialect))
    log = EventLog(session, echo_marks=True)
    try:
        await asyncio.sleep(0.1)
        assert not log.of_type(AudioOut)
        fin = IN_FORMAT[dialect]
        await say(session, utterance_frames(700, 600, fin), fin)
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        await settle(log)
        fout = OUT_FORMAT[dialect]
        echo = audio_of(log)
        assert abs(dominant_frequency(echo, fout) - 700) < 20
        assert 500 <= fout.ms_for_bytes(len(echo)) <= 800
        assert sim.records[0].audio_bytes == fin.bytes_for_ms(1100)
        assert session.usage.audio_in_ms == pytest.approx(1100, abs=1)
    finally:
        await session.close()
        await log.stop()


@dialects
async def test_barge_in_clear(sim: BolnaSimulator, http: aiohttp.ClientSession, dialect: str) -> None:
    sim.script.greeting_ms = 3000
    session = await client.connect(ctx_for(sim, http, dialect))
    log = EventLog(session, echo_marks=True)
    try:
        await log.wait_for(lambda e: isinstance(e, AudioOut))
        fin, fout = IN_FORMAT[dialect], OUT_FORMAT[dialect]
        await say(session, utterance_frames(900, 500, fin), fin)
        interrupt = await log.wait_for(lambda e: isinstance(e, Interrupt))
        cut = log.events.index(interrupt)
        await log.wait_for(lambda e: isinstance(e, AudioOut) and log.events.index(e) > cut)
        await settle(log)
        after = [e.audio.raw for e in log.events[cut:] if isinstance(e, AudioOut)]
        assert after and all(abs(dominant_frequency(c, fout) - 900) < 30 for c in after)
    finally:
        await session.close()
        await log.stop()


@dialects
async def test_hangup_after_final_mark_echo(
    sim: BolnaSimulator, http: aiohttp.ClientSession, dialect: str
) -> None:
    sim.script.greeting_first = False
    sim.script.hangup_after = 1
    session = await client.connect(ctx_for(sim, http, dialect))
    log = EventLog(session, echo_marks=True)
    fin, fout = IN_FORMAT[dialect], OUT_FORMAT[dialect]
    await say(session, utterance_frames(700, 300, fin), fin)
    hangup = await log.wait_for(lambda e: isinstance(e, Hangup))
    assert isinstance(hangup, Hangup) and hangup.reason == "assistant-ended-call"
    last_audio = log.of_type(AudioOut)[-1]
    assert abs(dominant_frequency(last_audio.audio.raw, fout) - 660) < 30
    assert not sim.records[0].violations
    await session.close()


async def test_client_close_sends_stop(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
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
    assert sim.records[0].messages[-1]["event"] == "stop" and sim.records[0].ended_by == "client"


@dialects
async def test_error_mid_call_is_failure(
    sim: BolnaSimulator, http: aiohttp.ClientSession, dialect: str
) -> None:
    sim.faults.error_after_s = 0.2
    session = await client.connect(ctx_for(sim, http, dialect))
    log = EventLog(session, echo_marks=True)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert (
        isinstance(failure, Failure) and failure.kind is ErrorKind.PROVIDER_DOWN and "1011" in failure.message
    )
    await session.close()


async def test_abrupt_close_with_custom_code(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.close_after_s = 0.1
    sim.faults.close_code = 1012
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session, echo_marks=True)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and "1012" in failure.message
    await session.close()


@dialects
async def test_handshake_timeout(sim: BolnaSimulator, http: aiohttp.ClientSession, dialect: str) -> None:
    sim.faults.handshake_delay_s = 0.8
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, dialect, connect_timeout=0.2))
    assert err.value.kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize(
    ("status", "kind"), [(401, ErrorKind.AUTH), (429, ErrorKind.QUOTA), (503, ErrorKind.PROVIDER_DOWN)]
)
async def test_refused_upgrade_is_classified(
    sim: BolnaSimulator, http: aiohttp.ClientSession, status: int, kind: ErrorKind
) -> None:
    sim.faults.refuse_handshake = True
    sim.faults.refuse_status = status
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http))
    assert err.value.kind is kind


async def test_unknown_agent(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    with pytest.raises(ProviderError) as err:
        await client.connect(ctx_for(sim, http, voice_config={"agent_id": "nope", "io_provider": "default"}))
    assert err.value.kind is ErrorKind.PROVIDER_DOWN
    session = await client.connect(ctx_for(sim, http, voice_config={"agent_id": "nope"}))
    log = EventLog(session)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and "1011" in failure.message
    await session.close()


async def test_config_errors(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    bad: tuple[dict[str, Any], ...] = (
        {"config": {}},
        {"voice_config": {"agent_id": "agent-web", "io_provider": "plivo"}},
        {"voice_config": {"agent_id": "agent-web", "io_provider": "default", "input_sample_rate": 1.5}},
        {"voice_config": {}},
    )
    for overrides in bad:
        with pytest.raises(ProviderError) as err:
            await client.connect(ctx_for(sim, http, **overrides))
        assert err.value.kind is ErrorKind.CONFIG


async def test_web_dialect_custom_input_rate(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    voice = {"agent_id": "agent-web", "io_provider": "default", "input_sample_rate": 8000}
    session = await client.connect(ctx_for(sim, http, voice_config=voice))
    try:
        assert session.input_format == AudioFormat("pcm16", 8000)
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("agent", "messages"),
    [
        ("agent-twilio", ["{broken"]),
        ("agent-twilio", [b"\x00\x01"]),
        ("agent-twilio", ['{"event":"start","start":{"streamSid":"MZ1"}}']),
        (
            "agent-twilio",
            [
                '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"}}',
                '{"event":"media","media":{"payload":"/w=="}}',
            ],
        ),
        ("agent-web", ['{"type":"init","meta_data":{}}', '{"type":"audio","data":"***"}']),
    ],
)
async def test_strict_simulator_rejects_malformed_input(
    sim: BolnaSimulator, http: aiohttp.ClientSession, agent: str, messages: list[str | bytes]
) -> None:
    async with http.ws_connect(f"{sim.ws_url}/chat/v1/{agent}") as ws:
        for message in messages:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        msg = await ws.receive()
        while msg.type is not aiohttp.WSMsgType.CLOSE:
            msg = await ws.receive()
        assert msg.data == 1011
    assert sim.records[0].violations


async def test_tcp_drop_without_close_frame(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.close_after_s = 0.1
    sim.faults.close_code = 1006
    session = await client.connect(ctx_for(sim, http))
    log = EventLog(session, echo_marks=True)
    failure = await log.wait_for(lambda e: isinstance(e, Failure))
    assert isinstance(failure, Failure) and failure.kind is ErrorKind.PROVIDER_DOWN
    await asyncio.wait_for(log.ended.wait(), 1)
    await session.close()


async def test_dtmf_in_twilio_dialect(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    session = await client.connect(ctx_for(sim, http))
    try:
        await session.send_dtmf("7")
        await asyncio.sleep(0.05)
        dtmf = [m for m in sim.records[0].messages if m.get("event") == "dtmf"]
        assert dtmf and dtmf[0]["dtmf"] == {"track": "inbound_track", "digit": "7"}
        assert not sim.records[0].violations
    finally:
        await session.close()


@dialects
async def test_expiry_closes_normally(sim: BolnaSimulator, http: aiohttp.ClientSession, dialect: str) -> None:
    sim.faults.expire_after_s = 0.1
    sim.script.greeting_first = False
    session = await client.connect(ctx_for(sim, http, dialect))
    log = EventLog(session, echo_marks=True)
    hangup = await log.wait_for(lambda e: isinstance(e, Hangup), within_s=5)
    assert isinstance(hangup, Hangup)
    await session.close()
