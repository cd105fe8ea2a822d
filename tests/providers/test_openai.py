"""OpenAI Realtime adapter ↔ OpenAI simulator over real sockets (GA and beta dialects).

Deadlines, refusals, close and session expiry: ``test_adapter_contract``.
"""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from providers.base import (
    MULAW_8000,
    PCM16_24000,
    Audio,
    ErrorKind,
    Failure,
    Hangup,
    Notice,
    Transcript,
)
from providers.openai import client
from providers.simulators.openai import OpenAISimulator
from tests.providers import turns
from tests.providers.harness import OPENAI, OPENAI_KEY, is_text, open_call, refused, wait_until

M = MULAW_8000


class Heard50Ms:
    """A playback clock saying the caller heard 50 ms of every item."""

    def played_ms(self, item_id: str) -> int:
        return 50


CASE = OPENAI


def config(sim: OpenAISimulator, **extra: object) -> dict[str, object]:
    """The baseline adapter config with ``extra`` settings on top."""
    return {**CASE.fields(sim)["config"], **extra}  # type: ignore[dict-item]


def sent_types(sim: OpenAISimulator) -> list[str]:
    return [m["type"] for m in sim.records[0].messages]


def is_agent_transcript(e: object) -> bool:
    return isinstance(e, Transcript) and e.role == "agent"


# -- handshake --------------------------------------------------------------------------------------


async def test_ga_session_pcmu_passthrough(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    history = [Transcript("user", "hi"), Transcript("agent", "hello")]
    voice = {"prompt": "Be brief.", "resume_message": "Sorry, where were we?"}
    async with open_call(CASE, sim, http, history=history, voice_config=voice) as call:
        assert call.session.input_format == M and call.session.output_format == M
        handshake = sim.records[0].handshake
        assert (
            handshake["headers"]["Authorization"] == f"Bearer {OPENAI_KEY}"
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
        await call.session.send_audio(Audio(M, b64="//////////8="))
        await wait_until(lambda: sim.records[0].audio_bytes == 8)


async def test_beta_dialect_and_forced_pcm(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    beta = config(sim, dialect="beta", audio_format="pcm16_24000")
    async with open_call(CASE, sim, http, config=beta) as call:
        assert call.session.input_format == PCM16_24000
        handshake = sim.records[0].handshake
        assert handshake["headers"]["OpenAI-Beta"] == "realtime=v1"
        assert handshake["session"]["input_audio_format"] == "pcm16"
        await turns.greeting(call, PCM16_24000, is_agent_transcript)  # beta transcript name


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
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {OPENAI_KEY}"}) as ws:
        assert orjson.loads((await ws.receive()).data)["type"] == "session.created"
        await ws.send_str(orjson.dumps({"type": "session.update", "session": body}).decode())
        error = orjson.loads((await ws.receive()).data)
        assert error["type"] == "error" and error["error"]["code"] == code


async def test_rejected_session_update_is_config(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    # the simulator refuses A-law sessions; PCM16 16 kHz is not an OpenAI format at all
    for audio_format in ("alaw_8000", "pcm16_16000"):
        await refused(CASE, sim, http, ErrorKind.CONFIG, config=config(sim, audio_format=audio_format))


async def test_missing_key_is_auth(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    await refused(CASE, sim, http, ErrorKind.AUTH, api_key=None)


# -- turns ------------------------------------------------------------------------------------------


async def test_greeting_first(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http) as call:
        first = await call.log.wait_for(lambda e: isinstance(e, Transcript))
        assert first == Transcript("agent", "greeting")
        await turns.greeting(call, M, is_agent_transcript)
        assert sim.records[0].messages[-1]["response"]["instructions"].endswith("Hi there!")
        await wait_until(lambda: call.session.usage.output_tokens == 10)
        assert call.session.usage.input_tokens == 20


async def test_caller_first_echo(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http, config=config(sim, speak_first=False)) as call:
        assert "response.create" not in sent_types(sim)
        await turns.caller_first_echo(call, M, M, is_text("echo 1"))
        assert Transcript("user", "utterance 1") in call.events


async def test_barge_in_truncates_what_was_heard(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    sim.script.greeting_ms = 3000
    async with open_call(CASE, sim, http, playback=Heard50Ms()) as call:
        greeting, after = await turns.barge_in(call, M, M, is_text("echo 1"))
        assert all(e.item_id != greeting.item_id for e in after)
        truncate = next(m for m in sim.records[0].messages if m["type"] == "conversation.item.truncate")
        assert truncate["item_id"] == greeting.item_id and truncate["audio_end_ms"] == 50
        assert not sim.records[0].violations  # the simulator accepted the truncate


async def test_function_call_round_trip(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    sim.script.tool_after = 1
    async with open_call(CASE, sim, http, config=config(sim, speak_first=False)) as call:
        tool_call = await turns.tool_call(call, M)
        assert sim.records[0].tool_results == [
            {"type": "function_call_output", "call_id": tool_call.call_id, "output": '{"status":"shipped"}'}
        ]
        assert sent_types(sim)[-2:] == ["conversation.item.create", "response.create"]


async def test_end_call_tool_is_hangup(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    sim.script.hangup_after = 1
    async with open_call(CASE, sim, http, config=config(sim, speak_first=False)) as call:
        assert await turns.agent_hangup(call, M, M, closes=False) == Hangup("agent_end_call")
        await wait_until(lambda: bool(sim.records[0].tool_results))
        assert sent_types(sim)[-1] == "conversation.item.create"  # no response.create after goodbye


async def test_server_error_then_drop(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    sim.faults.error_after_s = 0.2
    async with open_call(CASE, sim, http) as call:
        await call.ends(within_s=2)
        failures = call.log.of_type(Failure)
        first, last = failures[0], failures[-1]
        assert first.kind is ErrorKind.PROVIDER_DOWN and not first.fatal  # "most errors are recoverable"
        assert last.fatal and "1011" in last.message


async def test_benign_error_is_notice(sim: OpenAISimulator, http: aiohttp.ClientSession) -> None:
    async with open_call(CASE, sim, http, config=config(sim, speak_first=False)) as call:
        assert isinstance(call.session, client.OpenAISession)
        call.session._send_str('{"type":"response.cancel"}')
        notice = await call.log.wait_for(lambda e: isinstance(e, Notice))
        assert isinstance(notice, Notice) and notice.details["code"] == "response_cancel_not_active"
        assert not call.log.of_type(Failure)
