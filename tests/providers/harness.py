"""Shared scaffolding for the adapter ↔ simulator tests.

Every adapter test does the same things: start the provider's simulator, build a
``ProviderContext`` pointing at it, connect, drain events with a deadline, speak as the caller and
judge the agent's audio by its tone. ``ProviderCase`` says what differs per adapter (simulator,
baseline context, wire formats); the scenario helpers below hold the assertions every adapter
shares, so each provider module only adds what is specific to its wire protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from providers.base import (
    MULAW_8000,
    PCM16_16000,
    PCM16_24000,
    AudioFormat,
    AudioOut,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    ProviderContext,
    ProviderError,
    ProviderEvent,
    ProviderSession,
    ToolCall,
    Transcript,
)
from providers.bolna import client as bolna_client
from providers.deepgram import client as deepgram_client
from providers.elevenlabs import client as elevenlabs_client
from providers.openai import client as openai_client
from providers.retell import client as retell_client
from providers.simulators.bolna import BolnaSimulator
from providers.simulators.deepgram import DeepgramSimulator
from providers.simulators.elevenlabs import ElevenLabsSimulator
from providers.simulators.openai import OpenAISimulator
from providers.simulators.retell import RetellSimulator
from providers.simulators.scripted_agent import EventLog, dominant_frequency, say, utterance_frames
from providers.simulators.vapi import VapiSimulator
from providers.vapi import client as vapi_client

# Every simulator class has ``faults``, ``script``, ``records`` and ``sessions_active``; they share
# no base class that declares the last three, so the harness treats them structurally.
Simulator = Any

DEEPGRAM_KEY = "dg-key"
OPENAI_KEY = "sk-sim"
RETELL_KEY = "sim-retell-key"
VAPI_KEY = "sim-vapi-key"
TOOLS = {"lookup_order": {"status": "shipped"}}  # what the scripted agent's tool call is answered with
GREETING_HZ, ECHO_HZ, BARGE_HZ, FAREWELL_HZ = 440, 700, 900, 660  # the simulators' tones


@dataclass(frozen=True)
class ProviderCase:
    """One adapter under test: its simulator, the baseline call it makes, its wire formats."""

    id: str
    connect: Callable[[ProviderContext], Awaitable[ProviderSession]]
    simulator: Callable[[], Simulator]
    fields: Callable[[Simulator], dict[str, object]]  # baseline ProviderContext fields for this simulator
    in_format: AudioFormat = MULAW_8000
    out_format: AudioFormat = MULAW_8000
    echo_marks: bool = False  # the adapter paces its audio by marks: the test plays an instant carrier

    def ctx(self, sim: Simulator, http: aiohttp.ClientSession, **overrides: object) -> ProviderContext:
        fields: dict[str, object] = {"call_id": "call-1", "http": http, "connect_timeout": 2.0}
        fields.update(self.fields(sim))
        fields.update(overrides)
        return ProviderContext(**fields)  # type: ignore[arg-type]


def _bolna_fields(dialect: str) -> Callable[[Simulator], dict[str, object]]:
    agent = {"twilio": "agent-twilio", "default": "agent-web"}[dialect]
    return lambda sim: {
        "provider": "bolna",
        "config": {"base_url": sim.http_url},
        "voice_config": {"agent_id": agent, "io_provider": dialect},
        "caller_number": "+15550001111",
    }


ELEVENLABS = ProviderCase(
    "elevenlabs",
    elevenlabs_client.connect,
    ElevenLabsSimulator,
    lambda sim: {
        "provider": "elevenlabs",
        "config": {"base_url": sim.http_url, "tools": TOOLS},
        "voice_config": {"agent_id": "agent_sim"},
    },
)
DEEPGRAM = ProviderCase(
    "deepgram",
    deepgram_client.connect,
    DeepgramSimulator,
    lambda sim: {
        "provider": "deepgram",
        "api_key": DEEPGRAM_KEY,
        "config": {"base_url": sim.http_url, "tools": TOOLS},
        "voice_config": {"prompt": "Be brief.", "first_message": "Hi there!"},
    },
)
OPENAI = ProviderCase(
    "openai",
    openai_client.connect,
    OpenAISimulator,
    lambda sim: {
        "provider": "openai",
        "api_key": OPENAI_KEY,
        "config": {"base_url": sim.http_url, "tools": TOOLS},
        "voice_config": {"prompt": "Be brief.", "first_message": "Hi there!"},
    },
)
RETELL = ProviderCase(
    "retell",
    retell_client.connect,
    lambda: RetellSimulator(api_key=RETELL_KEY),
    lambda sim: {
        "provider": "retell",
        "api_key": RETELL_KEY,
        "config": {"base_url": sim.http_url},
        "voice_config": {"agent_id": "agent_sim"},
        "caller_number": "+15550001111",
        "called_number": "+15550002222",
    },
)
VAPI = ProviderCase(
    "vapi",
    vapi_client.connect,
    lambda: VapiSimulator(api_key=VAPI_KEY),
    lambda sim: {
        "provider": "vapi",
        "api_key": VAPI_KEY,
        "config": {"base_url": sim.http_url, "tools": TOOLS},
        "voice_config": {"assistant_id": "asst_sim"},
    },
)
BOLNA_TWILIO = ProviderCase(
    "bolna-twilio", bolna_client.connect, BolnaSimulator, _bolna_fields("twilio"), echo_marks=True
)
BOLNA_WEB = ProviderCase(
    "bolna-default",
    bolna_client.connect,
    BolnaSimulator,
    _bolna_fields("default"),
    in_format=PCM16_16000,
    out_format=PCM16_24000,
    echo_marks=True,
)
CASES = (ELEVENLABS, DEEPGRAM, OPENAI, RETELL, VAPI, BOLNA_TWILIO, BOLNA_WEB)
BOLNA_DIALECTS = (BOLNA_TWILIO, BOLNA_WEB)


def by_case(cases: tuple[ProviderCase, ...] = CASES) -> pytest.MarkDecorator:
    """Parametrize a test's ``case`` argument (and so its ``sim`` fixture) over ``cases``."""
    return pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])


