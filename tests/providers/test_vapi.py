"""Vapi adapter ↔ Vapi simulator over real sockets (``vapi.websocket`` transport).

The JSON control messages exercised here (transcript, user-interrupted, tool-calls,
status-update) are the UNVERIFIED assumption in ``providers.vapi.protocol``, not captured Vapi
behaviour; REST creation and binary audio are documented.

Deadlines, refusals, unreachable host, close, mid-call faults and expiry: ``test_adapter_contract``.
"""

from __future__ import annotations

import aiohttp
import pytest

from providers.base import MULAW_8000, PCM16_16000, AudioOut, ErrorKind, Failure, Transcript
from providers.simulators.vapi import VapiSimulator
from providers.vapi import client, protocol
from tests.providers import turns
from tests.providers.harness import VAPI, VAPI_KEY, is_text, open_call, refused

M = MULAW_8000


CASE = VAPI


async def test_create_call_body_is_exact(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http) as call:
        assert call.session.input_format == M and call.session.output_format == M
        assert sim.calls[0] == {
            "assistantId": "asst_sim",
            "transport": {
                "provider": "vapi.websocket",
                "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
            },
        }
        assert isinstance(call.session, client.VapiSession) and call.session.vapi_call_id
        assert sim.records[0].handshake["headers"] == {"authorization": False}


async def test_history_and_overrides(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "my order"), Transcript("agent", "which one?")]
    voice = {"assistant_id": "asst_sim", "assistant_overrides": {"variableValues": {"name": "Ann"}}}
    async with open_call(CASE, sim, http, history=history, voice_config=voice):
        overrides = sim.calls[0]["assistantOverrides"]
        assert overrides["variableValues"] == {
            "name": "Ann",
            "conversation_history": "user: my order\nagent: which one?",
        }
        assert overrides["firstMessageMode"] == protocol.RESUME_FIRST_MESSAGE_MODE


async def test_pcm_caller(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http, preferred_format=PCM16_16000) as call:
        assert call.session.input_format == PCM16_16000
        assert sim.calls[0]["transport"]["audioFormat"] == {
            "format": "pcm_s16le",
            "container": "raw",
            "sampleRate": 16000,
        }


async def test_greeting_first(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http) as call:
        await turns.greeting(call, M, is_text("greeting"))


async def test_caller_first_via_first_message_mode(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    voice = {
        "assistant_id": "asst_sim",
        "assistant_overrides": {"firstMessageMode": "assistant-waits-for-user"},
    }
    async with open_call(CASE, sim, http, voice_config=voice) as call:
        await turns.caller_first_echo(call, M, M, is_text("echo 1"), silent_s=0.15)
        assert any(e.role == "user" and e.final for e in call.log.of_type(Transcript))
        assert sim.records[0].audio_bytes == M.bytes_for_ms(1100)


async def test_barge_in(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    async with open_call(CASE, sim, http) as call:
        await turns.barge_in(call, M, M, is_text("echo 1"))


async def test_tool_call_answered_from_config(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    sim.script.tool_after = 1
    async with open_call(CASE, sim, http) as call:
        tool_call = await turns.tool_call(call, M)
        await call.log.wait_for(is_text("echo 1"))
        record = sim.records[0]
        assert record.tool_results[0]["tool_call_id"] == tool_call.call_id
        assert record.tool_results[0]["content"] == '{"status":"shipped"}'
        assert not record.violations


async def test_config_errors(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    error = await refused(CASE, sim, http, ErrorKind.CONFIG, voice_config={"assistant_id": "missing"})
    assert "Does Not Exist" in error.message
    error = await refused(CASE, sim, http, ErrorKind.AUTH, api_key="bad-key")
    assert "bad-key" not in str(error)
    await refused(CASE, sim, http, ErrorKind.CONFIG, voice_config={})


async def test_strict_simulator_rejects_malformed_input(
    sim: VapiSimulator, http: aiohttp.ClientSession
) -> None:
    url = sim.http_url + protocol.CALL_PATH
    auth = {"Authorization": f"Bearer {VAPI_KEY}"}
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


async def test_mute_keeps_turns_but_no_audio(sim: VapiSimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.mute = True
    async with open_call(CASE, sim, http) as call:
        await call.log.wait_for(is_text("greeting"))
        await call.settle()
        assert not call.log.of_type(AudioOut) and not call.log.of_type(Failure)
