"""Shared scaffolding for the adapter ↔ simulator tests.

Every adapter test does the same things: start the provider's simulator, build a
``ProviderContext`` pointing at it, connect, drain events with a deadline and judge the agent's
audio by its tone. ``ProviderCase`` says what differs per adapter (simulator, baseline context,
wire formats); ``open_call`` runs one call; the turns themselves are in ``turns``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
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
    ProviderContext,
    ProviderError,
    ProviderEvent,
    ProviderSession,
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
from providers.simulators.scripted_agent import EventLog, dominant_frequency
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


@dataclass(frozen=True)
class ProviderCase:
    """One adapter under test: its simulator, the baseline call it makes, its wire formats."""

    provider: str
    connect: Callable[[ProviderContext], Awaitable[ProviderSession]]
    simulator: Callable[[], Simulator]
    fields: Callable[[Simulator], dict[str, object]]  # baseline ProviderContext fields for this simulator
    dialect: str = ""  # a provider with several wire dialects has one case per dialect
    in_format: AudioFormat = MULAW_8000
    out_format: AudioFormat = MULAW_8000
    echo_marks: bool = False  # the adapter paces its audio by marks: the test plays an instant carrier

    @property
    def id(self) -> str:
        return f"{self.provider}-{self.dialect}" if self.dialect else self.provider

    def ctx(self, sim: Simulator, http: aiohttp.ClientSession, **overrides: object) -> ProviderContext:
        fields: dict[str, object] = {
            "call_id": "call-1",
            "provider": self.provider,
            "http": http,
            "connect_timeout": 2.0,
        }
        fields.update(self.fields(sim))
        fields.update(overrides)
        return ProviderContext(**fields)  # type: ignore[arg-type]


def baseline(
    voice: Mapping[str, object], api_key: str | None = None, tools: bool = True, **extra: object
) -> Callable[[Simulator], dict[str, object]]:
    """Context fields for a call to ``sim``: its URL, ``voice`` config, and the tool answers."""

    def fields(sim: Simulator) -> dict[str, object]:
        config: dict[str, object] = {"base_url": sim.http_url, **({"tools": TOOLS} if tools else {})}
        return {"api_key": api_key, "config": config, "voice_config": dict(voice), **extra}

    return fields


AGENT_PROMPT = {"prompt": "Be brief.", "first_message": "Hi there!"}
CALLER = "+15550001111"
ELEVENLABS = ProviderCase(
    "elevenlabs", elevenlabs_client.connect, ElevenLabsSimulator, baseline({"agent_id": "agent_sim"})
)
DEEPGRAM = ProviderCase(
    "deepgram", deepgram_client.connect, DeepgramSimulator, baseline(AGENT_PROMPT, DEEPGRAM_KEY)
)
OPENAI = ProviderCase("openai", openai_client.connect, OpenAISimulator, baseline(AGENT_PROMPT, OPENAI_KEY))
RETELL = ProviderCase(
    "retell",
    retell_client.connect,
    lambda: RetellSimulator(api_key=RETELL_KEY),
    baseline(
        {"agent_id": "agent_sim"},
        RETELL_KEY,
        tools=False,
        caller_number=CALLER,
        called_number="+15550002222",
    ),
)
VAPI = ProviderCase(
    "vapi",
    vapi_client.connect,
    lambda: VapiSimulator(api_key=VAPI_KEY),
    baseline({"assistant_id": "asst_sim"}, VAPI_KEY),
)


def _bolna(agent: str, dialect: str, fin: AudioFormat, fout: AudioFormat) -> ProviderCase:
    voice = {"agent_id": agent, "io_provider": dialect}
    fields = baseline(voice, tools=False, caller_number=CALLER)  # Bolna runs tools server-side
    return ProviderCase(
        "bolna", bolna_client.connect, BolnaSimulator, fields, dialect, fin, fout, echo_marks=True
    )


BOLNA_TWILIO = _bolna("agent-twilio", "twilio", MULAW_8000, MULAW_8000)
BOLNA_WEB = _bolna("agent-web", "default", PCM16_16000, PCM16_24000)
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