# -- running a call ---------------------------------------------------------------------------------


@dataclass
class Call:
    """A connected adapter session and the log its events drain into."""

    session: ProviderSession
    log: EventLog

    @property
    def events(self) -> list[ProviderEvent]:
        return self.log.events

    def audio(self, after: int = 0) -> bytes:
        """All agent audio received from event index ``after`` on."""
        return b"".join(e.audio.raw for e in self.events[after:] if isinstance(e, AudioOut))

    async def settle(self, quiet_s: float = 0.25) -> None:
        """Wait until no event arrived for ``quiet_s`` (all audio of the turn is in)."""
        clock = asyncio.get_running_loop().time
        seen, quiet_since = len(self.events), clock()
        while clock() - quiet_since < quiet_s:
            await asyncio.sleep(0.02)
            if len(self.events) != seen:
                seen, quiet_since = len(self.events), clock()

    async def ends(self, within_s: float = 1.0) -> None:
        """The adapter's event stream ends (the provider side is gone) within ``within_s``."""
        await asyncio.wait_for(self.log.ended.wait(), within_s)

    async def first_failure(self) -> Failure:
        failure = await self.log.wait_for(lambda e: isinstance(e, Failure))
        assert isinstance(failure, Failure)
        return failure


@contextlib.asynccontextmanager
async def open_call(
    case: ProviderCase, sim: Simulator, http: aiohttp.ClientSession, **overrides: object
) -> AsyncIterator[Call]:
    """Connect ``case``'s adapter to ``sim`` and log its events; close both however the test ends."""
    session = await case.connect(case.ctx(sim, http, **overrides))
    log = EventLog(session, echo_marks=case.echo_marks)
    try:
        yield Call(session, log)
    finally:
        await session.close()
        await log.stop()


async def refused(
    case: ProviderCase, sim: Simulator, http: aiohttp.ClientSession, kind: ErrorKind, **overrides: object
) -> ProviderError:
    """Connecting with ``overrides`` fails with a ``ProviderError`` of ``kind``."""
    with pytest.raises(ProviderError) as info:
        await case.connect(case.ctx(sim, http, **overrides))
    assert info.value.kind is kind, info.value
    return info.value


