"""Retell adapter ↔ Retell simulator over real sockets (legacy audio WebSocket, ``web`` protocol).

Deadlines, refusals, unreachable host, close, mid-call faults and expiry: ``test_adapter_contract``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from providers.base import MULAW_8000, PCM16_16000, ErrorKind, Interrupt, Transcript
from providers.retell import protocol
from providers.simulators.retell import RetellSimulator
from providers.simulators.scripted_agent import say, utterance_frames
from tests.providers import turns
from tests.providers.harness import RETELL, RETELL_KEY, is_text, open_call, refused

M = MULAW_8000


CASE = RETELL


async def test_registers_call_and_streams_mulaw(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "hi"), Transcript("agent", "hello")]
    async with open_call(CASE, sim, http, history=history) as call:
        assert call.session.input_format == M and call.session.output_format == M
        body = sim.registrations[0]
        assert body["agent_id"] == "agent_sim"
        assert body["audio_websocket_protocol"] == "web"
        assert body["audio_encoding"] == "mulaw" and body["sample_rate"] == 8000
        assert body["from_number"] == "+15550001111" and body["to_number"] == "+15550002222"
        assert body["retell_llm_dynamic_variables"] == {"conversation_history": "user: hi\nagent: hello"}
        assert sim.records[0].handshake["query"] == {"enable_update": "true"}


async def test_pcm_caller_gets_pcm_session(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http, preferred_format=PCM16_16000) as call:
        assert call.session.input_format == PCM16_16000
        assert sim.registrations[0]["audio_encoding"] == "s16le"
        assert sim.registrations[0]["sample_rate"] == 16000


async def test_greeting_first(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http) as call:
        await turns.greeting(call, M, is_text("greeting", role="agent"))
        assert call.session.usage.audio_out_ms == pytest.approx(400, abs=20)


async def test_caller_first_echo_and_transcripts(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_first = False
    async with open_call(CASE, sim, http) as call:
        await turns.caller_first_echo(call, M, M, is_text("echo 1"))
        user = [e for e in call.log.of_type(Transcript) if e.role == "user"]
        assert user and user[0].text.startswith("utterance 1")
        assert call.session.usage.audio_in_ms == pytest.approx(1100, abs=40)


async def test_barge_in_clears_and_no_stale_audio(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    async with open_call(CASE, sim, http) as call:
        await turns.barge_in(call, M, M, is_text("echo 1"))
        assert sim.records[0].interruptions == 1


async def test_barge_in_after_all_audio_was_sent(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    """Retell judges by play-out, so the phone buffer must still be flushed."""
    sim.script.greeting_ms = 3000
    async with open_call(CASE, sim, http) as call:
        await call.log.wait_for(is_text("greeting"))
        await call.settle()
        assert M.ms_for_bytes(len(call.audio())) == pytest.approx(3000, abs=20)
        await say(call.session, utterance_frames(900, 300, M), M)
        await call.log.wait_for(lambda e: isinstance(e, Interrupt))


async def test_bad_key_unknown_agent_and_no_agent(sim: RetellSimulator, http: aiohttp.ClientSession) -> None:
    error = await refused(CASE, sim, http, ErrorKind.AUTH, api_key="wrong")
    assert "wrong" not in str(error)
    await refused(CASE, sim, http, ErrorKind.CONFIG, voice_config={"agent_id": "nope"})
    await refused(CASE, sim, http, ErrorKind.CONFIG, voice_config={})


async def test_keepalive_ping_is_answered(
    sim: RetellSimulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "PING_INTERVAL_S", 0.0)
    async with open_call(CASE, sim, http) as call:
        await say(call.session, utterance_frames(700, 40, M, silence_ms=0), M)
        await asyncio.sleep(0.1)
        assert protocol.PING in sim.records[0].messages
        assert not sim.records[0].violations


async def test_strict_simulator_rejects_malformed_input(
    sim: RetellSimulator, http: aiohttp.ClientSession
) -> None:
    url = sim.http_url + protocol.REGISTER_PATH
    auth = {"Authorization": f"Bearer {RETELL_KEY}"}
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
