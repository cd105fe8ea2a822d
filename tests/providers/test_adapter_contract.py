"""What every adapter owes the gateway, checked against each provider's simulator.

Connect deadlines, refusals classified by ``ErrorKind``, a prompt idempotent close, mid-call
faults as one ``Failure`` and session expiry as one ``Hangup`` are the same contract for every
provider; the tables below hold only what each provider's wire says (statuses, close codes,
reasons, error texts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from providers.base import Audio, ErrorKind, Failure, Hangup
from providers.simulators.scripted_agent import SessionRecord
from tests.providers import turns
from tests.providers.harness import (
    BOLNA_TWILIO,
    BOLNA_WEB,
    CASES,
    DEEPGRAM,
    ELEVENLABS,
    OPENAI,
    RETELL,
    VAPI,
    ProviderCase,
    Simulator,
    by_case,
    is_audio,
    open_call,
    refused,
    wait_until,
)

AUTH, QUOTA, DOWN, CONFIG = ErrorKind.AUTH, ErrorKind.QUOTA, ErrorKind.PROVIDER_DOWN, ErrorKind.CONFIG
STANDARD = ((401, AUTH), (429, QUOTA), (503, DOWN))


@by_case()
async def test_handshake_timeout(case: ProviderCase, sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.faults.handshake_delay_s = 0.6
    started = time.monotonic()
    await refused(case, sim, http, ErrorKind.TIMEOUT, connect_timeout=0.1)
    assert time.monotonic() - started < 0.5  # the deadline, not the provider's answer, ended the wait


# status → kind per provider; Retell's register-call also answers 400 for a bad body, Vapi 403.
REFUSALS: list[tuple[ProviderCase, int, ErrorKind]] = [
    *((case, status, kind) for case in CASES if case not in (RETELL, VAPI) for status, kind in STANDARD),
    *((RETELL, status, kind) for status, kind in (*STANDARD, (400, CONFIG))),
    *((VAPI, status, kind) for status, kind in ((401, AUTH), (403, AUTH), (429, QUOTA), (500, DOWN))),
]
# ElevenLabs refuses at the public upgrade (no key) or at the signed-URL REST call (a key).
REFUSAL_VARIANTS: dict[str, tuple[dict[str, object], ...]] = {
    ELEVENLABS.id: ({"api_key": None}, {"api_key": "xi-key"})
}


@pytest.mark.parametrize(
    ("case", "status", "kind"), REFUSALS, ids=[f"{c.id}-{s}-{k.value}" for c, s, k in REFUSALS]
)
async def test_refused_handshake_is_classified(
    case: ProviderCase, sim: Simulator, http: aiohttp.ClientSession, status: int, kind: ErrorKind
) -> None:
    sim.faults.refuse_handshake = True
    sim.faults.refuse_status = status
    for overrides in REFUSAL_VARIANTS.get(case.id, ({},)):
        await refused(case, sim, http, kind, **overrides)


@by_case()
async def test_unreachable_provider_is_down(
    case: ProviderCase, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    config = {**case.fields(sim)["config"], "base_url": "http://127.0.0.1:9"}  # type: ignore[dict-item]
    await refused(case, sim, http, DOWN, config=config)


# How each provider's socket says the caller hung up, beyond a normal close.
GOODBYE: dict[str, Callable[[SessionRecord], bool]] = {
    VAPI.id: lambda record: {"type": "end-call"} in record.messages,
    BOLNA_TWILIO.id: lambda record: record.messages[-1]["event"] == "stop",
}


@by_case()
async def test_caller_close_is_prompt_and_idempotent(
    case: ProviderCase, sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with open_call(case, sim, http) as call:
        await call.log.wait_for(is_audio)
        async with asyncio.timeout(1.0):
            await call.session.close()
            await call.session.close()
            await call.log.ended.wait()
        assert not call.log.of_type(Failure) and not call.log.of_type(Hangup)
        await wait_until(lambda: sim.sessions_active == 0)
        record = sim.records[0]
        assert record.ended_by == "client" and record.close_code == 1000
        assert GOODBYE.get(case.id, lambda _: True)(record)
        fmt = case.in_format
        await call.session.send_audio(Audio(fmt, raw=b"\xff" * fmt.bytes_for_ms(20)))  # dropped quietly


@dataclass(frozen=True)
class MidCallFault:
    """A fault the simulator injects into a live call, and the one ``Failure`` it must become."""

    case: ProviderCase
    faults: dict[str, Any]
    kind: ErrorKind
    text: str = ""  # what the failure message must name (a close code, the provider's error)
    id: str = field(default="")


MID_CALL_FAULTS = [
    MidCallFault(ELEVENLABS, {"error_after_s": 0.1}, DOWN, id="error"),
    MidCallFault(ELEVENLABS, {"close_after_s": 0.1}, DOWN, id="close"),
    MidCallFault(ELEVENLABS, {"close_after_s": 0.1, "close_code": 1008}, CONFIG, "1008", id="close-1008"),
    MidCallFault(DEEPGRAM, {"error_after_s": 0.1}, DOWN, id="error"),
    MidCallFault(DEEPGRAM, {"close_after_s": 0.1}, DOWN, id="close"),
    MidCallFault(OPENAI, {"expire_after_s": 0.1}, ErrorKind.RETRYABLE, "session_expired", id="expired"),
    MidCallFault(RETELL, {"error_after_s": 0.1}, DOWN, "1011", id="error"),
    MidCallFault(RETELL, {"close_after_s": 0.1, "close_code": 1001}, DOWN, "1001", id="close-1001"),
    MidCallFault(RETELL, {"close_after_s": 0.1, "close_code": 1006}, DOWN, id="tcp-drop"),
    MidCallFault(VAPI, {"error_after_s": 0.1}, DOWN, "pipeline-error", id="error"),
    MidCallFault(VAPI, {"close_after_s": 0.1}, DOWN, "1011", id="close"),
    MidCallFault(VAPI, {"close_after_s": 0.1, "close_code": 1006}, DOWN, id="tcp-drop"),
    MidCallFault(BOLNA_TWILIO, {"error_after_s": 0.1}, DOWN, "1011", id="error"),
    MidCallFault(BOLNA_WEB, {"error_after_s": 0.1}, DOWN, "1011", id="error"),
    MidCallFault(BOLNA_TWILIO, {"close_after_s": 0.1, "close_code": 1012}, DOWN, "1012", id="close-1012"),
    MidCallFault(BOLNA_TWILIO, {"close_after_s": 0.1, "close_code": 1006}, DOWN, id="tcp-drop"),
]


@pytest.mark.parametrize(
    ("case", "fault"),
    [(f.case, f) for f in MID_CALL_FAULTS],
    ids=[f"{f.case.id}-{f.id}" for f in MID_CALL_FAULTS],
)
async def test_mid_call_fault_is_one_fatal_failure(
    case: ProviderCase, sim: Simulator, http: aiohttp.ClientSession, fault: MidCallFault
) -> None:
    sim.faults.update(fault.faults)
    async with open_call(case, sim, http) as call:
        failure = await call.first_failure()
        assert failure.kind is fault.kind and failure.fatal, failure
        assert fault.text in failure.message
        await call.ends()
        assert call.log.of_type(Failure) == [failure]


# Session expiry is the provider ending the call normally, with its own reason.
EXPIRY_REASONS = [
    (ELEVENLABS, "max_duration_exceeded"),
    (RETELL, "exceeded-max-duration"),
    (VAPI, "exceeded-max-duration"),
    (BOLNA_TWILIO, "exceeded-max-duration"),
    (BOLNA_WEB, "exceeded-max-duration"),
]


@pytest.mark.parametrize(("case", "reason"), EXPIRY_REASONS, ids=[c.id for c, _ in EXPIRY_REASONS])
async def test_expiry_is_one_hangup(
    case: ProviderCase, sim: Simulator, http: aiohttp.ClientSession, reason: str
) -> None:
    sim.faults.expire_after_s = 0.1
    sim.script.greeting_first = False
    async with open_call(case, sim, http) as call:
        hangup = await call.log.wait_for(lambda e: isinstance(e, Hangup), within_s=5)
        assert hangup == Hangup(reason)
        await call.ends()
        assert len(call.log.of_type(Hangup)) == 1 and not call.log.of_type(Failure)


# The agent says goodbye and ends the call itself (Deepgram and OpenAI leave closing the socket
# to the gateway: their end_call tests are in their modules).
AGENT_HANGUPS = [
    (ELEVENLABS, "agent_ended"),
    (RETELL, "assistant-ended-call"),
    (VAPI, "assistant-ended-call"),
    (BOLNA_TWILIO, "assistant-ended-call"),  # only once the farewell's final mark is echoed
    (BOLNA_WEB, "assistant-ended-call"),
]


@pytest.mark.parametrize(("case", "reason"), AGENT_HANGUPS, ids=[c.id for c, _ in AGENT_HANGUPS])
async def test_agent_hangup_ends_the_call(
    case: ProviderCase, sim: Simulator, http: aiohttp.ClientSession, reason: str
) -> None:
    sim.script.greeting_first = False
    sim.script.hangup_after = 1
    async with open_call(case, sim, http) as call:
        hangup = await turns.agent_hangup(call, case.in_format, case.out_format, closes=True)
        assert hangup.reason == reason
        record = sim.records[0]
        assert record.close_code == 1000 and not record.violations
