"""Bolna adapter ↔ Bolna simulator over real sockets, in both of Bolna's dialects.

``twilio``: Twilio Media Streams JSON, μ-law passthrough. ``default``: web JSON with init/ack,
PCM16 16 kHz in / 24 kHz out. Bolna has no tool calls on this socket (tools run server-side).

Deadlines, refusals, unreachable host, close, mid-call faults and expiry: ``test_adapter_contract``.
"""

from __future__ import annotations

import asyncio
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
    Mark,
    Transcript,
)
from providers.bolna import protocol
from providers.simulators.bolna import BolnaSimulator
from tests.providers import turns
from tests.providers.harness import (
    BOLNA_DIALECTS,
    BOLNA_TWILIO,
    BOLNA_WEB,
    ProviderCase,
    by_case,
    is_audio,
    open_call,
    refused,
)

CASE = BOLNA_TWILIO


async def test_twilio_dialect_impersonates_twilio(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "hello")]
    async with open_call(CASE, sim, http, history=history) as call:
        assert call.session.input_format == MULAW_8000 and call.session.output_format == MULAW_8000
        await asyncio.sleep(0.05)
        record = sim.records[0]
        assert record.messages[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        start = record.handshake["start"]
        assert start["streamSid"].startswith("MZ") and start["callSid"].startswith("CA")
        assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        assert start["customParameters"]["conversation_history"] == "user: hello"
        assert start["customParameters"]["caller_number"] == "+15550001111"


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
    async with open_call(BOLNA_WEB, sim, http) as call:
        assert call.session.input_format == PCM16_16000 and call.session.output_format == PCM16_24000
        init = sim.records[0].handshake["init"]
        assert init["call_id"] == "call-1" and init["caller_number"] == "+15550001111"
        assert sim.records[0].messages[0]["type"] == "init"


@by_case(BOLNA_DIALECTS)
async def test_greeting_first_with_marks(
    case: ProviderCase, sim: BolnaSimulator, http: aiohttp.ClientSession
) -> None:
    async with open_call(case, sim, http) as call:
        await turns.greeting(call, case.out_format, is_audio)
        marks = [e.name for e in call.log.of_type(Mark)]
        per_chunk = 1 if case is BOLNA_TWILIO else 2  # the web dialect pre- and post-marks each chunk
        assert len(marks) == per_chunk * len(call.log.of_type(AudioOut))
        assert sim.records[0].marks_echoed == marks and not sim.records[0].violations
        assert call.session.usage.audio_out_ms == pytest.approx(400, abs=20)


@by_case(BOLNA_DIALECTS)
async def test_caller_first_echo(
    case: ProviderCase, sim: BolnaSimulator, http: aiohttp.ClientSession
) -> None:
    sim.script.greeting_first = False
    async with open_call(case, sim, http) as call:
        await turns.caller_first_echo(call, case.in_format, case.out_format, is_audio)
        assert sim.records[0].audio_bytes == case.in_format.bytes_for_ms(1100)
        assert call.session.usage.audio_in_ms == pytest.approx(1100, abs=1)


@by_case(BOLNA_DIALECTS)
async def test_barge_in_clear(case: ProviderCase, sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    async with open_call(case, sim, http) as call:
        await turns.barge_in(call, case.in_format, case.out_format)


async def test_unknown_agent(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    voice = {"agent_id": "nope", "io_provider": "default"}
    await refused(BOLNA_WEB, sim, http, ErrorKind.PROVIDER_DOWN, voice_config=voice)
    async with open_call(CASE, sim, http, voice_config={"agent_id": "nope"}) as call:
        failure = await call.first_failure()
        assert "1011" in failure.message


async def test_config_errors(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    bad: tuple[dict[str, Any], ...] = (
        {"config": {}},
        {"voice_config": {"agent_id": "agent-web", "io_provider": "plivo"}},
        {"voice_config": {"agent_id": "agent-web", "io_provider": "default", "input_sample_rate": 1.5}},
        {"voice_config": {}},
    )
    for overrides in bad:
        await refused(CASE, sim, http, ErrorKind.CONFIG, **overrides)


async def test_web_dialect_custom_input_rate(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    voice = {"agent_id": "agent-web", "io_provider": "default", "input_sample_rate": 8000}
    async with open_call(BOLNA_WEB, sim, http, voice_config=voice) as call:
        assert call.session.input_format == AudioFormat("pcm16", 8000)


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


async def test_dtmf_in_twilio_dialect(sim: BolnaSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http) as call:
        await call.session.send_dtmf("7")
        await asyncio.sleep(0.05)
        dtmf = [m for m in sim.records[0].messages if m.get("event") == "dtmf"]
        assert dtmf and dtmf[0]["dtmf"] == {"track": "inbound_track", "digit": "7"}
        assert not sim.records[0].violations
