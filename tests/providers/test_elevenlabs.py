"""ElevenLabs adapter ↔ ElevenLabs simulator over real sockets.

Deadlines, refusals, close, mid-call faults and max duration: ``test_adapter_contract``.
"""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from providers.base import (
    MULAW_8000,
    PCM16_16000,
    Audio,
    ErrorKind,
    Transcript,
)
from providers.elevenlabs import client
from providers.elevenlabs.protocol import HISTORY_VARIABLE
from providers.simulators.elevenlabs import ElevenLabsSimulator
from providers.simulators.scripted_agent import say, utterance_frames
from tests.providers import turns
from tests.providers.harness import ELEVENLABS, is_audio, is_text, open_call, refused, wait_until

M = MULAW_8000


CASE = ELEVENLABS


# -- handshake --------------------------------------------------------------------------------------


async def test_public_agent_mulaw_passthrough(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http) as call:
        assert call.session.input_format == M and call.session.output_format == M
        record = sim.records[0]
        assert record.handshake["query"] == {"agent_id": "agent_sim"}
        assert record.handshake["first_message"] == {"type": "conversation_initiation_client_data"}
        await call.session.send_audio(Audio(M, b64="//////////8="))
        await wait_until(lambda: record.audio_frames == 1)


async def test_pcm_agent_formats_read_back(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http, voice_config={"agent_id": "agent_x_pcm_16000"}) as call:
        assert call.session.input_format == PCM16_16000 and call.session.output_format == PCM16_16000
        await turns.greeting(call, PCM16_16000, is_audio)


async def test_signed_url_flow_and_overrides(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.private_agents = True
    history = [Transcript("user", "where is my order"), Transcript("agent", "let me check")]
    voice = {"agent_id": "agent_sim", "voice_id": "v1", "language": "de", "prompt": "Be brief."}
    async with open_call(CASE, sim, http, api_key="xi-key", voice_config=voice, history=history):
        handshake = sim.records[0].handshake
        assert "conversation_signature" in handshake["query"]
        first = handshake["first_message"]
        assert first["conversation_config_override"] == {
            "agent": {"prompt": {"prompt": "Be brief."}, "language": "de"},
            "tts": {"voice_id": "v1"},
        }
        assert first["dynamic_variables"][HISTORY_VARIABLE] == "user: where is my order\nagent: let me check"


async def test_bad_key_unknown_agent_and_disabled_overrides(
    sim: ElevenLabsSimulator, http: aiohttp.ClientSession
) -> None:
    sim.api_keys = {"good"}
    await refused(CASE, sim, http, ErrorKind.AUTH, api_key="bad")
    sim.known_agents = {"agent_sim"}
    await refused(CASE, sim, http, ErrorKind.CONFIG, voice_config={"agent_id": "nope"})
    sim.overrides_enabled = False
    voice = {"agent_id": "agent_sim", "voice_id": "v"}
    error = await refused(CASE, sim, http, ErrorKind.CONFIG, voice_config=voice)
    assert "override" in error.message.lower()
    await refused(CASE, sim, http, ErrorKind.CONFIG, voice_config={})


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
    async with open_call(CASE, sim, http) as call:
        first = await call.log.wait_for(lambda e: isinstance(e, Transcript))
        assert first == Transcript("agent", "greeting")
        await turns.greeting(call, M, is_text("greeting"))
        assert call.session.usage.audio_out_ms == pytest.approx(400, abs=20)
        assert call.session.usage.characters == len("greeting")
        pongs = [m for m in sim.records[0].messages if m["type"] == "pong"]
        assert pongs and all(isinstance(p["event_id"], int) for p in pongs)


async def test_caller_first_echo(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    voice = {"agent_id": "agent_sim", "speak_first": False}
    async with open_call(CASE, sim, http, voice_config=voice) as call:
        assert sim.records[0].handshake["first_message"]["conversation_config_override"] == {
            "agent": {"first_message": ""}
        }
        await turns.caller_first_echo(call, M, M, is_text("echo 1"))
        assert Transcript("user", "utterance 1") in call.events
        assert call.session.usage.audio_in_ms == pytest.approx(1100, abs=40)


async def test_barge_in_drops_stale_audio(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    sim.script.speedup = 1.0  # still sending the greeting when the caller talks over it
    async with open_call(CASE, sim, http) as call:
        assert isinstance(call.session, client.ElevenLabsSession)
        greeting, after = await turns.barge_in(call, M, M, is_text("echo 1"))
        assert all(e.item_id != greeting.item_id for e in after)
        assert call.session.codec.dropped_audio == 1  # the simulator's post-interruption stale chunk


async def test_tool_call_round_trip(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    sim.script.tool_after = 1
    async with open_call(CASE, sim, http) as call:
        tool_call = await turns.tool_call(call, M)
        assert sim.records[0].tool_results[0] == {
            "type": "client_tool_result",
            "tool_call_id": tool_call.call_id,
            "result": '{"status":"shipped"}',
            "is_error": False,
        }


async def test_unknown_tool_gets_error_result(sim: ElevenLabsSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    sim.script.tool_after = 1
    sim.script.tool_name = "transfer"
    async with open_call(CASE, sim, http) as call:
        await say(call.session, utterance_frames(700, 300, M), M)
        await call.log.wait_for(is_audio)
        assert sim.records[0].tool_results[0]["is_error"] is True