async def wait_until(predicate: Callable[[], bool], within_s: float = 1.0) -> None:
    """Poll a simulator-side condition (simulators have no events to wait on)."""
    for _ in range(round(within_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not reached within {within_s} s")


def assert_tone(audio: bytes, fmt: AudioFormat, hz: float, tolerance: float = 20) -> None:
    found = dominant_frequency(audio, fmt)
    assert abs(found - hz) < tolerance, f"dominant tone {found:.0f} Hz, expected {hz} Hz"


def is_text(text: str, role: str | None = None) -> Callable[[ProviderEvent], bool]:
    """Matches the transcript ``text`` (spoken by ``role``, when given)."""
    return lambda e: isinstance(e, Transcript) and e.text == text and role in (None, e.role)


def is_audio(e: ProviderEvent) -> bool:
    return isinstance(e, AudioOut)


# -- the turns every adapter plays ------------------------------------------------------------------


async def hear_greeting(call: Call, fmt: AudioFormat, until: Callable[[ProviderEvent], bool]) -> bytes:
    """The agent speaks first: a 400 ms greeting tone, complete once ``until`` is seen and all is in."""
    await call.log.wait_for(until)
    await call.settle()
    greeting = call.audio()
    assert abs(fmt.ms_for_bytes(len(greeting)) - 400) <= 20
    assert_tone(greeting, fmt, GREETING_HZ)
    return greeting


async def caller_first_echo(
    call: Call,
    fin: AudioFormat,
    fout: AudioFormat,
    until: Callable[[ProviderEvent], bool],
    silent_s: float = 0.1,
) -> bytes:
    """The agent waits (``silent_s`` without audio); the caller's 600 ms utterance comes back as a
    500-800 ms echo of its tone."""
    await asyncio.sleep(silent_s)
    assert not call.log.of_type(AudioOut), "the agent spoke first"
    await say(call.session, utterance_frames(ECHO_HZ, 600, fin), fin)
    await call.log.wait_for(until)
    await call.settle()
    echo = call.audio()
    assert_tone(echo, fout, ECHO_HZ)
    assert 500 <= fout.ms_for_bytes(len(echo)) <= 800
    assert not call.log.of_type(Interrupt)  # nothing was playing when the caller started
    return echo


async def barge_in(
    call: Call, fin: AudioFormat, fout: AudioFormat, until: Callable[[ProviderEvent], bool] | None = None
) -> tuple[AudioOut, list[AudioOut]]:
    """The caller talks over a long greeting: Interrupt, then only the echo's tone (no stale greeting).

    Returns the first greeting chunk and the audio after the interruption. ``until`` marks the reply
    as complete; by default the first audio after the interruption.
    """
    greeting = await call.log.wait_for(is_audio)
    assert isinstance(greeting, AudioOut)
    await say(call.session, utterance_frames(BARGE_HZ, 500, fin), fin)
    interrupt = await call.log.wait_for(lambda e: isinstance(e, Interrupt))
    cut = call.events.index(interrupt)
    await call.log.wait_for(until or (lambda e: is_audio(e) and call.events.index(e) > cut))
    await call.settle()
    after = [e for e in call.events[cut:] if isinstance(e, AudioOut)]
    assert after, "the echo should follow the interruption"
    for chunk in after:
        assert_tone(chunk.audio.raw, fout, BARGE_HZ, tolerance=30)
    return greeting, after


async def tool_round_trip(call: Call, fin: AudioFormat) -> ToolCall:
    """The caller's first turn makes the agent call ``lookup_order``, answered from ``config.tools``."""
    await say(call.session, utterance_frames(ECHO_HZ, 300, fin), fin)
    tool_call = await call.log.wait_for(lambda e: isinstance(e, ToolCall))
    assert isinstance(tool_call, ToolCall)
    expected = ToolCall("lookup_order", tool_call.call_id, {"order_id": "A-17"}, TOOLS["lookup_order"])
    assert tool_call == expected
    asked = call.events.index(tool_call)
    await call.log.wait_for(lambda e: is_audio(e) and call.events.index(e) > asked)
    return tool_call


async def agent_hangs_up(call: Call, fin: AudioFormat, fout: AudioFormat, closes: bool) -> Hangup:
    """After the caller's first turn the agent says a farewell tone and ends the call, once.

    ``closes``: the provider also closes its socket (others leave that to the gateway).
    """
    await say(call.session, utterance_frames(ECHO_HZ, 300, fin), fin)
    hangup = await call.log.wait_for(lambda e: isinstance(e, Hangup))
    assert isinstance(hangup, Hangup)
    if closes:
        await call.ends()
    assert len(call.log.of_type(Hangup)) == 1 and not call.log.of_type(Failure)
    assert_tone(call.log.of_type(AudioOut)[-1].audio.raw, fout, FAREWELL_HZ, tolerance=30)
    return hangup
