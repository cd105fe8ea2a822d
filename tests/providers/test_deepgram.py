"""Deepgram Voice Agent adapter ↔ Deepgram simulator over real sockets.

Deadlines, refusals, close and mid-call faults: ``test_adapter_contract``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from providers.base import MULAW_8000, PCM16_16000, Audio, ErrorKind, Hangup, Transcript
from providers.deepgram import client
from providers.simulators.deepgram import DeepgramSimulator
from tests.providers import turns
from tests.providers.harness import DEEPGRAM, DEEPGRAM_KEY, is_audio, is_text, open_call, refused, wait_until

M = MULAW_8000
CALLER_FIRST = {"speak_first": False}


CASE = DEEPGRAM


# -- handshake --------------------------------------------------------------------------------------


async def test_settings_mulaw_passthrough(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "hi"), Transcript("agent", "hello")]
    async with open_call(CASE, sim, http, history=history) as call:
        assert call.session.input_format == M and call.session.output_format == M
        handshake = sim.records[0].handshake
        assert handshake["headers"]["Authorization"] == f"Token {DEEPGRAM_KEY}"
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
        await call.session.send_audio(Audio(M, raw=b"\xff" * 160))
        await wait_until(lambda: sim.records[0].audio_bytes == 160)


async def test_forced_linear16(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    config = {"base_url": sim.http_url, "audio_format": "pcm16_16000"}
    async with open_call(CASE, sim, http, config=config) as call:
        assert call.session.input_format == PCM16_16000 and call.session.output_format == PCM16_16000
        assert sim.records[0].handshake["settings"]["audio"]["input"] == {
            "encoding": "linear16",
            "sample_rate": 16000,
        }
        await turns.greeting(call, PCM16_16000, is_audio)


async def test_bad_forced_format_is_config(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    config = {"base_url": sim.http_url, "audio_format": "mulaw_44100"}
    await refused(CASE, sim, http, ErrorKind.CONFIG, config=config)


async def test_missing_or_wrong_key_is_auth(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.api_keys = {DEEPGRAM_KEY}
    for key in (None, "other"):
        await refused(CASE, sim, http, ErrorKind.AUTH, api_key=key)


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
    async with http.ws_connect(url, headers={"Authorization": f"Token {DEEPGRAM_KEY}"}) as ws:
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
    config = {"base_url": sim.http_url, "audio_format": "alaw_8000"}
    error = await refused(CASE, sim, http, ErrorKind.CONFIG, config=config)
    assert "INVALID_SETTINGS" in error.message


# -- turns ------------------------------------------------------------------------------------------


async def test_greeting_first(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http) as call:
        assert sim.records[0].handshake["settings"]["agent"]["greeting"] == "Hi there!"
        await turns.greeting(call, M, lambda e: isinstance(e, Transcript) and e.role == "agent")
        assert call.session.usage.audio_out_ms == pytest.approx(400, abs=20)


async def test_caller_first_echo(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http, voice_config=CALLER_FIRST) as call:
        assert "greeting" not in sim.records[0].handshake["settings"]["agent"]
        await turns.caller_first_echo(call, M, M, is_text("echo 1"))
        assert Transcript("user", "utterance 1") in call.events


async def test_barge_in(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    async with open_call(CASE, sim, http) as call:
        greeting, after = await turns.barge_in(call, M, M, is_text("echo 1"))
        assert all(e.item_id != greeting.item_id for e in after)


async def test_function_call_round_trip(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.tool_after = 1
    async with open_call(CASE, sim, http, voice_config=CALLER_FIRST) as call:
        tool_call = await turns.tool_call(call, M)
        assert tool_call.call_id == "fc_1"
        assert sim.records[0].tool_results == [
            {
                "type": "FunctionCallResponse",
                "id": "fc_1",
                "name": "lookup_order",
                "content": '{"status":"shipped"}',
            }
        ]


async def test_end_call_function_is_hangup(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.hangup_after = 1
    async with open_call(CASE, sim, http, voice_config=CALLER_FIRST) as call:
        assert await turns.agent_hangup(call, M, M, closes=False) == Hangup("agent_end_call")
        await wait_until(lambda: bool(sim.records[0].tool_results))
        assert sim.records[0].tool_results[0]["name"] == "end_call"


async def test_keepalive_only_when_idle(
    sim: DeepgramSimulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "KEEPALIVE_INTERVAL_S", 0.1)
    async with open_call(CASE, sim, http, voice_config=CALLER_FIRST) as call:
        record = sim.records[0]
        for _ in range(20):  # 400 ms of continuous audio: no KeepAlive needed
            await call.session.send_audio(Audio(M, raw=b"\xff" * 160))
            await asyncio.sleep(0.02)
        assert not [m for m in record.messages if m["type"] == "KeepAlive"]
        await asyncio.sleep(0.35)  # idle: a KeepAlive about every 100 ms
        assert 2 <= len([m for m in record.messages if m["type"] == "KeepAlive"]) <= 4


async def test_idle_timeout_is_retryable_failure(sim: DeepgramSimulator, http: aiohttp.ClientSession) -> None:
    sim.idle_timeout_s = 0.2
    async with open_call(CASE, sim, http, voice_config=CALLER_FIRST) as call:
        failure = await call.first_failure()
        assert failure.kind is ErrorKind.RETRYABLE and "CLIENT_MESSAGE_TIMEOUT" in failure.message
        await call.ends()
